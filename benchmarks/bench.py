"""Tuning-quality benchmark of flaskops.stack: how the derived plan compares with the rules of thumb
and with the best this host can do, measured through the deployed stack (nginx -> gunicorn -> Flask).

    python benchmarks/bench.py --profile full  --out benchmarks/results   # make bench
    python benchmarks/bench.py --profile quick --out .build/bench/quick   # make bench-quick
    python benchmarks/bench.py --profile smoke --out .build/bench/smoke   # make test (harness smoke)

What it does (benchmarks/README.md says why, and how to read the results):

1. Starts one podman systemd container per CPU count (``--cpus``, 2 GiB) and provisions the demo app
   ("bench") in them with the collection's own playbooks/site.yml.
2. Measures each workload endpoint's real cost: the CPU time of the app's processes per request while
   wrk drives it, and the wait the app reports.
3. Screens a grid of worker class x workers x threads (one short wrk run per connection count each),
   and fits the app's memory per worker and per thread from the grid's steady-state memory.
4. Plans (c) from the profile alone and (d) from the measured inputs with benchmarks/plans.yml (the
   collection's filter on each host's facts).
5. Measures (a) gunicorn's defaults, (b) the rule of thumb, (c), (d) and the grid's best screened
   points, interleaved, ``repeats`` times, with wrk at each connection count; and once per
   configuration the app's memory in steady state and its peak during a HUP under load.
6. Writes <out>/<date>.json, <date>.md and <date>.png, and prints one BENCH RESULT line per workload,
   CPU count and connection count.

Configurations change by HUP: bench.py writes them into the deployed gunicorn.conf.py's override
block (benchmarks/remote.py) instead of a play per point, which would take longer than the point's
measurement. It measures; it asserts nothing about the results (the smoke test checks the harness).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy
import yaml

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # after choosing the backend

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "loadgen"))
import loadgen  # noqa: E402  (the project's own load generator: the open-loop runs)

REMOTE = Path(__file__).resolve().parent / "remote.py"
READINESS = Path(__file__).resolve().parent.parent / "plugins" / "module_utils" / "readiness.py"
#: Where remote.py imports readiness.py from inside a bench host (remote.READINESS_DIR).
READINESS_DIR = "/usr/local/lib/flaskops-bench"
PLANS_PLAYBOOK = Path(__file__).resolve().parent / "plans.yml"
MEASURE_PLAYBOOK = ROOT / "playbooks" / "measure.yml"
TESTHOST = ROOT / "tools" / "testhost" / "testhost.sh"

APP = "bench"
SERVER_NAME = "bench.localhost"
IMAGE = "localhost/flaskops-debian12:latest"
HOST_MEMORY = "2g"

#: The demo app's endpoints for the workloads (cpu 5 ms CPU; io 1 ms CPU + 50 ms wait; mixed 3 ms CPU +
#: 20 ms wait; wait 2 ms CPU + 200 ms wait, an app that mostly waits for an external API; large: mixed in
#: workers of 256 MiB each, so that the memory budget decides the plan).
WORKLOADS = {
    "cpu": "/cpu",
    "io": "/io",
    "mixed": "/mixed",
    "wait": "/io?cpu_ms=2&wait_ms=200",
    "large": "/mixed",
}
#: The app's environment per workload (added to the deployed one while the workload is measured): the large
#: workload's workers each allocate 256 MiB when they import the app, as one that loads a model at import.
WORKLOAD_ENV = {"large": {"DEMO_BALLAST_MB": "256"}}
#: What the grid's gevent workers need in the app's virtualenv, pinned: gevent and its dependencies, and
#: packaging (gunicorn's gevent worker imports it; gunicorn's "gevent" extra lists both).
GEVENT_REQUIREMENTS = ("gevent==26.9.0", "greenlet==3.5.6", "zope.event==6.2", "zope.interface==8.7", "packaging==26.3")
#: The collection's profile a user would pick for each workload: plan (c) is given only that.
PROFILE_OF = {"cpu": "cpu", "io": "io", "mixed": "mixed", "wait": "api", "large": "mixed"}

#: gunicorn's own defaults for the settings a configuration sets (gunicorn 23-27 documentation).
GUNICORN_DEFAULTS = {
    "worker_class": "sync",
    "workers": 1,
    "threads": 1,
    "worker_connections": 1000,
    "max_requests": 0,
    "max_requests_jitter": 0,
    "keepalive": 2,
    "backlog": 2048,
}
#: The plan keys that become gunicorn settings for (c) and (d).
PLAN_SETTINGS = tuple(GUNICORN_DEFAULTS)
#: Threads per worker of the rule of thumb for I/O-bound and mixed work.
RULE_THREADS = 4

#: wrk gives up on a response after this long and counts a timeout error.
WRK_TIMEOUT_S = 5
#: Seconds of load after each configuration change, not measured (new workers' first requests).
WARMUP_S = 1
#: Load while the per-request CPU is measured: few connections, so nothing queues.
COST_CONNECTIONS = 4
COST_SECONDS = 3
COST_SAMPLES = 20
#: Load during the HUP whose memory peak is measured: seconds before and after the HUP.
HUP_LEAD_S = 1
HUP_TAIL_S = 3
#: Open loop: requests due at this share of the best configuration's most requests/s (a closed-loop
#: client like wrk waits for answers before it sends more, and so never sees a queue grow).
OPEN_LOAD = 0.8
OPEN_REPEATS = 2
#: loadgen's processes for the open-loop runs (the rate and connections split over them), and the fewest
#: connections they get: enough that a request is late only when the server is (the profile's most
#: connections when it has more).
OPEN_PROCESSES = 2
OPEN_MIN_CONNECTIONS = 64
#: Plan (f): flaskops.stack.measure (playbooks/measure.yml) watches the app for the profile's live_seconds
#: under loadgen's requests at a rate that keeps it below measure's saturation limits (its defaults: half
#: the CPUs, 0.75 of the workers x threads busy): LIVE_CPU_SHARE of the CPUs and LIVE_SLOT_SHARE of the
#: slots, from the cost the harness measured itself (the load is the benchmark's; the plan is not told it).
LIVE_CPU_SHARE = 0.3
LIVE_SLOT_SHARE = 0.4


@dataclass(frozen=True)
class Profile:
    """How much a run measures."""

    name: str
    cpus: tuple[int, ...]
    workloads: tuple[str, ...]
    connections: tuple[int, ...]
    repeats: int
    seconds: int
    screen_seconds: int
    grid_threads: tuple[int, ...]
    #: extra workers over the CPU count for the grid: each entry n gives workers = cpus * n[0] + n[1]
    grid_workers: tuple[tuple[int, int], ...]
    #: the workloads whose grid also has gevent workers (those that mostly wait), and each such worker's
    #: worker_connections
    gevent_workloads: tuple[str, ...]
    grid_gevent_connections: tuple[int, ...]
    #: seconds of each open-loop run
    open_seconds: int
    #: seconds flaskops.stack.measure watches the live app for plan (f), and the fewest requests it accepts
    live_seconds: int
    live_min_requests: int
    #: the workloads whose plan (d) is measured with the gunicorn role's metrics off and on (step 8), and
    #: how many interleaved pairs
    metrics_workloads: tuple[str, ...]
    metrics_repeats: int


PROFILES = {
    "full": Profile(
        name="full",
        cpus=(1, 2),
        workloads=("cpu", "io", "mixed", "wait", "large"),
        connections=(64, 256),
        repeats=3,
        seconds=4,
        screen_seconds=2,
        grid_threads=(1, 4, 16, 64),
        grid_workers=((1, 0), (1, 1), (2, 1)),
        gevent_workloads=("io", "wait"),
        grid_gevent_connections=(64, 256),
        open_seconds=5,
        live_seconds=30,
        live_min_requests=500,
        metrics_workloads=("mixed",),
        metrics_repeats=5,
    ),
    "quick": Profile(
        name="quick",
        cpus=(2,),
        workloads=("io", "mixed", "wait"),
        connections=(64,),
        repeats=3,
        seconds=3,
        screen_seconds=2,
        grid_threads=(1, 8, 32),
        grid_workers=((1, 1), (2, 1)),
        gevent_workloads=("io", "wait"),
        grid_gevent_connections=(256,),
        open_seconds=4,
        live_seconds=20,
        live_min_requests=500,
        metrics_workloads=("mixed",),
        metrics_repeats=5,
    ),
    "smoke": Profile(
        name="smoke",
        cpus=(1,),
        workloads=("io",),
        connections=(8,),
        repeats=2,
        seconds=1,
        screen_seconds=1,
        grid_threads=(1, 8),
        grid_workers=((1, 1),),
        gevent_workloads=("io",),
        grid_gevent_connections=(16,),
        open_seconds=1,
        live_seconds=8,
        live_min_requests=100,
        metrics_workloads=("io",),
        metrics_repeats=2,
    ),
}


def log(message: str) -> None:
    print("bench: " + message, file=sys.stderr, flush=True)


# --- Configurations ------------------------------------------------------------------------------


def shape(settings: dict) -> tuple:
    """What makes two configurations the same measurement."""
    return tuple(sorted(settings.items()))


def by_shape(configs: dict[str, dict]) -> dict[tuple, list[str]]:
    """The labels of ``configs`` ({label: settings}) grouped by what they measure, in first-seen order."""
    distinct: dict[tuple, list[str]] = {}
    for label, settings in configs.items():
        distinct.setdefault(shape(settings), []).append(label)
    return distinct


def rotated(order: list, repeat: int) -> list:
    """``order`` started ``repeat`` places later (wrapping): each repeat measures in another order."""
    start = repeat % len(order)
    return order[start:] + order[:start]


def grid(cpus: int, profile: Profile, workload: str) -> dict[str, dict]:
    """(e) candidates: sync with 1 thread, gthread with more; for the profile's gevent workloads also gevent
    workers with its worker_connections; workers from the profile's multiples."""
    points = {}
    for factor, extra in profile.grid_workers:
        workers = cpus * factor + extra
        for threads in profile.grid_threads:
            worker_class = "sync" if threads == 1 else "gthread"
            # worker_connections = threads, as the role renders it: a gthread worker accepts no more
            # connections than it can serve, so the others wait in the shared listen backlog.
            points["grid %s %dx%d" % (worker_class, workers, threads)] = {
                "worker_class": worker_class,
                "workers": workers,
                "threads": threads,
                "worker_connections": threads,
            }
        if workload in profile.gevent_workloads:
            for connections in profile.grid_gevent_connections:
                points["grid gevent %dx%d" % (workers, connections)] = {
                    "worker_class": "gevent",
                    "workers": workers,
                    "threads": 1,
                    "worker_connections": connections,
                }
    return points


