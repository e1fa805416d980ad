# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What `make bench-smoke` checks after running the harness on its tiny grid (BENCH_RESULTS_DIR).

The benchmark itself asserts nothing about the stack's speed; these tests check that the harness still
measures what it says it does and writes every output: each configuration ran the settings it names,
every interleaved repeat produced requests, the analysis agrees with the samples, and the report, the
JSON, the plot and the BENCH RESULT lines are all there and consistent.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench

RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR", "")).resolve()
PROFILE = bench.PROFILES["smoke"]
#: The keys of a BENCH RESULT line (in any order), each ratio with two decimals.
CELL_KEYS = ("workload", "cpus", "conns")
RATIO_KEYS = (
    "ratio_plan_vs_best",
    "p99_plan_vs_best",
    "ratio_profile_vs_best",
    "ratio_plan_vs_rule",
    "ratio_best_vs_limit",
    "open_p99_plan_vs_best",
    "ratio_plan_vs_default",
    "ratio_live_vs_best",
    "ratio_async_vs_best",
)


def parse_line(line: str) -> dict[str, str]:
    head = "BENCH RESULT "
    assert line.startswith(head), line
    fields = dict(pair.split("=", 1) for pair in line[len(head) :].split())
    assert sorted(fields) == sorted(CELL_KEYS + RATIO_KEYS), line
    for key in RATIO_KEYS:
        assert re.fullmatch(r"\d+\.\d\d", fields[key]), (key, line)
    return fields


pytestmark = pytest.mark.skipif(
    not os.environ.get("BENCH_RESULTS_DIR"), reason="run by make bench-smoke with BENCH_RESULTS_DIR set"
)


def _one(pattern: str) -> Path:
    found = sorted(RESULTS.glob(pattern))
    assert len(found) == 1, "expected one %s in %s, found %s" % (pattern, RESULTS, found)
    return found[0]


