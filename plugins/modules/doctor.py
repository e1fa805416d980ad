#!/usr/bin/python

# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: doctor
short_description: Run the operator's checklist on one gunicorn app of the stack and report findings with their fixes
version_added: 1.1.0
description:
  - Reads, on the app's host, what an operator reads by hand when an app misbehaves, and reports findings - each
    with a stable id, a severity (V(error) or V(warning)), the evidence (the log lines counted, the numbers) and
    the fix in one sentence. It only reads; it changes nothing on the host, and runs the same in check mode.
  - B(Units) - the service's and the socket unit's states and the service's C(NRestarts) (C(systemctl show)).
  - B(Socket) - the socket file's mode, owner and group against O(socket_mode), O(socket_owner) and
    O(socket_group); a connection to it as O(nginx_user) (made only while the service runs - a connection to a
    stopped socket-activated service would start it); its accept queue against its backlog (C(ss -xl), the
    smallest of several samples over a second).
  - B(Logs), over the last O(window) seconds - nginx's error log of the app grouped by cause (permission denied,
    refused, missing socket, full queue, reset, premature close, upstream timed out, no live upstreams); the share
    of 5xx answers in its access log; the service's journal - C(WORKER TIMEOUT), workers killed by a signal or
    exited with an error, boot errors, OOM kills, Flask's C(Exception on) lines.
  - B(Memory) of the service's cgroup now (anonymous memory - C(anon) of cgroup v2's C(memory.stat), C(total_rss)
    of cgroup v1's, else the processes' C(Anonymous) in C(/proc)) against O(memory); OOM kills counted by the
    cgroup (C(oom_kill) of C(memory.events) or C(memory.oom_control)).
  - B(Drift) - the settings the running master's C(gunicorn.conf.py) assigns against O(expected) (the plan of
    today's facts), the unit's C(MemoryHigh) and C(MemoryMax) against O(memory), the release the master runs
    against C(current) (the last deploy), the master's workers against its configuration.
  - B(Disk) where the releases (O(home)) and the persistent data (O(state_dir)) live; B(certificates) of
    O(certificates) expiring within O(certificate_days) days (C(openssl x509)); the host's drain flag and the
    load balancers' view of it, O(lb).
  - A finding that another explains (nginx's C(111 Connection refused) lines when the service is down, 5xx
    answers when workers were killed) is not reported on its own - its evidence joins the cause's, and its id is
    listed in the cause's C(symptoms). The README lists every id with the checklist line it automates.
options:
  app:
    description: The app's name (as in C(flask_stack_apps)); it names the defaults of the other options.
    type: str
    required: true
  service:
    description: The app's systemd service. Default C(<app>.service).
    type: str
  socket_unit:
    description: The socket unit that owns the app's listening socket. Default C(<app>.socket).
    type: str
  socket:
    description: The app's unix socket.
    type: path
    required: true
  socket_mode:
    description: The socket's planned mode (C(SocketMode)), four octal digits.
    type: str
    default: "0660"
  socket_owner:
    description: The socket's planned owner (C(SocketUser)).
    type: str
    default: root
  socket_group:
    description: The socket's planned group (C(SocketGroup)), nginx's.
    type: str
    default: www-data
  nginx_user:
    description: The user nginx's workers run as; the connection check runs as this user.
    type: str
    default: www-data
  home:
    description: The app's home (C(releases/), C(current)).
    type: path
    required: true
  state_dir:
    description: The app's persistent data directory.
    type: path
  error_log:
    description: nginx's error log of the app. Default C(/var/log/nginx/flaskops-<app>.error.log).
    type: path
  access_log:
    description: nginx's access log of the app (the stack's C(flaskops) format). Default
      C(/var/log/nginx/flaskops-<app>.access.log).
    type: path
  expected:
    description:
      - The gunicorn settings the running configuration should assign (the plan of today's facts, with the app's
        own settings over it) - any of C(worker_class), C(workers), C(threads), C(worker_connections),
        C(timeout), C(graceful_timeout), C(keepalive), C(backlog), C(max_requests), C(max_requests_jitter).
    type: dict
    default: {}
  memory:
    description:
      - The plan's memory - C(memory_mb) (steady, MiB), C(MemoryHigh) and C(MemoryMax) (the unit's limits, as
        systemd takes them - bytes, or with a K, M, G or T suffix).
    type: dict
    default: {}
  facts:
    description: What the plan was made from, in words (as the evidence of a C(plan-drift) finding says it).
    type: str
    default: ""
  certificates:
    description: TLS certificates (PEM files) to check.
    type: list
    elements: path
    default: []
  certificate_days:
    description: A certificate that expires within this many days is a finding (an error within 7).
    type: int
    default: 21
  drain_flag:
    description: The nginx role's drain flag; when it exists the host is drained.
    type: path
  lb:
    description:
      - The load balancers' view of this host - one item per backend with C(lb), C(backend), C(status) and
        C(check), as M(flaskops.stack.haproxy_server) reads them.
    type: list
    elements: dict
    default: []
  window:
    description: Seconds back from now that the logs and the journal are read for (unless O(since) is given).
    type: int
    default: 3600
  since:
    description:
      - The logs and the journal are read from this time on, in seconds since the epoch (for example the time a
        deploy started, C(date +%s)), instead of O(window) seconds back.
    type: float
  samples:
    description: How many times the accept queue and the workers are sampled, over a second.
    type: int
    default: 5
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only reads; check mode changes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Runs as root to read the journal, the cgroup and the socket, and to connect as O(nginx_user); unprivileged, the
    connection check is skipped (RV(skipped)).
