#!/usr/bin/python

# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: measure
short_description: Measure a running gunicorn app's workload from its live traffic
version_added: 1.1.0
description:
  - Watches a gunicorn app run by a systemd service for O(window) seconds of real traffic and derives the workload
    inputs of P(flaskops.stack.gunicorn_tuning#filter) - C(cpu_ms), C(wait_ms), C(worker_rss_mb) and
    C(thread_rss_mb) - with the number of requests they rest on. It only reads; it changes nothing on the host.
  - B(Requests) are the lines nginx appends to the app's access log during the window (the stack's C(flaskops)
    log format, which ends in C(rt=$request_time urt=$upstream_response_time)). Counted are the requests the app
    answered - an upstream time, a status below 500 - except C(499) (the client left first); answers with 5xx are
    counted apart (RV(errors)). The stack's nginx logs neither static files nor its health location for load
    balancers.
  - B(CPU time) is the unit's, read at the start and the end of the window from, in this order - the C(usage_usec)
    of C(cpu.stat) in the unit's cgroup v2 (present in every cgroup v2, on hybrid hosts too, whether or not the CPU
    controller is on); the C(cpuacct.usage) of its cgroup v1 (only there when the unit has its own cgroup in the
    C(cpuacct) hierarchy, for example with C(CPUAccounting=yes)); else C(/proc) - the master's C(utime), C(stime),
    C(cutime) and C(cstime) (its reaped workers) and those of its live workers, in clock ticks. A cgroup is used
    only when it holds the unit's main process.
  - B(Estimates) over N requests in a window of W seconds on C effective CPUs (as M(flaskops.stack.resource_facts)
    finds them) - RV(cpu_ms) = CPU time / N; RV(wait_ms) = the mean upstream time - RV(cpu_ms), at least 0;
    RV(utilization) = CPU time / (W x C); RV(in_flight) = the upstream times' sum / W (Little's law).
  - B(Memory), at the end of the window, of the master's children (the workers) - RV(worker_rss_mb) is the
    median of their anonymous memory (C(Anonymous) of C(/proc/<pid>/smaps_rollup)) without what their threads
    hold; RV(thread_rss_mb) the median, over the workers that run threads besides the main one, of the
    anonymous memory of those threads' stacks and malloc arenas (read from C(/proc/<pid>/smaps)) per thread.
  - B(Refuses) (fails, naming the app, the requests seen and the minimum) to estimate from fewer than
    O(min_requests) requests; when the unit restarted, or its master loaded another release, during the window;
    when the CPU time read from C(/proc) is too small for its clock ticks to measure it to 2 %; and, unless
    O(on_saturation=warn), when the app was too busy - a CPU utilisation above O(max_utilization), or more
    requests in flight than O(max_in_flight) of its capacity - because the time requests then spend queueing for
    a CPU, a thread or a worker would count as RV(wait_ms).
options:
  app:
    description: The app's name (as in C(flask_stack_apps)); it names the defaults of O(unit) and O(access_log).
    type: str
    required: true
  unit:
    description: The app's systemd service. Default C(<app>.service).
    type: str
  access_log:
    description:
      - nginx's access log of the app, in the stack's C(flaskops) log format. Default
        C(/var/log/nginx/flaskops-<app>.access.log), where the P(flaskops.stack.nginx#role) role logs each site.
    type: path
  window:
    description: Seconds to watch the traffic for.
    type: int
    default: 60
  min_requests:
    description: The fewest requests an estimate may rest on; fewer fail the module.
    type: int
    default: 500
  max_utilization:
    description:
      - The highest share of the effective CPUs the app may use during the window (0 to 1).
      - Above it requests queue for a CPU long enough to inflate RV(wait_ms) - on one CPU by about
        U / (2 x (1 - U)) x RV(cpu_ms) at utilisation U, as much as RV(cpu_ms) at 0.67 - and a CPU-bound app
        would look as if it waited, and get threads it cannot use.
    type: float
    default: 0.5
  max_in_flight:
    description:
      - The highest RV(in_flight) as a share of RV(capacity) (0 to 1). Near the capacity, requests wait in the
        listen backlog for a free worker or thread, and that wait counts as RV(wait_ms).
    type: float
    default: 0.75
  capacity:
    description:
      - The requests the app holds at once. Default - read from the running configuration, the C(gunicorn.conf.py)
        in the master's working directory (the release it loaded last, for the stack's apps) - C(workers) x
        C(threads), or C(workers) x C(worker_connections) for C(gevent) and C(eventlet) workers (gunicorn's defaults
        for what it does not set). When it cannot be read, the in-flight check is skipped with a warning.
    type: int
  on_saturation:
    description: What a too busy app does - V(fail) the module, or V(warn) and return the estimate (RV(saturated)).
    type: str
    choices: [fail, warn]
    default: fail
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only reads, so it measures in check mode too; it never reports a change.
  diff_mode:
    support: none
  platform:
    platforms: linux