@pytest.fixture(scope="module")
def report() -> dict:
    return json.loads(_one("*.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cell(report) -> dict:
    assert [(c["workload"], c["cpus"]) for c in report["cells"]] == [
        (w, n) for n in PROFILE.cpus for w in PROFILE.workloads
    ]
    return report["cells"][0]


def test_every_configuration_was_measured_in_every_repeat(cell):
    labels = list(cell["final"])
    # Configurations with the same settings are measured once and listed together, in any order.
    named = [label for label in labels if not label.startswith("grid ")]
    assert sorted(named) == sorted(["default", "rule", "profile", "plan", "live", "async"])
    assert len(labels) > len(named)
    for label, result in cell["final"].items():
        for conns in map(str, PROFILE.connections):
            samples = result["samples"][conns]
            assert len(samples) == PROFILE.repeats, label
            assert all(s["requests"] > 0 for s in samples), (label, samples)


def test_configurations_are_the_ones_they_name(cell):
    final = cell["final"]
    assert final["default"]["settings"] == bench.GUNICORN_DEFAULTS
    assert final["rule"]["settings"] == bench.rule_of_thumb(cell["cpus"], cell["workload"])
    assert final["profile"]["settings"] == bench.from_plan(cell["plans"]["profile"])
    assert final["plan"]["settings"] == bench.from_plan(cell["plans"]["measured"])
    assert final["live"]["settings"] == bench.from_plan(cell["plans"]["live"])
    # The smoke's io is a gevent workload: plan (g) is the measured inputs with async_safe, on gevent workers.
    assert final["async"]["settings"] == bench.from_plan(cell["plans"]["async"])
    assert final["async"]["settings"]["worker_class"] == "gevent"
    grid = bench.grid(cell["cpus"], PROFILE, cell["workload"])
    for label in final:
        if label.startswith("grid "):
            assert final[label]["settings"] == grid[label]
    assert set(cell["screen"]) == set(grid)


def test_plan_d_was_given_what_was_measured(cell):
    cost, inputs = cell["cost"], cell["inputs"]
    assert (inputs["cpu_ms"], inputs["wait_ms"]) == (cost["cpu_ms"], cost["wait_ms"])
    # The io endpoint burns about 1 ms and sleeps 50 ms; gunicorn and Flask add CPU of their own.
    assert cost["app_cpu_ms"] == pytest.approx(1.0, abs=0.5)
    assert cost["wait_ms"] == pytest.approx(50.0, abs=5.0)
    assert cost["cpu_ms"] > cost["app_cpu_ms"]
    explain = " ".join(cell["plans"]["measured"]["explain"])
    assert "measured %g ms CPU + %g ms waiting" % (cost["cpu_ms"], cost["wait_ms"]) in explain


def test_plan_f_was_given_what_measure_yml_found_on_the_live_app(cell):
    live = cell["live"]
    assert "workload" in live, live
    found = live["workload"]
    # At the harness's rate for the window, with none of the load's requests failing.
    assert live["load_failed"] == 0 and live["requests"] >= PROFILE.live_min_requests, live
    # The io endpoint sleeps 50 ms; the app's unit alone (nginx not in it) burns at least what the endpoint
    # burns and less than the whole container does per request.
    assert found["wait_ms"] == pytest.approx(50.0, abs=8.0), live
    assert 0.8 * cell["cost"]["app_cpu_ms"] <= found["cpu_ms"] <= 1.5 * cell["cost"]["cpu_ms"], (live, cell["cost"])
    explain = " ".join(cell["plans"]["live"]["explain"])
    assert "measured %g ms CPU + %g ms waiting" % (found["cpu_ms"], found["wait_ms"]) in explain


def test_the_plan_served_without_errors_and_the_analysis_matches_the_samples(cell):
    for conns, summary in cell["summary"].items():
        rows = summary["rows"]
        assert rows["plan"]["errors"] == 0
        assert rows["plan"]["rps"] > 0
        grid_labels = [label for label in rows if label.startswith("grid ")]
        assert summary["best"] == max(grid_labels, key=lambda label: rows[label]["rps"])
        for label, row in rows.items():
            assert row["rps"] == pytest.approx(bench.median_of(cell["final"][label]["samples"][conns], "rps"), abs=0.05)
        assert summary["ratios"]["plan_vs_best"] == pytest.approx(
            rows["plan"]["rps"] / rows[summary["best"]]["rps"], abs=1e-3
        )


def test_memory_was_sampled_in_steady_state_and_during_a_hup(cell):
    for label, result in cell["final"].items():
        memory = result["memory"]
        assert 0 < memory["steady_mb"] <= memory["peak_mb"], label
        assert memory["workers"] == result["settings"]["workers"], label
        assert memory["load_ok"] > 0, label
    assert cell["memory"]["plan_memory_peak_mb"] == cell["plans"]["measured"]["memory_peak_mb"]


def test_the_container_cpu_per_request_and_the_limit_were_measured(cell):
    for label, result in cell["final"].items():
        for samples in result["samples"].values():
            # nginx and gunicorn both spend CPU on every request: more than the io endpoint's own 1 ms.
            assert all(s["cpu_ms"] is not None and s["cpu_ms"] > 1.0 for s in samples), (label, samples)
    for summary in cell["summary"].values():
        best = summary["rows"][summary["best"]]
        assert summary["limit_rps"] == pytest.approx(cell["cpus"] * 1000 / best["cpu_ms"], abs=0.1)
        assert summary["ratios"]["best_vs_limit"] == pytest.approx(best["rps"] / summary["limit_rps"], abs=1e-3)


def test_the_plan_and_the_best_ran_open_loop_at_a_share_of_the_best(cell):
    opened, summary = cell["open"], cell["open_summary"]
    assert opened["best"] == bench.best_grid_label(cell["final"])
    most = max(bench.median_of(s, "rps") for s in cell["final"][opened["best"]]["samples"].values())
    assert opened["rate"] == pytest.approx(bench.OPEN_LOAD * most, abs=0.1)
    assert set(opened["runs"]) == {"plan", "best"}
    for name, runs in opened["runs"].items():
        assert len(runs) == bench.OPEN_REPEATS, name
        # An open loop sends what is due, answered or not: about the rate for the run's length.
        assert all(r["sent"] >= 0.5 * opened["rate"] * PROFILE.open_seconds for r in runs), (name, runs)
        assert all(r["p99_ms"] > 0 and r["lag_p99_ms"] is not None for r in runs), (name, runs)
    assert summary["p99_plan_vs_best"] == pytest.approx(
        summary["rows"]["plan"]["p99_ms"] / summary["rows"]["best"]["p99_ms"], abs=1e-3
    )


def test_bench_result_lines_were_printed_for_every_cell(report):
    printed = [
        line
        for line in (RESULTS / "stdout.txt").read_text(encoding="utf-8").splitlines()
        if line.startswith("BENCH RESULT")
    ]
    assert printed == report["bench_lines"]
    assert [tuple(parse_line(line)[key] for key in CELL_KEYS) for line in printed] == [
        (w, str(n), str(c)) for n in PROFILE.cpus for w in PROFILE.workloads for c in PROFILE.connections
    ]


def test_plan_d_ran_with_the_metrics_hooks_off_and_on_and_only_on_counted(report):
    cells = [c for c in report["cells"] if c["workload"] in PROFILE.metrics_workloads]
    assert cells and all("metrics" in c for c in cells)
    assert all("metrics" not in c for c in report["cells"] if c["workload"] not in PROFILE.metrics_workloads)
    for cell in cells:
        runs = cell["metrics"]["runs"]
        assert cell["metrics"]["settings"] == cell["final"]["plan"]["settings"]
        assert [len(runs["off"]), len(runs["on"])] == [PROFILE.metrics_repeats] * 2
        # Off: gunicorn's own hooks count nothing; on: every answer of the run and the idle checks before it.
        assert [run["counted"] for run in runs["off"]] == [0] * PROFILE.metrics_repeats
        assert all(run["ok"] > 0 and run["counted"] >= run["ok"] for run in runs["on"]), runs["on"]
        summary = cell["metrics_summary"]
        assert summary["ratio_on_vs_off"] == bench.ratio(summary["rps_on"], summary["rps_off"])
    printed = [
        line
        for line in (RESULTS / "stdout.txt").read_text(encoding="utf-8").splitlines()
        if line.startswith("BENCH METRICS")
    ]
    assert printed == report["metrics_lines"] and len(printed) == len(cells)


def test_the_markdown_report_has_every_table(report):
    text = _one("*.md").read_text(encoding="utf-8")
    for heading in (
        "## Ratios",
        "## Open loop",
        "## Measured workloads",
        "## Memory",
        "## Metrics on and off",
        "## Every configuration",
    ):
        assert heading in text
    for line in report["bench_lines"] + report["metrics_lines"]:
        assert line in text
    for name in bench.CONFIG_NAMES.values():
        assert "| %s |" % name in text


def test_the_plot_is_a_png_of_useful_size():
    data = _one("*.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 400 and height >= 300


def test_the_containers_are_gone():
    for cpus in PROFILE.cpus:
        name = "flaskops-bench-smoke-c%d" % cpus
        assert subprocess.run(["podman", "container", "exists", name], check=False).returncode == 1, name