author:
  - flaskops.stack contributors (@flaskops)
"""

EXAMPLES = r"""
- name: Check the shop app, the last 2 hours of its logs
  flaskops.stack.doctor:
    app: shop
    socket: /run/flaskops/shop.sock
    home: /srv/shop
    state_dir: /var/lib/flaskops/shop
    expected: {workers: 5, threads: 4, timeout: 30}
    memory: {memory_mb: 420, MemoryHigh: 900M, MemoryMax: 1000M}
    window: 7200
  register: shop_doctor
"""

RETURN = r"""
findings:
  description:
    - The findings, each with C(app), C(id), C(severity) (V(error) or V(warning)), C(evidence), C(fix) and
      C(symptoms) (the ids of the findings it explains, folded into it). Empty when all is well.
  returned: always
  type: list
  elements: dict
  sample:
    - app: shop
      id: socket-permissions
      severity: error
      evidence: >-
        /run/flaskops/shop.sock is mode 0600, root:www-data (planned 0660, root:www-data); a connection as
        www-data: Permission denied; nginx: 12 x nginx could not open the app's socket (13: Permission denied)
      fix: "Give it back the unit's mode and group: chown root:www-data /run/flaskops/shop.sock && chmod 0660 ..."
      symptoms: [upstream-permission-denied]
skipped:
  description: The checks that could not run here, with why.
  returned: always
  type: list
  elements: str
observed:
  description: What was read (unit states, socket, queue samples, memory, running settings, disks, certificates).
  returned: always
  type: dict
"""

import calendar
import errno
import grp
import json
import os
import posixpath
import pwd
import re
import stat
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flaskops.stack.plugins.module_utils import (
    access_log,
    cgroups,
    doctor,
    gunicorn_conf,
    readiness,
)

#: Where the paths read are; the tests point it at a fixture tree.
ROOT = "/"
MIB = 1024 * 1024
#: Room a deploy needs besides a copy of the live build (the gunicorn role's minimum for a build, MiB).
DEPLOY_ROOM_MB = 64
#: Seconds a connection to the socket may take.
CONNECT_TIMEOUT_S = 2.0
#: Bytes read at a time from the end of a log.
_CHUNK = 64 * 1024


def _path(path):
    return cgroups.rebase(ROOT, path)


def lines_since(path, since, timestamp):
    """The lines of a log file written at ``since`` or later, read backwards from its end until a line is older.
    ``timestamp(line)`` gives a line's epoch (None for a line without one: it goes with the lines after it)."""
    try:
        handle = open(_path(path), "rb")
    except OSError:
        return None
    with handle:
        handle.seek(0, os.SEEK_END)
        position, tail, kept = handle.tell(), b"", []
        while position > 0:
            size = min(_CHUNK, position)
            position -= size
            handle.seek(position)
            data = handle.read(size) + tail
            lines = data.split(b"\n")
            tail = lines.pop(0) if position > 0 else b""
            for raw in reversed(lines):
                line = raw.decode("utf-8", errors="replace")
                if not line:
                    continue
                when = timestamp(line)
                if when is not None and when < since:
                    return list(reversed(kept))
                kept.append(line)
    return list(reversed(kept))


def access_tally(lines):
    """Requests, 5xx answers and the paths of the 5xx in lines of the ``flaskops`` access log format."""
    requests, errors, paths = 0, 0, {}
    for line in lines:
        parsed = access_log.parse(line)
        if parsed is None:
            continue
        requests += 1
        if parsed[1] >= 500:
            errors += 1
            request = parsed[0].split()
            key = "%s %s" % (request[0], request[1].split("?")[0]) if len(request) >= 2 else "?"
            paths[key] = paths.get(key, 0) + 1
    return {"requests": requests, "errors": errors, "paths": paths}


