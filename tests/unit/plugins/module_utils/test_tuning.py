# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Behaviour of the sizing model, one test (or a few) per promise in the README."""

from __future__ import annotations

import math

import pytest

from ansible_collections.flaskops.stack.plugins.module_utils import tuning
from ansible_collections.flaskops.stack.plugins.module_utils.tuning import TuningError, gunicorn_plan, nginx_plan


def facts(cpus=2, mem=4096, **extra):
    return {"processor_vcpus": cpus, "memtotal_mb": mem, **extra}


# 1. CPU-bound work -> sync, about one process per core plus spare.
@pytest.mark.parametrize(("cpus", "expected"), [(1, 2), (2, 3), (4, 5), (8, 9)])
def test_cpu_bound_is_sync_one_per_core_plus_spare(cpus, expected):
    plan = gunicorn_plan(facts(cpus, 65536), cpu_ms=10, wait_ms=0)
    assert plan["worker_class"] == "sync"
    assert plan["threads"] == 1
    assert plan["workers"] == expected
    assert plan["concurrency"] == expected


def test_cpu_profile_is_sync_on_any_host():
    for cpus in (1, 8, 64, 256):
        plan = gunicorn_plan(facts(cpus, 4 * 1024 * 1024), profile="cpu")
        assert (plan["worker_class"], plan["workers"]) == ("sync", cpus + 1)


def test_mostly_cpu_on_a_big_host_spreads_over_processes():
    # 90 % CPU on 64 cores: 71.1 requests keep the cores busy, more than
    # 65 sync workers hold, so gthread; twice that in flight (the queueing
    # headroom), 143. One thread at 90 % already passes the GIL bound (0.75),
    # so 1 thread a process, and the processes stop at 2 x 64 + 1 = 129.
    plan = gunicorn_plan(facts(64, 262144), cpu_ms=9, wait_ms=1)
    assert plan["worker_class"] == "gthread"
    assert plan["workers"] == 129
    assert plan["threads"] == 1
    assert plan["concurrency"] >= math.ceil(64 / 0.9)


# 2. I/O-bound work -> gthread; concurrency grows with wait/cpu.
def test_io_bound_example_from_the_issue():
    plan = gunicorn_plan(facts(2, 65536), cpu_ms=2, wait_ms=48)
    assert plan["worker_class"] == "gthread"
    # 4 % CPU: 50 requests keep 2 CPUs busy, 100 with the headroom; the GIL
    # bound allows floor(0.75 / 0.04) = 18 threads a process, so 100 / 18 -> 6
    # processes, at most 2 x 2 + 1 = 5; 5 x 18 = 90 in flight.
    assert plan["workers"] == 5
    assert plan["threads"] == 18
    assert plan["threads"] * 0.04 <= 0.75
    assert plan["concurrency"] == plan["workers"] * plan["threads"]


def test_io_concurrency_grows_with_wait_until_max_threads_binds():
    low = gunicorn_plan(facts(2, 65536), cpu_ms=2, wait_ms=8)
    high = gunicorn_plan(facts(2, 65536), cpu_ms=2, wait_ms=30)
    capped = gunicorn_plan(facts(2, 65536), cpu_ms=1, wait_ms=500, max_threads=16)
    assert low["worker_class"] == high["worker_class"] == "gthread"
    assert low["concurrency"] < high["concurrency"]
    # 2 CPUs / (1/501) x 2 = 2004 requests wanted; 2 x 2 + 1 = 5 processes at
    # most, and max_threads (16) binds before the GIL bound (375).
    assert capped["threads"] == 16
    assert capped["workers"] == 5
    assert capped["concurrency"] == 80
    assert any("max_threads caps each worker at 16" in line for line in capped["explain"])


def test_gevent_override_sizes_connections_not_threads():
    plan = gunicorn_plan(facts(2, 65536), cpu_ms=1, wait_ms=99, worker_class="gevent")
    assert plan["worker_class"] == "gevent"
    assert plan["threads"] == 1
    # 2 CPUs / 1 % = 200 in flight, x 2 headroom = 400 over 3 workers.
    assert plan["worker_connections"] == 134
    assert plan["concurrency"] == plan["workers"] * plan["worker_connections"]


