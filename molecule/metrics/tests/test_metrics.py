"""The stack's metrics, read back from a real Prometheus, against what a known load sent and saw.

Prometheus (Debian's, in the instance) scrapes the three exporters every second. The load generator sends
a known mix through nginx to the demo app, a tenth of it to ``GET /fail`` (a 500 on purpose); then the
test asks Prometheus's HTTP API for the app's request count, 5xx share, p99 duration, requests in flight,
workers and accept queue, and compares each with what the load generator counted, or with the plan
(``METRICS RESULT ...``). A deploy under load must show as a new ``release`` label with no gap in the
count; every query of the collection's Grafana dashboard must return data.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import json
import math
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    Load,
    check_run_changes_nothing,
    failures_text,
    live_release,
    published_address,
    recap,
    run_with_apps,
    wait_ready,
)

JOURNAL_UNITS = ["demo.service", "nginx.service", "flaskops-metrics-exporter.service", "prometheus.service"]
APP = "demo"
ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
REQUESTS = 2000
# Exporters and the ports they listen on (loopback only): the roles' defaults.
EXPORTERS = {
    "flaskops-metrics-exporter.service": 9380,
    "prometheus-node-exporter.service": 9100,
    "prometheus-nginx-exporter.service": 9113,
}
JOBS = ("flaskops_apps", "nginx", "node")
BUCKETS = yaml.safe_load((ROOT / "roles/gunicorn/defaults/main.yml").read_text())["gunicorn_metrics_buckets"]
SCRAPE_S = 1.0


@pytest.fixture(scope="module")
def prometheus(host: Any) -> str:
    return "http://" + published_address(host, 9090)


def query(prometheus: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    """An instant query's result vector (Prometheus's HTTP API)."""
    params = {"query": expr, **({"time": "%.3f" % at} if at is not None else {})}
    url = "%s/api/v1/query?%s" % (prometheus, urllib.parse.urlencode(params))
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    return body["data"]["result"]


def scalar(prometheus: str, expr: str, at: float | None = None) -> float | None:
    result = query(prometheus, expr, at)
    assert len(result) <= 1, (expr, result)
    return float(result[0]["value"][1]) if result else None


def series(prometheus: str, expr: str, start: float, end: float) -> list[float]:
    """A range query's values, one per second, of an expression with one series."""
    params = {"query": expr, "start": "%.3f" % start, "end": "%.3f" % end, "step": "1"}
    url = "%s/api/v1/query_range?%s" % (prometheus, urllib.parse.urlencode(params))
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success" and len(body["data"]["result"]) == 1, body
    return [float(value) for _t, value in body["data"]["result"][0]["values"]]


def settled(prometheus: str, expr: str, timeout: float = 30) -> float:
    """The value of ``expr`` once two scrapes in a row agree (nothing in flight any more)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        time.sleep(2 * SCRAPE_S)
        value = scalar(prometheus, expr)
        if value is not None and value == last:
            return value
        last = value
    raise AssertionError("%s did not settle: %s" % (expr, last))


def total(prometheus: str, status_class: str | None = None) -> float:
    where = 'app="%s"' % APP + (',status_class="%s"' % status_class if status_class else "")
    return settled(prometheus, "sum(flaskops_http_requests_total{%s})" % where)


def per_release(prometheus: str, metric: str) -> dict[str, float]:
    """The app's ``metric`` summed by release."""
    result = query(prometheus, 'sum by (release) (%s{app="%s"})' % (metric, APP))
    return {r["metric"]["release"]: float(r["value"][1]) for r in result}


def bucket_bounds(value_s: float) -> tuple[float, float]:
    """The histogram bucket (lower, upper] that holds ``value_s``."""
    index = bisect.bisect_left(BUCKETS, value_s)
    lower = BUCKETS[index - 1] if index > 0 else 0.0
    upper = BUCKETS[index] if index < len(BUCKETS) else math.inf
    return lower, upper


def test_check_mode_on_the_converged_host_changes_nothing():
    check_run_changes_nothing()


def test_every_exporter_runs_hardened_on_loopback_and_prometheus_scrapes_it(host, prometheus, report):
    listening = host.check_output("ss -ltnH")
    for unit, port in EXPORTERS.items():
        assert host.service(unit).is_running, unit
        addresses = [line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(":%d" % port)]
        assert addresses == ["127.0.0.1:%d" % port], (unit, addresses)
        # "→ Overall exposure level for <unit>: 1.3 OK :-)": as hardened as the apps' services (default scenario).
        words = host.check_output("systemd-analyze security --no-pager %s | tail -1", unit).split()
        report("SECURITY RESULT unit=%s exposure=%s" % (unit, words[-3]))
        assert float(words[-3]) <= 2.0, (unit, words)
    stub = [line.split()[3] for line in listening.splitlines() if line.split()[3].endswith(":8089")]
    assert stub == ["127.0.0.1:8089"], "nginx's stub_status is on loopback only"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        up = {r["metric"]["job"]: r["value"][1] for r in query(prometheus, "up")}
        if all(up.get(job) == "1" for job in JOBS):
            break
        time.sleep(1)
    assert all(up.get(job) == "1" for job in JOBS), up


