"""Failures under load: bad changes never go live, and the service survives what kills processes.

Each case runs with loadgen's requests flowing through nginx from the controller (GET /io, GET /cpu,
POST /echo with its body checked; a connect loop of new connections for the master kill) and prints
``LOAD RESULT scenario=resilience case=<name> sent=<n> failed=<n> ...``. The cases run in file order
on one instance; each starts from the converged app and leaves it so.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import (
    Load,
    check_run_changes_nothing,
    children,
    copy_source,
    failures_text,
    live_release,
    recap,
    run_with_apps,
    served_releases,
    unit_property,
    wait_ready,
)

JOURNAL_UNITS = ["demo.service", "demo.socket", "nginx.service"]
APP = "demo"
SERVICE = "demo.service"
NGINX_ERROR_LOG = "/var/log/nginx/flaskops-demo.error.log"
LOAD_ARGS = ("--connections", "16", "--mix", "io=2,cpu=1,echo=1", "--host-header", "localhost")
# While a play runs (the bad deploys), the load is capped as in the reload scenario: continuous (a gap of
# 10 ms would show), and leaving the two cores room to run the play. The kills and the restart, which last
# seconds, take all the load the 16 connections can make.
PLAY_LOAD_ARGS = (*LOAD_ARGS, "--rate", "100")
# What the verifier changes in the demo app's source for a broken release.
HEALTHZ_OK = 'return jsonify(status="ok", release=release_id(), pid=os.getpid())'
HEALTHZ_BROKEN = 'return jsonify(status="broken", release=release_id(), pid=os.getpid()), 500'


def live_files(host):
    """Checksums of what is live: the live release's gunicorn.conf.py and environment file, nginx's whole
    configuration."""
    files = host.check_output("sha256sum /srv/demo/current/gunicorn.conf.py /srv/demo/current/env")
    return files, hashlib.sha256(host.check_output("nginx -T 2>/dev/null").encode()).hexdigest()


def wait_for(what, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)


def back_to_plan(host, master, plan):
    """The master runs the planned number of workers again and the app answers (the collection's readiness
    check), under the same master."""
    ready = wait_ready(host, APP, workers=plan["workers"])
    assert str(ready["master"]) == master, (ready, master)


def settled_failures(load):
    """The failures counted so far, read after loadgen has rewritten its progress file (every second)."""
    time.sleep(2.5)
    return load.progress()["failed"]


def assert_only_killed_requests_failed(result):
    """The failures are those of requests a killed worker held: nginx answered 502 (no byte had come back yet)
    or, when the worker died while nginx was already passing its response on, closed the connection mid-body."""
    kinds = {kind for kind, count in result["failures"].items() if count}
    assert kinds <= {"status", "reset"}, failures_text(result)
    assert set(result["statuses"]) <= {"200", "502"}, failures_text(result)


def upstream_refusals(host, offset):
    """nginx's errors connecting to the app's socket since byte ``offset`` of its error log."""
    text = host.run("tail -c +%s %s", str(offset + 1), NGINX_ERROR_LOG).stdout
    return [line for line in text.splitlines() if "connect() to unix:" in line]


def log_size(host):
    return int(host.run("stat -c %%s %s", NGINX_ERROR_LOG).stdout.strip() or 0)


def apply_failing(app, tmp_path, name):
    """site.yml with flask_stack_apps = [app]; the play must fail. Returns its output, whitespace collapsed
    (the YAML result format folds long messages over several lines)."""
    run = run_with_apps("flaskops.stack.site", [app], tmp_path, name)
    assert run.returncode != 0, run.stdout[-4000:]
    counts = recap(run.stdout)
    assert counts and all(c["failed"] == 1 for c in counts.values()), run.stdout[-4000:]
    # Failed tasks may go to stderr (display_failed_stderr).
    return " ".join((run.stdout + run.stderr).split())


def broken_source(app, tmp_path, name, edit):
    source = copy_source(app["source"]["path"], tmp_path / name)
    module = source / "flaskops_demo" / "__init__.py"
    text = module.read_text(encoding="utf-8")
    changed = edit(text)
    assert changed != text, "the demo app's source no longer has what the test edits"
    module.write_text(changed, encoding="utf-8")
    broken = copy.deepcopy(app)
    broken["source"]["path"] = str(source)
    return broken


@pytest.fixture(scope="module")
def state(host):
    """The app as converged: master PID, restarts, live release and live files."""
    return {
        "master": unit_property(host, SERVICE, "MainPID"),
        "restarts": int(unit_property(host, SERVICE, "NRestarts")),
        "release": live_release(host, APP),
        "files": live_files(host),
    }


@pytest.fixture
def case(report):
    """``case(name, result, **extra)``: report the case's LOAD RESULT line."""

    def line(name, result, **extra):
        fields = " ".join(f"{key}={value}" for key, value in extra.items())
        report(
            f"LOAD RESULT scenario=resilience case={name} sent={result.get('sent')} failed={result.get('failed')} "
            f"refused={result.get('failures', {}).get('refused')} {fields}".rstrip()
        )

    return line


