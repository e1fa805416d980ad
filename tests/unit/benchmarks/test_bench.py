# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""benchmarks/bench.py: the parts that need no container (wrk parsing, configurations, analysis)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[3] / "benchmarks"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import bench  # noqa: E402

WRK_ERRORS = """Running 4s test @ http://127.0.0.1:40123/io
  1 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.21s   401.22ms   4.98s    80.12%
    Req/Sec   210.11     40.02   300.00     70.00%
  Latency Distribution
     50%  980.50ms
     75%    1.40s
     90%    1.90s
     99%    3.20s
  812 requests in 4.01s, 150.00KB read
  Socket errors: connect 0, read 3, write 1, timeout 40
  Non-2xx or 3xx responses: 12
Requests/sec:    202.49
Transfer/sec:     37.41KB
"""

WRK_CLEAN = """Running 1s test @ http://127.0.0.1:40123/cpu
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   850.00us  100.00us   2.00ms   90.00%
    Req/Sec     4.60k   100.00     4.70k    90.00%
  Latency Distribution
     50%  820.00us
     75%    0.90ms
     90%    1.00ms
     99%    1.50ms
  4600 requests in 1.00s, 0.86MB read
Requests/sec:   4600.00
Transfer/sec:      0.86MB
"""


def test_parse_wrk_counts_every_failure_kind_and_converts_units():
    run = bench.parse_wrk(WRK_ERRORS)
    assert run["requests"] == 812
    assert run["ok"] == 800  # non-2xx answers are requests wrk completed, but not successes
    assert run["errors"] == 12 + 3 + 1 + 40
    assert run["seconds"] == pytest.approx(4.01)
    assert run["rps"] == pytest.approx(800 / 4.01)
    assert run["p50_ms"] == pytest.approx(980.5)
    assert run["p99_ms"] == pytest.approx(3200.0)


def test_parse_wrk_without_errors_and_microsecond_latencies():
    run = bench.parse_wrk(WRK_CLEAN)
    assert (run["requests"], run["ok"], run["errors"]) == (4600, 4600, 0)
    assert run["p50_ms"] == pytest.approx(0.82)
    assert run["p99_ms"] == pytest.approx(1.5)


def test_parse_wrk_refuses_output_without_a_request_count():
    with pytest.raises(ValueError, match="no request count"):
        bench.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_command_is_bounded_and_names_the_site():
    command = bench.wrk_command(40123, "/io", 64, 2.4)
    assert command[0] == "wrk"
    assert command[command.index("--duration") + 1] == "2s"
    assert command[command.index("--timeout") + 1] == "%ds" % bench.WRK_TIMEOUT_S
    assert "Host: " + bench.SERVER_NAME in command
    assert command[-1] == "http://127.0.0.1:40123/io"


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_the_full_grid_spans_sync_and_gthread_around_the_cpu_count(cpus):
    points = bench.grid(cpus, bench.PROFILES["full"], "cpu")
    assert len(points) == 12
    assert {p["workers"] for p in points.values()} == {cpus, cpus + 1, 2 * cpus + 1}
    for label, settings in points.items():
        assert label == "grid %s %dx%d" % (settings["worker_class"], settings["workers"], settings["threads"])
        # sync with threads > 1 would silently become gthread in gunicorn
        assert (settings["worker_class"] == "sync") == (settings["threads"] == 1)
        assert settings["worker_connections"] == settings["threads"]


@pytest.mark.parametrize("workload", ["io", "wait"])
def test_the_grid_of_waiting_workloads_adds_gevent_workers(workload):
    profile = bench.PROFILES["full"]
    points = bench.grid(2, profile, workload)
    gevent = {label: p for label, p in points.items() if p["worker_class"] == "gevent"}
    assert set(points) - set(gevent) == set(bench.grid(2, profile, "cpu"))
    assert sorted((p["workers"], p["worker_connections"]) for p in gevent.values()) == sorted(
        (w, c) for w in (2, 3, 5) for c in profile.grid_gevent_connections
    )
    for label, settings in gevent.items():
        assert label == "grid gevent %dx%d" % (settings["workers"], settings["worker_connections"])
        assert settings["threads"] == 1
    assert bench.describe(gevent["grid gevent 3x256"]) == "3 gevent x 256"


