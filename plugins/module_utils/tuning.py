# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sizing model for a gunicorn + nginx + systemd Flask stack.

Plain Python with no Ansible imports, so it can be imported, tested and used
outside Ansible. The filter plugins in ``plugins/filter`` are thin wrappers
that map :class:`TuningError` to ``AnsibleFilterError``.

The model, in short (README "How tuning is derived" has a worked example):

* Effective CPUs ``C`` are the smaller of the vCPUs and the cgroup CPU quota;
  effective memory ``M`` the smaller of MemTotal and the cgroup memory limit.
* The CPU share of a request is ``f = cpu_ms / (cpu_ms + wait_ms)``. Keeping
  ``C`` cores busy needs about ``C / f`` requests in flight (Little's law).
* Python runs one thread at a time per process (GIL): CPU parallelism comes
  from processes, waiting is covered by threads. CPU-bound work gets ``sync``
  workers, about one per core plus a spare; I/O-bound work gets ``gthread``
  with about one process per core and enough threads to hold the concurrency.
* Memory caps processes and threads. On HUP gunicorn starts the new workers
  before the old ones leave, so two generations must fit the budget
  ``(M - reserve) * memory_share``.
* ``workers * threads`` never exceeds ``db_pool_max`` when given, nor, when
  ``fleet_hosts`` share a database that accepts ``db_max_connections``,
  ``db_max_connections // (2 * fleet_hosts)``: every host may be reloading at
  once, and during a reload two generations of workers hold connections.
* Timeouts form one chain: nginx ``proxy_read_timeout`` >= gunicorn
  ``timeout``; systemd ``TimeoutStopSec`` > gunicorn ``graceful_timeout``;
  gunicorn ``keepalive`` > nginx upstream ``keepalive_timeout``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

# --- Constants ------------------------------------------------------------
# Each constant says what it is for. They are starting points from the seed
# guides and gunicorn's documentation; the benchmark (``make bench``)
# calibrates them, and a change records the run that justified it.

#: Workload presets: (cpu_ms, wait_ms) per request. Only the ratio matters to
#: the model. ``io`` matches a request that spends ~4 % of its time on the CPU
#: (2 ms CPU, 48 ms waiting on a database or an HTTP call); ``mixed`` ~18 %;
#: ``cpu`` all of it (templating, JSON, image work).
#: Calibrated: ``mixed`` was (5, 15), 25 %. The benchmark's mixed workload
#: (the demo app's /mixed, 3 ms of CPU + 20 ms of sleep) measured 4.5 ms of CPU
#: per request with gunicorn and Flask, 20.1 ms waiting: 18 % (make bench-quick
#: and by hand on 2 CPUs, 2026-11-21). At 25 % (with the old 1.25 headroom) the
#: profile plan held 12 requests in flight where the host needed about 20 (0.85 x
#: the best requests/s); io's 4.7 % and cpu's 100 % measured match their presets.
#: ``api``: an app whose requests mostly wait for another service over the
#: network (an external API, a slow query), ~1.7 %. Added after make bench of
#: 2026-12-04 (benchmarks/results/2026-12-04.md): its wait workload (2 ms CPU +
#: 200 ms sleep) measured 3.57 ms of CPU per request with nginx, gunicorn and
#: Flask and 200.15 ms waiting; given ``io`` instead, the plan held too few
#: requests for 200 ms waits (0.76-0.81 x the best requests/s).
PROFILES = {
    "cpu": (20.0, 0.0),
    "mixed": (4.5, 20.0),
    "io": (2.0, 48.0),
    "api": (3.5, 200.0),
}

#: Requests in flight over Little's law (``C / f``). Under full load a request
#: also queues for a CPU and for its process's GIL, so keeping every CPU busy
#: takes more requests in flight than its own CPU and wait time say.
#: Calibrated: was 1.25 ("burst headroom"). On 2 CPUs (2026-11-21, by hand with
#: benchmarks/bench.py's helpers) requests/s stopped growing only at about 1.6 x
#: Little's law for io (1 + 50 ms: ~70 in flight, where 1.25 x gave 54 and 0.90 x
#: the best) and 1.8 x for mixed (~20 in flight); 2 x leaves room for the noise
#: in the measured cpu_ms. With it, make bench (benchmarks/results/2026-11-21.md)
#: put the plan at 0.95-1.07 x the best grid point in 11 of its 12 cells.
CONCURRENCY_HEADROOM = 2.0

#: Most CPU one process's requests may ask of its GIL together: threads (or
#: greenlets) per process x the CPU share of a request stay within it, and the
#: requests in flight spread over more processes instead (up to 2C + 1). More
#: threads per process than that queue for its GIL and lengthen the tail.
#: Set from make bench's grid of 2026-11-21 (benchmarks/results/2026-11-21.md),
#: whose best points at 256 connections on 2 CPUs were 5 x 16 for io (0.047 x
#: 16 = 0.75) and 5 x 4 for mixed, where the plan's 3 x 29 and 3 x 8 had 1.5 x
#: their p99; measured with the rule in make bench of 2026-12-04
#: (benchmarks/results/2026-12-04.md): the plan's closed-loop p99 0.71-1.04 x
#: the best's in all 16 cells, requests/s 0.96-1.11 x. Open loop at 80 % load,
#: mixed on 2 CPUs had 1.71 x the p99 of 3 x 16 (5 x 4 holds 20 requests where
#: bursts need more): not yet met.
GIL_LOAD_MAX = 0.75

#: Resident memory of the gunicorn master (it does not import the app unless
#: ``preload_app`` is on), in MiB.
MASTER_RSS_MB = 30

#: Connections one gevent worker holds at most (gunicorn's default).
GEVENT_MAX_CONNECTIONS = 1000

#: Fraction of ``max_requests`` used as jitter so workers recycle apart.
MAX_REQUESTS_JITTER_SHARE = 0.10

#: Seconds systemd waits past gunicorn's graceful timeout before SIGKILL.
STOP_MARGIN_S = 5

#: Seconds nginx waits for a response past gunicorn's worker timeout, so a
#: worker gunicorn kills for silence shows as 502 from gunicorn, not 504.
READ_TIMEOUT_MARGIN_S = 5

#: Idle seconds nginx keeps an upstream connection; gunicorn's keepalive is
#: longer by UPSTREAM_KEEPALIVE_MARGIN_S so the server never closes first.
UPSTREAM_KEEPALIVE_TIMEOUT_S = 30
UPSTREAM_KEEPALIVE_MARGIN_S = 5
#: Gunicorn's own default keepalive, used when nginx does not reuse
#: upstream connections (nginx then sends ``Connection: close``).
GUNICORN_DEFAULT_KEEPALIVE_S = 2

#: Listen backlog bounds: at least gunicorn's default, at most the largest
#: value Linux accepts for ``somaxconn``.
BACKLOG_MIN = 2048
BACKLOG_MAX = 65535

#: nginx connections per worker: never below nginx's own common default.
NGINX_MIN_WORKER_CONNECTIONS = 1024
#: Client connections budgeted per upstream request slot: each proxied request
#: holds a client and an upstream connection, and idle keep-alive clients
#: wait beside the busy ones.
NGINX_CONNECTIONS_PER_SLOT = 8
#: File descriptors per nginx connection (socket + a temp or static file).
NGINX_FDS_PER_CONNECTION = 2
#: File descriptors nginx needs beyond its connections (log files, listening
#: sockets, files it opens itself). Not measured: a round allowance the
#: ``worker_rlimit_nofile`` formula has had since the first release (and the
#: nginx role repeated); ``max_nofile`` can never be below it.
NGINX_RESERVED_FDS = 64

WORKER_CLASSES = ("sync", "gthread", "gevent")

#: Plan keys that are gunicorn settings of the same name (gunicorn.conf.py).
GUNICORN_SETTINGS = (
    "worker_class",
    "workers",
    "threads",
    "worker_connections",
    "max_requests",
    "max_requests_jitter",
    "timeout",
    "graceful_timeout",
    "keepalive",
    "backlog",
)


class Option(NamedTuple):
    """One input of the model: its kind, its default and the values it accepts.

    ``kind`` is ``"float"``, ``"int"``, ``"bool"`` or ``"str"`` (``"list"`` for
    nginx's ``plans``, whose elements :func:`_upstream_slots` checks).
    ``default`` ``None`` means "derived". A number is at least ``minimum``
    (greater than it when ``exclusive``) and at most ``maximum``; a str is one
    of ``choices``, which an error lists in this order.
    """

    kind: str
    default: object = None
    minimum: float | None = None
    exclusive: bool = False
    maximum: float | None = None
    choices: tuple | None = None


#: The workload inputs of :func:`gunicorn_plan`. They are checked in this
#: order, so with several bad inputs the first one here is reported.
WORKLOAD_OPTIONS = {
    # Sorted: errors have always listed the profiles alphabetically; PROFILES itself
    # (and the filter's documented choices) go from most to least CPU.
    "profile": Option("str", choices=tuple(sorted(PROFILES))),
    "worker_class": Option("str", choices=WORKER_CLASSES),
    "async_safe": Option("bool", default=False),
    "cpu_ms": Option("float", minimum=0, exclusive=True),
    "wait_ms": Option("float", minimum=0),
    "worker_rss_mb": Option("float", default=100, minimum=0, exclusive=True),
    "thread_rss_mb": Option("float", default=4, minimum=0),
    "memory_share": Option("float", default=1.0, minimum=0, exclusive=True, maximum=1),
    "memory_reserve_mb": Option("float", minimum=0),
    "min_workers": Option("int", default=1, minimum=1),
    "max_threads": Option("int", default=32, minimum=1),
    "max_workers": Option("int", minimum=1),
    "db_pool_max": Option("int", minimum=1),
    "db_max_connections": Option("int", minimum=1),
    "fleet_hosts": Option("int", default=1, minimum=1),
    "timeout": Option("int", default=30, minimum=0, exclusive=True),
    "max_requests": Option("int", default=2000, minimum=0),
    "upstream_keepalive": Option("bool", default=False),
}
#: Defaults of the workload inputs. ``None`` means "derived".
WORKLOAD_DEFAULTS = {name: option.default for name, option in WORKLOAD_OPTIONS.items()}
DEFAULT_PROFILE = "mixed"

#: The options of :func:`nginx_plan`, in the order they are checked.
NGINX_OPTIONS = {
    "plans": Option("list", default=()),
    "extra_connections": Option("int", default=0, minimum=0),
    "max_nofile": Option("int", minimum=NGINX_RESERVED_FDS),
    "worker_processes": Option("int", minimum=1),
    "worker_connections": Option("int", minimum=1),
}

# Bounds of values that are not options: host facts and a plan's concurrency.
_POSITIVE = Option("float", minimum=0, exclusive=True)
_PLAN_CONCURRENCY = Option("int", minimum=1)


class TuningError(ValueError):
    """Bad input. ``field`` names the input, ``value`` is what was given."""

    def __init__(self, field, value, expected):
        self.field = field
        self.value = value
        self.expected = expected
        if value is None:
            message = "'%s' %s" % (field, expected)
        else:
            message = "'%s' %s, got %r (%s)" % (field, expected, _plain(value), _type_name(value))
        super().__init__(message)


def _type_name(value):
    """The builtin type behind ``value`` (Ansible passes tagged subclasses)."""
    for base in type(value).__mro__:
        if base.__module__ == "builtins" and base is not object:
            return base.__name__
    return type(value).__name__


def _plain(value):
    """``value`` as its builtin type, so repr() shows what the user wrote."""
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return base(value)
    return value


# --- Input checking -------------------------------------------------------


def _number(field, value, option):
    """Return ``value`` as the float or int ``option`` asks for, within its
    bounds, or raise TuningError."""
    integer = option.kind == "int"
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TuningError(field, value, "must be %s" % kind)
    if isinstance(value, float) and not math.isfinite(value):
        raise TuningError(field, value, "must be a finite number")
    if integer and value != int(value):
        raise TuningError(field, value, "must be a whole number")
    if option.minimum is not None:
        if option.exclusive and value <= option.minimum:
            raise TuningError(field, value, "must be greater than %s" % option.minimum)
        if not option.exclusive and value < option.minimum:
            raise TuningError(field, value, "must be at least %s" % option.minimum)
    if option.maximum is not None and value > option.maximum:
        raise TuningError(field, value, "must be at most %s" % option.maximum)
    return int(value) if integer else float(value)


def _check_value(field, value, option):
    """Return ``value`` after checking it against ``option``, or raise TuningError."""
    if option.kind == "str":
        if value not in option.choices:
            raise TuningError(field, value, "must be one of %s" % ", ".join(option.choices))
        return value
    if option.kind == "bool":
        if not isinstance(value, bool):
            raise TuningError(field, value, "must be true or false")
        return value
    if option.kind == "list":
        return value  # its elements are checked where they are used
    return _number(field, value, option)


def _reject_unknown(given, known):
    """Raise TuningError for the first (alphabetically) option not in ``known``,
    which the message lists in its own order."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TuningError(unknown[0], given[unknown[0]], "is not a known option (known: %s)" % ", ".join(known))


def _with_defaults(given, options):
    """The options' defaults, overridden by the values given (``None`` keeps the default)."""
    values = {name: option.default for name, option in options.items()}
    values.update({name: value for name, value in given.items() if value is not None})
    return values


def _check_options(values, options, rules):
    """Check every value that is set against its option, in table order.

    ``rules`` maps an option to a check between options, run just before it.
    """
    for name, option in options.items():
        if name in rules:
            rules[name](values)
        if values[name] is not None:
            values[name] = _check_value(name, values[name], option)
    return values


def _measured_together(w):
    """Reject ``cpu_ms`` without ``wait_ms`` (or the reverse): only both give a CPU share."""
    if (w["cpu_ms"] is None) != (w["wait_ms"] is None):
        missing = "wait_ms" if w["wait_ms"] is None else "cpu_ms"
        raise TuningError(
            missing, None, "must be given together with %s" % ("cpu_ms" if missing == "wait_ms" else "wait_ms")
        )


def _workers_in_order(w):
    """Reject ``max_workers`` below ``min_workers``: no worker count satisfies both."""
    if w["max_workers"] is not None and w["max_workers"] < w["min_workers"]:
        raise TuningError("max_workers", w["max_workers"], "must be at least min_workers (%d)" % w["min_workers"])


def _fleet_share(w):
    """Connections one host may hold of ``db_max_connections`` (None when not
    given): the fleet's hosts, each with two generations of workers during a
    reload (every host may reload at once), must all fit."""
    if w["db_max_connections"] is None:
        return None
    return w["db_max_connections"] // (2 * w["fleet_hosts"])


def _fleet_fits(w):
    """Reject a ``db_max_connections`` that cannot hold one connection per host,
    twice over during a reload."""
    if _fleet_share(w) == 0:
        raise TuningError(
            "db_max_connections",
            w["db_max_connections"],
            "must be at least %d to hold fleet_hosts=%d x 1 connection x 2 (reload overlap)"
            % (2 * w["fleet_hosts"], w["fleet_hosts"]),
        )


#: Checks between workload options, each run just before the option it is filed
#: under (the pair before either measurement is checked; the worker range once
#: both counts and db_pool_max are; the fleet's database budget once
#: db_max_connections and fleet_hosts are), so the first of several errors is the same.
_WORKLOAD_RULES = {"cpu_ms": _measured_together, "timeout": _workers_in_order, "max_requests": _fleet_fits}


def _check_workload(workload):
    """Merge ``workload`` over the defaults, rejecting unknown or bad values."""
    _reject_unknown(workload, sorted(WORKLOAD_OPTIONS))
    return _check_options(_with_defaults(workload, WORKLOAD_OPTIONS), WORKLOAD_OPTIONS, _WORKLOAD_RULES)


def _lookup(facts, name):
    """Find fact ``name`` in ansible_facts, hostvars or a nested ansible_facts."""
    for source in (facts, facts.get("ansible_facts")):
        if isinstance(source, Mapping):
            for key in (name, "ansible_" + name):
                if source.get(key) is not None:
                    return key, source[key]
    return name, None


def _effective(name, host, limit):
    """The smaller of a host fact and its cgroup limit, each ``(key, value)``.

    Returns ``(value, (host, limit))`` where the second item is set only when
    the limit is below the host value; raises when both are missing.
    """
    values = [_number(key, value, _POSITIVE) for key, value in (host, limit) if value is not None]
    if not values:
        raise TuningError(name, None, "is missing: gather facts (or run flaskops.stack.resource_facts) first")
    lower = len(values) == 2 and values[1] < values[0]
    return min(values), (tuple(values) if lower else None)


def host_resources(facts):
    """Effective CPUs and memory (MiB) from facts; cgroup limits win.

    ``facts`` is ``ansible_facts`` (``processor_vcpus``, ``memtotal_mb``,
    optionally ``flaskops_resources`` from the ``resource_facts`` module) or a
    ``hostvars`` entry with the ``ansible_``-prefixed forms.
    Returns ``(cpus, memory_mb, notes)``.
    """
    if not isinstance(facts, Mapping):
        raise TuningError("facts", facts, "must be a dict of host facts (ansible_facts or hostvars[host])")
    cpu_key, vcpus = _lookup(facts, "processor_vcpus")
    mem_key, memtotal = _lookup(facts, "memtotal_mb")
    res_key, resources = _lookup(facts, "flaskops_resources")
    notes = []
    if resources is not None and not isinstance(resources, Mapping):
        raise TuningError(res_key, resources, "must be the dict set by flaskops.stack.resource_facts")
    resources = resources or {}

    c, cpu_note = _effective("processor_vcpus", (cpu_key, vcpus), (res_key + ".cpus", resources.get("cpus")))
    m, mem_note = _effective("memtotal_mb", (mem_key, memtotal), (res_key + ".memory_mb", resources.get("memory_mb")))
    m = int(m)
    if cpu_note:
        notes.append(
            "The cgroup CPU limit (%g CPUs) is below the %g vCPUs the host shows, so the plan uses %g."
            % (cpu_note[1], cpu_note[0], c)
        )
    if mem_note:
        notes.append(
            "The cgroup memory limit (%d MiB) is below the host's %d MiB, so the plan uses %d MiB."
            % (mem_note[1], mem_note[0], m)
        )
    return c, m, notes


# --- The model ------------------------------------------------------------


def default_reserve_mb(memory_mb):
    """Memory kept for the OS, nginx and page cache: 10 % of RAM, 256 MiB to
    2 GiB, and never more than half of RAM."""
    return min(memory_mb / 2.0, max(256.0, min(2048.0, memory_mb * 0.10)))


def _clamp(value, low, high):
    """``value`` within ``low`` and ``high`` (None: no upper bound); ``low`` wins a conflict."""
    if high is not None:
        value = min(value, high)
    return max(value, low)


class _Demand(NamedTuple):
    """What the CPUs ask for: ``busy`` requests in flight keep all ``cpus`` busy."""

    cpus: float
    cores: int  # the CPUs rounded up: a fractional quota still spreads over whole cores
    share: float  # CPU share of a request
    busy: float


class _Layout(NamedTuple):
    """Processes and the requests each holds at once (its slots)."""

    worker_class: str
    workers: int
    slots: int  # threads for gthread, connections for gevent, 1 for sync

    @property
    def threads(self):
        return self.slots if self.worker_class == "gthread" else 1

    @property
    def concurrency(self):
        return self.workers * self.slots


class _Memory(NamedTuple):
    """The app's memory budget (MiB) and what a worker and a thread cost."""

    memory_mb: int
    budget: float
    worker_mb: float
    thread_mb: float

    def steady(self, layout):
        """Resident memory of the master and one generation of workers."""
        return MASTER_RSS_MB + layout.workers * (self.worker_mb + layout.threads * self.thread_mb)

    def peak(self, layout):
        """Resident memory during a reload, when two generations of workers overlap."""
        return MASTER_RSS_MB + 2 * layout.workers * (self.worker_mb + layout.threads * self.thread_mb)


class _Timeouts(NamedTuple):
    """The timeout chain from nginx through gunicorn to systemd, in seconds."""

    timeout: int
    graceful: int
    keepalive: int
    read: int
    stop: int
    upstream_keepalive: bool
    upstream_keepalive_timeout: int


def _request_cost(w):
    """CPU and waiting milliseconds per request: measured when given, else the profile's preset."""
    if w["cpu_ms"] is not None:
        cpu_ms, wait_ms = float(w["cpu_ms"]), float(w["wait_ms"])
        return cpu_ms, wait_ms, "measured %g ms CPU + %g ms waiting per request" % (cpu_ms, wait_ms)
    profile = w["profile"] or DEFAULT_PROFILE
    cpu_ms, wait_ms = PROFILES[profile]
    return cpu_ms, wait_ms, "profile '%s' (%g ms CPU + %g ms waiting per request)" % (profile, cpu_ms, wait_ms)


def _cpu_demand(w, cpus, memory_mb, explain):
    """The CPU share of a request and, by Little's law, the requests in flight
    (``C / f``) that keep every CPU busy."""
    cpu_ms, wait_ms, source = _request_cost(w)
    share = cpu_ms / (cpu_ms + wait_ms)
    busy = cpus / share
    explain.append(
        "The host has %g effective CPUs and %d MiB of memory; %s gives a CPU share of %.1f %%, "
        "so about %.1f requests in flight keep the CPUs busy." % (cpus, memory_mb, source, share * 100, busy)
    )
    return _Demand(cpus, max(1, math.ceil(cpus - 1e-9)), share, busy)


def _threads_per_process(demand, worker_class):
    """Most threads one gthread process may hold before its requests' CPU share
    passes :data:`GIL_LOAD_MAX` (None for sync and gevent workers: not bounded
    by this rule; gevent's place is for the benchmark to measure)."""
    if worker_class != "gthread":
        return None
    return max(1, math.floor(GIL_LOAD_MAX / demand.share + 1e-9))


def _processes(demand, worker_class, w, explain):
    """Worker processes, within ``min_workers``/``max_workers``: sync workers
    one per core plus a spare; threaded (or gevent) workers as many as hold the
    requests in flight at :func:`_threads_per_process` each, between one per
    core plus a spare and two per core plus one.

    The spare keeps a core busy while another worker recycles, collects
    garbage or is replaced. Past it, more processes cost memory but shorten
    the queue for each process's GIL.
    """
    cores = demand.cores
    workers = cores + 1
    per_process = _threads_per_process(demand, worker_class)
    if per_process is not None:
        wanted = math.ceil(demand.busy * CONCURRENCY_HEADROOM - 1e-9)
        workers = _clamp(math.ceil(wanted / per_process - 1e-9), cores + 1, 2 * cores + 1)
        if workers > cores + 1:
            explain.append(
                "At most %d requests per process keep its GIL within %g x a CPU (%.1f %% each): %d workers, "
                "between one per core plus a spare and two per core plus one, hold the %d requests in flight."
                % (per_process, GIL_LOAD_MAX, demand.share * 100, workers, wanted)
            )
    clamped = _clamp(workers, w["min_workers"], w["max_workers"])
    if clamped != workers:
        explain.append(
            "Workers set to %d by min_workers=%s / max_workers=%s (the model gives %d)."
            % (clamped, w["min_workers"], w["max_workers"], workers)
        )
    return clamped


def _worker_class(demand, forced, async_safe, explain):
    """The worker class: the one given, else sync when one request per process
    (one per core plus a spare) already keeps every core busy, else gevent for
    an app that declares itself safe under gevent (``async_safe``), else gthread
    so threads hold the requests that wait.

    gevent: make bench-quick of 2026-12-05 (2 CPUs, io: 1 ms CPU + 50 ms wait,
    64 connections) served 1129 requests/s with 3 gevent workers against 1013
    for the gthread plan (5 x 17), and at 80 % of that rate open loop a p99 of
    59 ms against 141 ms."""
    if forced is not None:
        explain.append("worker_class '%s' was set explicitly." % forced)
        return forced
    if math.ceil(demand.busy - 1e-9) <= demand.cores + 1:
        explain.append(
            "Requests are CPU-bound: %d sync workers (one per core plus a spare) already hold the "
            "%.1f requests that keep the CPUs busy." % (demand.cores + 1, demand.busy)
        )
        return "sync"
    if async_safe:
        explain.append(
            "Requests wait more than they compute, and the app is safe under gevent (async_safe): gevent "
            "workers, so greenlets hold the %.1f requests that keep the CPUs busy (one per core plus a spare "
            "cannot), without threads queueing for each process's GIL." % demand.busy
        )
        return "gevent"
    explain.append(
        "Requests wait more than they compute: gthread workers, so threads hold the %.1f requests "
        "that keep the CPUs busy (one per core plus a spare cannot)." % demand.busy
    )
    return "gthread"


def _slot_cap(worker_class, max_threads):
    """Most requests one worker of ``worker_class`` may hold at once."""
    return {"sync": 1, "gthread": max_threads, "gevent": GEVENT_MAX_CONNECTIONS}[worker_class]


def _slots(demand, worker_class, workers, max_threads, explain):
    """Slots per process (threads for gthread, connections for gevent, 1 for
    sync): Little's law times the measured headroom, spread over the workers,
    at most :func:`_threads_per_process` each."""
    wanted = max(workers, math.ceil(demand.busy * CONCURRENCY_HEADROOM - 1e-9))
    per_process = _threads_per_process(demand, worker_class)
    cap = min(_slot_cap(worker_class, max_threads), per_process or _slot_cap(worker_class, max_threads))
    slots = max(1, min(cap, math.ceil(wanted / workers)))
    if worker_class != "sync":
        explain.append(
            "%s: %d workers x %d %s to hold %d requests in flight (%g x the %.1f, for queueing at full load)."
            % (
                worker_class,
                workers,
                slots,
                _slot_noun(worker_class),
                wanted,
                CONCURRENCY_HEADROOM,
                demand.busy,
            )
        )
        if slots * workers < wanted:
            if cap == _slot_cap(worker_class, max_threads):
                explain.append(
                    "%s caps each worker at %d; raise it (or min_workers) to hold more."
                    % ("max_threads" if worker_class == "gthread" else "gevent", cap)
                )
            else:
                explain.append(
                    "The GIL bound caps each worker at %d (%g / %.1f %%), and two workers per core plus one are "
                    "the most: %d in flight instead; raise min_workers to hold more."
                    % (cap, GIL_LOAD_MAX, demand.share * 100, slots * workers)
                )
    return _Layout(worker_class, workers, slots)


def _db_cap(w):
    """Most database connections one host may hold: the smaller of
    ``db_pool_max`` and the host's share of ``db_max_connections`` (None: no cap)."""
    caps = [cap for cap in (w["db_pool_max"], _fleet_share(w)) if cap is not None]
    return min(caps) if caps else None


def _db_pool_cap(layout, w, explain):
    """Database connections: fewer workers, then fewer slots, until
    ``workers x slots`` is within :func:`_db_cap`."""
    db = _db_cap(w)
    if db is None or layout.concurrency <= db:
        return layout
    # The most connections the budget allows, with as many workers as that allows (max picks the first best).
    workers, slots = max(
        ((n, max(1, min(layout.slots, db // n))) for n in range(min(layout.workers, db), 0, -1)),
        key=lambda pair: pair[0] * pair[1],
    )
    if db == w["db_pool_max"]:
        reason = "db_pool_max=%d" % db
    else:
        reason = "The fleet's database budget (%s per host)" % _counted(db, "connections")
    explain.append("%s limits the plan to %d workers x %d concurrent requests." % (reason, workers, slots))
    return layout._replace(workers=workers, slots=slots)


def _fleet_sentence(layout, w):
    """The fleet's database budget and what the plan holds of it (None when
    ``db_max_connections`` is not given)."""
    share = _fleet_share(w)
    if share is None:
        return None
    return (
        "db_max_connections=%d shared by fleet_hosts=%d, twice over during a reload: at most %s per host; "
        "the plan holds %s x %s = %d."
        % (
            w["db_max_connections"],
            w["fleet_hosts"],
            _counted(share, "connections"),
            _counted(layout.workers, "workers"),
            _counted(layout.slots, _slot_noun(layout.worker_class)),
            layout.concurrency,
        )
    )


def _memory_budget(w, memory_mb, explain):
    """The app's memory budget: ``(M - reserve) x memory_share``, in whole MiB;
    the reserve must leave some memory."""
    reserve = w["memory_reserve_mb"]
    if reserve is None:
        reserve = default_reserve_mb(memory_mb)
    if reserve >= memory_mb:
        raise TuningError(
            "memory_reserve_mb",
            w["memory_reserve_mb"],
            "must be below the host's effective memory (%d MiB)" % memory_mb,
        )
    # Whole MiB, as reported: a plan that fits the fraction must fit the number shown.
    budget = float(math.floor((memory_mb - reserve) * w["memory_share"]))
    explain.append(
        "Memory budget: (%d - %d reserve) x %g share = %d MiB, which must hold two generations "
        "of workers during a reload." % (memory_mb, reserve, w["memory_share"], budget)
    )
    return _Memory(memory_mb, budget, w["worker_rss_mb"], w["thread_rss_mb"])


def _fit_workers(layout, memory, explain):
    """Fewer workers (never below one) until two generations of single-slot
    workers fit the budget."""
    per_worker = memory.worker_mb + memory.thread_mb
    room = memory.budget - MASTER_RSS_MB
    fit = int(room // (2 * per_worker)) if memory.budget > MASTER_RSS_MB else 0
    fitted = max(1, min(layout.workers, fit))
    if fitted >= layout.workers:
        return layout
    explain.append("Memory caps workers at %d (each needs %g MiB, twice over during a reload)." % (fitted, per_worker))
    return layout._replace(workers=fitted)


def _wanted_slots(layout, target, w):
    """Slots per worker that restore ``target`` requests in flight over the
    workers memory left, within the class's cap and the database cap."""
    cap = _slot_cap(layout.worker_class, w["max_threads"])
    db = _db_cap(w)
    return max(1, min(cap, math.ceil(target / layout.workers), db // layout.workers if db is not None else cap))


def _fit_threads(layout, want, memory, explain):
    """Threads per gthread worker: the ``want`` wanted, or as many as the
    memory left per worker holds (at least one)."""
    room = (memory.budget - MASTER_RSS_MB) / (2.0 * layout.workers) - memory.worker_mb
    thread_mb = memory.thread_mb
    if room >= 0 and (thread_mb == 0 or room >= want * thread_mb):
        fit = want  # the workers fit, and so do all their threads
    elif room <= 0:
        fit = 1
    else:
        fit = max(1, min(want, int(room // thread_mb)))
    if fit != layout.threads:
        explain.append("Memory sets threads to %d per worker (%g MiB each)." % (fit, thread_mb))
    return layout._replace(slots=fit)


def _memory_fit(layout, memory, cores, w, explain):
    """Two generations of workers (a reload's overlap) must fit the budget.
    Workers spread past one per core plus a spare (the GIL bound) go back to
    it first, as a thread costs less memory than a process; then fewer workers,
    then the slots refilled as far as memory allows; a single worker that still
    does not fit is planned with a warning."""
    if memory.peak(layout) <= memory.budget:
        return layout
    target = layout.concurrency
    if layout.worker_class == "gthread" and layout.workers > cores + 1:
        explain.append(
            "Two generations of %d workers do not fit the memory budget: one per core plus a spare, %d, "
            "with more threads each (past the GIL bound: memory wins)." % (layout.workers, cores + 1)
        )
        layout = layout._replace(workers=cores + 1)
    layout = _fit_workers(layout, memory, explain)
    want = _wanted_slots(layout, target, w)
    if layout.worker_class == "gevent":
        layout = layout._replace(slots=want)
    if layout.worker_class == "gthread":
        layout = _fit_threads(layout, want, memory, explain)
    if memory.peak(layout) > memory.budget:
        explain.append(
            "Warning: even %d worker with %d thread needs %d MiB during a reload, more than the "
            "%d MiB budget; planning it anyway. Add memory, raise memory_share, or lower "
            "worker_rss_mb/memory_reserve_mb." % (layout.workers, layout.threads, memory.peak(layout), memory.budget)
        )
    return layout


def _worker_connections(layout, upstream_keepalive):
    """Connections one worker accepts at once: its slots, and for gthread with
    upstream keep-alive twice its threads, as idle kept-alive connections from
    nginx wait beside the busy ones."""
    if layout.worker_class == "gevent":
        return layout.slots
    if layout.worker_class == "gthread" and upstream_keepalive:
        return layout.threads * 2
    return layout.threads


def _slot_noun(worker_class):
    """What a worker's slots are called in explain sentences."""
    return "connections" if worker_class == "gevent" else "threads"


def _counted(count, noun):
    """``count`` and ``noun`` (a plural), singular for one."""
    return "%d %s" % (count, noun[:-1] if count == 1 else noun)


def _layout_sentence(layout):
    """The plan's shape in one sentence, with the database pool each worker should use."""
    return "Plan: %d %s workers x %d %s = %d requests in flight; each worker should use a database pool of %d." % (
        layout.workers,
        layout.worker_class,
        layout.slots,
        _slot_noun(layout.worker_class),
        layout.concurrency,
        layout.slots,
    )


def _recycling(max_requests, explain):
    """Recycling: workers restart after ``max_requests`` (0 = never), with 10 %
    jitter so they do not all restart at once."""
    jitter = round(max_requests * MAX_REQUESTS_JITTER_SHARE)
    if max_requests:
        explain.append(
            "Workers recycle after %d requests (+ up to %d jitter) to bound memory growth." % (max_requests, jitter)
        )
    return max_requests, jitter


def _upstream_keepalive(requested, worker_class):
    """Whether nginx reuses upstream connections (never to sync workers, which
    close every connection), for how long, and gunicorn's keepalive, which
    outlives nginx's so the server never closes a connection nginx may reuse."""
    on = requested and worker_class != "sync"
    if not on:
        return False, 0, GUNICORN_DEFAULT_KEEPALIVE_S
    return True, UPSTREAM_KEEPALIVE_TIMEOUT_S, UPSTREAM_KEEPALIVE_TIMEOUT_S + UPSTREAM_KEEPALIVE_MARGIN_S


def _timeout_chain(w, worker_class, explain):
    """The timeout chain: nginx ``proxy_read_timeout`` >= gunicorn ``timeout``;
    systemd ``TimeoutStopSec`` > ``graceful_timeout``; gunicorn ``keepalive`` >
    nginx's upstream ``keepalive_timeout``."""
    timeout = w["timeout"]
    graceful = timeout
    keepalive_on, upstream_timeout, keepalive = _upstream_keepalive(w["upstream_keepalive"], worker_class)
    if w["upstream_keepalive"] and not keepalive_on:
        explain.append("Upstream keep-alive is off: gunicorn's sync workers close every connection.")
    stop = graceful + STOP_MARGIN_S
    read = timeout + READ_TIMEOUT_MARGIN_S
    explain.append(
        "Timeouts: gunicorn timeout %ds and graceful_timeout %ds; nginx proxy_read_timeout %ds "
        "(>= timeout); systemd TimeoutStopSec %ds (> graceful_timeout)." % (timeout, graceful, read, stop)
    )
    if keepalive_on:
        explain.append(
            "nginx reuses upstream connections for %ds; gunicorn keepalive is %ds so the server "
            "never closes a connection nginx may still reuse." % (upstream_timeout, keepalive)
        )
    return _Timeouts(timeout, graceful, keepalive, read, stop, keepalive_on, upstream_timeout)


def _backlog(concurrency):
    """Listen backlog: room for a burst of several times the concurrency."""
    return min(BACKLOG_MAX, max(BACKLOG_MIN, 1 << (4 * concurrency - 1).bit_length()))


def _systemd_memory(layout, memory, explain):
    """systemd memory limits: ``MemoryMax`` is the app's budget (never below
    the reload peak), ``MemoryHigh`` starts reclaim a little below it.

    Returns ``(steady, peak, MemoryHigh, MemoryMax)`` in MiB.
    """
    steady = memory.steady(layout)
    peak = memory.peak(layout)
    memory_max = int(min(memory.memory_mb, max(memory.budget, peak)))
    memory_high = int(min(memory_max, max(peak, memory_max * 0.9)))
    explain.append(
        "Memory: about %d MiB steady and %d MiB during a reload; systemd MemoryHigh=%dM, "
        "MemoryMax=%dM." % (steady, peak, memory_high, memory_max)
    )
    return steady, peak, memory_high, memory_max


def _nginx_upstream(timeouts, worker_connections):
    """The upstream settings nginx needs for this app."""
    return {
        "proxy_read_timeout": timeouts.read,
        "proxy_send_timeout": timeouts.read,
        "proxy_connect_timeout": 5,
        "upstream_keepalive": int(worker_connections) if timeouts.upstream_keepalive else 0,
        "upstream_keepalive_timeout": timeouts.upstream_keepalive_timeout,
        "upstream_keepalive_requests": 1000 if timeouts.upstream_keepalive else 0,
    }


def gunicorn_plan(facts, **workload):
    """Return the plan (a dict) for one app on the host described by ``facts``.

    Each step below is one decision of the model, in the order ``explain``
    tells them. Raises :class:`TuningError` on bad input.
    """
    w = _check_workload(workload)
    cpus, memory_mb, explain = host_resources(facts)
    demand = _cpu_demand(w, cpus, memory_mb, explain)
    worker_class = _worker_class(demand, w["worker_class"], w["async_safe"], explain)
    workers = _processes(demand, worker_class, w, explain)
    layout = _slots(demand, worker_class, workers, w["max_threads"], explain)
    layout = _db_pool_cap(layout, w, explain)
    memory = _memory_budget(w, memory_mb, explain)
    layout = _memory_fit(layout, memory, demand.cores, w, explain)
    connections = _worker_connections(layout, w["upstream_keepalive"])
    fleet = _fleet_sentence(layout, w)
    if fleet:
        explain.append(fleet)
    explain.append(_layout_sentence(layout))
    max_requests, jitter = _recycling(w["max_requests"], explain)
    timeouts = _timeout_chain(w, layout.worker_class, explain)
    steady, peak, memory_high, memory_max = _systemd_memory(layout, memory, explain)
    return {
        "worker_class": layout.worker_class,
        "workers": int(layout.workers),
        "threads": int(layout.threads),
        "worker_connections": int(connections),
        "max_requests": max_requests,
        "max_requests_jitter": jitter,
        "timeout": timeouts.timeout,
        "graceful_timeout": timeouts.graceful,
        "keepalive": timeouts.keepalive,
        "backlog": _backlog(layout.concurrency),
        "concurrency": int(layout.concurrency),
        "cpus": cpus,
        "memory_budget_mb": int(memory.budget),
        "memory_mb": math.ceil(steady),
        "memory_peak_mb": math.ceil(peak),
        "db_pool_size": int(layout.slots),
        "db_connections_per_host": _fleet_share(w),
        "nginx": _nginx_upstream(timeouts, connections),
        "systemd": {
            "TimeoutStopSec": timeouts.stop,
            "MemoryHigh": "%dM" % memory_high,
            "MemoryMax": "%dM" % memory_max,
        },
        "explain": explain,
    }


# --- nginx ----------------------------------------------------------------


def _upstream_slots(plans):
    """Request slots nginx proxies to: the sum of the apps' concurrency."""
    if not isinstance(plans, (list, tuple)):
        raise TuningError("plans", plans, "must be a list of gunicorn_tuning plans")
    total = 0
    for index, plan in enumerate(plans):
        if not isinstance(plan, Mapping) or "concurrency" not in plan:
            raise TuningError("plans[%d]" % index, plan, "must be a plan from gunicorn_tuning")
        total += _number("plans[%d].concurrency" % index, plan["concurrency"], _PLAN_CONCURRENCY)
    return total


def _nginx_workers(cpus, override, explain):
    """worker_processes: the override when given, else the effective CPUs
    rounded up (never ``auto``, which counts the host's CPUs)."""
    derived = max(1, math.ceil(cpus - 1e-9))
    if override is None:
        explain.append(
            "worker_processes %d: the effective CPUs (%g), not 'auto', which ignores cgroup limits." % (derived, cpus)
        )
        return derived
    explain.append(
        "worker_processes %d: set by the worker_processes option (the effective CPUs, %g, would give %d)."
        % (override, cpus, derived)
    )
    return override


def _nginx_connections(slots, options, workers, explain):
    """worker_connections: the override when given, else every upstream slot
    NGINX_CONNECTIONS_PER_SLOT times over plus the extra connections, spread
    over the workers, rounded up to 256 and never below nginx's default."""
    extra = options["extra_connections"]
    needed = NGINX_CONNECTIONS_PER_SLOT * slots + extra
    derived = max(NGINX_MIN_WORKER_CONNECTIONS, math.ceil(needed / float(workers)))
    derived = int(math.ceil(derived / 256.0) * 256)
    reason = "%d upstream request slots x %d connections each%s, spread over %d workers" % (
        slots,
        NGINX_CONNECTIONS_PER_SLOT,
        " + %d extra" % extra if extra else "",
        workers,
    )
    override = options["worker_connections"]
    if override is None:
        explain.append("worker_connections %d: %s (never below %d)." % (derived, reason, NGINX_MIN_WORKER_CONNECTIONS))
        return derived
    explain.append(
        "worker_connections %d: set by the worker_connections option (%s, would give %d)." % (override, reason, derived)
    )
    return override


def _nginx_nofile(connections, options, explain):
    """worker_rlimit_nofile: NGINX_FDS_PER_CONNECTION descriptors per
    connection plus NGINX_RESERVED_FDS. ``max_nofile`` caps derived
    connections; an override that needs more is an error.

    Returns ``(worker_connections, worker_rlimit_nofile)``.
    """
    nofile = connections * NGINX_FDS_PER_CONNECTION + NGINX_RESERVED_FDS
    limit = options["max_nofile"]
    if limit is not None and nofile > limit:
        most = (limit - NGINX_RESERVED_FDS) // NGINX_FDS_PER_CONNECTION
        if options["worker_connections"] is not None:
            raise TuningError(
                "worker_connections",
                options["worker_connections"],
                "must be at most %d to stay within max_nofile=%d (%d descriptors per connection plus %d)"
                % (most, limit, NGINX_FDS_PER_CONNECTION, NGINX_RESERVED_FDS),
            )
        connections = max(1, most)
        nofile = limit
        explain.append("max_nofile=%d caps worker_connections at %d." % (limit, connections))
    explain.append(
        "worker_rlimit_nofile %d: %d descriptors per connection plus %d for logs and files."
        % (nofile, NGINX_FDS_PER_CONNECTION, NGINX_RESERVED_FDS)
    )
    return connections, nofile


def nginx_plan(facts, **options):
    """Size nginx itself from the host's facts and the apps' gunicorn plans.

    Options: ``plans`` (list of :func:`gunicorn_plan` results),
    ``extra_connections`` (client connections beyond the apps' slots),
    ``max_nofile`` (a file-descriptor ceiling nginx must stay under),
    ``worker_processes`` and ``worker_connections`` (overrides; ``None``
    derives them). Raises :class:`TuningError` on bad input.
    """
    _reject_unknown(options, NGINX_OPTIONS)
    cpus, _memory_mb, explain = host_resources(facts)
    o = _with_defaults(options, NGINX_OPTIONS)
    slots = _upstream_slots(o["plans"])
    o = _check_options(o, NGINX_OPTIONS, {})
    workers = _nginx_workers(cpus, o["worker_processes"], explain)
    connections = _nginx_connections(slots, o, workers, explain)
    connections, nofile = _nginx_nofile(connections, o, explain)
    return {
        "worker_processes": workers,
        "worker_connections": int(connections),
        "worker_rlimit_nofile": int(nofile),
        "upstream_slots": int(slots),
        "explain": explain,
    }