class Host:
    """What the host shows of one app."""

    def __init__(self, module):
        self.module = module
        self.skipped = []

    def systemctl_show(self, unit, properties):
        systemctl = self.module.get_bin_path("systemctl", required=True)
        shown, error = readiness.unit_properties(self.module.run_command, systemctl, unit, properties)
        if error is not None:
            self.skipped.append("systemctl show %s: %s" % (unit, error))
        return shown

    def socket_file(self, path):
        try:
            info = os.lstat(_path(path))
        except OSError:
            return None
        if not stat.S_ISSOCK(info.st_mode):
            return {"mode": "not a socket", "owner": "-", "group": "-"}
        return {"mode": "%04o" % stat.S_IMODE(info.st_mode), "owner": _user(info.st_uid), "group": _group(info.st_gid)}

    def connect_as(self, user, path):
        """None when the connection as ``user`` succeeded, else the reason (strerror)."""
        if os.geteuid() != 0:
            self.skipped.append("the connection as %s: not root" % user)
            return None
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            self.skipped.append("the connection as %s: no such user" % user)
            return None
        pid = os.fork()
        if pid == 0:  # the child: become the user, connect, exit with the errno
            code = 0
            try:
                os.setgroups(os.getgrouplist(user, entry.pw_gid))
                os.setgid(entry.pw_gid)
                os.setuid(entry.pw_uid)
                code = readiness.connect_errno(_path(path), CONNECT_TIMEOUT_S)
            except OSError as error:
                code = error.errno or 1
            finally:
                os._exit(min(code, 255))
        status = os.waitpid(pid, 0)[1]
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else errno.EINTR
        return os.strerror(code) if code else ""

    def accept_queue(self, path, samples):
        """(Recv-Q samples, backlog) of the listening socket at ``path`` from ``ss -xlnH``; None without ss."""
        ss = self.module.get_bin_path("ss")
        if ss is None:
            self.skipped.append("the accept queue: ss (iproute2) is not installed")
            return None
        seen, backlog, started = [], 0, time.monotonic()
        for index in range(samples):
            rc, out = self.module.run_command([ss, "-xlnH"])[:2]
            for line in out.splitlines() if rc == 0 else []:
                fields = line.split()
                if len(fields) >= 5 and fields[4] == path and fields[1] == "LISTEN":
                    seen.append(int(fields[2]))
                    backlog = int(fields[3])
                    break
            if index < samples - 1:
                time.sleep(1.0 / max(1, samples - 1))
        if not seen:
            return None
        return {"samples": seen, "backlog": backlog, "seconds": round(time.monotonic() - started, 2)}

    def workers(self, master, samples):
        proc = _path("/proc")
        counts = []
        for index in range(samples):
            counts.append(len(readiness.children(master, proc)))
            if index < samples - 1:
                time.sleep(0.05)
        return counts

    def journal(self, unit, since):
        journalctl = self.module.get_bin_path("journalctl")
        if journalctl is None:
            self.skipped.append("the journal: journalctl is not installed")
            return []
        rc, out, err = self.module.run_command(
            [journalctl, "-u", unit, "--since", "@%d" % int(since), "-o", "json", "--output-fields=MESSAGE", "-q"]
        )
        if rc != 0:
            self.skipped.append("the journal of %s: %s" % (unit, (err or out).strip()))
            return []
        messages = []
        for line in out.splitlines():
            try:
                message = json.loads(line).get("MESSAGE")
            except ValueError:
                continue
            if isinstance(message, list):  # journald gives bytes as a list of numbers
                message = bytes(message).decode("utf-8", errors="replace")
            if isinstance(message, str):
                messages.append(message)
        return messages

    def cgroup_memory(self, control_group, master):
        """(anonymous MiB, source, OOM kills) of the unit's cgroup, else of its processes in /proc."""
        mounts = cgroups.parse_mountinfo(cgroups.read_text(_path("/proc/self/mountinfo")) or "")
        for mount in mounts:
            if mount["version"] == 1 and "memory" not in mount["options"]:
                continue
            directory = cgroups.unit_dir_holding(ROOT, mount, control_group, master)
            if directory is None:
                continue
            key, events = ("anon", "memory.events") if mount["version"] == 2 else ("total_rss", "memory.oom_control")
            stats = _keyed(cgroups.read_text(posixpath.join(directory, "memory.stat")))
            if key not in stats:
                continue
            oom = _keyed(cgroups.read_text(posixpath.join(directory, events))).get("oom_kill")
            return round(stats[key] / float(MIB)), "cgroup v%d memory.stat %s" % (mount["version"], key), oom
        total = 0
        proc = _path("/proc")
        for pid in [master, *readiness.children(master, proc)]:
            text = cgroups.read_text(posixpath.join(proc, str(pid), "smaps_rollup"))
            total += (cgroups.parse_anonymous_kb(text) or 0) if text else 0
        return round(total / 1024.0), "/proc smaps_rollup Anonymous", None

    def disk(self, path, what, need_mb):
        try:
            info = os.statvfs(_path(path))
        except OSError:
            return None
        size = info.f_blocks * info.f_frsize / float(MIB)
        free = info.f_bavail * info.f_frsize / float(MIB)
        inodes = 1.0 - float(info.f_favail) / info.f_files if info.f_files else 0.0
        return {
            "path": path,
            "what": what,
            "size_mb": int(size),
            "free_mb": int(free),
            "inodes_used_share": round(inodes, 3),
            "need_mb": need_mb,
        }

    def certificate(self, path, now):
        openssl = self.module.get_bin_path("openssl")
        if openssl is None:
            self.skipped.append("certificates: openssl is not installed")
            return None
        rc, out, err = self.module.run_command([openssl, "x509", "-noout", "-enddate", "-in", _path(path)])
        if rc != 0:
            said = (err or out).strip()
            return {"path": path, "error": said.splitlines()[0] if said else "openssl x509 failed, rc %d" % rc}
        text = out.strip().partition("=")[2]
        try:
            expires = calendar.timegm(time.strptime(text.replace(" GMT", ""), "%b %d %H:%M:%S %Y"))
        except ValueError:
            return {"path": path, "error": "cannot read its end date: %r" % out.strip()}
        return {"path": path, "not_after": text, "days": round((expires - now) / 86400.0, 1)}