@pytest.mark.parametrize(("cpu_ms", "wait_ms"), [(1, 50), (2, 20), (3.5, 200)])
def test_async_safe_apps_that_wait_get_gevent_workers_holding_what_gthread_would(cpu_ms, wait_ms):
    threaded = gunicorn_plan(facts(2, 65536), cpu_ms=cpu_ms, wait_ms=wait_ms)
    plan = gunicorn_plan(facts(2, 65536), cpu_ms=cpu_ms, wait_ms=wait_ms, async_safe=True)
    assert (threaded["worker_class"], plan["worker_class"]) == ("gthread", "gevent")
    # One per core plus a spare, each holding its share of the requests in flight (no GIL bound to spread
    # them, no max_threads to cap them): at least what the gthread plan holds.
    assert (plan["workers"], plan["threads"]) == (3, 1)
    assert plan["concurrency"] == plan["workers"] * plan["worker_connections"] >= threaded["concurrency"]
    assert any("safe under gevent (async_safe)" in line for line in plan["explain"])


def test_async_safe_changes_nothing_for_cpu_bound_apps_or_a_forced_class():
    assert gunicorn_plan(facts(2, 65536), profile="cpu", async_safe=True) == gunicorn_plan(
        facts(2, 65536), profile="cpu"
    )
    forced = gunicorn_plan(facts(2, 65536), profile="io", async_safe=True, worker_class="gthread")
    assert forced["worker_class"] == "gthread"


def test_async_safe_must_be_a_bool():
    with pytest.raises(TuningError) as err:
        gunicorn_plan(facts(), async_safe="yes please")
    assert err.value.field == "async_safe"


# 3. Two generations fit the memory budget; never fewer than 1 worker.
def test_two_generations_fit_the_budget():
    plan = gunicorn_plan(facts(16, 2048), profile="cpu", worker_rss_mb=150)
    assert plan["workers"] < 17  # memory, not CPUs, decided
    assert plan["memory_peak_mb"] <= plan["memory_budget_mb"]
    peak = tuning.MASTER_RSS_MB + 2 * plan["workers"] * (150 + plan["threads"] * 4)
    assert plan["memory_peak_mb"] == peak
    assert any("Memory caps workers" in line for line in plan["explain"])


def test_memory_trims_threads_before_workers_for_gthread():
    plan = gunicorn_plan(facts(2, 1024), profile="io", worker_rss_mb=100, thread_rss_mb=8)
    # (1024 - 256) = 768 MiB; 3 workers fit single-threaded, then the room
    # left, (738 / 6 - 100) / 8 = 2 threads each.
    assert plan["workers"] == 3
    assert plan["threads"] == 2
    assert plan["memory_peak_mb"] <= plan["memory_budget_mb"]


def test_one_worker_that_does_not_fit_is_said_plainly():
    plan = gunicorn_plan(facts(4, 512), profile="cpu", worker_rss_mb=400)
    assert plan["workers"] == 1
    assert plan["memory_peak_mb"] > plan["memory_budget_mb"]
    warning = [line for line in plan["explain"] if line.startswith("Warning")]
    assert len(warning) == 1
    assert "more than the" in warning[0]
    assert str(plan["memory_budget_mb"]) in warning[0]


# 4. cgroup limits win over processor_vcpus / memtotal_mb.
def test_cgroup_limits_win():
    host = gunicorn_plan(facts(8, 16384), profile="cpu")
    limited = gunicorn_plan(facts(8, 16384, flaskops_resources={"cpus": 1.5, "memory_mb": 8192}), profile="cpu")
    assert limited["cpus"] == 1.5
    assert limited["workers"] < host["workers"]
    assert limited["workers"] == 3  # ceil(1.5) + 1
    assert any("cgroup CPU limit" in line for line in limited["explain"])