notes:
  - Runs as root (C(become)) - the workers' memory maps and nginx's logs are not readable otherwise.
  - The module waits O(window) seconds; give the task a timeout longer than that.
  - RV(cpu_ms) charges every CPU second of the unit to the requests counted - the app's own background threads,
    workers starting after a recycle (C(max_requests)), health checks through nginx's unlogged load-balancer
    location - so it is an upper bound, close when the traffic is large beside them. A request's CPU time falls
    in the window it runs in while it is counted in the window it ends in; over a window of many requests the
    difference is small.
  - RV(wait_ms) is measured by nginx, from the connection to the app's socket to the answer - it includes the
    time a request waits in the listen backlog and for its worker's GIL, which is why a busy app is refused.
  - RV(thread_rss_mb) is a lower bound - the stacks and malloc arenas of the threads alive (gthread workers start
    their threads as requests need them) - and misses what a request allocates through Python's own allocator,
    which is shared between threads. glibc gives at most 8 arenas per CPU; threads beyond that share them.
    Workers that run no thread besides the main one (C(sync)) give none (V(null)).
  - RV(worker_rss_mb) counts memory a worker still shares copy-on-write with the master (all the more with
    C(preload_app)) in every worker - it errs on the side of more memory.
seealso:
  - plugin: flaskops.stack.gunicorn_tuning
    plugin_type: filter
    description: The sizing model the measured workload is for.
  - module: flaskops.stack.resource_facts
  - name: The measure playbook
    description: Runs this module for each app of C(flask_stack_apps), and writes what the next C(site.yml) plans with.
    link: https://github.com/flaskops/flaskops.stack#measuring-an-apps-workload
author:
  - flaskops.stack contributors (@flaskops)
"""

EXAMPLES = r"""
- name: Measure the shop under its traffic for two minutes
  flaskops.stack.measure:
    app: shop
    window: 120
  become: true
  register: shop_workload

- name: Plan the shop from what was measured
  ansible.builtin.debug:
    msg: "{{ ansible_facts | flaskops.stack.gunicorn_tuning(**shop_workload.workload) }}"

- name: Keep an estimate taken at a busy hour, with a warning
  flaskops.stack.measure:
    app: shop
    on_saturation: warn
  become: true