def test_the_counts_match_what_the_load_sent(host, prometheus, nginx_url, plans, report):
    before, before_5xx = total(prometheus), total(prometheus, "5xx")
    started = time.time()
    load = Load(
        nginx_url, "--connections", "8", "--max-requests", str(REQUESTS), "--mix", "io=9,fail=1",
        "--path", "fail=/fail", "--host-header", "localhost", "--seed", "15", duration=300,
    )  # fmt: skip
    with load:
        while load.process is not None and load.process.poll() is None:
            time.sleep(0.5)
    result = load.result
    ended = time.time()
    assert result.get("stopped_by") == "max_requests", failures_text(result)
    sent = result["sent"]
    sent_5xx = sum(count for status, count in result["statuses"].items() if status.startswith("5"))
    # Every failure is a 5xx of /fail: no reset, no refused or timed-out connection.
    assert result["failed"] == sent_5xx == result["failures"]["status"], failures_text(result)

    counted = total(prometheus) - before
    counted_5xx = total(prometheus, "5xx") - before_5xx
    report(
        "METRICS RESULT sent=%d counted=%d err_share_sent=%.4f err_share_counted=%.4f"
        % (sent, counted, sent_5xx / sent, counted_5xx / counted if counted else float("nan"))
    )
    assert abs(counted - sent) <= 0.01 * sent, (counted, sent)
    assert abs(counted_5xx / counted - sent_5xx / sent) <= 0.01, (counted_5xx, counted, sent_5xx, sent)

    # The app's p99 (gunicorn: request parsed to response sent) from the histogram, against the range the
    # load generator measured (its median to its maximum, through nginx), at the buckets' resolution.
    window = math.ceil(time.time() - started) + 2
    p99 = scalar(
        prometheus,
        'histogram_quantile(0.99, sum by (le) (increase(flaskops_http_request_duration_seconds_bucket{app="%s"}[%ds])))'
        % (APP, window),
    )
    low, high = (
        bucket_bounds(result["latency_ms"]["p50"] / 1000)[0],
        bucket_bounds(result["latency_ms"]["max"] / 1000)[1],
    )
    report(
        "METRICS RESULT p99_histogram_s=%.4f load_p50_s=%.4f load_p99_s=%.4f load_max_s=%.4f"
        % (
            p99,
            result["latency_ms"]["p50"] / 1000,
            result["latency_ms"]["p99"] / 1000,
            result["latency_ms"]["max"] / 1000,
        )
    )
    assert low <= p99 <= high, (p99, low, high, result["latency_ms"])

    # In flight: above 0 while the load ran, 0 once it is over.
    in_flight = 'sum(flaskops_http_requests_in_flight{app="%s"})' % APP
    busiest = scalar(prometheus, "max_over_time(%s[%ds:1s])" % (in_flight, int(ended - started) + 1), ended)
    assert busiest is not None and busiest > 0, busiest
    assert settled(prometheus, in_flight) == 0

    # Workers: the plan's; the accept queue's size: the plan's backlog, and nothing queued once idle.
    plan = plans[APP]
    assert settled(prometheus, 'sum(flaskops_workers{app="%s"})' % APP) == plan["workers"]
    assert scalar(prometheus, 'flaskops_socket_backlog{app="%s"}' % APP) == plan["backlog"]
    assert scalar(prometheus, 'flaskops_socket_queued_connections{app="%s"}' % APP) == 0
    assert scalar(prometheus, 'flaskops_app_metrics_up{app="%s"}' % APP) == 1
    report(
        "METRICS RESULT in_flight_max=%d workers=%d plan_workers=%d"
        % (busiest, scalar(prometheus, 'sum(flaskops_workers{app="%s"})' % APP), plan["workers"])
    )


def test_a_deploy_shows_as_a_new_release_with_no_gap_in_the_count(
    host, apps, prometheus, nginx_url, plans, tmp_path, report
):
    old = live_release(host, APP)
    changed = copy.deepcopy(apps)
    changed[0]["env"]["DEMO_GREETING"] = "Hello from the metrics scenario"
    counter = 'sum(flaskops_http_requests_total{app="%s"})' % APP
    before = total(prometheus)
    started = time.time()
    load = Load(nginx_url, "--connections", "4", "--rate", "60", "--mix", "io=1", "--host-header", "localhost")
    with load:
        time.sleep(3)
        run = run_with_apps("flaskops.stack.site", changed, tmp_path, "deploy")
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert all(c["failed"] == 0 for c in recap(run.stdout).values()), run.stdout[-4000:]
        time.sleep(3)
    result = load.result
    ended = time.time()
    new = live_release(host, APP)
    assert new != old
    assert result["sent"] > 0 and result["failed"] == 0, failures_text(result)
    wait_ready(host, APP, release=new)

    counted = total(prometheus) - before
    values = series(prometheus, counter, started, ended + 2)
    drops = [(a, b) for a, b in itertools.pairwise(values) if b < a]
    by_release = per_release(prometheus, "flaskops_http_requests_total")
    workers = per_release(prometheus, "flaskops_workers")
    report(
        "METRICS RESULT case=deploy sent=%d counted=%d releases=%s old_release_count=%d new_release_count=%d"
        % (result["sent"], counted, len(by_release), by_release.get(old, 0), by_release.get(new, 0))
    )
    assert abs(counted - result["sent"]) <= 0.01 * result["sent"], (counted, result["sent"])
    assert not drops, drops
    # The series of both releases: the old one keeps what it counted, the new one counts on.
    assert by_release.get(old, 0) > 0 and by_release.get(new, 0) > 0, by_release
    assert workers == {new: plans[APP]["workers"]}, workers


def test_every_query_of_the_dashboard_returns_data(prometheus, report):
    dashboard = json.loads((ROOT / "extras/grafana-dashboard.json").read_text())
    targets = [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]
    empty = []
    for title, grafana_expr in targets:
        # Grafana's variables: the rate interval, every app.
        expr = grafana_expr.replace("$__rate_interval", "1m").replace('"$app"', '".*"')
        if not query(prometheus, expr):
            empty.append((title, expr))
    report(
        "METRICS RESULT dashboard_panels=%d queries=%d empty=%d" % (len(dashboard["panels"]), len(targets), len(empty))
    )
    assert not empty, empty