def test_cgroup_memory_limit_wins_and_bounds_the_unit():
    # 768 MiB - 256 MiB reserve = 512 MiB; two generations of 104 MiB workers
    # plus the master fit twice: memory, not the 8 CPUs, decides.
    plan = gunicorn_plan(facts(8, 16384, flaskops_resources={"cpus": 8, "memory_mb": 768}), profile="cpu")
    assert plan["memory_budget_mb"] == 512
    assert plan["workers"] == 2
    assert int(plan["systemd"]["MemoryMax"].rstrip("M")) <= 768
    assert int(plan["systemd"]["MemoryHigh"].rstrip("M")) <= int(plan["systemd"]["MemoryMax"].rstrip("M"))
    assert any("cgroup memory limit" in line for line in plan["explain"])


def test_hostvars_form_and_nested_ansible_facts():
    hostvars = {
        "ansible_processor_vcpus": 4,
        "ansible_memtotal_mb": 8192,
        "ansible_flaskops_resources": {"cpus": 2.0, "memory_mb": 4096},
    }
    nested = {
        "inventory_hostname": "web1",
        "ansible_facts": facts(4, 8192, flaskops_resources={"cpus": 2.0, "memory_mb": 4096}),
    }
    expected = gunicorn_plan(facts(2, 4096), profile="io")
    assert gunicorn_plan(hostvars, profile="io")["workers"] == expected["workers"]
    assert gunicorn_plan(nested, profile="io")["threads"] == expected["threads"]


def test_resources_alone_are_enough():
    plan = gunicorn_plan({"flaskops_resources": {"cpus": 1.0, "memory_mb": 2048}}, profile="cpu")
    assert plan["workers"] == 2


# 5. workers x threads <= db_pool_max, db_pool_size reported.
def test_db_pool_limits_concurrency():
    # io on 4 CPUs: 9 workers x 18 threads without the pool; within 40
    # connections the most workers that still use all 40 are 8 x 5.
    plan = gunicorn_plan(facts(4, 65536), profile="io", db_pool_max=40)
    assert plan["workers"] == 8
    assert plan["db_pool_size"] == plan["threads"] == 5
    assert plan["concurrency"] == 40


def test_db_pool_smaller_than_workers():
    plan = gunicorn_plan(facts(8, 65536), profile="cpu", db_pool_max=3)
    assert plan["workers"] == 3
    assert plan["db_pool_size"] == 1


# 5b. A fleet sharing one database: fleet_hosts x workers x threads x 2 (reload overlap) <= db_max_connections.
def test_fleet_database_budget_caps_each_host():
    # 100 // (2 x 3) = 16 connections per host: 4 workers x 4 threads, where the host alone would take 4 x 32.
    plan = gunicorn_plan(facts(3, 65536), profile="io", db_max_connections=100, fleet_hosts=3)
    assert (plan["workers"], plan["threads"], plan["concurrency"]) == (4, 4, 16)
    assert plan["db_connections_per_host"] == 16
    assert plan["db_pool_size"] == 4
    assert 3 * plan["concurrency"] * 2 <= 100
    assert (
        "The fleet's database budget (16 connections per host) limits the plan to 4 workers x 4 concurrent requests."
        in plan["explain"]
    )
    assert (
        "db_max_connections=100 shared by fleet_hosts=3, twice over during a reload: at most 16 connections per "
        "host; the plan holds 4 workers x 4 threads = 16." in plan["explain"]
    )


def test_fleet_database_budget_is_stated_when_it_does_not_bind():
    plan = gunicorn_plan(facts(2, 65536), profile="cpu", db_max_connections=1000, fleet_hosts=2)
    assert plan["workers"] == 3
    assert plan["db_connections_per_host"] == 250
    assert (
        "db_max_connections=1000 shared by fleet_hosts=2, twice over during a reload: at most 250 connections per "
        "host; the plan holds 3 workers x 1 thread = 3." in plan["explain"]
    )
    assert not any("limits the plan" in line for line in plan["explain"])