"""

RETURN = r"""
workload:
  description:
    - The measured workload inputs of P(flaskops.stack.gunicorn_tuning#filter), under their names there -
      C(cpu_ms), C(wait_ms), C(worker_rss_mb) and, when measured, C(thread_rss_mb).
    - Only returned with an estimate the module stands by; a too busy app that is refused returns the other
      figures, to show why, but not this.
  returned: success
  type: dict
  sample: {cpu_ms: 2.04, wait_ms: 48.31, worker_rss_mb: 61.2, thread_rss_mb: 0.41}
requests:
  description: The requests the estimates rest on (answered by the app, below 500, 499 excepted).
  returned: once the window was watched, also when the module refuses to estimate
  type: int
  sample: 5234
errors:
  description: Requests the app answered with 5xx during the window; not counted in RV(requests).
  returned: once the window was watched, also when the module refuses to estimate
  type: int
  sample: 0
window_s:
  description: Seconds between the two readings of the CPU time.
  returned: once the window was watched, also when the module refuses to estimate
  type: float
  sample: 60.01
cpu_ms:
  description: CPU milliseconds per request.
  returned: success
  type: float
  sample: 2.04
wait_ms:
  description: Milliseconds per request not spent on the CPU (the mean upstream time less RV(cpu_ms)).
  returned: success
  type: float
  sample: 48.31
worker_rss_mb:
  description: Anonymous memory of a worker (the median) in MiB, without its threads' stacks and arenas.
  returned: success
  type: float
  sample: 61.2
thread_rss_mb:
  description:
    - Anonymous memory per thread (the median over the workers that run threads) in MiB.
    - V(null) when no worker runs a thread besides its main one.
  returned: success
  type: float
  sample: 0.41
workers:
  description: Workers running at the end of the window.
  returned: success
  type: int
  sample: 3
threads:
  description:
    - Request threads per worker in the running configuration (1 for C(sync) and async workers).
    - V(null) when the configuration cannot be read.
  returned: success
  type: int
  sample: 16
capacity:
  description: Requests the app holds at once (O(capacity), or from the running configuration); V(null) when unknown.
  returned: success
  type: int
  sample: 48
cpus:
  description: The effective CPUs RV(utilization) is a share of.
  returned: success
  type: float
  sample: 2.0
utilization:
  description: The share of the effective CPUs the app used during the window.
  returned: success
  type: float
  sample: 0.09
in_flight:
  description: Requests in flight on average during the window.
  returned: success
  type: float
  sample: 4.4
saturated:
  description: Whether the app was too busy for a clean estimate (see O(max_utilization), O(max_in_flight)).
  returned: success
  type: bool
  sample: false
measured_at:
  description: When the window ended, UTC, ISO 8601.
  returned: success
  type: str
  sample: "2026-11-24T10:31:07Z"
sources:
  description:
    - Where each figure came from - C(requests) (the access log), C(cpu) (V(cgroup_v2), V(cgroup_v1) or V(proc)),
      C(cpu_file) (the file read, V(null) for V(proc)), C(cpus) (what bound the effective CPUs, as
      M(flaskops.stack.resource_facts) says), C(memory) and C(threads) (the C(/proc) files read, V(null) for
      none), C(capacity) (the configuration file read, V(option), or V(null)).
  returned: success
  type: dict
  sample:
    requests: /var/log/nginx/flaskops-shop.access.log
    cpu: cgroup_v2
    cpu_file: /sys/fs/cgroup/unified/system.slice/shop.service/cpu.stat
    cpus: host
    memory: smaps_rollup
    threads: smaps
    capacity: /srv/shop/releases/3f2a9c1b2d4e-5e6f7a8b/gunicorn.conf.py
"""

import os
import posixpath
import statistics
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flaskops.stack.plugins.module_utils import access_log, cgroups, gunicorn_conf, readiness

#: Where the paths read are; the tests point it at a fixture tree.
ROOT = "/"
#: The largest error the clock ticks of /proc may put on the CPU time, as a share of it.
CPU_RESOLUTION_MAX = 0.02
KIB = 1024
#: The settings the capacity is made of.
CAPACITY_SETTINGS = ("worker_class", "workers", "threads", "worker_connections")
_ASYNC_WORKERS = ("gevent", "eventlet")


class Refused(Exception):
    """No estimate: the message names the app and why; ``result`` holds what was seen."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result or {}


# --- The access log -------------------------------------------------------------------------


def tally(lines):
    """Count the requests of the lines: ``requests`` (answered by the app, below 500, 499 excepted) and
    the sum of their upstream times, ``errors`` (5xx from the app), ``aborted`` (499), ``other`` (lines
    the app did not answer: nginx's redirects, 429, ...) and ``unparsed``."""
    counts = {"requests": 0, "upstream_s": 0.0, "errors": 0, "aborted": 0, "other": 0, "unparsed": 0}
    for line in lines:
        parsed = access_log.parse(line)
        if parsed is None or parsed[2] is None:
            counts["unparsed"] += 1
            continue
        status, seconds = parsed[1], access_log.upstream_seconds(parsed[2])
        if seconds is None:
            counts["other"] += 1
        elif status == 499:
            counts["aborted"] += 1
        elif status >= 500:
            counts["errors"] += 1
        else:
            counts["requests"] += 1
            counts["upstream_s"] += seconds
    return counts


class AccessLog:
    """The lines appended to a log file since this object was made."""

    def __init__(self, app, path):
        self.app, self.path = app, path
        try:
            info = os.stat(path)
        except OSError as error:
            raise Refused(
                "app %s: cannot read its access log %s (%s); is it behind the stack's nginx? Set access_log"
                % (app, path, error.strerror)
            ) from None
        self.inode, self.offset = info.st_ino, info.st_size

    def appended(self):
        """The complete lines written since the start. Refused when the file was rotated meanwhile."""
        try:
            with open(self.path, "rb") as handle:
                info = os.fstat(handle.fileno())
                rotated = info.st_ino != self.inode or info.st_size < self.offset
                handle.seek(self.offset)
                data = b"" if rotated else handle.read(info.st_size - self.offset)
        except OSError as error:
            raise Refused(
                "app %s: cannot read its access log %s (%s)" % (self.app, self.path, error.strerror)
            ) from None
        if rotated:
            raise Refused(
                "app %s: its access log %s was rotated during the window; measure again" % (self.app, self.path)
            )
        # A line nginx is still writing is left out.
        return data.decode("utf-8", errors="replace").splitlines()[: data.count(b"\n")]


# --- The unit and its processes -----------------------------------------------------------


def unit_state(module, unit):
    """The unit's ``MainPID``, ``ControlGroup`` and ``ActiveState`` (systemctl show)."""
    systemctl = module.get_bin_path("systemctl", required=True)
    state, error = readiness.unit_properties(
        module.run_command, systemctl, unit, ["MainPID", "ControlGroup", "ActiveState"]
    )
    if error is not None:
        raise Refused("systemctl show %s failed: %s" % (unit, error))
    try:
        master = int(state.get("MainPID") or 0)
    except ValueError:
        master = 0
    return {"master": master, "control_group": state.get("ControlGroup", ""), "active": state.get("ActiveState", "")}


class CpuClock:
    """The CPU time (ns) of a unit's processes, from its cgroup or from /proc.

    ``source`` is cgroup_v2, cgroup_v1 or proc; ``file`` the file read (as named on the host).
    """

    def __init__(self, root, state):
        self.root, self.master = root, state["master"]
        self.source, self.file, self.path, self.parser, self.processes = "proc", None, None, None, 0
        mounts = cgroups.parse_mountinfo(cgroups.read_text(cgroups.rebase(root, "/proc/self/mountinfo")) or "")
        candidates = [(2, "cpu.stat", cgroups.parse_cpu_stat_usage), (1, "cpuacct.usage", cgroups.parse_cpuacct_usage)]
        for version, name, parser in candidates:
            for mount in mounts:
                if mount["version"] != version or (version == 1 and "cpuacct" not in mount["options"]):
                    continue
                directory = cgroups.unit_dir_holding(root, mount, state["control_group"], self.master)
                if directory and self._read_file(directory, name, parser) is not None:
                    self.source, self.path, self.parser = (
                        "cgroup_v%d" % version,
                        posixpath.join(directory, name),
                        parser,
                    )
                    self.file = posixpath.join(cgroups.unit_cgroup_dir("/", mount, state["control_group"]), name)
                    return

    @staticmethod
    def _read_file(directory, name, parser):
        text = cgroups.read_text(posixpath.join(directory, name))
        try:
            return parser(text) if text is not None else None
        except ValueError:
            return None

    def read(self):
        """The CPU time so far, in ns. For /proc, ``processes`` is how many processes were read."""
        if self.path is not None:
            text = cgroups.read_text(self.path)
            value = self.parser(text) if text is not None else None
            if value is None:
                raise Refused("cannot read the CPU time in %s any more" % self.path)
            return value
        proc = cgroups.rebase(self.root, "/proc")
        ticks, processes = 0, 0
        for pid in [self.master, *sorted(readiness.children(self.master, proc))]:
            text = cgroups.read_text(posixpath.join(proc, str(pid), "stat"))
            if text is None:  # a worker that has exited: its time is the master's cutime once reaped
                continue
            own, children = cgroups.parse_proc_stat_times(text)
            ticks += own + children
            processes += 1
        self.processes = max(self.processes, processes)
        return ticks * 1_000_000_000 // clock_ticks()


def clock_ticks():
    """Clock ticks per second of /proc/<pid>/stat."""
    return os.sysconf("SC_CLK_TCK")


def _async(settings):
    return any(name in str(settings["worker_class"]) for name in _ASYNC_WORKERS)


def request_threads(settings):
    """Request threads per worker under ``settings``: 1 for async workers (one thread, many connections)."""
    return 1 if _async(settings) else int(settings["threads"])


def request_slots(settings):
    """Requests one worker holds at once under ``settings``."""
    return int(settings["worker_connections"]) if _async(settings) else int(settings["threads"])


def worker_memory(root, master):
    """The workers' memory at this moment: their count, the median anonymous memory of a worker without
    its threads (kB) and the median per thread (kB, None when no worker runs threads)."""
    proc = cgroups.rebase(root, "/proc")
    own, per_thread = [], []
    rollup = True
    for pid in sorted(readiness.children(master, proc)):
        directory = posixpath.join(proc, str(pid))
        text = cgroups.read_text(posixpath.join(directory, "smaps_rollup"))
        if text is None:
            rollup = False
        try:
            anonymous = cgroups.parse_anonymous_kb(text) if text is not None else _smaps_anonymous_kb(directory)
            threads = len(os.listdir(posixpath.join(directory, "task"))) - 1
            held = _thread_kb(directory) if threads > 0 else 0
        except (OSError, ValueError, IndexError):  # it exited while we looked, or the file is not one
            continue
        if anonymous is None:
            continue
        own.append(anonymous - held)
        if threads > 0:
            per_thread.append(held / threads)
    return {
        "workers": len(own),
        "worker_kb": statistics.median(own) if own else None,
        "thread_kb": statistics.median(per_thread) if per_thread else None,
        "memory_source": ("smaps_rollup" if rollup else "smaps") if own else None,
        "threads_source": "smaps" if per_thread else None,
    }


def _smaps_anonymous_kb(directory):
    with open(posixpath.join(directory, "smaps"), encoding="ascii", errors="replace") as handle:
        return cgroups.parse_anonymous_kb(handle.read())


def _thread_kb(directory):
    with open(posixpath.join(directory, "smaps"), encoding="ascii", errors="replace") as handle:
        return cgroups.thread_memory_kb(handle)


# --- The measurement ------------------------------------------------------------------------


def _check_params(params):
    for name in ("window", "min_requests"):
        if params[name] < 1:
            raise Refused("%s must be at least 1, got %r" % (name, params[name]))
    for name in ("max_utilization", "max_in_flight"):
        if not 0 < params[name] <= 1:
            raise Refused("%s must be above 0 and at most 1, got %r" % (name, params[name]))
    if params["capacity"] is not None and params["capacity"] < 1:
        raise Refused("capacity must be at least 1, got %r" % params["capacity"])


def _running(app, unit, state):
    if state["master"] <= 0:
        raise Refused("app %s: %s does not run (%s); nothing to measure" % (app, unit, state["active"] or "unknown"))
    return state


def _same_master(target, before, after):
    """Refuse a window during which the unit restarted or its master loaded another release."""
    if after["master"] != before["master"]:
        raise Refused(
            "app %s: %s restarted during the window (master %d, then %d); measure again"
            % (target["app"], target["unit"], before["master"], after["master"])
        )
    if after["cwd"] != before["cwd"]:
        raise Refused(
            "app %s: %s loaded another release during the window (%s, then %s); measure again"
            % (target["app"], target["unit"], before["cwd"], after["cwd"])
        )


def _check_resolution(app, clock, cpu_ns):
    """Refuse a /proc CPU time its clock ticks cannot measure to CPU_RESOLUTION_MAX."""
    if clock.source != "proc":
        return
    # Each process's counters are whole ticks: the difference of two readings is off by less than a tick
    # for each process read, and by one more for the workers reaped in between.
    error_ns = (clock.processes + 1) * 1_000_000_000 // clock_ticks()
    if cpu_ns <= 0 or error_ns / cpu_ns > CPU_RESOLUTION_MAX:
        raise Refused(
            "app %s: the CPU time read from /proc during the window, %.2f s, is too small for its clock ticks "
            "(%d processes, up to %.2f s off; at most %g %% allowed): measure over a longer window or under more "
            "traffic" % (app, cpu_ns / 1e9, clock.processes, error_ns / 1e9, CPU_RESOLUTION_MAX * 100)
        )


def _saturation(app, params, result):
    """Why the app was too busy for a clean estimate; None when it was not."""
    found = []
    if result["utilization"] > params["max_utilization"]:
        found.append(
            "it used %.2f of its %g CPUs (max_utilization %g)"
            % (result["utilization"], result["cpus"], params["max_utilization"])
        )
    capacity = result["capacity"]
    if capacity is not None and result["in_flight"] > params["max_in_flight"] * capacity:
        found.append(
            "%.1f requests were in flight, of a capacity of %d (max_in_flight %g)"
            % (result["in_flight"], capacity, params["max_in_flight"])
        )
    if not found:
        return None
    return (
        "app %s was too busy for a clean estimate: %s. Requests queue for a CPU, a thread or a worker then, and "
        "that queueing counts as wait_ms (%.2f ms here); measure at a quieter time, or set on_saturation=warn "
        "to keep the estimate" % (app, " and ".join(found), result["wait_ms"])
    )


def observe(module, root, target, window):
    """Watch the app ``target`` (app, unit, log) for ``window`` seconds: the log's counts, the CPU time (ns),
    the seconds between the CPU readings, the master and the CPU clock."""
    proc = cgroups.rebase(root, "/proc")
    before = _running(target["app"], target["unit"], unit_state(module, target["unit"]))
    clock = CpuClock(root, before)
    log = AccessLog(target["app"], cgroups.rebase(root, target["log"]))
    before["cwd"] = readiness.working_directory(before["master"], proc)
    cpu_before, start = clock.read(), time.monotonic()
    time.sleep(window)
    cpu_after, end = clock.read(), time.monotonic()
    lines = log.appended()
    after = unit_state(module, target["unit"])
    after["cwd"] = readiness.working_directory(after["master"], proc)
    _same_master(target, before, after)
    return tally(lines), cpu_after - cpu_before, end - start, before["master"], clock


def _capacity(module, app, params, settings):
    if params["capacity"] is not None:
        return params["capacity"]
    if settings is not None:
        return int(settings["workers"]) * request_slots(settings)
    module.warn(
        "app %s: cannot read the running configuration (gunicorn.conf.py in the master's working directory): "
        "the in-flight check is skipped; set capacity" % app
    )
    return None


def _workload(result):
    """The figures the sizing model takes, under its names."""
    workload = {"cpu_ms": result["cpu_ms"], "wait_ms": result["wait_ms"]}
    if result["worker_rss_mb"]:
        workload["worker_rss_mb"] = result["worker_rss_mb"]
    if result["thread_rss_mb"] is not None:
        workload["thread_rss_mb"] = result["thread_rss_mb"]
    return workload


def measure(module, root=None):
    """Watch the app for the window and estimate its workload: the module's result. Raises Refused."""
    root = root or ROOT
    params = module.params
    _check_params(params)
    app = params["app"]
    unit = params["unit"] or "%s.service" % app
    log_path = params["access_log"] or "/var/log/nginx/flaskops-%s.access.log" % app

    target = {"app": app, "unit": unit, "log": log_path}
    counts, cpu_ns, window_s, master, clock = observe(module, root, target, params["window"])
    n = counts["requests"]
    result = {"requests": n, "errors": counts["errors"], "window_s": round(window_s, 2)}
    if counts["unparsed"]:
        module.warn(
            "app %s: %d lines of %s are not in the stack's log format (rt=... urt=...) and were skipped"
            % (app, counts["unparsed"], log_path)
        )
    if n < params["min_requests"]:
        raise Refused(
            "app %s: %d requests answered in the %d s window (%s), fewer than min_requests=%d: too few to "
            "estimate from; measure over a longer window or under more traffic"
            % (app, n, params["window"], log_path, params["min_requests"]),
            result,
        )
    _check_resolution(app, clock, cpu_ns)
    if cpu_ns <= 0:
        raise Refused("app %s: %s used no CPU time during the window (%s)" % (app, unit, clock.file), result)

    resources, warnings = cgroups.gather_resources(root)
    for warning in warnings:
        module.warn(warning)
    settings, config = gunicorn_conf.live_settings(root, master, CAPACITY_SETTINGS)
    memory = worker_memory(root, master)
    if memory["workers"] == 0:
        module.warn("app %s: no worker's memory could be read (%s runs no worker now)" % (app, unit))
    cpu_ms = cpu_ns / 1e6 / n
    result.update(
        cpu_ms=round(cpu_ms, 2),
        wait_ms=round(max(0.0, counts["upstream_s"] * 1000 / n - cpu_ms), 2),
        worker_rss_mb=round(memory["worker_kb"] / KIB, 1) if memory["worker_kb"] is not None else None,
        thread_rss_mb=round(memory["thread_kb"] / KIB, 2) if memory["thread_kb"] is not None else None,
        workers=memory["workers"],
        threads=request_threads(settings) if settings is not None else None,
        capacity=_capacity(module, app, params, settings),
        cpus=resources["cpus"],
        utilization=round(cpu_ns / 1e9 / (window_s * resources["cpus"]), 3),
        in_flight=round(counts["upstream_s"] / window_s, 2),
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        sources={
            "requests": log_path,
            "cpu": clock.source,
            "cpu_file": clock.file,
            "cpus": resources["cpu_source"],
            "memory": memory["memory_source"],
            "threads": memory["threads_source"],
            "capacity": "option" if params["capacity"] is not None else config,
        },
    )
    busy = _saturation(app, params, result)
    result["saturated"] = busy is not None
    if busy and params["on_saturation"] == "fail":
        # The figures, to see why; no workload to plan with.
        raise Refused(busy, result)
    if busy:
        module.warn(busy)
    result["workload"] = _workload(result)
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            "app": {"type": "str", "required": True},
            "unit": {"type": "str"},
            "access_log": {"type": "path"},
            "window": {"type": "int", "default": 60},
            "min_requests": {"type": "int", "default": 500},
            "max_utilization": {"type": "float", "default": 0.5},
            "max_in_flight": {"type": "float", "default": 0.75},
            "capacity": {"type": "int"},
            "on_saturation": {"type": "str", "choices": ["fail", "warn"], "default": "fail"},
        },
        supports_check_mode=True,
    )
    try:
        result = measure(module)
    except Refused as refused:
        module.fail_json(msg=str(refused), changed=False, **refused.result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
