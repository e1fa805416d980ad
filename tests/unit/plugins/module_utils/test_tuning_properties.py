# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Invariants of the sizing model over wide input ranges (hypothesis).

Hosts: 1-256 vCPUs, 256 MiB - 2 TiB, fractional cgroup CPU quotas.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.flaskops.stack.plugins.module_utils.tuning import (
    GIL_LOAD_MAX,
    PROFILES,
    TuningError,
    gunicorn_plan,
)

settings.register_profile("flaskops", max_examples=300, deadline=None, derandomize=True)
settings.load_profile("flaskops")

vcpus = st.integers(min_value=1, max_value=256)
memory = st.integers(min_value=256, max_value=2 * 1024 * 1024)
quota = st.floats(min_value=0.1, max_value=256, allow_nan=False).map(lambda q: round(q, 2))
cpu_ms = st.floats(min_value=0.1, max_value=500, allow_nan=False)
wait_ms = st.floats(min_value=0, max_value=5000, allow_nan=False)


@st.composite
def workloads(draw):
    """A workload over the whole valid input space (everything optional)."""
    w = {}
    if draw(st.booleans()):
        w["cpu_ms"], w["wait_ms"] = draw(cpu_ms), draw(wait_ms)
    else:
        w["profile"] = draw(st.sampled_from(sorted(PROFILES)))
    optional = {
        "worker_rss_mb": st.floats(min_value=10, max_value=4000, allow_nan=False),
        "thread_rss_mb": st.floats(min_value=0, max_value=64, allow_nan=False),
        "memory_share": st.floats(min_value=0.05, max_value=1, allow_nan=False),
        "max_threads": st.integers(min_value=1, max_value=256),
        "db_pool_max": st.integers(min_value=1, max_value=5000),
        "worker_class": st.sampled_from(["sync", "gthread", "gevent"]),
        "upstream_keepalive": st.booleans(),
        "timeout": st.integers(min_value=1, max_value=3600),
        "max_requests": st.integers(min_value=0, max_value=100000),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            w[key] = draw(strategy)
    if draw(st.booleans()):
        w["min_workers"] = draw(st.integers(min_value=1, max_value=8))
        if draw(st.booleans()):
            w["max_workers"] = w["min_workers"] + draw(st.integers(min_value=0, max_value=64))
    if draw(st.booleans()):
        # A fleet sharing one database: at least one connection per host, twice over.
        hosts = draw(st.integers(min_value=1, max_value=200))
        w["db_max_connections"] = draw(st.integers(min_value=2 * hosts, max_value=20000))
        if hosts > 1 or draw(st.booleans()):
            w["fleet_hosts"] = hosts
    return w


def host(cpus, mem, limit_cpus=None, limit_mem=None):
    facts = {"processor_vcpus": cpus, "memtotal_mb": mem}
    if limit_cpus is not None or limit_mem is not None:
        facts["flaskops_resources"] = {"cpus": limit_cpus, "memory_mb": limit_mem}
    return facts


def per_worker(plan):
    return plan["worker_connections"] if plan["worker_class"] == "gevent" else plan["threads"]


@given(vcpus, memory, workloads())
def test_shape_and_memory(cpus, mem, w):
    plan = gunicorn_plan(host(cpus, mem), **w)
    assert plan["workers"] >= 1
    assert plan["threads"] >= 1
    assert plan["concurrency"] == plan["workers"] * per_worker(plan)
    if plan["worker_class"] != "gthread":
        assert plan["threads"] == 1
    # Two generations fit, or the plan is the single smallest worker and says so.
    if plan["memory_peak_mb"] > plan["memory_budget_mb"]:
        assert plan["workers"] == 1
        assert plan["threads"] == 1
        assert any(line.startswith("Warning: even 1 worker") for line in plan["explain"])
    else:
        assert not any(line.startswith("Warning") for line in plan["explain"])
    high = int(plan["systemd"]["MemoryHigh"].rstrip("M"))
    top = int(plan["systemd"]["MemoryMax"].rstrip("M"))
    assert high <= top <= mem
    if plan["memory_peak_mb"] <= plan["memory_budget_mb"]:
        assert plan["memory_peak_mb"] <= high + 1  # MiB rounding
    if "db_pool_max" in w:
        assert plan["concurrency"] <= w["db_pool_max"]
        assert plan["db_pool_size"] == per_worker(plan)
    if "db_max_connections" in w:
        hosts = w.get("fleet_hosts", 1)
        assert hosts * plan["concurrency"] * 2 <= w["db_max_connections"]
        assert plan["db_connections_per_host"] == w["db_max_connections"] // (2 * hosts)
        assert plan["db_pool_size"] == per_worker(plan)
    else:
        assert plan["db_connections_per_host"] is None
    if "max_workers" in w:
        assert plan["workers"] <= w["max_workers"]
    if "max_threads" in w:
        assert plan["threads"] <= w["max_threads"]


@given(vcpus, memory, workloads())
def test_timeout_chain(cpus, mem, w):
    plan = gunicorn_plan(host(cpus, mem), **w)
    assert plan["nginx"]["proxy_read_timeout"] >= plan["timeout"]
    assert plan["systemd"]["TimeoutStopSec"] > plan["graceful_timeout"]
    assert plan["graceful_timeout"] >= 1
    if plan["nginx"]["upstream_keepalive"]:
        assert plan["keepalive"] > plan["nginx"]["upstream_keepalive_timeout"]
    assert 0 <= plan["max_requests_jitter"] <= plan["max_requests"]


@given(vcpus, memory, workloads())
def test_deterministic(cpus, mem, w):
    assert gunicorn_plan(host(cpus, mem), **w) == gunicorn_plan(host(cpus, mem), **dict(w))


@given(vcpus, memory, quota, memory, workloads())
def test_cgroup_limits_win(cpus, mem, limit_cpus, limit_mem, w):
    limited = gunicorn_plan(host(cpus, mem, limit_cpus, limit_mem), **w)
    effective = gunicorn_plan(host(min(cpus, limit_cpus), min(mem, limit_mem)), **w)
    assert limited["cpus"] == min(cpus, limit_cpus)
    for key in ("workers", "threads", "concurrency", "memory_peak_mb", "systemd", "nginx"):
        assert limited[key] == effective[key]


@given(quota, quota, memory, workloads())
def test_more_cpus_never_fewer_workers(c1, c2, mem, w):
    low, high = sorted((c1, c2))
    assert gunicorn_plan(host(256, mem, low), **w)["workers"] <= gunicorn_plan(host(256, mem, high), **w)["workers"]


@given(vcpus, memory, memory, workloads())
def test_more_memory_never_fewer_workers(cpus, m1, m2, w):
    low, high = sorted((m1, m2))
    if "memory_reserve_mb" in w:
        w.pop("memory_reserve_mb")
    assert gunicorn_plan(host(cpus, low), **w)["workers"] <= gunicorn_plan(host(cpus, high), **w)["workers"]


@given(vcpus, memory, cpu_ms, wait_ms, wait_ms, workloads())
def test_longer_waits_never_less_concurrency(cpus, mem, cpu, w1, w2, w):
    w.pop("profile", None)
    low, high = sorted((w1, w2))
    short = gunicorn_plan(host(cpus, mem), **{**w, "cpu_ms": cpu, "wait_ms": low})
    long = gunicorn_plan(host(cpus, mem), **{**w, "cpu_ms": cpu, "wait_ms": high})
    assert short["concurrency"] <= long["concurrency"]


@given(vcpus, st.integers(min_value=8192, max_value=2 * 1024 * 1024))
def test_ample_memory_io_holds_littles_law(cpus, mem):
    """With memory to spare and no caps, concurrency covers C / f."""
    plan = gunicorn_plan(host(cpus, mem), cpu_ms=2, wait_ms=48, max_threads=10000, worker_rss_mb=20, thread_rss_mb=0)
    assert plan["concurrency"] >= math.ceil(cpus / (2 / 50))


@given(
    vcpus,
    memory,
    workloads(),
    st.integers(min_value=1, max_value=500),
    st.integers(min_value=1, max_value=100000),
)
def test_fleet_database_budget(cpus, mem, w, hosts, db_max):
    """The whole fleet, twice over during a reload, fits the database's connection limit, or the plan is refused."""
    w.update(db_max_connections=db_max, fleet_hosts=hosts)
    if db_max < 2 * hosts:
        with pytest.raises(TuningError) as err:
            gunicorn_plan(host(cpus, mem), **w)
        assert err.value.field == "db_max_connections"
        return
    plan = gunicorn_plan(host(cpus, mem), **w)
    assert hosts * plan["concurrency"] * 2 <= db_max
    assert plan["concurrency"] <= plan["db_connections_per_host"]
    if "db_pool_max" in w:
        assert plan["concurrency"] <= w["db_pool_max"]
    assert any(
        line.startswith("db_max_connections=%d shared by fleet_hosts=%d," % (db_max, hosts)) for line in plan["explain"]
    )


@given(vcpus, memory, workloads(), st.integers(min_value=1, max_value=500))
def test_fleet_hosts_alone_change_nothing(cpus, mem, w, hosts):
    """fleet_hosts only divides db_max_connections; without it the plan is the same."""
    w.pop("db_max_connections", None)
    w.pop("fleet_hosts", None)
    assert gunicorn_plan(host(cpus, mem), fleet_hosts=hosts, **w) == gunicorn_plan(host(cpus, mem), **w)


@given(vcpus, memory, workloads(), st.integers(min_value=1, max_value=100), st.integers(min_value=1, max_value=100))
def test_more_hosts_never_more_connections_per_host(cpus, mem, w, h1, h2):
    few, many = sorted((h1, h2))
    w["db_max_connections"] = max(w.get("db_max_connections", 0), 2 * many)
    w.pop("fleet_hosts", None)
    fewer = gunicorn_plan(host(cpus, mem), fleet_hosts=few, **w)
    more = gunicorn_plan(host(cpus, mem), fleet_hosts=many, **w)
    assert more["concurrency"] <= fewer["concurrency"]


@given(vcpus, cpu_ms, wait_ms)
def test_gthread_processes_keep_their_gil_load_bounded(cpus, cpu, wait):
    """With memory to spare and no caps, gthread workers number between C + 1 and 2C + 1, and each holds no
    more threads than keep its requests' CPU share within GIL_LOAD_MAX (or a single thread)."""
    plan = gunicorn_plan(
        host(cpus, 2 * 1024 * 1024), cpu_ms=cpu, wait_ms=wait, max_threads=10000, worker_rss_mb=10, thread_rss_mb=0
    )
    if plan["worker_class"] != "gthread":
        return
    share = cpu / (cpu + wait)
    assert cpus + 1 <= plan["workers"] <= 2 * cpus + 1
    assert plan["threads"] == 1 or plan["threads"] * share <= GIL_LOAD_MAX + 1e-9