def test_fleet_hosts_defaults_to_one_and_without_a_limit_nothing_is_said():
    assert gunicorn_plan(facts(3, 65536), profile="io", db_max_connections=40)["concurrency"] == 20
    plan = gunicorn_plan(facts(3, 65536), profile="io", fleet_hosts=5)
    assert plan == gunicorn_plan(facts(3, 65536), profile="io")
    assert plan["db_connections_per_host"] is None
    assert not any("db_max_connections" in line for line in plan["explain"])


@pytest.mark.parametrize(
    ("db_pool_max", "db_max_connections", "concurrency", "named"),
    [
        (12, 100, 12, "db_pool_max=12 limits"),  # the pool is the smaller cap
        (40, 100, 16, "The fleet's database budget (16 connections per host) limits"),  # the fleet's share is
        (16, 100, 16, "db_pool_max=16 limits"),  # equal: the pool is named
    ],
)
def test_fleet_database_budget_and_db_pool_max_the_smaller_wins(db_pool_max, db_max_connections, concurrency, named):
    plan = gunicorn_plan(
        facts(3, 65536), profile="io", db_pool_max=db_pool_max, db_max_connections=db_max_connections, fleet_hosts=3
    )
    assert plan["concurrency"] == concurrency
    assert plan["db_connections_per_host"] == 16
    assert any(line.startswith(named) for line in plan["explain"])


def test_fleet_database_budget_holds_when_memory_refills_threads():
    # Memory cuts the workers, then refills their threads: never past the fleet's share.
    plan = gunicorn_plan(
        facts(8, 4096), profile="io", worker_rss_mb=400, thread_rss_mb=1, db_max_connections=60, fleet_hosts=2
    )
    assert plan["workers"] < 9
    assert plan["concurrency"] <= 15


@pytest.mark.parametrize(("hosts", "db_max"), [(6, 10), (1, 1), (50, 99)])
def test_fleet_database_budget_too_small_for_one_connection_per_host(hosts, db_max):
    with pytest.raises(TuningError) as err:
        gunicorn_plan(facts(), db_max_connections=db_max, fleet_hosts=hosts)
    assert err.value.field == "db_max_connections"
    assert str(err.value) == (
        "'db_max_connections' must be at least %d to hold fleet_hosts=%d x 1 connection x 2 (reload overlap), "
        "got %d (int)" % (2 * hosts, hosts, db_max)
    )
    # The smallest limit that fits holds one worker with one thread per host.
    plan = gunicorn_plan(facts(), db_max_connections=2 * hosts, fleet_hosts=hosts)
    assert (plan["workers"], plan["concurrency"], plan["db_connections_per_host"]) == (1, 1, 1)


# 7. The timeout chain.
@pytest.mark.parametrize("keepalive", [True, False])
@pytest.mark.parametrize("profile", ["cpu", "mixed", "io", "api"])
def test_timeout_chain(profile, keepalive):
    plan = gunicorn_plan(facts(), profile=profile, timeout=45, upstream_keepalive=keepalive)
    assert plan["nginx"]["proxy_read_timeout"] >= plan["timeout"] == 45
    assert plan["systemd"]["TimeoutStopSec"] > plan["graceful_timeout"]
    if plan["nginx"]["upstream_keepalive"]:
        assert plan["keepalive"] > plan["nginx"]["upstream_keepalive_timeout"] > 0


def test_upstream_keepalive_is_off_for_sync_workers():
    plan = gunicorn_plan(facts(), profile="cpu", upstream_keepalive=True)
    assert plan["nginx"]["upstream_keepalive"] == 0
    assert any("sync workers close every connection" in line for line in plan["explain"])


def test_upstream_keepalive_for_gthread():
    plan = gunicorn_plan(facts(), profile="io", upstream_keepalive=True)
    assert plan["nginx"]["upstream_keepalive"] > 0
    assert plan["keepalive"] == tuning.UPSTREAM_KEEPALIVE_TIMEOUT_S + tuning.UPSTREAM_KEEPALIVE_MARGIN_S


def test_recycling_jitter_is_ten_percent_and_can_be_off():
    assert gunicorn_plan(facts(), max_requests=1000)["max_requests_jitter"] == 100
    off = gunicorn_plan(facts(), max_requests=0)
    assert off["max_requests"] == off["max_requests_jitter"] == 0


