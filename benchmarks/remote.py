"""Benchmark helper that runs on a bench host, inside the container, with the host's python3.

The harness (bench.py) pipes this file into ``podman exec -i <host> python3 - <command> ...``; it needs
nothing but the standard library and the collection's readiness check, ``plugins/module_utils/readiness.py``,
which bench.py copies into the host (READINESS_DIR) when it creates or reuses it: the benchmark waits for a reload
exactly as the roles do. Commands, each printing one JSON object:

``apply <app> <settings-json> [<env-json> [on|off]]``
    Replace the benchmark block under "# Overrides" of the app's gunicorn.conf.py with the given
    settings (and variables added to the app's environment, ``raw_env``), HUP the master
    (``systemctl reload``) and wait until it is ready: every old worker gone, the new number of workers
    running, ``/healthz`` answering through the app's socket. ``off`` (the default) also sets every server
    hook of the gunicorn role's metrics (``gunicorn_metrics``) back to gunicorn's own; ``on`` leaves them.
``counted <app>``
    The requests the app's metrics have counted so far (the sum of ``flaskops_http_requests_total`` the
    metrics role's exporter serves on the host), or null when the exporter does not answer.
``usage <app>``
    The app's CPU time used so far (ns) and its unit's anonymous memory now (MiB).
``drain <app>``
    Wait until nothing is queued for the app: a load generator that stops leaves requests in the listen
    backlog and in the workers, which they still serve (a sync worker cannot tell that the client left);
    the next measurement must not pay for them. Done when ``/healthz`` through the socket answers at once.
``hup-peak <app> <expected-workers>``
    HUP the master and sample the unit's anonymous memory every 10 ms until the reload is done;
    report the peak and the values before and after.

Anonymous memory is what the sizing model's worker_rss_mb/thread_rss_mb predict: the page cache a
cgroup is also charged for (the app's files) is reclaimable and left out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

#: Where bench.py puts plugins/module_utils/readiness.py inside the host.
READINESS_DIR = "/usr/local/lib/flaskops-bench"
sys.path.insert(0, READINESS_DIR)
import readiness  # noqa: E402  (found through READINESS_DIR)

# The live release's configuration. The benchmark rewrites it in place (a release is otherwise never
# changed): its containers exist only to be measured.
CONFIG = "/srv/{app}/current/gunicorn.conf.py"
SOCKET = "/run/flaskops/{app}.sock"
OVERRIDES = "# Overrides\n"
MARK = "# Benchmark configuration (flaskops.stack benchmarks/bench.py)\n"
READY_TIMEOUT_S = 120.0
#: A /healthz answer this fast (seconds) had nothing queued ahead of it.
IDLE_ANSWER_S = 0.05
MIB = 1024 * 1024


def _show(app: str, prop: str) -> str:
    return subprocess.run(
        ["systemctl", "show", "-P", prop, f"{app}.service"], check=True, capture_output=True, text=True
    ).stdout.strip()


def _main_pid(app: str) -> int:
    pid = readiness.main_pid(f"{app}.service")
    if pid <= 0:
        raise SystemExit(f"{app}.service is not running")
    return pid


def _workers(master: int) -> set[int]:
    """PIDs of the master's children (gunicorn's workers)."""
    return readiness.children(master)


def _memory_stat(app: str) -> str:
    """The unit's memory.stat: under the v1 memory controller, or in the v2 unified hierarchy."""
    group = _show(app, "ControlGroup")
    candidates = [f"/sys/fs/cgroup/memory{group}/memory.stat", f"/sys/fs/cgroup{group}/memory.stat"]
    for path in candidates:
        if os.path.exists(path):
            return path
    raise SystemExit(f"no memory.stat for {app}.service among {candidates}")


def _cpu_ticks(pid: int, children: bool) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rpartition(")")[2].split()
    # utime, stime (this process, all its threads); cutime, cstime (its children it has reaped).
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return utime + stime + (cutime + cstime if children else 0)


class Cgroup:
    """The app's CPU time and its unit's anonymous memory.

    Memory comes from the unit's cgroup (v1 ``total_rss`` or v2 ``anon``). CPU comes from /proc: the
    unit has no CPU accounting of its own inside a container whose cpu hierarchy is not delegated, so
    it is the master's and its live workers' CPU time plus that of the workers it has reaped.
    """

    def __init__(self, app: str) -> None:
        self.app = app
        self.memory = _memory_stat(app)

    def anon_bytes(self) -> int:
        with open(self.memory, encoding="ascii") as handle:
            stat = dict(line.split() for line in handle)
        return int(stat.get("total_rss", stat.get("anon", 0)))

    def cpu_ns(self) -> int:
        master = _main_pid(self.app)
        ticks = _cpu_ticks(master, children=True)
        for worker in _workers(master):
            try:
                ticks += _cpu_ticks(worker, children=False)
            except FileNotFoundError:  # exited since it was listed; counted once reaped
                continue
        return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _healthy(app: str, timeout: float = 10) -> bool:
    return readiness.health(SOCKET.format(app=app), "/healthz", timeout)[0] == 200