def test_rule_of_thumb_is_2n_plus_1_with_four_threads_for_waiting_work():
    assert bench.rule_of_thumb(2, "cpu") == dict(bench.GUNICORN_DEFAULTS, workers=5)
    assert bench.rule_of_thumb(1, "io") == dict(bench.GUNICORN_DEFAULTS, workers=3, worker_class="gthread", threads=4)
    assert bench.rule_of_thumb(2, "mixed")["threads"] == 4


def test_configurations_from_a_plan_take_only_gunicorn_settings():
    plan = dict.fromkeys(bench.PLAN_SETTINGS, 7) | {"concurrency": 49, "nginx": {}, "explain": []}
    assert bench.from_plan(plan) == dict.fromkeys(bench.PLAN_SETTINGS, 7)


def _run(rps, p99=10.0, errors=0, cpu_ms=5.0):
    return {
        "requests": int(rps * 4) + errors,
        "ok": int(rps * 4),
        "errors": errors,
        "rps": rps,
        "p50_ms": 5.0,
        "p99_ms": p99,
        "cpu_ms": cpu_ms,
    }


def test_finalists_are_the_best_screened_point_per_connection_count():
    screened = {
        "grid sync 3x1": {"runs": {"64": _run(100), "256": _run(90)}, "anon_mb": 60.0},
        "grid gthread 3x16": {"runs": {"64": _run(150), "256": _run(140)}, "anon_mb": 70.0},
        "grid gthread 3x64": {"runs": {"64": _run(140), "256": _run(160)}, "anon_mb": 90.0},
    }
    assert bench.finalists(screened, (64, 256), 1024) == ["grid gthread 3x16", "grid gthread 3x64"]
    assert bench.finalists(screened, (64,), 1024) == ["grid gthread 3x16"]
    # Two generations of 3x64 (180 MiB) do not fit 179 MiB, nor those of any point 119 MiB.
    assert bench.finalists(screened, (64, 256), 179) == ["grid gthread 3x16"]
    assert bench.finalists(screened, (64, 256), 119) == ["grid sync 3x1"]


def _cell(rps_by_label, p99_by_label=None):
    p99_by_label = p99_by_label or {}
    return {
        "cpus": 2,
        "final": {
            label: {"samples": {"64": [_run(r, p99_by_label.get(label, 10.0)) for r in values]}}
            for label, values in rps_by_label.items()
        },
    }


def test_summary_takes_medians_and_the_best_grid_point_as_reference():
    cell = _cell(
        {
            "default": [10, 12, 11],
            "rule": [80, 95, 90],
            "profile": [99, 97, 98],
            "plan": [100, 101, 150],  # one outlier: the median ignores it
            "grid gthread 2x16": [104, 102, 103],
            "grid gthread 2x64": [90, 91, 92],
        },
        {"plan": 12.0},
    )
    summary = bench.summarize(cell, (64,))["64"]
    assert summary["best"] == "grid gthread 2x16"
    assert summary["rows"]["plan"]["rps"] == 101
    ratios = summary["ratios"]
    assert ratios["plan_vs_best"] == pytest.approx(101 / 103, abs=1e-3)
    assert ratios["profile_vs_best"] == pytest.approx(98 / 103, abs=1e-3)
    assert ratios["plan_vs_rule"] == pytest.approx(101 / 90, abs=1e-3)
    assert ratios["plan_vs_default"] == pytest.approx(101 / 11, abs=1e-3)
    assert ratios["plan_p99_vs_best"] == pytest.approx(1.2)
    # 2 CPUs at 5 ms of CPU a request serve at most 400/s; (e) served 103.
    assert summary["limit_rps"] == 400.0
    assert ratios["best_vs_limit"] == pytest.approx(103 / 400, abs=1e-3)


def _open(p99_plan, p99_best, best="grid gthread 2x16"):
    def runs(p99s):
        return [{"rps": 80.0, "p99_ms": p, "lag_p99_ms": 0.5, "errors": 0} for p in p99s]

    return {"rate": 82.4, "best": best, "runs": {"plan": runs(p99_plan), "best": runs(p99_best)}}


def test_open_loop_summary_takes_medians_of_p99_and_compares_the_plan_with_the_best():
    cell = {"open": _open([30.0, 90.0, 33.0], [20.0, 22.0, 21.0])}
    opened = bench.summarize_open(cell)
    assert opened["rows"]["plan"]["p99_ms"] == 33.0 and opened["rows"]["best"]["p99_ms"] == 21.0
    assert opened["p99_plan_vs_best"] == pytest.approx(33 / 21, abs=1e-3)
    assert bench.summarize_open({}) is None