def rule_of_thumb(cpus: int, workload: str) -> dict:
    """(b): (2 x CPU) + 1 workers; sync for CPU-bound work, 4 threads each otherwise."""
    settings = dict(GUNICORN_DEFAULTS, workers=2 * cpus + 1)
    if workload != "cpu":
        settings.update(worker_class="gthread", threads=RULE_THREADS)
    return settings


def from_plan(plan: dict) -> dict:
    return {key: plan[key] for key in PLAN_SETTINGS}


# --- wrk -----------------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError("not a wrk duration: %r" % text)
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> dict:
    """Requests, successful requests/s, errors and latency percentiles from ``wrk --latency``."""
    total = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h)", output, re.M)
    if not total:
        raise ValueError("wrk printed no request count:\n" + output)
    requests = int(total.group(1))
    seconds = _duration_ms(total.group(2) + total.group(3)) / 1000.0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    non_2xx = int(non_2xx.group(1)) if non_2xx else 0
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    socket_errors = sum(int(n) for n in socket.groups()) if socket else 0
    latency = {
        int(p): _duration_ms(v)
        for p, v in re.findall(r"^\s+(50|75|90|99)(?:\.0+)?%\s+([0-9.]+(?:us|ms|s|m|h))", output, re.M)
    }
    ok = requests - non_2xx
    return {
        "requests": requests,
        "ok": ok,
        "errors": non_2xx + socket_errors,
        "seconds": seconds,
        "rps": ok / seconds if seconds else 0.0,
        "p50_ms": latency.get(50),
        "p99_ms": latency.get(99),
    }


def wrk_command(port: int, path: str, connections: int, seconds: float) -> list[str]:
    return [
        "wrk",
        "--threads",
        "1",
        "--connections",
        str(connections),
        "--duration",
        "%ds" % max(1, round(seconds)),
        "--timeout",
        "%ds" % WRK_TIMEOUT_S,
        "--latency",
        "--header",
        "Host: " + SERVER_NAME,
        "http://127.0.0.1:%d%s" % (port, path),
    ]


def wrk(port: int, path: str, connections: int, seconds: float) -> dict:
    result = subprocess.run(wrk_command(port, path, connections, seconds), capture_output=True, text=True, check=True)
    return parse_wrk(result.stdout)


# The open-loop client's niceness. A 2-CPU cell on a 2-CPU machine lets the stack take every CPU; a
# client that waits for one sends late, and since latency counts from the due time, its own queueing
# would be charged to the server (2026-12-04, mixed on 2 CPUs: the client's lag p99 11 ms with the
# plan's 5 workers, 2 ms with the best's 3). Raising a priority needs root; elsewhere the client
# keeps its niceness and each run records the one it had.
CLIENT_NICE = -10


