# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a Linux host's cgroups (v1, v2 and hybrid) and /proc, below a root path.

Plain Python, standard library only, no Ansible imports: the modules ``flaskops.stack.resource_facts``
(effective CPUs and memory) and ``flaskops.stack.measure`` (an app's CPU time and memory) share it.
Every path read is put under ``root`` first, so tests (and a look into a container's root from outside)
read fixture trees.
"""

from __future__ import annotations

import os
import posixpath

MIB = 1024 * 1024

# cgroup v1 reports "no limit" as a huge page-aligned number (9223372036854771712 with 4 KiB pages);
# anything from 1 EiB upwards is treated as unlimited.
V1_UNLIMITED_BYTES = 1 << 60


def read_text(path):
    """Return the content of a file, or None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read(1024 * 1024)
    except OSError:
        return None
    return data.decode("utf-8", errors="replace")


def rebase(root, path):
    """Put an absolute path found on the inspected system under root."""
    return posixpath.join(root or "/", path.lstrip("/"))


def unescape_mount_field(field):
    """Decode the octal escapes (such as \\040 for a space) used in /proc/self/mountinfo."""
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        chunk = field[i + 1 : i + 4]
        if field[i] == "\\" and len(chunk) == 3 and all(c in "01234567" for c in chunk):
            out.append(chr(int(chunk, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def count_cpu_list(text):
    """Count the CPUs in a list such as '0-3,6'. Raises ValueError on bad content."""
    text = text.strip()
    if not text:
        raise ValueError("empty CPU list")
    count = 0
    for raw_part in text.split(","):
        part = raw_part.strip()
        if "-" in part:
            first, last = part.split("-", 1)
            first, last = int(first), int(last)
            if first < 0 or last < first:
                raise ValueError("bad CPU range %r" % part)
            count += last - first + 1
        else:
            if int(part) < 0:
                raise ValueError("bad CPU number %r" % part)
            count += 1
    return count


def _field(text, name):
    """The value of the ``name: value`` line of a /proc file, or None when there is none."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value
    return None


def parse_status_cpus(text):
    """Count the CPUs of Cpus_allowed_list in /proc/self/status.

    Returns None when the line is absent; raises ValueError when it is malformed.
    """
    value = _field(text, "Cpus_allowed_list")
    return None if value is None else count_cpu_list(value)


def parse_meminfo_total(text):
    """Return MemTotal of /proc/meminfo in bytes.

    Returns None when the line is absent; raises ValueError when it is malformed.
    """
    value = _field(text, "MemTotal")
    if value is None:
        return None
    fields = value.split()
    if not fields:
        raise ValueError("empty MemTotal")
    number = int(fields[0])
    unit = fields[1].lower() if len(fields) > 1 else "b"
    if unit == "kb":
        number *= 1024
    elif unit != "b":
        raise ValueError("unknown MemTotal unit %r" % fields[1])
    if number <= 0:
        raise ValueError("MemTotal is not positive")
    return number


def parse_mountinfo(text):
    """Return the cgroup mounts of /proc/self/mountinfo.

    Each mount is a dict with version (1 or 2), root (root of the mount inside the hierarchy),
    mountpoint, and options (the super options, which list the controllers for cgroup v1).
    Lines that cannot be parsed are skipped.
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) < sep + 2:
            continue
        fstype = fields[sep + 1]
        if fstype == "cgroup2":
            version = 2
        elif fstype == "cgroup":
            version = 1
        else:
            continue
        options = fields[sep + 3].split(",") if len(fields) > sep + 3 else []
        mounts.append(
            {
                "version": version,
                "root": unescape_mount_field(fields[3]),
                "mountpoint": unescape_mount_field(fields[4]),
                "options": options,
            }
        )
    return mounts


def parse_proc_cgroup(text):
    """Parse /proc/self/cgroup.

    Returns (v2_path, v1_paths) where v2_path is the path of the '0::' line (or None) and v1_paths
    maps each v1 controller (and named hierarchy such as 'name=systemd') to its path.
    """
    v2_path = None
    v1_paths = {}
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif controllers:
            for controller in controllers.split(","):
                v1_paths[controller] = path
    return v2_path, v1_paths


def relative_cgroup_path(mount_root, proc_path):
    """Return the process cgroup path relative to the mount root, or None when it is not under it."""
    if ".." in mount_root.split("/") or ".." in proc_path.split("/"):
        # Outside the cgroup namespace of the reader: the location cannot be resolved.
        return None
    mount_root = posixpath.normpath("/" + mount_root.lstrip("/"))
    proc_path = posixpath.normpath("/" + proc_path.lstrip("/"))
    rel = posixpath.relpath(proc_path, mount_root)
    if rel == ".":
        return ""
    if rel == ".." or rel.startswith("../"):
        return None
    return rel


def cgroup_dirs(root, mount, proc_path):
    """Return the directories from the process cgroup up to the mount point (both included), under root.

    When the process cgroup is not below the root of the mount (a bind-mounted container cgroup
    without a private cgroup namespace), the mount point itself is the process cgroup.
    """
    rel = relative_cgroup_path(mount["root"], proc_path)
    parts = [p for p in rel.split("/") if p] if rel else []
    base = rebase(root, mount["mountpoint"])
    dirs = []
    for depth in range(len(parts), -1, -1):
        dirs.append(posixpath.join(base, *parts[:depth]) if depth else base)
    return dirs


def select_mount(mounts, proc_path):
    """Pick the mount for a process path: the first one the path is under, else the first one."""
    if not mounts:
        return None
    for mount in mounts:
        if relative_cgroup_path(mount["root"], proc_path) is not None:
            return mount
    return mounts[0]


def parse_cpu_max(text):
    """Parse cgroup v2 cpu.max ('max 100000' or '150000 100000') into cores, None when unlimited."""
    fields = text.split()
    if not fields or len(fields) > 2:
        raise ValueError('expected "<quota> [<period>]"')
    if fields[0] == "max":
        if len(fields) == 2:
            int(fields[1])
        return None
    quota = int(fields[0])
    period = int(fields[1]) if len(fields) == 2 else 100000
    if quota <= 0 or period <= 0:
        raise ValueError("quota and period must be positive")
    return float(quota) / period


def parse_cfs(quota_text, period_text):
    """Parse cgroup v1 cpu.cfs_quota_us and cpu.cfs_period_us into cores, None when unlimited."""
    quota = int(quota_text.strip())
    if quota == -1:
        return None
    period = int(period_text.strip())
    if quota <= 0 or period <= 0:
        raise ValueError("quota and period must be positive")
    return float(quota) / period


def parse_memory_max(text):
    """Parse cgroup v2 memory.max ('max' or bytes), None when unlimited."""
    text = text.strip()
    if text == "max":
        return None
    value = int(text)
    if value < 0:
        raise ValueError("negative memory limit")
    return value


def parse_v1_memory_limit(text):
    """Parse a cgroup v1 memory limit in bytes, None for the huge 'unlimited' values."""
    value = int(text.strip())
    if value == -1 or value >= V1_UNLIMITED_BYTES:
        return None
    if value < 0:
        raise ValueError("negative memory limit")
    return value


def parse_hierarchical_memory_limit(text):
    """Return hierarchical_memory_limit from a v1 memory.stat (None when absent or unlimited)."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "hierarchical_memory_limit":
            return parse_v1_memory_limit(fields[1])
    return None


def tightest(values):
    """Smallest of the values that are not None, or None."""
    values = [v for v in values if v is not None]
    return min(values) if values else None


class Inspector:
    """Reads the files below a root and collects warnings about bad content."""

    def __init__(self, root="/"):
        self.root = root or "/"
        self.warnings = []

    def path(self, path):
        return rebase(self.root, path)

    def parse(self, path, parser, *extra):
        """Run parser on the content of path (and of the extra paths). None if unreadable or bad."""
        texts = []
        for p in (path, *extra):
            text = read_text(p)
            if text is None:
                return None
            texts.append(text)
        try:
            return parser(*texts)
        except (ValueError, IndexError, TypeError) as e:
            self.warnings.append("Ignoring unexpected content of %s: %s" % (path, e))
            return None

    def controller_mount(self, mounts, controller, v2_path, v1_paths):
        """Find (version, mount, process path) for a controller, preferring cgroup v2."""
        if v2_path is not None:
            for mount in mounts:
                if mount["version"] != 2:
                    continue
                enabled = read_text(posixpath.join(rebase(self.root, mount["mountpoint"]), "cgroup.controllers"))
                if enabled is not None and controller in enabled.split():
                    return 2, mount, v2_path
        proc_path = v1_paths.get(controller)
        if proc_path is not None:
            candidates = [m for m in mounts if m["version"] == 1 and controller in m["options"]]
            mount = select_mount(candidates, proc_path)
            if mount is not None:
                return 1, mount, proc_path
        return None, None, None

    def cpu_quota(self, version, dirs):
        values = []
        for d in dirs:
            if version == 2:
                values.append(self.parse(posixpath.join(d, "cpu.max"), parse_cpu_max))
            else:
                values.append(
                    self.parse(posixpath.join(d, "cpu.cfs_quota_us"), parse_cfs, posixpath.join(d, "cpu.cfs_period_us"))
                )
        return tightest(values)

    def memory_limit(self, version, dirs):
        values = []
        for d in dirs:
            if version == 2:
                values.append(self.parse(posixpath.join(d, "memory.max"), parse_memory_max))
            else:
                values.append(self.parse(posixpath.join(d, "memory.limit_in_bytes"), parse_v1_memory_limit))
                values.append(self.parse(posixpath.join(d, "memory.stat"), parse_hierarchical_memory_limit))
        return tightest(values)

    def online_cpus(self):
        count = self.parse(self.path("/sys/devices/system/cpu/online"), count_cpu_list)
        if count is None and self.root.rstrip("/") == "":
            count = os.cpu_count()
        return count

    def host_cpus(self):
        count = self.parse(self.path("/proc/self/status"), parse_status_cpus)
        if count:
            return count, True
        return os.cpu_count() or 1, False

    def host_memory(self):
        total = self.parse(self.path("/proc/meminfo"), parse_meminfo_total)
        if total is None:
            try:
                total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            except (AttributeError, ValueError, OSError):
                total = None
            if total is not None and total <= 0:
                total = None
        return total

    def gather(self):
        mounts = parse_mountinfo(read_text(self.path("/proc/self/mountinfo")) or "")
        v2_path, v1_paths = parse_proc_cgroup(read_text(self.path("/proc/self/cgroup")) or "")

        versions = []

        # CPU
        host_cpus, from_affinity = self.host_cpus()
        version, mount, proc_path = self.controller_mount(mounts, "cpu", v2_path, v1_paths)
        quota = None
        if version is not None:
            versions.append(version)
            quota = self.cpu_quota(version, cgroup_dirs(self.root, mount, proc_path))
        if quota is not None and quota < host_cpus:
            cpus = quota
            cpu_source = "cgroup_v%d" % version
        else:
            cpus = float(host_cpus)
            online = self.online_cpus() if from_affinity else None
            cpu_source = "cpuset" if online is not None and host_cpus < online else "host"

        # Memory
        host_memory = self.host_memory()
        version, mount, proc_path = self.controller_mount(mounts, "memory", v2_path, v1_paths)
        limit = None
        if version is not None:
            versions.append(version)
            limit = self.memory_limit(version, cgroup_dirs(self.root, mount, proc_path))
        if limit is not None and host_memory is not None and limit >= host_memory:
            limit = None
        if limit is not None:
            memory = limit
            memory_source = "cgroup_v%d" % version
        else:
            memory = host_memory
            memory_source = "host"

        return {
            "cpus": max(0.01, round(cpus, 2)),
            "cpu_quota": round(quota, 4) if quota is not None else None,
            "cpu_source": cpu_source,
            "host_cpus": host_cpus,
            "memory_mb": memory // MIB if memory is not None else None,
            "memory_limit_mb": limit // MIB if limit is not None else None,
            "memory_source": memory_source,
            "host_memory_mb": host_memory // MIB if host_memory is not None else None,
            "cgroup_version": max(versions) if versions else None,
        }


def gather_resources(root="/"):
    """Return (facts, warnings) for the system below root."""
    inspector = Inspector(root)
    facts = inspector.gather()
    return facts, inspector.warnings


# --- An app's processes: CPU time and memory ----------------------------------------------
# For flaskops.stack.measure. Every function takes the root the paths are under.

#: glibc's malloc arenas of threads other than the main one are mmapped in 64 MiB heaps
#: (HEAP_MAX_SIZE on 64-bit), aligned to their size: the part in use is read-write, the rest a
#: PROT_NONE reservation right after it.
THREAD_ARENA_BYTES = 64 * MIB
#: A thread stack (pthread) is a read-write mapping right after its guard, a PROT_NONE mapping of a
#: page or a few; a larger PROT_NONE mapping before a read-write one is something else.
STACK_GUARD_MAX_BYTES = 64 * 1024


def unit_cgroup_dir(root, mount, control_group):
    """The directory of a systemd unit's cgroup (``ControlGroup=``, such as ``/system.slice/shop.service``)
    in a mounted hierarchy, under root; None when the unit's cgroup is not below the mount's root."""
    rel = relative_cgroup_path(mount["root"], control_group)
    if rel is None:
        return None
    base = rebase(root, mount["mountpoint"])
    return posixpath.join(base, rel) if rel else base


def unit_dir_holding(root, mount, control_group, pid):
    """The directory of a unit's cgroup in a mounted hierarchy (as :func:`unit_cgroup_dir`) when its
    cgroup.procs lists ``pid``, the unit's main process; else None. On a hybrid host a unit's cgroup
    exists in several hierarchies, and only those where systemd placed its processes hold them."""
    directory = unit_cgroup_dir(root, mount, control_group) if control_group else None
    text = read_text(posixpath.join(directory, "cgroup.procs")) if directory else None
    try:
        return directory if text is not None and pid in parse_cgroup_procs(text) else None
    except ValueError:
        return None


def parse_cgroup_procs(text):
    """The PIDs listed in a cgroup.procs file. Raises ValueError on bad content."""
    return {int(line) for line in text.split()}


def parse_cpu_stat_usage(text):
    """CPU time in nanoseconds from a cgroup v2 cpu.stat (``usage_usec``); None when the key is absent."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == "usage_usec":
            return int(fields[1]) * 1000
    return None


def parse_cpuacct_usage(text):
    """CPU time in nanoseconds from a cgroup v1 cpuacct.usage."""
    value = int(text.strip())
    if value < 0:
        raise ValueError("negative CPU time")
    return value


def parse_proc_stat_times(text):
    """(utime + stime, cutime + cstime) in clock ticks from /proc/<pid>/stat: the process's own CPU
    time (all its threads) and that of the children it has waited for."""
    # The command name may hold spaces and parentheses: fields start after the last ')'.
    fields = text.rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return utime + stime, cutime + cstime


def parse_anonymous_kb(text):
    """The anonymous memory in kB of /proc/<pid>/smaps_rollup (or smaps: the sum over its mappings).
    None when there is no ``Anonymous:`` line."""
    total = None
    for line in text.splitlines():
        if line.startswith("Anonymous:"):
            total = (total or 0) + int(line.split()[1])
    return total


def _smaps_mappings(lines):
    """The mappings of /proc/<pid>/smaps: (start, end, perms, anonymous, anonymous kB) each, in order."""
    mappings = []
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":") and "-" in fields[0] and len(fields) >= 5:
            start, end = fields[0].split("-", 1)
            # No path (field 6): an anonymous mapping; [heap], [stack] and files are not.
            mappings.append([int(start, 16), int(end, 16), fields[1], len(fields) == 5, 0])
        elif fields[0] == "Anonymous:" and mappings:
            mappings[-1][4] = int(fields[1])
    return mappings


def thread_memory_kb(lines):
    """The anonymous memory in kB of a process's thread stacks and its threads' malloc arenas, from the
    lines of /proc/<pid>/smaps.

    A thread stack is an anonymous read-write mapping right after its guard (an anonymous PROT_NONE
    mapping of at most STACK_GUARD_MAX_BYTES); a thread's malloc arena is an anonymous read-write
    mapping aligned to THREAD_ARENA_BYTES, followed by the PROT_NONE rest of it (if any). The main thread's
    stack ([stack]) and arena ([heap]) are not counted. Raises ValueError on bad content.
    """
    mappings = _smaps_mappings(lines)
    total = 0
    for index, (start, end, perms, anonymous, anon_kb) in enumerate(mappings):
        if not anonymous or not perms.startswith("rw"):
            continue
        before = mappings[index - 1] if index else None
        after = mappings[index + 1] if index + 1 < len(mappings) else None
        stack = (
            before is not None
            and before[3]
            and before[2].startswith("---")
            and before[1] == start
            and before[1] - before[0] <= STACK_GUARD_MAX_BYTES
        )
        # An arena in use to its end has no PROT_NONE rest.
        rest = after is not None and after[3] and after[2].startswith("---") and after[0] == end
        arena_end = after[1] if rest else end
        arena = start % THREAD_ARENA_BYTES == 0 and arena_end - start == THREAD_ARENA_BYTES
        if stack or arena:
            total += anon_kb
    return total