def test_the_open_loop_rate_is_a_share_of_the_best_grid_points_most_requests():
    results = {
        "plan": {"samples": {"64": [_run(500)], "256": [_run(520)]}},
        "grid sync 3x1": {"samples": {"64": [_run(300)], "256": [_run(310)]}},
        "grid gthread 5x16": {"samples": {"64": [_run(480)], "256": [_run(510)]}},
    }
    assert bench.best_grid_label(results) == "grid gthread 5x16"


def test_targets_fail_where_the_plan_falls_short():
    cell = _cell(
        {
            "default": [10],
            "rule": [95],
            "profile": [85],
            "plan": [94],
            "live": [90],
            "grid gthread 2x16": [100],
        },
        {"plan": 13.0},
    )
    summary = bench.summarize(cell, (64,))
    checks = bench.targets(summary, {"plan_error": 0.30}, bench.summarize_open({"open": _open([26.0], [20.0])}))
    assert checks == {
        "open-loop plan p99 <= 1.25 best": False,
        "c64 plan >= 0.95 best": False,
        "c64 plan p99 <= 1.25 best": False,
        "c64 profile >= 0.90 best": False,
        "c64 plan and profile >= rule": False,
        "c64 live >= 0.95 best": False,
        "plan memory_peak_mb within 25 % of the HUP peak": False,
    }
    good = bench.summarize(
        _cell({"default": [10], "rule": [90], "profile": [95], "plan": [99], "live": [97], "grid sync 3x1": [100]}),
        (64,),
    )
    assert all(
        bench.targets(good, {"plan_error": -0.2}, bench.summarize_open({"open": _open([25.0], [20.0])})).values()
    )


def test_bench_lines_follow_the_documented_format():
    cell = _cell(
        {
            "default": [10],
            "rule": [50],
            "profile": [95],
            "plan": [99],
            "live": [96],
            "async": [103],
            "grid sync 3x1": [100],
        },
        {"plan": 15.0, "grid sync 3x1": 10.0},
    )
    cell.update(workload="cpu", cpus=2, summary=bench.summarize(cell, (64,)))
    cell["open_summary"] = bench.summarize_open({"open": _open([24.0], [20.0])})
    assert bench.bench_lines([cell]) == [
        "BENCH RESULT workload=cpu cpus=2 conns=64 ratio_plan_vs_best=0.99 p99_plan_vs_best=1.50 "
        "ratio_profile_vs_best=0.95 ratio_plan_vs_rule=1.98 ratio_best_vs_limit=0.25 open_p99_plan_vs_best=1.20 "
        "ratio_plan_vs_default=9.90 ratio_live_vs_best=0.96 ratio_async_vs_best=1.03"
    ]
    # A cell whose live window measure.yml refused has no plan (f), and one of a workload without gevent no
    # plan (g): their ratios say so, not "inf".
    refused = _cell({"default": [10], "rule": [50], "profile": [95], "plan": [99], "grid sync 3x1": [100]})
    refused.update(workload="cpu", cpus=2, summary=bench.summarize(refused, (64,)))
    assert bench.bench_lines([refused])[0].endswith("ratio_live_vs_best=none ratio_async_vs_best=none")


def test_metrics_on_over_off_is_the_ratio_of_medians_and_a_target():
    def runs(rps, p99, counted):
        return [
            {"rps": r, "p99_ms": p, "counted": c, "requests": c - 2} for r, p, c in zip(rps, p99, counted, strict=True)
        ]

    cell = {
        "workload": "mixed",
        "cpus": 2,
        "metrics": {
            "connections": 64,
            "settings": {"worker_class": "gthread", "workers": 3, "threads": 8},
            "runs": {
                "off": runs([100, 104, 98], [20, 22, 21], [0, 0, 0]),
                "on": runs([99, 97, 101], [21, 23, 22], [400, 410, 420]),
            },
        },
    }
    summary = bench.summarize_metrics(cell)
    assert (summary["rps_off"], summary["rps_on"], summary["ratio_on_vs_off"]) == (100, 99, 0.99)
    assert summary["p99_on_vs_off"] == pytest.approx(22 / 21, abs=0.005)
    assert (summary["counted_on"], summary["counted_off"], summary["answered_on"]) == (
        [400, 410, 420],
        [0, 0, 0],
        [398, 408, 418],
    )
    cell["metrics_summary"] = summary
    assert bench.metrics_lines([cell, {"workload": "io", "cpus": 1}]) == [
        "BENCH METRICS workload=mixed cpus=2 conns=64 rps_off=100.0 rps_on=99.0 ratio_metrics_on_vs_off=0.99 "
        "p99_on_vs_off=1.05"
    ]
    assert bench.summarize_metrics({"workload": "io"}) is None
    memory = {"plan_error": 0.0}
    assert bench.targets({}, memory, None, summary)["metrics on >= 0.97 off"] is True
    slow = dict(summary, ratio_on_vs_off=0.96)
    assert bench.targets({}, memory, None, slow)["metrics on >= 0.97 off"] is False
    assert "metrics on >= 0.97 off" not in bench.targets({}, memory)