@contextlib.contextmanager
def client_priority():
    """Run the block (and the threads and processes it starts) at CLIENT_NICE if allowed; yields the niceness."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, CLIENT_NICE)
    except PermissionError:
        yield before
        return
    try:
        yield CLIENT_NICE
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)


def open_loop_run(port: int, path: str, rate: float, connections: int, seconds: float) -> dict:
    """An open-loop run with loadgen: requests due at ``rate``/s whatever the answers, latency from the due time."""
    with client_priority() as nice:
        result = _open_loop(port, path, rate, connections, seconds)
    return {
        "sent": result.sent,
        "ok": result.ok,
        "errors": result.failed,
        "rps": result.ok / result.elapsed_s if result.elapsed_s else 0.0,
        "p50_ms": result.latency_ms["p50"],
        "p99_ms": result.latency_ms["p99"],
        "lag_p99_ms": result.lag_ms.get("p99"),
        "client_nice": nice,
    }


def _open_loop(port: int, path: str, rate: float, connections: int, seconds: float) -> loadgen.Result:
    return loadgen.run(
        loadgen.Config(
            url="http://127.0.0.1:%d" % port,
            duration=seconds,
            connections=connections,
            processes=OPEN_PROCESSES,
            mix="w=1",
            paths={"w": path},
            host_header=SERVER_NAME,
            timeout=WRK_TIMEOUT_S,
            rate=rate,
            open_loop=True,
        )
    )


# --- Bench hosts ---------------------------------------------------------------------------------


class BenchHost:
    """One podman systemd container limited to ``cpus`` CPUs."""

    def __init__(self, cpus: int, prefix: str) -> None:
        self.cpus = cpus
        self.name = "%s-c%d" % (prefix, cpus)
        self.port = 0
        self.cpu_stat = ""
        #: Variables added to the app's environment by every apply (WORKLOAD_ENV of the workload measured).
        self.env: dict[str, str] = {}
        #: The gunicorn role's metrics hooks: "off" (gunicorn's own hooks) except in step 8's "on" runs.
        self.metrics = "off"

    def create(self) -> None:
        subprocess.run(["podman", "rm", "--force", "--ignore", self.name], check=True, capture_output=True)
        subprocess.run(
            [
                "podman", "run", "--detach", "--name", self.name, "--hostname", self.name,
                "--privileged", "--cgroupns=private", "--systemd=always",
                "--cpus=%d" % self.cpus, "--memory=" + HOST_MEMORY,
                "--publish", "127.0.0.1::80", IMAGE, "/sbin/init",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        subprocess.run([str(TESTHOST), "pin", self.name], check=True)
        # Booted is enough: "degraded" (a unit the container cannot run) exits non-zero too.
        subprocess.run(
            ["podman", "exec", self.name, "timeout", "120", "systemctl", "is-system-running", "--wait"],
            capture_output=True,
            check=False,
        )
        self.attach()

    def attach(self) -> None:
        """Find nginx's published port (of a container this class created); give remote.py the collection's
        readiness check, with which it waits for reloads as the roles do."""
        subprocess.run(["podman", "exec", self.name, "mkdir", "-p", READINESS_DIR], check=True)
        subprocess.run(["podman", "cp", str(READINESS), "%s:%s/readiness.py" % (self.name, READINESS_DIR)], check=True)
        published = subprocess.run(
            ["podman", "port", self.name, "80"], check=True, capture_output=True, text=True
        ).stdout.split()[0]
        self.port = int(published.rsplit(":", 1)[1])
        self.cpu_stat = self.find_cpu_stat()

    def find_cpu_stat(self) -> str:
        """The file on this machine that counts the container's CPU time: its cgroup's cpuacct.usage (v1) or
        cpu.stat (v2, alone or beside v1 as the unified hierarchy)."""
        group = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.CgroupPath}}", self.name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        candidates = [
            "/sys/fs/cgroup/cpuacct%s/cpuacct.usage" % group,
            "/sys/fs/cgroup%s/cpu.stat" % group,
            "/sys/fs/cgroup/unified%s/cpu.stat" % group,
        ]
        for path in candidates:
            if os.path.exists(path):
                return path
        raise RuntimeError("%s: none of %s exists: cannot count the container's CPU time" % (self.name, candidates))

    def cpu_ns(self) -> int:
        """The CPU time everything in the container (nginx and the app) used so far."""
        with open(self.cpu_stat, encoding="ascii") as handle:
            text = handle.read()
        if self.cpu_stat.endswith("cpuacct.usage"):
            return int(text)
        return int(dict(line.split() for line in text.splitlines())["usage_usec"]) * 1000

    def install_gevent(self) -> None:
        """Put gevent into the live release's virtualenv, for the grid's gevent workers (the benchmark's
        containers exist only to be measured; a deploy would install it into a new build)."""
        pip = "/srv/%s/current/venv/bin/pip" % APP
        subprocess.run(
            ["podman", "exec", self.name, pip, "install", "--quiet", "--disable-pip-version-check",
             *GEVENT_REQUIREMENTS],
            check=True,
            capture_output=True,
        )  # fmt: skip

    def destroy(self) -> None:
        subprocess.run(["podman", "rm", "--force", "--ignore", self.name], capture_output=True, check=False)

    def remote(self, *args: str) -> dict:
        result = subprocess.run(
            ["podman", "exec", "-i", self.name, "python3", "-", *args],
            input=REMOTE.read_text(encoding="utf-8"),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError("%s: remote.py %s failed: %s" % (self.name, args[0], result.stderr.strip()))
        return json.loads(result.stdout)

    def apply(self, settings: dict) -> dict:
        return self.remote("apply", APP, json.dumps(settings), json.dumps(self.env), self.metrics)

    def use(self, workload: str) -> None:
        """Measure ``workload`` from now on: its environment (WORKLOAD_ENV) goes with every later apply."""
        self.env = dict(WORKLOAD_ENV.get(workload, {}))

    def switch(self, settings: dict, path: str, connections: int) -> None:
        """Apply a configuration, then warm its new workers up with load that is not measured."""
        self.apply(settings)
        wrk(self.port, path, connections, WARMUP_S)

    def usage(self) -> dict:
        return self.remote("usage", APP)

    def measure(self, path: str, connections: int, seconds: float) -> dict:
        """One wrk run on an idle app (nothing queued from the run before), with the container's CPU time per
        successful request meanwhile (``cpu_ms``: nginx and the app, at whatever load the run made)."""
        self.remote("drain", APP)
        before = self.cpu_ns()
        run = wrk(self.port, path, connections, seconds)
        used = self.cpu_ns() - before
        run["cpu_ms"] = round(used / 1e6 / run["ok"], 3) if run["ok"] else None
        return run

    def measure_open(self, path: str, rate: float, connections: int, seconds: float) -> dict:
        """One open-loop run on an idle app."""
        self.remote("drain", APP)
        return open_loop_run(self.port, path, rate, connections, seconds)

    def get(self, path: str) -> dict:
        request = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), headers={"Host": SERVER_NAME})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)


def inventory(hosts: list[BenchHost]) -> dict:
    return {
        "all": {
            "hosts": {
                host.name: {
                    "ansible_connection": "containers.podman.podman",
                    "ansible_python_interpreter": "/usr/bin/python3",
                }
                for host in hosts
            },
            "vars": {
                "flask_stack_become": False,
                # The gunicorn role's metrics hooks and exporters are installed; every measurement runs with
                # the hooks off (remote.py apply) except step 8's "on" runs.
                "flask_stack_metrics": True,
                "flask_stack_apps": [
                    {
                        "name": APP,
                        "wsgi": "flaskops_demo:app",
                        "source": {"path": str(ROOT / "playbooks" / "files" / "flaskops_demo")},
                        "server_name": [SERVER_NAME],
                        "workload": {"profile": "mixed"},
                    }
                ],
            },
        }
    }


def ansible_playbook(
    inventory_file: Path, playbook: Path, *extra: str, check: bool = True
) -> subprocess.CompletedProcess:
    """ansible-playbook from the harness's own virtualenv; with ``check=False`` its output is captured."""
    command = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory_file), str(playbook), *extra]
    if check:
        return subprocess.run(command, check=True, cwd=ROOT)
    return subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True)


# --- Measuring -----------------------------------------------------------------------------------


def measure_cost(host: BenchHost, workload: str) -> dict:
    """Per-request CPU of the app's processes (gunicorn and Flask included) and the wait the app reports."""
    path = WORKLOADS[workload]
    replies = [host.get(path) for _request in range(COST_SAMPLES)]
    before = host.usage()["cpu_ns"]
    run = wrk(host.port, path, COST_CONNECTIONS, COST_SECONDS)
    after = host.usage()["cpu_ns"]
    if not run["ok"]:
        raise RuntimeError("%s: no successful %s request while measuring its cost" % (host.name, path))
    return {
        "cpu_ms": round((after - before) / 1e6 / run["ok"], 2),
        "app_cpu_ms": round(statistics.median(r["cpu_ms"] for r in replies), 2),
        "wait_ms": round(statistics.median(r["wait_ms"] for r in replies), 2),
    }


def live_rate(cpus: int, cost: dict, slots: int) -> float:
    """Requests/s for plan (f)'s window: LIVE_CPU_SHARE of the CPUs and LIVE_SLOT_SHARE of the slots at most."""
    by_cpu = LIVE_CPU_SHARE * cpus * 1000.0 / max(cost["cpu_ms"], 0.1)
    by_slots = LIVE_SLOT_SHARE * slots * 1000.0 / max(cost["cpu_ms"] + cost["wait_ms"], 0.1)
    return round(min(by_cpu, by_slots), 1)