def test_min_and_max_workers():
    assert gunicorn_plan(facts(8, 65536), profile="cpu", max_workers=4)["workers"] == 4
    plan = gunicorn_plan(facts(1, 65536), profile="io", min_workers=3)
    assert plan["workers"] == 3
    assert plan["threads"] * 3 >= plan["concurrency"]


def test_measured_numbers_win_over_profile():
    plan = gunicorn_plan(facts(), profile="cpu", cpu_ms=1, wait_ms=49)
    assert plan["worker_class"] == "gthread"
    assert "measured 1 ms CPU + 49 ms waiting" in plan["explain"][0]


def test_default_profile_is_mixed():
    assert gunicorn_plan(facts()) == gunicorn_plan(facts(), profile="mixed")


def test_output_keys():
    plan = gunicorn_plan(facts())
    assert set(plan) >= set(tuning.GUNICORN_SETTINGS)
    assert set(plan) >= {
        "concurrency",
        "memory_mb",
        "memory_peak_mb",
        "db_pool_size",
        "nginx",
        "systemd",
        "explain",
    }
    assert set(plan["nginx"]) >= {
        "proxy_read_timeout",
        "proxy_connect_timeout",
        "upstream_keepalive",
        "upstream_keepalive_timeout",
    }
    assert set(plan["systemd"]) == {"TimeoutStopSec", "MemoryHigh", "MemoryMax"}
    assert all(isinstance(line, str) and line.endswith(".") for line in plan["explain"])


# 9. Bad input names the field and the value.
@pytest.mark.parametrize(
    ("host", "kwargs", "field", "shown"),
    [
        (facts(), {"profile": "web"}, "profile", "'web'"),
        (facts(), {"worker_class": "uvicorn"}, "worker_class", "'uvicorn'"),
        (facts(), {"cpu_ms": -1, "wait_ms": 5}, "cpu_ms", "-1"),
        (facts(), {"cpu_ms": 0, "wait_ms": 5}, "cpu_ms", "0"),
        (facts(), {"cpu_ms": 1, "wait_ms": float("nan")}, "wait_ms", "nan"),
        (facts(), {"cpu_ms": "2", "wait_ms": 5}, "cpu_ms", "'2' (str)"),
        (facts(), {"cpu_ms": 2}, "wait_ms", "must be given together with cpu_ms"),
        (facts(), {"worker_rss_mb": 0}, "worker_rss_mb", "0"),
        (facts(), {"memory_share": 1.5}, "memory_share", "1.5"),
        (facts(), {"max_workers": "four"}, "max_workers", "'four'"),
        (facts(), {"min_workers": 2.5}, "min_workers", "2.5"),
        (facts(), {"min_workers": 4, "max_workers": 2}, "max_workers", "2"),
        (facts(), {"timeout": True}, "timeout", "True (bool)"),
        (facts(), {"upstream_keepalive": "yes"}, "upstream_keepalive", "'yes'"),
        (facts(), {"threads": 4}, "threads", "is not a known option"),
        (facts(), {"memory_reserve_mb": 4096}, "memory_reserve_mb", "4096"),
        (facts(), {"db_max_connections": "100"}, "db_max_connections", "'100' (str)"),
        (facts(), {"db_max_connections": 0}, "db_max_connections", "0"),
        (facts(), {"fleet_hosts": 0}, "fleet_hosts", "0"),
        (facts(), {"fleet_hosts": 2.5, "db_max_connections": 100}, "fleet_hosts", "2.5"),
        ({"memtotal_mb": 1024}, {}, "processor_vcpus", "missing"),
        ({"processor_vcpus": 2}, {}, "memtotal_mb", "missing"),
        (facts(cpus="2"), {}, "processor_vcpus", "'2' (str)"),
        (facts(mem=float("inf")), {}, "memtotal_mb", "inf"),
        ("not facts", {}, "facts", "'not facts'"),
        (facts(flaskops_resources={"cpus": -1}), {}, "flaskops_resources.cpus", "-1"),
    ],
)
def test_bad_input_names_field_and_value(host, kwargs, field, shown):
    with pytest.raises(TuningError) as err:
        gunicorn_plan(host, **kwargs)
    assert err.value.field == field
    assert "'%s'" % field in str(err.value)
    assert shown in str(err.value)


