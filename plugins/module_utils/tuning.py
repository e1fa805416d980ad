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
* ``workers * threads`` never exceeds ``db_pool_max`` when given.
* Timeouts form one chain: nginx ``proxy_read_timeout`` >= gunicorn
  ``timeout``; systemd ``TimeoutStopSec`` > gunicorn ``graceful_timeout``;
  gunicorn ``keepalive`` > nginx upstream ``keepalive_timeout``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

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
PROFILES = {
    "cpu": (20.0, 0.0),
    "mixed": (4.5, 20.0),
    "io": (2.0, 48.0),
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

# Defaults of the workload inputs. ``None`` means "derived".
WORKLOAD_DEFAULTS = {
    "profile": None,
    "cpu_ms": None,
    "wait_ms": None,
    "worker_rss_mb": 100,
    "thread_rss_mb": 4,
    "memory_share": 1.0,
    "memory_reserve_mb": None,
    "min_workers": 1,
    "max_workers": None,
    "max_threads": 32,
    "timeout": 30,
    "db_pool_max": None,
    "worker_class": None,
    "upstream_keepalive": False,
    "max_requests": 2000,
}
DEFAULT_PROFILE = "mixed"


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


def _number(field, value, minimum=None, exclusive=False, integer=False, maximum=None):
    """Return ``value`` as a float/int after checking it, or raise TuningError."""
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TuningError(field, value, "must be %s" % kind)
    if isinstance(value, float) and not math.isfinite(value):
        raise TuningError(field, value, "must be a finite number")
    if integer and value != int(value):
        raise TuningError(field, value, "must be a whole number")
    if minimum is not None:
        if exclusive and value <= minimum:
            raise TuningError(field, value, "must be greater than %s" % minimum)
        if not exclusive and value < minimum:
            raise TuningError(field, value, "must be at least %s" % minimum)
    if maximum is not None and value > maximum:
        raise TuningError(field, value, "must be at most %s" % maximum)
    return int(value) if integer else float(value)


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
    values = [_number(key, value, minimum=0, exclusive=True) for key, value in (host, limit) if value is not None]
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


def _check_workload(workload):
    """Merge ``workload`` over the defaults, rejecting unknown or bad values."""
    unknown = sorted(set(workload) - set(WORKLOAD_DEFAULTS))
    if unknown:
        raise TuningError(
            unknown[0], workload[unknown[0]], "is not a known option (known: %s)" % ", ".join(sorted(WORKLOAD_DEFAULTS))
        )
    w = dict(WORKLOAD_DEFAULTS)
    w.update({k: v for k, v in workload.items() if v is not None})

    if w["profile"] is not None and w["profile"] not in PROFILES:
        raise TuningError("profile", w["profile"], "must be one of %s" % ", ".join(sorted(PROFILES)))
    if w["worker_class"] is not None and w["worker_class"] not in WORKER_CLASSES:
        raise TuningError("worker_class", w["worker_class"], "must be one of %s" % ", ".join(WORKER_CLASSES))
    if (w["cpu_ms"] is None) != (w["wait_ms"] is None):
        missing = "wait_ms" if w["wait_ms"] is None else "cpu_ms"
        raise TuningError(
            missing, None, "must be given together with %s" % ("cpu_ms" if missing == "wait_ms" else "wait_ms")
        )
    if w["cpu_ms"] is not None:
        w["cpu_ms"] = _number("cpu_ms", w["cpu_ms"], minimum=0, exclusive=True)
        w["wait_ms"] = _number("wait_ms", w["wait_ms"], minimum=0)
    w["worker_rss_mb"] = _number("worker_rss_mb", w["worker_rss_mb"], minimum=0, exclusive=True)
    w["thread_rss_mb"] = _number("thread_rss_mb", w["thread_rss_mb"], minimum=0)
    w["memory_share"] = _number("memory_share", w["memory_share"], minimum=0, exclusive=True, maximum=1)
    if w["memory_reserve_mb"] is not None:
        w["memory_reserve_mb"] = _number("memory_reserve_mb", w["memory_reserve_mb"], minimum=0)
    for field in ("min_workers", "max_threads"):
        w[field] = _number(field, w[field], minimum=1, integer=True)
    for field in ("max_workers", "db_pool_max"):
        if w[field] is not None:
            w[field] = _number(field, w[field], minimum=1, integer=True)
    if w["max_workers"] is not None and w["max_workers"] < w["min_workers"]:
        raise TuningError("max_workers", w["max_workers"], "must be at least min_workers (%d)" % w["min_workers"])
    w["timeout"] = _number("timeout", w["timeout"], minimum=0, exclusive=True, integer=True)
    w["max_requests"] = _number("max_requests", w["max_requests"], minimum=0, integer=True)
    if not isinstance(w["upstream_keepalive"], bool):
        raise TuningError("upstream_keepalive", w["upstream_keepalive"], "must be true or false")
    return w


# --- The model ------------------------------------------------------------


def default_reserve_mb(memory_mb):
    """Memory kept for the OS, nginx and page cache: 10 % of RAM, 256 MiB to
    2 GiB, and never more than half of RAM."""
    return min(memory_mb / 2.0, max(256.0, min(2048.0, memory_mb * 0.10)))


def _clamp(value, low, high):
    if high is not None:
        value = min(value, high)
    return max(value, low)


def gunicorn_plan(facts, **workload):
    """Return the plan (a dict) for one app on the host described by ``facts``.

    Raises :class:`TuningError` on bad input.
    """
    w = _check_workload(workload)
    cpus, memory_mb, explain = host_resources(facts)

    # CPU share of a request.
    if w["cpu_ms"] is not None:
        cpu_ms, wait_ms = float(w["cpu_ms"]), float(w["wait_ms"])
        source = "measured %g ms CPU + %g ms waiting per request" % (cpu_ms, wait_ms)
    else:
        profile = w["profile"] or DEFAULT_PROFILE
        cpu_ms, wait_ms = PROFILES[profile]
        source = "profile '%s' (%g ms CPU + %g ms waiting per request)" % (profile, cpu_ms, wait_ms)
    share = cpu_ms / (cpu_ms + wait_ms)
    cores = max(1, math.ceil(cpus - 1e-9))
    busy = cpus / share  # requests in flight that keep every CPU busy
    explain.append(
        "The host has %g effective CPUs and %d MiB of memory; %s gives a CPU share of %.1f %%, "
        "so about %.1f requests in flight keep the CPUs busy." % (cpus, memory_mb, source, share * 100, busy)
    )

    # Processes: one per core plus a spare, whatever the class. The spare
    # keeps a core busy while another worker recycles, collects garbage or is
    # replaced; more processes than that only add memory and contention.
    workers = cores + 1
    clamped = _clamp(workers, w["min_workers"], w["max_workers"])
    if clamped != workers:
        explain.append(
            "Workers set to %d by min_workers=%s / max_workers=%s (one per core plus a spare is %d)."
            % (clamped, w["min_workers"], w["max_workers"], workers)
        )
    workers = clamped

    # Worker class: sync when one request per process already keeps every
    # core busy, otherwise threads hold the requests that wait.
    if w["worker_class"] is not None:
        worker_class = w["worker_class"]
        explain.append("worker_class '%s' was set explicitly." % worker_class)
    elif math.ceil(busy - 1e-9) <= cores + 1:
        worker_class = "sync"
        explain.append(
            "Requests are CPU-bound: %d sync workers (one per core plus a spare) already hold the "
            "%.1f requests that keep the CPUs busy." % (cores + 1, busy)
        )
    else:
        worker_class = "gthread"
        explain.append(
            "Requests wait more than they compute: gthread workers, so threads hold the %.1f requests "
            "that keep the CPUs busy (one per core plus a spare cannot)." % busy
        )

    # Slots per process: threads for gthread, connections for gevent, 1 for
    # sync. Little's law times the measured headroom.
    wanted = max(workers, math.ceil(busy * CONCURRENCY_HEADROOM - 1e-9))
    slot_cap = {"sync": 1, "gthread": w["max_threads"], "gevent": GEVENT_MAX_CONNECTIONS}[worker_class]
    slots = max(1, min(slot_cap, math.ceil(wanted / workers)))
    if worker_class != "sync":
        explain.append(
            "%s: %d workers x %d %s to hold %d requests in flight (%g x the %.1f, for queueing at full load)."
            % (
                worker_class,
                workers,
                slots,
                "threads" if worker_class == "gthread" else "connections",
                wanted,
                CONCURRENCY_HEADROOM,
                busy,
            )
        )
        if slots * workers < wanted:
            explain.append(
                "%s caps each worker at %d; raise it (or min_workers) to hold more."
                % ("max_threads" if worker_class == "gthread" else "gevent", slot_cap)
            )

    # Database connections: workers x slots <= db_pool_max.
    db = w["db_pool_max"]
    if db is not None and workers * slots > db:
        db = int(db)
        workers = min(workers, db)
        slots = max(1, min(slots, db // workers))
        explain.append("db_pool_max=%d limits the plan to %d workers x %d concurrent requests." % (db, workers, slots))
    target = workers * slots

    # Memory: two generations of workers during a HUP must fit the budget.
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
    rss, trss = w["worker_rss_mb"], w["thread_rss_mb"]

    def peak(n_workers, n_threads):
        return MASTER_RSS_MB + 2 * n_workers * (rss + n_threads * trss)

    threads = slots if worker_class == "gthread" else 1
    explain.append(
        "Memory budget: (%d - %d reserve) x %g share = %d MiB, which must hold two generations "
        "of workers during a reload." % (memory_mb, reserve, w["memory_share"], budget)
    )
    if peak(workers, threads) > budget:
        fit_single = int((budget - MASTER_RSS_MB) // (2 * (rss + trss))) if budget > MASTER_RSS_MB else 0
        fitted = max(1, min(workers, fit_single))
        if fitted < workers:
            explain.append(
                "Memory caps workers at %d (each needs %g MiB, twice over during a reload)." % (fitted, rss + trss)
            )
            workers = fitted
        want = max(1, min(slot_cap, math.ceil(target / workers), db // workers if db is not None else slot_cap))
        if worker_class == "gevent":
            slots = want
        if worker_class == "gthread":
            room = (budget - MASTER_RSS_MB) / (2.0 * workers) - rss
            if room >= 0 and (trss == 0 or room >= want * trss):
                fit = want  # the workers fit, and so do all their threads
            elif room <= 0:
                fit = 1
            else:
                fit = max(1, min(want, int(room // trss)))
            if fit != threads:
                explain.append("Memory sets threads to %d per worker (%g MiB each)." % (fit, trss))
            threads = slots = fit
        if peak(workers, threads) > budget:
            explain.append(
                "Warning: even %d worker with %d thread needs %d MiB during a reload, more than the "
                "%d MiB budget; planning it anyway. Add memory, raise memory_share, or lower "
                "worker_rss_mb/memory_reserve_mb." % (workers, threads, peak(workers, threads), budget)
            )
    per_worker = slots
    concurrency = workers * per_worker
    if worker_class == "gevent":
        worker_connections = per_worker
    elif worker_class == "gthread" and w["upstream_keepalive"]:
        # Idle kept-alive connections from nginx wait beside the busy ones.
        worker_connections = threads * 2
    else:
        worker_connections = threads
    explain.append(
        "Plan: %d %s workers x %d %s = %d requests in flight; each worker should use a database "
        "pool of %d."
        % (
            workers,
            worker_class,
            per_worker,
            "connections" if worker_class == "gevent" else "threads",
            concurrency,
            per_worker,
        )
    )

    # Recycling.
    max_requests = w["max_requests"]
    jitter = round(max_requests * MAX_REQUESTS_JITTER_SHARE)
    if max_requests:
        explain.append(
            "Workers recycle after %d requests (+ up to %d jitter) to bound memory growth." % (max_requests, jitter)
        )

    # Timeout chain.
    timeout = w["timeout"]
    graceful = timeout
    keepalive_on = w["upstream_keepalive"] and worker_class != "sync"
    if w["upstream_keepalive"] and not keepalive_on:
        explain.append("Upstream keep-alive is off: gunicorn's sync workers close every connection.")
    upstream_keepalive_timeout = UPSTREAM_KEEPALIVE_TIMEOUT_S if keepalive_on else 0
    keepalive = (
        upstream_keepalive_timeout + UPSTREAM_KEEPALIVE_MARGIN_S if keepalive_on else GUNICORN_DEFAULT_KEEPALIVE_S
    )
    stop_timeout = graceful + STOP_MARGIN_S
    read_timeout = timeout + READ_TIMEOUT_MARGIN_S
    explain.append(
        "Timeouts: gunicorn timeout %ds and graceful_timeout %ds; nginx proxy_read_timeout %ds "
        "(>= timeout); systemd TimeoutStopSec %ds (> graceful_timeout)."
        % (timeout, graceful, read_timeout, stop_timeout)
    )
    if keepalive_on:
        explain.append(
            "nginx reuses upstream connections for %ds; gunicorn keepalive is %ds so the server "
            "never closes a connection nginx may still reuse." % (upstream_keepalive_timeout, keepalive)
        )

    # Listen backlog: room for a burst of several times the concurrency.
    backlog = min(BACKLOG_MAX, max(BACKLOG_MIN, 1 << (4 * concurrency - 1).bit_length()))

    # systemd memory limits: MemoryMax is the app's budget (never below the
    # reload peak), MemoryHigh starts reclaim a little below it.
    steady = MASTER_RSS_MB + workers * (rss + threads * trss)
    peak_mb = peak(workers, threads)
    memory_max = int(min(memory_mb, max(budget, peak_mb)))
    memory_high = int(min(memory_max, max(peak_mb, memory_max * 0.9)))
    explain.append(
        "Memory: about %d MiB steady and %d MiB during a reload; systemd MemoryHigh=%dM, "
        "MemoryMax=%dM." % (steady, peak_mb, memory_high, memory_max)
    )

    return {
        "worker_class": worker_class,
        "workers": int(workers),
        "threads": int(threads),
        "worker_connections": int(worker_connections),
        "max_requests": max_requests,
        "max_requests_jitter": jitter,
        "timeout": timeout,
        "graceful_timeout": graceful,
        "keepalive": keepalive,
        "backlog": backlog,
        "concurrency": int(concurrency),
        "cpus": cpus,
        "memory_budget_mb": int(budget),
        "memory_mb": math.ceil(steady),
        "memory_peak_mb": math.ceil(peak_mb),
        "db_pool_size": int(per_worker),
        "nginx": {
            "proxy_read_timeout": read_timeout,
            "proxy_send_timeout": read_timeout,
            "proxy_connect_timeout": 5,
            "upstream_keepalive": int(worker_connections) if keepalive_on else 0,
            "upstream_keepalive_timeout": upstream_keepalive_timeout,
            "upstream_keepalive_requests": 1000 if keepalive_on else 0,
        },
        "systemd": {
            "TimeoutStopSec": stop_timeout,
            "MemoryHigh": "%dM" % memory_high,
            "MemoryMax": "%dM" % memory_max,
        },
        "explain": explain,
    }


NGINX_OPTIONS = ("plans", "extra_connections", "max_nofile")


def nginx_plan(facts, **options):
    """Size nginx itself from the host's facts and the apps' gunicorn plans.

    Options: ``plans`` (list of :func:`gunicorn_plan` results),
    ``extra_connections`` (client connections beyond the apps' slots),
    ``max_nofile`` (a file-descriptor ceiling nginx must stay under).
    """
    unknown = sorted(set(options) - set(NGINX_OPTIONS))
    if unknown:
        raise TuningError(
            unknown[0], options[unknown[0]], "is not a known option (known: %s)" % ", ".join(NGINX_OPTIONS)
        )
    plans = options.get("plans")
    extra_connections = options.get("extra_connections")
    max_nofile = options.get("max_nofile")
    cpus, _memory_mb, explain = host_resources(facts)
    if plans is None:
        plans = []
    if extra_connections is None:
        extra_connections = 0
    if not isinstance(plans, (list, tuple)):
        raise TuningError("plans", plans, "must be a list of gunicorn_tuning plans")
    total = 0
    for index, plan in enumerate(plans):
        if not isinstance(plan, Mapping) or "concurrency" not in plan:
            raise TuningError("plans[%d]" % index, plan, "must be a plan from gunicorn_tuning")
        total += _number("plans[%d].concurrency" % index, plan["concurrency"], minimum=1, integer=True)
    extra = _number("extra_connections", extra_connections, minimum=0, integer=True)
    workers = max(1, math.ceil(cpus - 1e-9))
    explain.append(
        "worker_processes %d: the effective CPUs (%g), not 'auto', which ignores cgroup limits." % (workers, cpus)
    )
    needed = NGINX_CONNECTIONS_PER_SLOT * total + extra
    per_worker = max(NGINX_MIN_WORKER_CONNECTIONS, math.ceil(needed / float(workers)))
    per_worker = int(math.ceil(per_worker / 256.0) * 256)
    explain.append(
        "worker_connections %d: %d upstream request slots x %d connections each%s, spread over "
        "%d workers (never below %d)."
        % (
            per_worker,
            total,
            NGINX_CONNECTIONS_PER_SLOT,
            " + %d extra" % extra if extra else "",
            workers,
            NGINX_MIN_WORKER_CONNECTIONS,
        )
    )
    nofile = per_worker * NGINX_FDS_PER_CONNECTION + 64
    if max_nofile is not None:
        limit = _number("max_nofile", max_nofile, minimum=64, integer=True)
        if nofile > limit:
            per_worker = max(1, (limit - 64) // NGINX_FDS_PER_CONNECTION)
            nofile = limit
            explain.append("max_nofile=%d caps worker_connections at %d." % (limit, per_worker))
    explain.append(
        "worker_rlimit_nofile %d: %d descriptors per connection plus 64 for logs and files."
        % (nofile, NGINX_FDS_PER_CONNECTION)
    )
    return {
        "worker_processes": workers,
        "worker_connections": int(per_worker),
        "worker_rlimit_nofile": int(nofile),
        "upstream_slots": int(total),
        "explain": explain,
    }