def measure_live(host: BenchHost, workload: str, rate: float, profile: Profile, work: Path) -> dict:
    """Plan (f)'s inputs: playbooks/measure.yml (check mode) on the host while loadgen sends ``rate`` requests/s.

    Returns the file measure.yml wrote (``workload`` and what it rests on), or ``{"refused": why}``.
    """
    measured = work / "measured" / workload
    stop = threading.Event()
    config = loadgen.Config(
        url="http://127.0.0.1:%d" % host.port,
        duration=profile.live_seconds * 4 + 120,
        connections=max(4, math.ceil(rate * 0.5)),
        mix="w=1",
        paths={"w": WORKLOADS[workload]},
        host_header=SERVER_NAME,
        timeout=WRK_TIMEOUT_S,
        rate=rate,
    )
    results: list = []
    load = threading.Thread(target=lambda: results.append(loadgen.run(config, stop)), daemon=True)
    load.start()
    try:
        time.sleep(1.0)  # connections open and warm before the window
        run = ansible_playbook(
            work / "inventory.json", MEASURE_PLAYBOOK, "--check", "--limit", host.name,
            "-e", "flask_stack_measure_window=%d" % profile.live_seconds,
            "-e", "flask_stack_measure_min_requests=%d" % profile.live_min_requests,
            "-e", "flask_stack_measured_dir=%s" % measured,
            check=False,
        )  # fmt: skip
    finally:
        stop.set()
        load.join(timeout=60)
    written = measured / host.name / ("%s.yml" % APP)
    if run.returncode != 0 or not written.exists():
        why = [line for line in (run.stdout + run.stderr).splitlines() if "refused" in line or "ERROR" in line]
        return {"refused": " ".join(why)[-2000:] or (run.stdout + run.stderr)[-2000:], "rate": rate}
    found = yaml.safe_load(written.read_text(encoding="utf-8"))
    found["rate"] = rate
    found["load_failed"] = results[0].failed if results else None
    return found


def fit_memory(points: list[tuple[int, int, float]]) -> dict:
    """Fit steady anon MiB = master + workers x (worker + threads x thread) by least squares.

    ``points`` are (workers, threads, anon_mb). Returns master, worker and thread MiB; the thread size
    can come out slightly negative when threads cost next to nothing (the caller clamps it).
    """
    design = numpy.array([[1.0, w, w * t] for w, t, _anon in points])
    observed = numpy.array([anon for _w, _t, anon in points])
    (master, worker, thread), *_fit = numpy.linalg.lstsq(design, observed, rcond=None)
    return {
        "master_mb": round(float(master), 1),
        "worker_mb": round(float(worker), 1),
        "thread_mb": round(float(thread), 3),
    }


def screen(host: BenchHost, workload: str, profile: Profile) -> dict:
    """One short run per grid point and connection count; steady memory after it."""
    path = WORKLOADS[workload]
    results = {}
    for label, settings in grid(host.cpus, profile, workload).items():
        host.switch(settings, path, profile.connections[0])
        runs = {str(c): host.measure(path, c, profile.screen_seconds) for c in profile.connections}
        results[label] = {"settings": settings, "runs": runs, "anon_mb": host.usage()["anon_mb"]}
        log(
            "%s %s %-24s %s"
            % (host.name, workload, label, "  ".join("c%s %.0f/s" % (c, r["rps"]) for c, r in runs.items()))
        )
    return results


def fits_budget(screened_point: dict, budget_mb: float) -> bool:
    """Whether two generations of a screened grid point (a reload: new workers start before the old ones
    leave) fit the memory budget the plan has for the app: twice its steady memory, master included."""
    return 2 * screened_point["anon_mb"] <= budget_mb


def finalists(screened: dict, connections: tuple[int, ...], budget_mb: float) -> list[str]:
    """The best screened grid point at each connection count (in order, without repeats), among those whose
    reload fits the memory budget: a point that does not would be killed for memory at a reload."""
    # None fits: the smallest, so that the cell still has an (e) (the report lists what did not fit).
    eligible = [name for name in screened if fits_budget(screened[name], budget_mb)] or [
        min(screened, key=lambda name: screened[name]["anon_mb"])
    ]
    best = []
    for c in connections:
        label = max(eligible, key=lambda name: screened[name]["runs"][str(c)]["rps"])
        if label not in best:
            best.append(label)
    return best