def _user(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _keyed(text):
    values = {}
    for line in (text or "").splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].isdigit():
            values[fields[0]] = int(fields[1])
    return values


def _mib(value):
    """A systemd memory property (bytes, or ``infinity``) in MiB; None when unlimited or unset."""
    return int(value) // MIB if value and value.isdigit() else None


def systemd_size_mib(value):
    """A systemd size (bytes, or a number with K, M, G or T: powers of 1024) in MiB; None for infinity."""
    text = str(value).strip()
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([KMGT]?)", text)
    if match is None:
        return None
    factor = {"": 1.0 / MIB, "K": 1.0 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[match.group(2)]
    return int(float(match.group(1)) * factor)


def build_size_mb(home):
    """The size of the live release's build (its virtualenv's parent), MiB; None when there is none."""
    venv = os.path.realpath(_path(posixpath.join(home, "current", "venv")))
    build = posixpath.dirname(venv)
    if not os.path.isdir(venv):
        return None
    total = 0
    for directory, _subdirs, files in os.walk(build):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                continue
    return int(total / float(MIB)) + 1


def observe(module, host, params, now):
    """Everything the rules need, from the host."""
    since = params["since"] if params["since"] is not None else now - params["window"]
    service = host.systemctl_show(
        params["service"],
        ["ActiveState", "SubState", "Result", "NRestarts", "MainPID", "ControlGroup", "MemoryHigh", "MemoryMax"],
    )
    socket_unit = host.systemctl_show(params["socket_unit"], ["ActiveState", "SubState"])
    master = int(service.get("MainPID") or 0)
    running = service.get("ActiveState") == "active" and master > 0
    observed = {
        "service": service,
        "socket_unit": socket_unit,
        "socket_file": host.socket_file(params["socket"]),
        # Only to a running master: a connection would start a stopped socket-activated service.
        "connect": host.connect_as(params["nginx_user"], params["socket"]) if running else None,
        "accept_queue": host.accept_queue(params["socket"], params["samples"]),
        "journal": host.journal(params["service"], since),
        "nginx_errors": lines_since(params["error_log"], since, doctor.nginx_error_time) or [],
        "unit_memory": {name: _mib(service.get(name)) for name in doctor.DRIFT_UNIT},
        "drain_flag": params["drain_flag"],
        "drained": bool(params["drain_flag"]) and os.path.exists(_path(params["drain_flag"])),
        "lb": params["lb"],
    }
    access = lines_since(params["access_log"], since, access_log.timestamp)
    observed["access"] = access_tally(access) if access is not None else None
    if access is None:
        host.skipped.append("the access log %s: cannot read it" % params["access_log"])
    if running:
        memory, source, oom = host.cgroup_memory(service.get("ControlGroup", ""), master)
        settings, config = gunicorn_conf.live_settings(ROOT, master, doctor.DRIFT_SETTINGS)
        cwd = readiness.working_directory(master, _path("/proc"))
        observed.update(
            memory_mb=memory,
            memory_source=source,
            oom_kills=oom,
            running_settings=settings,
            running_config=config,
            running_workers=(settings or {}).get("workers"),
            workers=host.workers(master, params["samples"]),
            live_release=posixpath.basename(cwd) if cwd else None,
        )
        if settings is None:
            host.skipped.append("drift: cannot read the settings of the master's gunicorn.conf.py")
    current = os.path.realpath(_path(posixpath.join(params["home"], "current")))
    observed["current_release"] = posixpath.basename(current) if os.path.isdir(current) else None
    build = build_size_mb(params["home"])
    need = build + DEPLOY_ROOM_MB if build is not None else DEPLOY_ROOM_MB
    disks, seen = [], set()
    for path, what in ((params["home"], "releases"), (params["state_dir"], "persistent data")):
        if not path:
            continue
        disk = host.disk(path, what, need)
        if disk is None:
            continue
        key = os.stat(_path(path)).st_dev
        if key not in seen:
            seen.add(key)
            disks.append(disk)
    observed["disks"] = disks
    observed["certificates"] = [c for c in (host.certificate(p, now) for p in params["certificates"]) if c]
    return observed


def _plan(params):
    app = params["app"]
    return {
        "name": app,
        "service": params["service"],
        "socket_unit": params["socket_unit"],
        "socket": params["socket"],
        "socket_mode": params["socket_mode"],
        "socket_owner": params["socket_owner"],
        "socket_group": params["socket_group"],
        "nginx_user": params["nginx_user"],
        "expected": params["expected"],
        "memory": {
            name: systemd_size_mib(value) if name in doctor.DRIFT_UNIT else value
            for name, value in params["memory"].items()
        },
        "facts": params["facts"],
    }


def _check_params(module, params):
    app = params["app"]
    if not re.fullmatch(r"[0-7]{4}", params["socket_mode"]):
        module.fail_json(
            msg="app %s: socket_mode %r must be four octal digits, such as 0660" % (app, params["socket_mode"])
        )
    unknown = sorted(set(params["expected"]) - set(doctor.DRIFT_SETTINGS))
    if unknown:
        module.fail_json(
            msg="app %s: expected: unknown settings %s (known: %s)"
            % (app, ", ".join(unknown), ", ".join(doctor.DRIFT_SETTINGS))
        )
    for name in ("window", "samples"):
        if params[name] < 1:
            module.fail_json(msg="app %s: %s must be at least 1, not %d" % (app, name, params[name]))


def main():
    module = AnsibleModule(
        argument_spec={
            "app": {"type": "str", "required": True},
            "service": {"type": "str"},
            "socket_unit": {"type": "str"},
            "socket": {"type": "path", "required": True},
            "socket_mode": {"type": "str", "default": "0660"},
            "socket_owner": {"type": "str", "default": "root"},
            "socket_group": {"type": "str", "default": "www-data"},
            "nginx_user": {"type": "str", "default": "www-data"},
            "home": {"type": "path", "required": True},
            "state_dir": {"type": "path"},
            "error_log": {"type": "path"},
            "access_log": {"type": "path"},
            "expected": {"type": "dict", "default": {}},
            "memory": {"type": "dict", "default": {}},
            "facts": {"type": "str", "default": ""},
            "certificates": {"type": "list", "elements": "path", "default": []},
            "certificate_days": {"type": "int", "default": 21},
            "drain_flag": {"type": "path"},
            "lb": {"type": "list", "elements": "dict", "default": []},
            "window": {"type": "int", "default": 3600},
            "since": {"type": "float"},
            "samples": {"type": "int", "default": 5},
        },
        supports_check_mode=True,
    )
    params = dict(module.params)
    app = params["app"]
    params["service"] = params["service"] or "%s.service" % app
    params["socket_unit"] = params["socket_unit"] or "%s.socket" % app
    params["error_log"] = params["error_log"] or "/var/log/nginx/flaskops-%s.error.log" % app
    params["access_log"] = params["access_log"] or "/var/log/nginx/flaskops-%s.access.log" % app
    _check_params(module, params)
    host = Host(module)
    observed = observe(module, host, params, time.time())
    findings = doctor.diagnose(_plan(params), observed, params["certificate_days"])
    shown = {key: value for key, value in observed.items() if key not in ("journal", "nginx_errors")}
    module.exit_json(changed=False, findings=findings, skipped=host.skipped, observed=shown)


if __name__ == "__main__":
    main()