def test_one_option_table_drives_the_checks():
    assert set(tuning.WORKLOAD_OPTIONS) == set(tuning.WORKLOAD_DEFAULTS)
    assert {o.kind for o in tuning.WORKLOAD_OPTIONS.values()} <= {"float", "int", "bool", "str"}
    for name, option in tuning.WORKLOAD_OPTIONS.items():
        assert tuning.WORKLOAD_DEFAULTS[name] == option.default
    assert set(tuning.WORKLOAD_OPTIONS["profile"].choices) == set(tuning.PROFILES)
    assert tuning.WORKLOAD_OPTIONS["worker_class"].choices == tuning.WORKER_CLASSES


BOUNDED = sorted(n for n, o in tuning.WORKLOAD_OPTIONS.items() if o.kind in ("int", "float") and o.minimum is not None)


@pytest.mark.parametrize("name", BOUNDED)
def test_every_lower_bound_is_enforced(name):
    option = tuning.WORKLOAD_OPTIONS[name]
    kwargs = {"cpu_ms": 1, "wait_ms": 1, name: option.minimum if option.exclusive else option.minimum - 1}
    with pytest.raises(TuningError) as err:
        gunicorn_plan(facts(2, 1 << 20), **kwargs)
    assert err.value.field == name


def test_first_bad_option_in_table_order_is_reported():
    with pytest.raises(TuningError) as err:
        gunicorn_plan(facts(), max_requests=-1, worker_class="x", cpu_ms=1)
    assert err.value.field == "worker_class"
    with pytest.raises(TuningError) as err:
        gunicorn_plan(facts(), max_requests=-1, cpu_ms=1)
    assert str(err.value) == "'wait_ms' must be given together with cpu_ms"


def test_unhashable_profile_is_bad_input():
    with pytest.raises(TuningError) as err:
        gunicorn_plan(facts(), profile=["io"])
    assert str(err.value) == "'profile' must be one of api, cpu, io, mixed, got ['io'] (list)"


# nginx sizing.
def test_nginx_workers_are_effective_cpus_rounded_up():
    assert nginx_plan(facts(8, 16384))["worker_processes"] == 8
    limited = facts(8, 16384, flaskops_resources={"cpus": 1.5, "memory_mb": 768})
    assert nginx_plan(limited)["worker_processes"] == 2


def test_nginx_connections_follow_the_apps():
    big = gunicorn_plan(facts(2, 65536), profile="io", max_threads=512)
    plan = nginx_plan(facts(2, 65536), plans=[big, big])
    assert plan["upstream_slots"] == 2 * big["concurrency"]
    assert plan["worker_connections"] * plan["worker_processes"] >= 8 * plan["upstream_slots"]
    assert plan["worker_rlimit_nofile"] >= 2 * plan["worker_connections"]
    assert nginx_plan(facts(2, 65536))["worker_connections"] == 1024


def test_nginx_nofile_ceiling():
    plan = nginx_plan(facts(1, 4096), extra_connections=100000, max_nofile=4096)
    assert plan["worker_rlimit_nofile"] == 4096
    assert plan["worker_connections"] * 2 <= 4096


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"plans": "x"}, "plans"),
        ({"plans": [{"workers": 1}]}, "plans[0]"),
        ({"extra_connections": -1}, "extra_connections"),
        ({"workers": 2}, "workers"),
        ({"max_nofile": 10}, "max_nofile"),
    ],
)
def test_nginx_bad_input(kwargs, field):
    with pytest.raises(TuningError) as err:
        nginx_plan(facts(), **kwargs)
    assert err.value.field == field