def test_live_rate_keeps_the_window_below_measure_s_saturation_limits():
    # CPU-bound: 30 % of 2 CPUs at 5 ms a request; slots would allow far more.
    assert bench.live_rate(2, {"cpu_ms": 5.0, "wait_ms": 0.0}, 24) == pytest.approx(120.0)
    # Wait-bound: 40 % of 16 slots busy for 202 ms each; the CPUs would allow far more.
    assert bench.live_rate(1, {"cpu_ms": 2.0, "wait_ms": 200.0}, 16) == pytest.approx(31.7)


def test_memory_fit_recovers_master_worker_and_thread_sizes():
    master, worker, thread = 18.0, 16.5, 0.25
    points = [(w, t, master + w * (worker + t * thread)) for w in (1, 2, 3, 5) for t in (1, 4, 16, 64)]
    fit = bench.fit_memory(points)
    assert fit == {
        "master_mb": pytest.approx(master, abs=0.1),
        "worker_mb": pytest.approx(worker, abs=0.1),
        "thread_mb": pytest.approx(thread, abs=0.001),
    }


def test_configurations_that_measure_the_same_run_once_each_repeat_in_another_order():
    configs = {"profile": {"workers": 3}, "plan": {"workers": 3}, "grid sync 5x1": {"workers": 5}}
    distinct = bench.by_shape(configs)
    assert list(distinct.values()) == [["profile", "plan"], ["grid sync 5x1"]]
    order = ["a", "b", "c"]
    assert [bench.rotated(order, r) for r in range(4)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"],
    ]  # fmt: skip


def test_open_loop_runs_the_plan_and_the_best_alternately_at_a_share_of_the_best(monkeypatch):
    class FakeHost:
        name = "fake"

        def __init__(self):
            self.calls = []

        def switch(self, settings, path, connections):
            self.calls.append(("switch", settings["workers"]))

        def measure_open(self, path, rate, connections, seconds):
            self.calls.append(("open", rate, connections))
            return {"p99_ms": 10.0, "errors": 0}

    monkeypatch.setattr(bench, "log", lambda message: None)
    results = {
        "plan": {"settings": {"workers": 3}, "samples": {"64": [_run(500)], "256": [_run(520)]}},
        "grid gthread 5x16": {"settings": {"workers": 5}, "samples": {"64": [_run(480)], "256": [_run(510)]}},
    }
    host = FakeHost()
    opened = bench.open_loop(host, "io", results, bench.PROFILES["full"])
    assert (opened["rate"], opened["best"], opened["connections"]) == (408.0, "grid gthread 5x16", 256)
    assert [call[1] for call in host.calls if call[0] == "switch"] == [3, 5, 5, 3]
    assert {name: len(runs) for name, runs in opened["runs"].items()} == {"plan": 2, "best": 2}


def test_the_open_loop_client_and_the_threads_it_starts_run_ahead_of_the_stack_then_go_back():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:  # may this process raise its priority at all (root, CAP_SYS_NICE)?
        os.setpriority(os.PRIO_PROCESS, 0, before - 1)
        allowed = True
        os.setpriority(os.PRIO_PROCESS, 0, before)
    except PermissionError:
        allowed = False
    seen = []
    with bench.client_priority() as nice:
        # Allowed: CLIENT_NICE; else the client keeps its niceness, and the run records it.
        assert nice == (bench.CLIENT_NICE if allowed else before)
        assert os.getpriority(os.PRIO_PROCESS, 0) == nice
        # Linux keeps a niceness per thread: loadgen's threads must inherit the raised one.
        worker = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, 0)))
        worker.start()
        worker.join()
    assert seen == [nice]
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