def _reload_and_wait(app: str, expected: int) -> dict:
    """systemctl reload, then wait for a whole new generation of ``expected`` workers under the same master."""
    try:
        ready = readiness.reload_and_wait(f"{app}.service", SOCKET.format(app=app), READY_TIMEOUT_S, workers=expected)
    except readiness.NotReady as error:
        raise SystemExit(f"{app}: {error}") from None
    return {"seconds": ready["seconds"], "workers": len(ready["workers"]), "master": ready["master"]}


def _py(value) -> str:
    """A JSON value as a Python literal."""
    if value is True:
        return "True"
    if value is False:
        return "False"
    if value is None:
        return "None"
    return json.dumps(value)


#: The server hooks the gunicorn role's metrics set (roles/gunicorn/templates/gunicorn.conf.py.j2), and
#: gunicorn's settings classes whose defaults replace them while metrics are off.
METRICS_HOOKS = {
    "on_starting": "OnStarting",
    "on_reload": "OnReload",
    "child_exit": "ChildExit",
    "post_worker_init": "PostWorkerInit",
    "pre_request": "PreRequest",
    "post_request": "PostRequest",
    "worker_abort": "WorkerAbort",
    "worker_exit": "WorkerExit",
}


def apply(app: str, settings_json: str, env_json: str = "{}", metrics: str = "off") -> dict:
    settings = json.loads(settings_json)
    env = json.loads(env_json)
    if metrics not in ("on", "off"):
        raise SystemExit(f"metrics must be on or off, got {metrics!r}")
    path = CONFIG.format(app=app)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    head, found, tail = text.partition(OVERRIDES)
    if not found:
        raise SystemExit(f"{path} has no '{OVERRIDES.strip()}' line")
    # Keep the deploy's own overrides; drop a previous benchmark block.
    tail = tail.partition(MARK)[0]
    block = "".join(f"{key} = {_py(value)}\n" for key, value in sorted(settings.items()))
    if env:
        block += "raw_env = raw_env + %s\n" % json.dumps(["%s=%s" % item for item in sorted(env.items())])
    if metrics == "off":
        block += "import gunicorn.config\n"
        block += "".join(f"{hook} = gunicorn.config.{name}.default\n" for hook, name in METRICS_HOOKS.items())
    temporary = path + ".bench"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(head + found + tail + MARK + block)
    info = os.stat(path)
    os.chown(temporary, info.st_uid, info.st_gid)
    os.chmod(temporary, info.st_mode & 0o7777)
    os.replace(temporary, path)
    return _reload_and_wait(app, int(settings.get("workers", 1)))


#: The metrics role's exporter on the bench host (metrics_exporter_listen's default).
EXPORTER_URL = "http://127.0.0.1:9380/metrics"


def counted(app: str) -> dict:
    prefix = "flaskops_http_requests_total{"
    try:
        with urllib.request.urlopen(EXPORTER_URL, timeout=10) as answer:
            text = answer.read().decode("utf-8")
    except OSError:
        return {"requests": None}
    total = 0.0
    for line in text.splitlines():
        if line.startswith(prefix) and ('app="%s"' % app) in line:
            total += float(line.rsplit(" ", 1)[1])
    return {"requests": int(total)}


def drain(app: str) -> dict:
    start = time.monotonic()
    while True:
        asked = time.monotonic()
        healthy = _healthy(app, timeout=READY_TIMEOUT_S)
        if healthy and time.monotonic() - asked < IDLE_ANSWER_S:
            return {"seconds": round(time.monotonic() - start, 3)}
        if time.monotonic() - start > READY_TIMEOUT_S:
            raise SystemExit(f"{app}: still busy {READY_TIMEOUT_S:.0f}s after the load stopped")
        time.sleep(0.05)


def usage(app: str) -> dict:
    cgroup = Cgroup(app)
    return {"cpu_ns": cgroup.cpu_ns(), "anon_mb": round(cgroup.anon_bytes() / MIB, 1)}


def hup_peak(app: str, expected: str) -> dict:
    cgroup = Cgroup(app)
    before = cgroup.anon_bytes()
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], cgroup.anon_bytes())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = _reload_and_wait(app, int(expected))
        # The old generation's memory is freed as each process exits; sample a little past it.
        time.sleep(0.5)
    finally:
        stop.set()
        sampler.join()
    after = cgroup.anon_bytes()
    result.update(
        before_mb=round(before / MIB, 1), peak_mb=round(max(peak[0], after) / MIB, 1), after_mb=round(after / MIB, 1)
    )
    return result


COMMANDS = {"apply": apply, "counted": counted, "drain": drain, "usage": usage, "hup-peak": hup_peak}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in COMMANDS:
        raise SystemExit("usage: remote.py {%s} <app> [args]" % "|".join(COMMANDS))
    print(json.dumps(COMMANDS[sys.argv[1]](*sys.argv[2:])))