def test_nginx_worker_processes_override():
    plan = nginx_plan(facts(8, 16384), worker_processes=2)
    assert plan["worker_processes"] == 2
    assert any(line.startswith("worker_processes 2: set by the worker_processes option") for line in plan["explain"])
    # The derived connections are spread over the workers given, not the CPUs.
    big = gunicorn_plan(facts(2, 65536), profile="io", max_threads=512)
    spread = nginx_plan(facts(8, 16384), plans=[big, big], worker_processes=2)
    assert spread["worker_connections"] * 2 >= 8 * spread["upstream_slots"]


def test_nginx_worker_connections_override_sets_nofile():
    plan = nginx_plan(facts(2, 4096), worker_connections=4000)
    assert plan["worker_connections"] == 4000
    assert plan["worker_rlimit_nofile"] == 4000 * 2 + 64
    assert plan["worker_rlimit_nofile"] == 4000 * tuning.NGINX_FDS_PER_CONNECTION + tuning.NGINX_RESERVED_FDS
    assert any(
        line.startswith("worker_connections 4000: set by the worker_connections option") for line in plan["explain"]
    )
    assert any(line.startswith("worker_rlimit_nofile 8064:") for line in plan["explain"])


def test_nginx_overrides_below_the_derived_values_are_kept():
    big = gunicorn_plan(facts(2, 65536), profile="io", max_threads=512)
    plan = nginx_plan(facts(8, 16384), plans=[big], worker_processes=1, worker_connections=1)
    assert (plan["worker_processes"], plan["worker_connections"], plan["worker_rlimit_nofile"]) == (1, 1, 66)


def test_nginx_null_overrides_derive():
    derived = nginx_plan(facts(4, 8192))
    assert nginx_plan(facts(4, 8192), worker_processes=None, worker_connections=None) == derived
    assert not any("option" in line for line in derived["explain"])


def test_nginx_worker_connections_override_within_max_nofile():
    plan = nginx_plan(facts(2, 4096), worker_connections=2000, max_nofile=4064)
    assert plan["worker_connections"] == 2000
    assert plan["worker_rlimit_nofile"] == 4064
    assert not any("caps worker_connections" in line for line in plan["explain"])


def test_nginx_worker_connections_override_over_max_nofile_is_an_error():
    with pytest.raises(TuningError) as err:
        nginx_plan(facts(2, 4096), worker_connections=2001, max_nofile=4064)
    assert err.value.field == "worker_connections"
    assert str(err.value) == (
        "'worker_connections' must be at most 2000 to stay within max_nofile=4064 "
        "(2 descriptors per connection plus 64), got 2001 (int)"
    )


@pytest.mark.parametrize("field", ["worker_processes", "worker_connections"])
@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "must be at least 1, got 0 (int)"),
        (-4, "must be at least 1, got -4 (int)"),
        (2.5, "must be a whole number, got 2.5 (float)"),
        ("4", "must be a whole number, got '4' (str)"),
        (True, "must be a whole number, got True (bool)"),
        (float("inf"), "must be a finite number, got inf (float)"),
        ([4], "must be a whole number, got [4] (list)"),
    ],
)
def test_nginx_bad_overrides_name_the_field(field, value, shown):
    with pytest.raises(TuningError) as err:
        nginx_plan(facts(), **{field: value})
    assert err.value.field == field
    assert str(err.value) == "'%s' %s" % (field, shown)


@pytest.mark.parametrize("value", [1, 3, 4.0, 65536])
def test_nginx_valid_overrides(value):
    plan = nginx_plan(facts(), worker_processes=value, worker_connections=value)
    assert plan["worker_processes"] == plan["worker_connections"] == int(value)
    assert isinstance(plan["worker_processes"], int)
    assert plan["worker_rlimit_nofile"] == int(value) * 2 + 64


def test_error_shows_builtin_type_of_subclassed_values():
    class TaggedStr(str):
        """Stands in for the tagged str subclass ansible-core 2.19 passes."""

    with pytest.raises(TuningError) as err:
        gunicorn_plan(facts(), profile=TaggedStr("web"))
    assert str(err.value) == "'profile' must be one of api, cpu, io, mixed, got 'web' (str)"
