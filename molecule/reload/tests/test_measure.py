# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""measure.yml on the live app under the controller's load, in check mode: the workload it writes
must be the one the load asks for (the demo's /io spins ``cpu_ms`` then sleeps ``wait_ms``), and
the host must not change. Prints ``MEASURE RESULT``."""

from __future__ import annotations

import re

import yaml
from conftest import Load, failures_text, run_playbook, succeeded, why_failed

APP = "demo"
CPU_MS, WAIT_MS = 2, 50
RATE = 40
WINDOW_S = 20
MIN_REQUESTS = 300  # RATE x WINDOW_S = 800 expected


def test_measure_derives_the_workload_from_live_traffic_and_changes_nothing(host, nginx_url, tmp_path, report):
    measured = tmp_path / "measured"
    name = host.backend.get_hostname()
    path = f"io=/io?cpu_ms={CPU_MS}&wait_ms={WAIT_MS}"
    args = ("--connections", "4", "--rate", str(RATE), "--mix", "io=1", "--path", path, "--host-header", "localhost")
    with Load(nginx_url, *args) as load:
        run = run_playbook(
            "flaskops.stack.measure", "--check",
            "-e", f"flask_stack_measure_window={WINDOW_S}",
            "-e", f"flask_stack_measure_min_requests={MIN_REQUESTS}",
            "-e", f"flask_stack_measured_dir={measured}",
            "-e", '{"flask_stack_measure_apps": ["%s"]}' % APP,
        )  # fmt: skip
    assert load.result.get("failed") == 0, failures_text(load.result)
    assert succeeded(run), why_failed(run)
    # The only changes are the files written on the controller (delegated to localhost).
    changed = re.findall(r"^changed: \[([^\]]+)\]", run.stdout, re.M)
    assert changed and all(target.endswith("-> localhost") for target in changed), changed
    data = yaml.safe_load((measured / name / f"{APP}.yml").read_text(encoding="utf-8"))
    workload = data["workload"]
    report(
        f"MEASURE RESULT host={name} app={APP} requests={data['requests']} cpu_ms={workload['cpu_ms']} "
        f"wait_ms={workload['wait_ms']} worker_rss_mb={workload.get('worker_rss_mb')} "
        f"thread_rss_mb={workload.get('thread_rss_mb')} utilization={data['utilization']} cpu_from={data['sources']}"
    )
    assert data["app"] == APP and data["host"] == name
    assert MIN_REQUESTS <= data["requests"] <= RATE * (WINDOW_S + 2), data
    # The request spins CPU_MS of wall time (CPU time, on an idle host) and sleeps WAIT_MS; gunicorn,
    # Flask and the unit's other threads add CPU, the measure charges all of it to the requests.
    assert CPU_MS * 0.8 <= workload["cpu_ms"] <= CPU_MS * 4, data
    assert WAIT_MS * 0.95 <= workload["wait_ms"] <= WAIT_MS * 1.2, data
    assert workload["worker_rss_mb"] > 10, data