def hup_peak(host: BenchHost, path: str, connections: int, workers: int) -> dict:
    """The app's anonymous-memory peak during a HUP under load, and the load's errors meanwhile."""
    load = subprocess.Popen(
        wrk_command(host.port, path, connections, HUP_LEAD_S + HUP_TAIL_S + 2),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(HUP_LEAD_S)
        peak = host.remote("hup-peak", APP, str(workers))
    finally:
        out, _err = load.communicate()
    run = parse_wrk(out)
    peak.update(load_ok=run["ok"], load_errors=run["errors"])
    return peak


def final(host: BenchHost, workload: str, configs: dict[str, dict], profile: Profile) -> dict:
    """Interleaved repeats of every distinct configuration; memory once per configuration."""
    path = WORKLOADS[workload]
    distinct = by_shape(configs)
    order = list(distinct)
    samples: dict[tuple, dict[str, list[dict]]] = {key: {str(c): [] for c in profile.connections} for key in order}
    memory: dict[tuple, dict] = {}
    for repeat in range(profile.repeats):
        for key in rotated(order, repeat):
            settings = dict(key)
            host.switch(settings, path, profile.connections[0])
            for c in profile.connections:
                samples[key][str(c)].append(host.measure(path, c, profile.seconds))
            if key not in memory:
                steady = host.usage()["anon_mb"]
                memory[key] = dict(hup_peak(host, path, profile.connections[0], settings["workers"]), steady_mb=steady)
            log(
                "%s %s rep %d %-30s %s"
                % (
                    host.name,
                    workload,
                    repeat + 1,
                    "/".join(distinct[key]),
                    "  ".join("c%s %.0f/s" % (c, s[-1]["rps"]) for c, s in samples[key].items()),
                )
            )
    results = {}
    for key, labels in distinct.items():
        for label in labels:
            results[label] = {"settings": dict(key), "samples": samples[key], "memory": memory[key]}
    return results


def best_grid_label(results: dict) -> str:
    """The grid configuration with the most requests/s (median) at any connection count."""
    grid_labels = [label for label in results if label.startswith("grid ")]
    return max(
        grid_labels, key=lambda label: max(median_of(s, "rps") or 0.0 for s in results[label]["samples"].values())
    )


def open_loop(host: BenchHost, workload: str, results: dict, profile: Profile) -> dict:
    """(d) and the best grid configuration at OPEN_LOAD x the best's most requests/s, open loop, interleaved."""
    path = WORKLOADS[workload]
    best = best_grid_label(results)
    rate = round(OPEN_LOAD * max(median_of(s, "rps") or 0.0 for s in results[best]["samples"].values()), 1)
    distinct = by_shape({"plan": results["plan"]["settings"], "best": results[best]["settings"]})
    runs: dict[tuple, list[dict]] = {key: [] for key in distinct}
    order = list(distinct)
    connections = max(OPEN_MIN_CONNECTIONS, *profile.connections)
    for repeat in range(OPEN_REPEATS):
        for key in rotated(order, repeat):
            host.switch(dict(key), path, profile.connections[0])
            runs[key].append(host.measure_open(path, rate, connections, profile.open_seconds))
            log(
                "%s %s open %.0f/s %-12s p99 %.0f ms, %d errors"
                % (host.name, workload, rate, "/".join(distinct[key]), runs[key][-1]["p99_ms"], runs[key][-1]["errors"])
            )
    return {
        "rate": rate,
        "connections": connections,
        "best": best,
        "runs": {name: runs[key] for key, names in distinct.items() for name in names},
    }


def instrumentation(host: BenchHost, workload: str, plan: dict, profile: Profile) -> dict:
    """Step 8: plan (d) with the gunicorn role's metrics hooks off (gunicorn's own) and on, interleaved, at the
    first connection count; each run also records how many requests the metrics counted meanwhile."""
    path = WORKLOADS[workload]
    connections = profile.connections[0]
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    try:
        for repeat in range(profile.metrics_repeats):
            for state in rotated(["off", "on"], repeat):
                host.metrics = state
                host.switch(plan, path, connections)
                before = host.remote("counted", APP)["requests"]
                run = host.measure(path, connections, profile.seconds)
                after = host.remote("counted", APP)["requests"]
                run["counted"] = None if before is None or after is None else after - before
                runs[state].append(run)
                log(
                    "%s %s metrics %-3s rep %d  c%d %.0f/s, counted %s"
                    % (host.name, workload, state, repeat + 1, connections, run["rps"], run["counted"])
                )
    finally:
        host.metrics = "off"
    return {"connections": connections, "settings": plan, "runs": runs}


# --- Analysis ------------------------------------------------------------------------------------


def median_of(samples: list[dict], field: str) -> float | None:
    values = [s[field] for s in samples if s.get(field) is not None]
    return statistics.median(values) if values else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def limit_rps(cpus: int, cpu_ms: float | None) -> float | None:
    """The most requests/s ``cpus`` CPUs can serve at ``cpu_ms`` of CPU per request (None if unknown)."""
    return cpus * 1000.0 / cpu_ms if cpu_ms else None


def summarize_open(cell: dict) -> dict | None:
    """Medians of the open-loop runs and (d)'s p99 over (e)'s; None for a run that made none."""
    measured = cell.get("open")
    if not measured:
        return None
    rows = {
        name: {
            "rps": round(median_of(runs, "rps"), 1),
            "p99_ms": median_of(runs, "p99_ms"),
            "lag_p99_ms": median_of(runs, "lag_p99_ms"),
            "errors": sum(r["errors"] for r in runs),
        }
        for name, runs in measured["runs"].items()
    }
    return {
        "rate": measured["rate"],
        "best": measured["best"],
        "rows": rows,
        "p99_plan_vs_best": ratio(rows["plan"]["p99_ms"], rows["best"]["p99_ms"]),
    }


def summarize(cell: dict, connections: tuple[int, ...]) -> dict:
    """Medians per configuration and connection count, the best grid point (e) and the ratios."""
    summary = {}
    for c in map(str, connections):
        rows = {}
        for label, result in cell["final"].items():
            samples = result["samples"][c]
            rows[label] = {
                "rps": round(median_of(samples, "rps"), 1),
                "p50_ms": median_of(samples, "p50_ms"),
                "p99_ms": median_of(samples, "p99_ms"),
                "cpu_ms": median_of(samples, "cpu_ms"),
                "errors": sum(s["errors"] for s in samples),
                "requests": sum(s["requests"] for s in samples),
            }
        grid_labels = [label for label in rows if label.startswith("grid ")]
        best = max(grid_labels, key=lambda label: rows[label]["rps"])
        rps = {label: row["rps"] for label, row in rows.items()}
        # The physical limit: the cell's CPUs over the CPU time (the container's, nginx included) a request
        # took in (e)'s own runs, at saturation.
        limit = limit_rps(cell["cpus"], rows[best]["cpu_ms"])
        summary[c] = {
            "rows": rows,
            "best": best,
            "limit_rps": None if limit is None else round(limit, 1),
            "ratios": {
                "plan_vs_best": ratio(rps["plan"], rps[best]),
                "profile_vs_best": ratio(rps["profile"], rps[best]),
                "plan_vs_rule": ratio(rps["plan"], rps["rule"]),
                "plan_vs_default": ratio(rps["plan"], rps["default"]),
                "profile_vs_rule": ratio(rps["profile"], rps["rule"]),
                "profile_vs_default": ratio(rps["profile"], rps["default"]),
                "plan_p99_vs_best": ratio(rows["plan"]["p99_ms"], rows[best]["p99_ms"]),
                "best_vs_limit": ratio(rps[best], limit),
                # None without plan (f): measure.yml refused the cell's live window.
                "live_vs_best": ratio(rps["live"], rps[best]) if "live" in rps else None,
                # None without plan (g): only the gevent workloads have it.
                "async_vs_best": ratio(rps["async"], rps[best]) if "async" in rps else None,
            },
        }
    return summary


def summarize_metrics(cell: dict) -> dict | None:
    """Step 8: plan (d)'s median requests/s with the metrics hooks on over off, and what they counted."""
    measured = cell.get("metrics")
    if not measured:
        return None
    runs = measured["runs"]
    off, on = median_of(runs["off"], "rps"), median_of(runs["on"], "rps")
    return {
        "connections": measured["connections"],
        "rps_off": off,
        "rps_on": on,
        "ratio_on_vs_off": ratio(on, off),
        "p99_on_vs_off": ratio(median_of(runs["on"], "p99_ms"), median_of(runs["off"], "p99_ms")),
        # What the hooks counted during the measured runs (the runs' answers, the idle checks' /healthz too).
        "counted_on": [run["counted"] for run in runs["on"]],
        "counted_off": [run["counted"] for run in runs["off"]],
        "answered_on": [run["requests"] for run in runs["on"]],
    }


def targets(summary: dict, memory: dict, open_summary: dict | None = None, metrics_summary: dict | None = None) -> dict:
    """The issue's targets for one cell: True when met."""
    checks = {}
    if open_summary is not None:
        r = open_summary["p99_plan_vs_best"]
        checks["open-loop plan p99 <= 1.25 best"] = r is not None and r <= 1.25
    for c, s in summary.items():
        r = s["ratios"]
        checks["c%s plan >= 0.95 best" % c] = r["plan_vs_best"] is not None and r["plan_vs_best"] >= 0.95
        checks["c%s plan p99 <= 1.25 best" % c] = r["plan_p99_vs_best"] is not None and r["plan_p99_vs_best"] <= 1.25
        checks["c%s profile >= 0.90 best" % c] = r["profile_vs_best"] is not None and r["profile_vs_best"] >= 0.90
        checks["c%s plan and profile >= rule" % c] = (r["plan_vs_rule"] or 0) >= 1.0 and (
            r["profile_vs_rule"] or 0
        ) >= 1.0
        checks["c%s live >= 0.95 best" % c] = r["live_vs_best"] is not None and r["live_vs_best"] >= 0.95
    checks["plan memory_peak_mb within 25 % of the HUP peak"] = abs(memory["plan_error"]) <= 0.25
    if metrics_summary is not None:
        r = metrics_summary["ratio_on_vs_off"]
        checks["metrics on >= 0.97 off"] = r is not None and r >= 0.97
    return checks


BENCH_LINE = (
    "BENCH RESULT workload={workload} cpus={cpus} conns={conns} ratio_plan_vs_best={plan_vs_best} "
    "p99_plan_vs_best={plan_p99_vs_best} ratio_profile_vs_best={profile_vs_best} ratio_plan_vs_rule={plan_vs_rule} "
    "ratio_best_vs_limit={best_vs_limit} open_p99_plan_vs_best={open_p99_plan_vs_best} "
    "ratio_plan_vs_default={plan_vs_default} ratio_live_vs_best={live_vs_best} ratio_async_vs_best={async_vs_best}"
)


def _ratio_text(value: float | None) -> str:
    """Two decimals; ``inf`` when the reference served no request at all (its ratio has no bound)."""
    return "inf" if value is None else "%.2f" % value


def _ratio_or(value: float | None, absent: str) -> str:
    """A ratio of a configuration a cell may lack ((f), (g)): ``absent`` when it has none."""
    return absent if value is None else _ratio_text(value)


def bench_lines(cells: list[dict]) -> list[str]:
    lines = []
    for cell in cells:
        for c, s in cell["summary"].items():
            ratios = {key: _ratio_text(value) for key, value in s["ratios"].items()}
            # No plan (f) where measure.yml refused the live window, no plan (g) outside the gevent workloads.
            for key in ("live_vs_best", "async_vs_best"):
                ratios[key] = _ratio_or(s["ratios"].get(key), "none")
            opened = cell.get("open_summary")
            ratios["open_p99_plan_vs_best"] = _ratio_text(opened["p99_plan_vs_best"] if opened else None)
            lines.append(BENCH_LINE.format(workload=cell["workload"], cpus=cell["cpus"], conns=c, **ratios))
    return lines


METRICS_LINE = (
    "BENCH METRICS workload={workload} cpus={cpus} conns={conns} rps_off={rps_off:.1f} rps_on={rps_on:.1f} "
    "ratio_metrics_on_vs_off={ratio} p99_on_vs_off={p99}"
)


def metrics_lines(cells: list[dict]) -> list[str]:
    """Step 8's line for each cell that has it."""
    return [
        METRICS_LINE.format(
            workload=cell["workload"],
            cpus=cell["cpus"],
            conns=m["connections"],
            rps_off=m["rps_off"],
            rps_on=m["rps_on"],
            ratio=_ratio_text(m["ratio_on_vs_off"]),
            p99=_ratio_text(m["p99_on_vs_off"]),
        )
        for cell in cells
        if (m := cell.get("metrics_summary"))
    ]


# --- Reports -------------------------------------------------------------------------------------

CONFIG_NAMES = {
    "default": "(a) gunicorn defaults",
    "rule": "(b) rule of thumb",
    "profile": "(c) plan, profile only",
    "plan": "(d) plan, measured inputs",
    "live": "(f) plan, measured live by flaskops.stack.measure",
    "async": "(g) plan, measured inputs and async_safe",
}


def describe(settings: dict) -> str:
    if settings["worker_class"] == "sync":
        return "%d sync" % settings["workers"]
    if settings["worker_class"] == "gevent":
        return "%d gevent x %d" % (settings["workers"], settings["worker_connections"])
    return "%d %s x %d" % (settings["workers"], settings["worker_class"], settings["threads"])


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def live_table(report: dict) -> list[str]:
    """The report's table of what flaskops.stack.measure found in each cell (plan (f)'s inputs)."""
    out = [
        "",
        "Plan (f): `playbooks/measure.yml --check` (the module `flaskops.stack.measure`) watched the live app under"
        " loadgen at the rate below (the neutral configuration of the screen, gthread CPUs + 1 x 8); its figures:",
        "",
        "| workload | CPUs | rate/s | requests | cpu_ms | wait_ms | worker_rss_mb | thread_rss_mb | CPU use |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in report["cells"]:
        live = cell.get("live") or {}
        w = live.get("workload")
        if not w:
            out.append(
                "| %s | %d | %s | refused: %s |||||"
                % (cell["workload"], cell["cpus"], live.get("rate"), (live.get("refused") or "?")[:200])
            )
            continue
        out.append(
            "| %s | %d | %.1f | %d | %s | %s | %s | %s | %s |"
            % (
                cell["workload"],
                cell["cpus"],
                live["rate"],
                live["requests"],
                w.get("cpu_ms"),
                w.get("wait_ms"),
                w.get("worker_rss_mb"),
                w.get("thread_rss_mb"),
                _fmt(live.get("utilization"), ".2f"),
            )
        )
    return out


def metrics_table(report: dict) -> list[str]:
    """Step 8: the instrumentation's cost on plan (d)."""
    cells = [cell for cell in report["cells"] if cell.get("metrics_summary")]
    if not cells:
        return []
    out = [
        "",
        "## Metrics on and off",
        "",
        "Plan (d) with the gunicorn role's metrics hooks (`gunicorn_metrics`) off (gunicorn's own hooks) and on, "
        "in interleaved pairs; `counted` is what the hooks counted during the on runs (their answers and the idle "
        "checks' `/healthz`), and 0 during the off runs.",
        "",
        "| workload | CPUs | conns | plan (d) | requests/s off | requests/s on | on / off | p99 on / off "
        "| counted on (answered) | counted off |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in cells:
        m = cell["metrics_summary"]
        out.append(
            "| %s | %d | %d | %s | %.1f | %.1f | %s | %s | %s | %s |"
            % (
                cell["workload"],
                cell["cpus"],
                m["connections"],
                describe(cell["metrics"]["settings"]),
                m["rps_off"],
                m["rps_on"],
                _ratio_text(m["ratio_on_vs_off"]),
                _ratio_text(m["p99_on_vs_off"]),
                ", ".join("%s (%s)" % pair for pair in zip(m["counted_on"], m["answered_on"], strict=True)),
                ", ".join(str(n) for n in m["counted_off"]),
            )
        )
    return out


def markdown(report: dict) -> str:
    meta = report["meta"]
    out = [
        "# flaskops.stack tuning benchmark, %s" % meta["date"],
        "",
        "Profile `%s`, commit `%s`, %s; %d repeats of %d s per configuration and connection count, "
        "interleaved, medians; wrk on 127.0.0.1 through nginx. Generated by `benchmarks/bench.py`; "
        "benchmarks/README.md explains each column."
        % (meta["profile"], meta["commit"], meta["machine"], meta["repeats"], meta["seconds"]),
        "",
        "## Ratios",
        "",
        "| workload | CPUs | conns | d/e | c/e | d/b | d/a | c/b | c/a | d p99 / e p99 | e / limit "
        "| open loop: d p99 / e p99 | f/e | g/e |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in report["cells"]:
        for c, s in cell["summary"].items():
            r = s["ratios"]
            out.append(
                "| %s | %d | %s | %s |"
                % (
                    cell["workload"],
                    cell["cpus"],
                    c,
                    " | ".join(
                        _ratio_text(r[k])
                        for k in (
                            "plan_vs_best",
                            "profile_vs_best",
                            "plan_vs_rule",
                            "plan_vs_default",
                            "profile_vs_rule",
                            "profile_vs_default",
                            "plan_p99_vs_best",
                            "best_vs_limit",
                        )
                    )
                    + " | "
                    + _ratio_text(cell["open_summary"]["p99_plan_vs_best"] if cell.get("open_summary") else None)
                    + " | "
                    + _ratio_or(r.get("live_vs_best"), "none")
                    + " | "
                    + _ratio_or(r.get("async_vs_best"), "-"),
                )
            )
    out += ["", "```"] + report["bench_lines"] + report["metrics_lines"] + ["```", ""]
    out += [
        "`limit` is the most requests/s the cell's CPUs could serve at the CPU time per request (the container's:"
        " nginx, gunicorn, the app) measured during (e)'s own runs, at saturation.",
        "",
        "## Open loop",
        "",
        "Requests due at a fixed rate, %d %% of (e)'s most requests/s, whatever the answers (loadgen `--open-loop`,"
        " %d processes, at least %d connections or the cell's most); latency counts from when a request was due, so"
        " the time it queued is in it. %d runs each, interleaved, medians."
        % (OPEN_LOAD * 100, OPEN_PROCESSES, OPEN_MIN_CONNECTIONS, OPEN_REPEATS),
        "",
        "| workload | CPUs | rate/s | configuration | gunicorn | req/s | p99 ms | loadgen lag p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in report["cells"]:
        opened = cell.get("open_summary")
        if not opened:
            continue
        for name, row in opened["rows"].items():
            label = {"plan": "plan", "best": opened["best"]}[name]
            out.append(
                "| %s | %d | %.1f | %s | %s | %.1f | %s | %s | %d |"
                % (
                    cell["workload"],
                    cell["cpus"],
                    opened["rate"],
                    CONFIG_NAMES.get(label, label + " = (e)"),
                    describe(cell["final"][label]["settings"]),
                    row["rps"],
                    _fmt(row["p99_ms"], ".1f"),
                    _fmt(row["lag_p99_ms"], ".1f"),
                    row["errors"],
                )
            )
    out.append("")
    out += [
        "## Measured workloads",
        "",
        "| workload | CPUs | cpu_ms (processes) | cpu_ms (app) | wait_ms |",
        "|---|---|---|---|---|",
    ]
    for cell in report["cells"]:
        cost = cell["cost"]
        out.append(
            "| %s | %d | %.2f | %.2f | %.2f |"
            % (cell["workload"], cell["cpus"], cost["cpu_ms"], cost["app_cpu_ms"], cost["wait_ms"])
        )
    out += live_table(report)
    out += [
        "",
        "`cpu_ms (processes)` is the CPU time of the app's gunicorn processes per request at 4 connections "
        "(gunicorn and Flask included), which the plan (d) is given; `cpu_ms (app)` is what the endpoint itself "
        "burns. The memory fit (master + workers x (worker + threads x thread), least squares over the grid's "
        "steady-state memory) gives (d) its worker_rss_mb and thread_rss_mb.",
        "",
        "## Memory",
        "",
        "| CPUs | workload | fitted master MiB | worker MiB | thread MiB |",
        "|---|---|---|---|---|",
    ]
    for key, fit in sorted(report["memory_fit"].items()):
        cpus, workload = key.split(" ", 1)
        out.append(
            "| %s | %s | %.1f | %.1f | %.3f |" % (cpus, workload, fit["master_mb"], fit["worker_mb"], fit["thread_mb"])
        )
    out += [
        "",
        "| workload | CPUs | plan (d) | steady MiB | HUP peak MiB | plan memory_mb | plan memory_peak_mb "
        "| peak error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell in report["cells"]:
        m = cell["memory"]
        out.append(
            "| %s | %d | %s | %.1f | %.1f | %d | %d | %+.0f %% |"
            % (
                cell["workload"],
                cell["cpus"],
                describe(cell["final"]["plan"]["settings"]),
                m["steady_mb"],
                m["peak_mb"],
                m["plan_memory_mb"],
                m["plan_memory_peak_mb"],
                m["plan_error"] * 100,
            )
        )
    out += metrics_table(report)
    out += ["", "## Every configuration", ""]
    for cell in report["cells"]:
        out += [
            "### %s, %d CPU%s" % (cell["workload"], cell["cpus"], "s" if cell["cpus"] > 1 else ""),
            "",
            "| configuration | gunicorn | conns | req/s | p50 ms | p99 ms | errors | steady MiB | HUP peak MiB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c, s in cell["summary"].items():
            for label, row in s["rows"].items():
                name = CONFIG_NAMES.get(label, label + (" = (e)" if label == s["best"] else ""))
                memory = cell["final"][label]["memory"]
                out.append(
                    "| %s | %s | %s | %.1f | %s | %s | %d | %.1f | %.1f |"
                    % (
                        name,
                        describe(cell["final"][label]["settings"]),
                        c,
                        row["rps"],
                        _fmt(row["p50_ms"], ".1f"),
                        _fmt(row["p99_ms"], ".1f"),
                        row["errors"],
                        memory["steady_mb"],
                        memory["peak_mb"],
                    )
                )
        out.append("")
        budget = cell["plans"]["measured"]["memory_budget_mb"]
        out += [
            "Targets: "
            + "; ".join("%s %s" % (name, "met" if ok else "**not met**") for name, ok in cell["targets"].items()),
            "",
            "Screened grid (one %d s run each; steady MiB; *over*: two generations exceed (d)'s memory budget of "
            "%d MiB, not a candidate for (e)): %s"
            % (
                report["meta"]["screen_seconds"],
                budget,
                "; ".join(
                    "%s %s, %.0f MiB%s"
                    % (
                        label,
                        "/".join("%.0f" % r["rps"] for r in point["runs"].values()),
                        point["anon_mb"],
                        "" if fits_budget(point, budget) else " *over*",
                    )
                    for label, point in cell["screen"].items()
                ),
            ),
            "",
        ]
    return "\n".join(out) + "\n"


def plot(report: dict, path: Path) -> None:
    """Grouped bars of requests/s per configuration, one panel per workload and CPU count."""
    cells = report["cells"]
    columns = len({cell["workload"] for cell in cells})
    rows = math.ceil(len(cells) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.8 * rows), squeeze=False)
    for axis, cell in zip(axes.flat, cells, strict=False):
        any_summary = next(iter(cell["summary"].values()))
        labels = ["default", "rule", "profile", "plan"] + [
            label for label in any_summary["rows"] if label.startswith("grid ")
        ]
        width = 0.8 / len(cell["summary"])
        for index, (c, s) in enumerate(cell["summary"].items()):
            xs = [i + index * width for i in range(len(labels))]
            values = [s["rows"][label]["rps"] for label in labels]
            bars = axis.bar(xs, values, width, label="%s conns" % c)
            plan_bar = bars[labels.index("plan")]
            plan_bar.set_edgecolor("black")
            plan_bar.set_linewidth(2)
            axis.annotate(
                "plan",
                (plan_bar.get_x() + plan_bar.get_width() / 2, plan_bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
                fontweight="bold",
            )
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))])
        axis.set_xticklabels(
            [
                {"default": "(a) default", "rule": "(b) rule", "profile": "(c) profile", "plan": "(d) plan"}.get(
                    label, label.replace("grid ", "")
                )
                for label in labels
            ],
            rotation=35,
            ha="right",
            fontsize=7,
        )
        axis.set_title("%s, %d CPU%s" % (cell["workload"], cell["cpus"], "s" if cell["cpus"] > 1 else ""), fontsize=9)
        axis.set_ylabel("requests/s (median)", fontsize=8)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(cells) :]:
        axis.set_visible(False)
    figure.suptitle(
        "flaskops.stack benchmark %s (%s)" % (report["meta"]["date"], report["meta"]["profile"]), fontsize=10
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- Main ----------------------------------------------------------------------------------------


def git_commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or "unknown"


def provision(hosts: list[BenchHost], inventory_file: Path, reuse: bool, profile: Profile) -> None:
    """Start the containers and provision them with playbooks/site.yml, or attach to those a --keep run left;
    then gevent where the profile's grid has gevent workers."""
    if reuse:
        for host in hosts:
            host.attach()
    else:
        for host in hosts:
            host.create()
        log("provisioning %s with playbooks/site.yml" % ", ".join(h.name for h in hosts))
        ansible_playbook(inventory_file, ROOT / "playbooks" / "site.yml")
    if set(profile.gevent_workloads) & set(profile.workloads):
        for host in hosts:
            host.install_gevent()


def screen_host(host: BenchHost, profile: Profile, cells: dict[tuple[int, str], dict], work: Path) -> dict:
    """Measure each workload's cost, let flaskops.stack.measure watch it live (plan (f)'s inputs) and screen the
    grid on one host, adding a cell per workload to ``cells``.

    Returns the memory fit of each workload's screened points (None with fewer than three): workers differ
    in size from one app to another (the large workload's by 256 MiB), so each workload has its own.
    """
    neutral = {"worker_class": "gthread", "workers": host.cpus + 1, "threads": 8, "worker_connections": 8}
    fits = {}
    for workload in profile.workloads:
        host.use(workload)
        host.apply(neutral)
        cost = measure_cost(host, workload)
        log("%s %s cost: %s" % (host.name, workload, cost))
        rate = live_rate(host.cpus, cost, neutral["workers"] * neutral["threads"])
        live = measure_live(host, workload, rate, profile, work)
        log("%s %s measured live at %.1f requests/s: %s" % (host.name, workload, rate, live.get("workload", live)))
        screened = screen(host, workload, profile)
        cells[(host.cpus, workload)] = {
            "cpus": host.cpus,
            "workload": workload,
            "cost": cost,
            "live": live,
            "screen": screened,
        }
        # The model's memory is per worker and per thread; a gevent worker's greenlets are neither.
        anon_points = [
            (p["settings"]["workers"], p["settings"]["threads"], p["anon_mb"])
            for p in screened.values()
            if p["settings"]["worker_class"] != "gevent"
        ]
        fits[workload] = fit_memory(anon_points) if len(anon_points) >= 3 else None
    return fits


def measured_inputs(cost: dict, fit: dict | None) -> dict:
    """The workload plan (d) is made from: the measured cost, and the memory sizes when the fit found a worker."""
    measured = {"cpu_ms": cost["cpu_ms"], "wait_ms": cost["wait_ms"]}
    if fit and fit["worker_mb"] > 0:
        measured.update(worker_rss_mb=fit["worker_mb"], thread_rss_mb=max(0.0, fit["thread_mb"]))
    return measured


def screen_hosts(hosts: list[BenchHost], profile: Profile, work: Path) -> tuple[dict, dict, dict]:
    """Steps 2 and 3 on every host: returns the cells, the memory fit per CPU count and plan (d)'s inputs."""
    cells: dict[tuple[int, str], dict] = {}
    fits = {}
    inputs: dict[str, dict] = {}
    for host in hosts:
        host_fits = screen_host(host, profile, cells, work)
        for workload, fit in host_fits.items():
            fits["%d %s" % (host.cpus, workload)] = fit or {"master_mb": 0.0, "worker_mb": 0.0, "thread_mb": 0.0}
        inputs[host.name] = {
            workload: measured_inputs(cells[(host.cpus, workload)]["cost"], host_fits[workload])
            for workload in profile.workloads
        }
    return cells, fits, inputs


def live_inputs(hosts: list[BenchHost], cells: dict) -> dict[str, dict]:
    """Plan (f)'s inputs: ``{host: {workload: the workload measure.yml wrote}}``, for the cells it did not refuse."""
    return {
        host.name: {
            workload: cell["live"]["workload"]
            for (cpus, workload), cell in cells.items()
            if cpus == host.cpus and "workload" in cell["live"]
        }
        for host in hosts
    }


def request_plans(
    work: Path, inventory_file: Path, inputs: dict[str, dict], live: dict[str, dict], profile: Profile
) -> dict:
    """Step 4: plans (c), (d), (f) and, for the gevent workloads, (g) for every host and workload, from the
    filter (benchmarks/plans.yml)."""
    plans_file = work / "plans.json"
    (work / "inputs.json").write_text(
        json.dumps(
            {
                "bench_inputs": inputs,
                "bench_live_inputs": live,
                "bench_profiles": PROFILE_OF,
                "bench_async_workloads": list(profile.gevent_workloads),
                "bench_plans_file": str(plans_file),
            }
        ),
        encoding="utf-8",
    )
    ansible_playbook(inventory_file, PLANS_PLAYBOOK, "-e", "@%s" % (work / "inputs.json"))
    return json.loads(plans_file.read_text(encoding="utf-8"))


def configurations(cell: dict, connections: tuple[int, ...]) -> dict[str, dict]:
    """What step 5 measures in a cell: (a) defaults, (b) the rule of thumb, (c) and (d) the plans, the finalists."""
    configs = {
        "default": dict(GUNICORN_DEFAULTS),
        "rule": rule_of_thumb(cell["cpus"], cell["workload"]),
        "profile": from_plan(cell["plans"]["profile"]),
        "plan": from_plan(cell["plans"]["measured"]),
    }
    if cell["plans"].get("live"):
        configs["live"] = from_plan(cell["plans"]["live"])
    if cell["plans"].get("async"):
        configs["async"] = from_plan(cell["plans"]["async"])
    for label in finalists(cell["screen"], connections, cell["plans"]["measured"]["memory_budget_mb"]):
        configs[label] = cell["screen"][label]["settings"]
    return configs


def measure_finals(hosts: list[BenchHost], profile: Profile, cells: dict, plans: dict, inputs: dict) -> None:
    """Step 5 in every cell: record its plans and inputs, and measure its configurations."""
    for host in hosts:
        for workload in profile.workloads:
            cell = cells[(host.cpus, workload)]
            cell["plans"] = {
                "profile": plans[host.name][workload]["profile"],
                "measured": plans[host.name][workload]["measured"],
                "live": plans[host.name][workload].get("live"),
                "async": plans[host.name][workload].get("async"),
            }
            cell["inputs"] = inputs[host.name][workload]
            host.use(workload)
            cell["final"] = final(host, workload, configurations(cell, profile.connections), profile)
            cell["open"] = open_loop(host, workload, cell["final"], profile)
            if workload in profile.metrics_workloads:
                cell["metrics"] = instrumentation(host, workload, from_plan(cell["plans"]["measured"]), profile)


def build_report(profile: Profile, cells: dict, fits: dict, timings_s: dict) -> dict:
    """The samples and the run's metadata, before analysis."""
    return {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
            "profile": profile.name,
            "commit": git_commit(),
            "machine": "%d CPUs on the machine" % os.cpu_count(),
            "repeats": profile.repeats,
            "seconds": profile.seconds,
            "screen_seconds": profile.screen_seconds,
            "connections": list(profile.connections),
            "timings_s": timings_s,
        },
        "memory_fit": fits,
        "cells": [cells[key] for key in sorted(cells)],
    }


def run(profile: Profile, out: Path, keep: bool, prefix: str, reuse: bool) -> dict:
    """Steps 1-6: provision, measure and screen, plan, measure the configurations, then write the report."""
    started = time.monotonic()
    hosts = [BenchHost(cpus, prefix) for cpus in profile.cpus]
    work = Path(tempfile.mkdtemp(prefix="flaskops-bench-"))
    try:
        inventory_file = work / "inventory.json"
        inventory_file.write_text(json.dumps(inventory(hosts), indent=2), encoding="utf-8")
        provision(hosts, inventory_file, reuse, profile)
        provisioned = time.monotonic()
        cells, fits, inputs = screen_hosts(hosts, profile, work)
        screened_at = time.monotonic()
        plans = request_plans(work, inventory_file, inputs, live_inputs(hosts, cells), profile)
        measure_finals(hosts, profile, cells, plans, inputs)
        finished = time.monotonic()
    finally:
        if not keep:
            for host in hosts:
                host.destroy()
        shutil.rmtree(work, ignore_errors=True)

    report = build_report(
        profile,
        cells,
        fits,
        {
            "provision": round(provisioned - started),
            "screen": round(screened_at - provisioned),
            "final": round(finished - screened_at),
            "total": round(finished - started),
        },
    )
    # The samples first, so that nothing measured is lost if the analysis fails (--render redoes it).
    out.mkdir(parents=True, exist_ok=True)
    (out / ("%s.json" % report["meta"]["date"])).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    analyse(report)
    write(report, out)
    return report


def analyse(report: dict) -> None:
    """Medians, ratios, memory comparison and targets of every cell; the BENCH RESULT lines."""
    connections = tuple(report["meta"]["connections"])
    for cell in report["cells"]:
        cell["summary"] = summarize(cell, connections)
        measured = cell["final"]["plan"]["memory"]
        plan_c, plan_d = cell["plans"]["profile"], cell["plans"]["measured"]
        cell["memory"] = {
            "steady_mb": measured["steady_mb"],
            "peak_mb": measured["peak_mb"],
            "plan_memory_mb": plan_d["memory_mb"],
            "plan_memory_peak_mb": plan_d["memory_peak_mb"],
            "plan_error": round(plan_d["memory_peak_mb"] / measured["peak_mb"] - 1, 3),
            "profile_memory_peak_mb": plan_c["memory_peak_mb"],
        }
        cell["open_summary"] = summarize_open(cell)
        cell["metrics_summary"] = summarize_metrics(cell)
        cell["targets"] = targets(cell["summary"], cell["memory"], cell["open_summary"], cell["metrics_summary"])
    report["bench_lines"] = bench_lines(report["cells"])
    report["metrics_lines"] = metrics_lines(report["cells"])


def write(report: dict, out: Path) -> None:
    date = report["meta"]["date"]
    out.mkdir(parents=True, exist_ok=True)
    (out / ("%s.json" % date)).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out / ("%s.md" % date)).write_text(markdown(report), encoding="utf-8")
    plot(report, out / ("%s.png" % date))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--out", type=Path, required=True, help="directory for <date>.json, .md and .png")
    parser.add_argument("--keep", action="store_true", help="leave the containers running afterwards")
    parser.add_argument("--prefix", default="flaskops-bench", help="container name prefix (default %(default)s)")
    parser.add_argument(
        "--reuse", action="store_true", help="measure the containers a --keep run left, without provisioning them"
    )
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="measure nothing: analyse a saved <date>.json again into --out"
    )
    args = parser.parse_args(argv)
    if args.render:
        report = json.loads(args.render.read_text(encoding="utf-8"))
        analyse(report)
        write(report, args.out)
        print("\n".join(report["bench_lines"] + report["metrics_lines"]))
        return 0
    for tool in ("podman", "wrk"):
        if shutil.which(tool) is None:
            parser.error("%s is not installed: run `make testhost` first" % tool)
    report = run(PROFILES[args.profile], args.out, args.keep or args.reuse, args.prefix, args.reuse)
    for line in report["bench_lines"] + report["metrics_lines"]:
        print(line)
    log("results in %s/%s.{md,json,png}; %s" % (args.out, report["meta"]["date"], report["meta"]["timings_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