def test_check_mode_on_the_converged_host_changes_nothing():
    check_run_changes_nothing()


def test_release_that_does_not_import_never_goes_live(host, app, state, nginx_url, tmp_path, case):
    broken = broken_source(app, tmp_path, "import", lambda text: text + '\nraise ImportError("a broken release")\n')
    with Load(nginx_url, *PLAY_LOAD_ARGS, "--label", "case=import") as load:
        output = apply_failing(broken, tmp_path, "import")
    result = load.result
    case("import_failure", result)
    assert "did not go live" in output and "--check-config" in output, output[-4000:]
    assert "ImportError: a broken release" in output and "nothing live was changed" in output, output[-4000:]
    assert result["sent"] > 0 and result["failed"] == 0, failures_text(result)
    assert live_release(host, APP) == state["release"]
    assert live_files(host) == state["files"]
    assert served_releases(host, "localhost") == {state["release"]}
    assert unit_property(host, SERVICE, "MainPID") == state["master"]


def test_directive_nginx_rejects_never_goes_live(host, app, state, nginx_url, tmp_path, case):
    bad = {**app, "extra_directives": ["no_such_directive on;"]}
    nginx_master = host.file("/run/nginx.pid").content_string.strip()
    with Load(nginx_url, *PLAY_LOAD_ARGS) as load:
        output = apply_failing(bad, tmp_path, "nginx")
    result = load.result
    case("bad_nginx_directive", result)
    assert "unknown directive" in output and "no_such_directive" in output, output[-4000:]
    assert "the live configuration was not changed" in output, output[-4000:]
    assert result["sent"] > 0 and result["failed"] == 0, failures_text(result)
    assert live_files(host) == state["files"]
    assert host.file("/run/nginx.pid").content_string.strip() == nginx_master


def test_release_that_fails_its_health_check_is_rolled_back(host, app, state, nginx_url, tmp_path, case):
    broken = broken_source(app, tmp_path, "unhealthy", lambda text: text.replace(HEALTHZ_OK, HEALTHZ_BROKEN))
    with Load(nginx_url, *PLAY_LOAD_ARGS) as load:
        output = apply_failing(broken, tmp_path, "unhealthy")
    result = load.result
    case("unhealthy_release", result)
    assert "did not go live" in output and f"rolled back to release {state['release']}" in output, output[-4000:]
    assert "answers again" in output, output[-4000:]
    assert result["sent"] > 0 and result["failed"] == 0, failures_text(result)
    assert live_release(host, APP) == state["release"]
    assert live_files(host) == state["files"]
    assert served_releases(host, "localhost") == {state["release"]}
    assert unit_property(host, SERVICE, "MainPID") == state["master"]


def test_killed_worker_is_replaced_without_a_restart(host, state, plan, nginx_url, case):
    master = state["master"]
    victim = sorted(children(host, master))[0]
    with Load(nginx_url, *LOAD_ARGS) as load:
        time.sleep(2)
        host.check_output("kill -9 %s", victim)
        wait_for("the worker is gone", lambda: victim not in children(host, master))
        back_to_plan(host, master, plan)
        failed_when_back = settled_failures(load)
        time.sleep(3)
        failed_later = load.progress()["failed"]
    result = load.result
    case("kill_worker", result, after_respawn=failed_later - failed_when_back)
    # Requests the killed worker held fail, and nothing after its replacement runs.
    assert_only_killed_requests_failed(result)
    assert failed_later == failed_when_back, failures_text(result)
    assert (unit_property(host, SERVICE, "MainPID"), int(unit_property(host, SERVICE, "NRestarts"))) == (
        master,
        state["restarts"],
    )


def test_killed_master_is_restarted_and_no_connection_is_refused(host, plan, nginx_url, case):
    master = unit_property(host, SERVICE, "MainPID")
    restarts = int(unit_property(host, SERVICE, "NRestarts"))
    offset = log_size(host)
    with Load(nginx_url, "--host-header", "localhost", "--rate", "200", "--connections", "2", mode="connect") as load:
        time.sleep(2)
        host.check_output("kill -9 %s", master)
        wait_for("systemd restarted the app", lambda: unit_property(host, SERVICE, "MainPID") not in ("0", master))
        back_to_plan(host, unit_property(host, SERVICE, "MainPID"), plan)
        time.sleep(2)
    result = load.result
    refusals = upstream_refusals(host, offset)
    case("kill_master", result, upstream_refused=len(refusals))
    assert result["sent"] > 0 and result["failures"]["refused"] == 0, failures_text(result)
    # nginx never found the socket closed: systemd held it while the app was down.
    assert refusals == []
    # At most the requests in flight at the kill fail, one per connection.
    assert result["failed"] <= 2, failures_text(result)
    assert int(unit_property(host, SERVICE, "NRestarts")) == restarts + 1


def test_restart_under_load_fails_nothing(host, plan, nginx_url, case):
    master = unit_property(host, SERVICE, "MainPID")
    offset = log_size(host)
    with Load(nginx_url, *LOAD_ARGS) as load:
        time.sleep(2)
        host.check_output("systemctl restart %s", SERVICE)
        back_to_plan(host, unit_property(host, SERVICE, "MainPID"), plan)
        time.sleep(2)
    result = load.result
    refusals = upstream_refusals(host, offset)
    case("restart", result, upstream_refused=len(refusals))
    assert result["sent"] > 0 and result["failed"] == 0, failures_text(result)
    assert refusals == []
    assert unit_property(host, SERVICE, "MainPID") != master


def test_request_past_memory_max_kills_only_its_worker(host, plan, nginx_url, case):
    master, restarts = unit_property(host, SERVICE, "MainPID"), int(unit_property(host, SERVICE, "NRestarts"))
    limit_mb = int(unit_property(host, SERVICE, "MemoryMax")) // (1024 * 1024)
    url = f"{nginx_url}/alloc?mb={limit_mb + 64}"
    since = host.check_output("date +%s")
    with Load(nginx_url, *LOAD_ARGS) as load:
        time.sleep(2)
        request = urllib.request.Request(url, headers={"Host": "localhost"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=120)
        back_to_plan(host, master, plan)
        failed_when_back = settled_failures(load)
        time.sleep(3)
        failed_later = load.progress()["failed"]
    result = load.result
    after = failed_later - failed_when_back
    case("oom", result, alloc_status=refused.value.code, memory_max_mb=limit_mb, after_respawn=after)
    assert refused.value.code == 502
    assert (
        host.run("journalctl -u %s --no-pager -o cat --since @%s | grep -F 'was sent SIGKILL'", SERVICE, since).rc == 0
    )
    assert host.service(SERVICE).is_running
    assert (unit_property(host, SERVICE, "MainPID"), int(unit_property(host, SERVICE, "NRestarts"))) == (
        master,
        restarts,
    )
    # Requests sharing the killed worker fail with it, and nothing after its replacement runs.
    assert_only_killed_requests_failed(result)
    assert failed_later == failed_when_back, failures_text(result)


def test_stop_lets_a_long_request_finish(host, plan, nginx_url, case):
    seconds = 10
    assert plan["graceful_timeout"] > seconds and plan["timeout"] > seconds, plan["explain"]
    answer = {}

    def long_request():
        request = urllib.request.Request(f"{nginx_url}/sleep?s={seconds}", headers={"Host": "localhost"})
        with urllib.request.urlopen(request, timeout=seconds * 3) as response:
            answer.update(status=response.status, body=json.load(response))

    client = threading.Thread(target=long_request)
    client.start()
    time.sleep(2)
    started = time.monotonic()
    host.check_output("systemctl stop %s", SERVICE)
    stopped_after = time.monotonic() - started
    client.join(seconds * 3)
    case("stop_drain", {"sent": 1, "failed": int(answer.get("status") != 200), "failures": {"refused": 0}},
         stop_seconds=round(stopped_after, 1))  # fmt: skip
    host.check_output("systemctl start %s", SERVICE)
    assert answer.get("status") == 200, answer
    assert answer["body"]["slept_ms"] >= seconds * 1000
    # The stop waited for the request (started 2 s into its 10 s).
    assert stopped_after >= seconds - 3
