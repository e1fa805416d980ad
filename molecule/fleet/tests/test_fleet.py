"""Rolling changes across a fleet behind the collection's load balancer drop no request.

Three app hosts run the demo app behind one HAProxy (molecule.yml); loadgen on the controller sends
GET /io, GET /cpu and POST /echo (body checked) through the load balancer only. While it runs:

- ``rolling_deploy``: new code through playbooks/site.yml, one host at a time;
- ``rolling_reload`` and ``rolling_restart``: playbooks/reload.yml and playbooks/restart.yml;
- ``canary_abort``: a release that answers 500 to a third of the requests, with batches
  ``[1, "50%", "100%"]``: the canary check stops it on the first host, rolls that host back, and the
  other hosts are never touched;
- ``host_down``: an app host is stopped (a clean shutdown) during a rolling reload: the load balancer
  routes around it and the play reports it; started again, it is back in the pool once the reload runs
  again for it (the operator's path for a failed host, drained or not).

Each case prints ``LOAD RESULT scenario=fleet case=<case> sent=<n> failed=<n> drained=<n>`` (and
``bad_release=<n>``, the requests the canary's release itself answered with its 500), where ``drained`` is
the number of app hosts the load balancer's runtime API was seen to drain and put back (sampled every
0.2 s by ``Watcher``). A request counts as failed for a non-2xx status, a wrong echo body, a reset, a
refused or timed-out connection; only the bad release's own 500s (marked in their body) are apart.
"""

from __future__ import annotations

import copy
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
import testinfra
from conftest import (
    PROJECT,
    Load,
    container,
    copy_source,
    failures_text,
    playbook_command,
    recap,
    run_with_apps,
    succeeded,
    why_failed,
)

testinfra_hosts = ["flaskops-fleet-lb"]
JOURNAL_UNITS = ["haproxy.service"]
APP = "demo"
APP_HOSTS = ["flaskops-fleet-app1", "flaskops-fleet-app2", "flaskops-fleet-app3"]
TESTHOST = PROJECT / "tools" / "testhost" / "testhost.sh"
BAD_MARKER = "bad release (fleet canary test)"
# HAProxy's srv_admin_state bit for a forced drain, and srv_op_state "running".
FORCED_DRAIN = 0x08
RUNNING = 2
DRAIN_FLAG = "/var/lib/flaskops-nginx/drained"  # the nginx role's nginx_drain_flag


def app_host(name: str):
    return testinfra.get_host(f"podman://{name}")


def live_release(name: str) -> str:
    return app_host(name).file(f"/srv/{APP}/current").linked_to.rsplit("/", 1)[1]


def master_pid(name: str) -> str:
    return app_host(name).check_output("systemctl show -p MainPID --value %s.service", APP)


def master_cli(lb: str, command: str) -> str:
    """One command to HAProxy's master CLI on the load balancer; its answer."""
    ask = f"echo '{command}' | socat stdio /run/haproxy-master.sock"
    out = subprocess.run(
        ["podman", "exec", lb, "sh", "-c", ask], capture_output=True, text=True, check=True, timeout=10
    )
    return out.stdout


def lb_runtime(lb: str, command: str) -> str:
    """One command to the current HAProxy worker's runtime API on the load balancer (through the master
    CLI: an old worker may answer on the stats socket); its answer."""
    return master_cli(lb, f"@1 {command}")


def stat_row(lb: str, server: str) -> dict[str, str]:
    """The ``show stat`` row of ``server`` in the app's backend, keyed by the CSV header; {} if none."""
    lines = lb_runtime(lb, "show stat").splitlines()
    header = lines[0][2:].split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line.strip()]
    return next((r for r in rows if r["pxname"] == f"flaskops_{APP}" and r["svname"] == server), {})


def server_checked_up(lb: str, server: str) -> bool:
    """HAProxy says the server is UP after a health check that passed (not the UP of a fresh start, INI)."""
    row = stat_row(lb, server)
    return row.get("status") == "UP" and row.get("check_status", "").lstrip("* ") == "L7OK"


def server_rows(lb: str) -> dict[str, dict[str, str]]:
    """Each server of the app's backend by name: its row of ``show servers state`` (HAProxy's runtime API),
    keyed by the answer's own header (``srv_addr``, ``srv_op_state``, ``srv_admin_state``, ...)."""
    out = lb_runtime(lb, f"show servers state flaskops_{APP}")
    lines = [line for line in out.splitlines() if line.strip()]
    header = next(line[2:].split() for line in lines if line.startswith("# "))
    rows = (dict(zip(header, line.split(), strict=False)) for line in lines if not line.startswith("#"))
    return {row["srv_name"]: row for row in rows if len(row) >= 8}


def servers_state(lb: str) -> dict[str, tuple[int, int]]:
    """``{server: (srv_op_state, srv_admin_state)}`` of the app's backend."""
    return {name: (int(row["srv_op_state"]), int(row["srv_admin_state"])) for name, row in server_rows(lb).items()}


def server_story(lb: str, server: str) -> str:
    """What the load balancer and the app host say of a server: HAProxy's row and address for it,
    the host's addresses and failed units, and its health location as the load balancer's network
    sees it. Reported after a comeback, and first in its assertion message (a shortened report keeps
    the beginning)."""
    row = stat_row(lb, server)
    keys = ("status", "check_status", "check_code", "last_chk", "check_duration", "lastchg")
    seen = {key: row.get(key) for key in keys}
    address = server_rows(lb).get(server, {}).get("srv_addr", "?")
    host = app_host(server)
    probe = (
        "import urllib.request, sys\n"
        "req = urllib.request.Request(sys.argv[1], headers={'Host': 'localhost'})\n"
        "try:\n    print(urllib.request.urlopen(req, timeout=5).status)\n"
        "except Exception as exc:\n    print(repr(exc))\n"
    )
    url = f"http://{address}/flaskops/lb-health"
    answer = subprocess.run(
        ["podman", "exec", lb, "python3", "-c", probe, url], capture_output=True, text=True, timeout=30, check=False
    )
    return (
        f"{server}: HAProxy {seen}, address {address}; host addresses "
        f"{host.run('hostname -I').stdout.strip()!r}, failed units "
        f"{host.run('systemctl --failed --no-legend --plain').stdout.strip()!r}, nginx "
        f"{host.run('systemctl is-active nginx').stdout.strip()!r}; {url} from the load balancer: "
        f"{(answer.stdout + answer.stderr).strip()!r}\n"
    )


class Watcher:
    """Samples the load balancer's server states in a thread: which hosts were drained, then put back up."""

    def __init__(self, lb: str) -> None:
        self.lb = lb
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.drained: set[str] = set()
        self.back: set[str] = set()
        self.most_drained_at_once = 0
        self.samples = 0

    def run(self) -> None:
        while not self.stop.is_set():
            state = servers_state(self.lb)
            self.samples += 1
            now = {name for name, (_op, admin) in state.items() if admin & FORCED_DRAIN}
            self.most_drained_at_once = max(self.most_drained_at_once, len(now))
            self.drained |= now
            self.back |= {n for n in self.drained if state[n] == (RUNNING, 0)}
            self.stop.wait(0.2)

    def drained_and_back(self) -> set[str]:
        return self.drained & self.back

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        # One last look, after the play: every host that was drained is up again.
        state = servers_state(self.lb)
        self.back |= {n for n in self.drained if state.get(n) == (RUNNING, 0)}


@pytest.fixture
def lb(host) -> str:
    return container(host)


@pytest.fixture
def load(nginx_url):
    """The controller's load, through the load balancer."""
    return Load(
        nginx_url, "--connections", "8", "--rate", "60", "--mix", "io=2,cpu=1,echo=1", "--host-header", "localhost",
        "--marker", BAD_MARKER,
    )  # fmt: skip


def new_code(app: dict, tmp_path: Path, name: str, extra: str = "") -> dict:
    """``app`` from a copy of its source with ``extra`` appended to its package (a new build)."""
    source = copy_source(app["source"]["path"], tmp_path / name)
    init = source / "flaskops_demo" / "__init__.py"
    init.write_text(init.read_text(encoding="utf-8") + f"\n# fleet test: {name}\n{extra}", encoding="utf-8")
    changed = copy.deepcopy(app)
    changed["source"]["path"] = str(source)
    return changed


def result_line(case: str, result: dict, watch: Watcher, **extra: int) -> str:
    fields = " ".join(f"{key}={value}" for key, value in extra.items())
    return (
        f"LOAD RESULT scenario=fleet case={case} sent={result.get('sent')} failed={result.get('failed')} "
        f"drained={len(watch.drained_and_back())} {fields}"
    ).rstrip()


def check_rolled(case: str, run, load: Load, watch: Watcher, report) -> None:
    report(result_line(case, load.result, watch))
    assert succeeded(run), why_failed(run)
    assert load.result.get("failed") == 0, failures_text(load.result)
    assert watch.drained_and_back() == set(APP_HOSTS), (watch.drained, watch.back, watch.samples)
    # One host at a time (serial 1): never two out of the pool together.
    assert watch.most_drained_at_once == 1, watch.most_drained_at_once


def test_rolling_deploy_of_new_code_one_host_at_a_time(app, lb, load, tmp_path, report):
    before = {h: live_release(h) for h in APP_HOSTS}
    changed = new_code(app, tmp_path, "deploy")
    with load, Watcher(lb) as watch:
        run = run_with_apps("flaskops.stack.site", [changed], tmp_path, "deploy", "-e", "flask_stack_serial=1")
    check_rolled("rolling_deploy", run, load, watch, report)
    after = {h: live_release(h) for h in APP_HOSTS}
    assert len(set(after.values())) == 1 and set(after.values()).isdisjoint(before.values()), (before, after)


def test_rolling_reload(app, lb, load, tmp_path, report):
    with load, Watcher(lb) as watch:
        run = run_with_apps("flaskops.stack.reload", [app], tmp_path, "reload")
    check_rolled("rolling_reload", run, load, watch, report)


def test_rolling_restart_starts_a_new_master_on_every_host(app, lb, load, tmp_path, report):
    before = {h: master_pid(h) for h in APP_HOSTS}
    with load, Watcher(lb) as watch:
        run = run_with_apps("flaskops.stack.restart", [app], tmp_path, "restart")
    check_rolled("rolling_restart", run, load, watch, report)
    after = {h: master_pid(h) for h in APP_HOSTS}
    assert all(after[h] not in ("0", before[h]) for h in APP_HOSTS), (before, after)


# A release that answers a third of its requests (not its health check) with a marked 500.
BAD_RELEASE = f'''
import itertools as _itertools

_good_create_app = create_app


def create_app(config=None):
    bad = _good_create_app(config)
    calls = _itertools.count()

    @bad.before_request
    def _bad_release():
        if request.path != "/healthz" and next(calls) % 3 == 0:
            return "{BAD_MARKER}\\n", 500
        return None

    return bad
'''


def test_canary_abort_rolls_the_canary_back_and_touches_no_other_host(app, lb, load, tmp_path, report):
    before = {h: (live_release(h), master_pid(h)) for h in APP_HOSTS}
    bad = new_code(app, tmp_path, "bad", BAD_RELEASE)
    batches = json.dumps({"flask_stack_serial": [1, "50%", "100%"], "flask_stack_canary_window": 10})
    with load, Watcher(lb) as watch:
        run = run_with_apps("flaskops.stack.site", [bad], tmp_path, "canary", "-e", batches)
    result = load.result
    bad_release = result.get("failures", {}).get("marked", 0)
    report(result_line("canary_abort", result, watch, bad_release=bad_release))
    counts = recap(run.stdout)
    canary = APP_HOSTS[0]
    said = " ".join((run.stdout + run.stderr).split())  # the callback folds long messages; errors go to stderr
    assert run.returncode != 0 and counts[canary]["failed"] == 1, run.stdout[-6000:]
    assert f"Canary {canary}: app {APP} answered" in said, run.stdout[-6000:]
    assert f"Rolled back on {canary}: {APP} to {before[canary][0]}" in said, run.stdout[-6000:]
    assert "The remaining hosts were not touched" in said, run.stdout[-6000:]
    # The canary is back on its release and in the pool; the other hosts never changed nor left it.
    assert live_release(canary) == before[canary][0]
    for other in APP_HOSTS[1:]:
        assert (live_release(other), master_pid(other)) == before[other], other
        assert counts.get(other, {}).get("changed", 0) == 0, run.stdout[-6000:]
    assert watch.drained_and_back() == {canary} and watch.drained == {canary}, (watch.drained, watch.back)
    assert servers_state(lb)[canary] == (RUNNING, 0)
    # Only the bad release's own answers failed, and it did answer some.
    assert bad_release > 0, failures_text(result)
    assert result.get("failed") == bad_release, failures_text(result)


def test_host_down_during_a_rollout_is_routed_around_and_reported(app, lb, load, tmp_path, report):
    down = APP_HOSTS[-1]
    extra = tmp_path / "down.json"
    extra.write_text(json.dumps({"flask_stack_apps": [app]}), encoding="utf-8")
    argv, env = playbook_command("flaskops.stack.reload", "-e", f"@{extra}")
    with load, Watcher(lb) as watch:
        play = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        # Once the rollout is under way (the first host drained), the last host goes away.
        deadline = time.monotonic() + 300
        while not watch.drained and time.monotonic() < deadline and play.poll() is None:
            time.sleep(0.2)
        subprocess.run(["podman", "stop", "--time", "60", down], check=True, capture_output=True)
        stdout = play.communicate(timeout=900)[0]
        stopped = time.monotonic()
        # Keep the load on a while with the host gone: the pool must not send it anything.
        while time.monotonic() - stopped < 5:
            time.sleep(0.5)
    report(result_line("host_down", load.result, watch))
    counts = recap(stdout)
    assert play.returncode != 0 and counts[down]["unreachable"] + counts[down]["failed"] >= 1, stdout[-6000:]
    assert load.result.get("failed") == 0, failures_text(load.result)
    assert set(APP_HOSTS[:-1]) <= watch.drained_and_back(), (watch.drained, watch.back)
    assert servers_state(lb)[down][0] != RUNNING
    # The host comes back. Where the rollout reached it before it went away, it stays drained by
    # design (nginx's drain flag is on its disk): seen drained, the flag must be there. Either way the
    # operator's path back is the same: the load balancer play takes the host's address (podman may
    # give it another one), then the playbook that failed runs again for the host, which drains it,
    # reloads, undrains it and waits until HAProxy's health checks pass.
    subprocess.run(["podman", "start", down], check=True, capture_output=True)
    subprocess.run([str(TESTHOST), "pin", down], check=True, capture_output=True)
    back = app_host(down)
    assert back.run("systemctl is-system-running --wait").stdout.strip() in ("running", "degraded")
    flagged = back.file(DRAIN_FLAG).exists
    report(f"host_down: {down} seen drained={down in watch.drained} drain flag after restart={flagged}")
    assert flagged or down not in watch.drained, (watch.drained, watch.samples[-20:])
    lb_play = run_with_apps("flaskops.stack.site", [app], tmp_path, "back", "--limit", lb)
    assert succeeded(lb_play), why_failed(lb_play)
    again = run_with_apps("flaskops.stack.reload", [app], tmp_path, "again", "--limit", down)
    story = server_story(lb, down)
    report(f"host_down: after the comeback {story}")
    assert succeeded(again), story + why_failed(again)
    assert not back.file(DRAIN_FLAG).exists
    assert server_checked_up(lb, down), servers_state(lb)


def haproxy_processes(lb: str) -> dict[str, list[str]]:
    """The master CLI's ``show proc``: ``{"workers": [pid, ...], "old workers": [pid, ...]}``."""
    out = master_cli(lb, "show proc")
    procs: dict[str, list[str]] = {"workers": [], "old workers": []}
    section = None
    for line in out.splitlines():
        if line.startswith("# "):
            section = line[2:].strip()
        elif line.strip() and section in procs:
            procs[section].append(line.split()[0])
    return procs


def test_a_reload_stops_the_old_worker(lb):
    # On a reload the root master tells the old worker (user haproxy) to stop; the unit's hardening
    # once lacked CAP_KILL, the signal failed, and old workers served on with old configurations,
    # answering the runtime API beside the new one. With no load, the old worker has nothing to finish.
    before = haproxy_processes(lb)
    assert len(before["workers"]) == 1, before
    subprocess.run(["podman", "exec", lb, "systemctl", "reload", "haproxy"], check=True, timeout=60)
    deadline = time.monotonic() + 30
    after = haproxy_processes(lb)
    while (after["old workers"] or after["workers"] == before["workers"]) and time.monotonic() < deadline:
        time.sleep(0.5)
        after = haproxy_processes(lb)
    assert after["workers"] != before["workers"] and not after["old workers"], (before, after)


def test_doctor_reports_a_drained_host_as_the_load_balancer_sees_it(app, lb, tmp_path, report):
    # An app host left drained (its nginx drain flag, as a stopped rollout leaves it): once HAProxy's checks
    # see it down, doctor.yml names the cause, with the load balancer's view as its symptom, and with
    # flask_stack_doctor_fail_on=warning the play fails on it after writing the report.
    drained = APP_HOSTS[0]
    since = time.time()
    subprocess.run(["podman", "exec", drained, "touch", DRAIN_FLAG], check=True, timeout=60)
    try:
        deadline = time.monotonic() + 60
        while not stat_row(lb, drained).get("status", "").startswith("DOWN"):
            assert time.monotonic() < deadline, stat_row(lb, drained)
            time.sleep(0.5)
        out = tmp_path / "doctor.json"
        run = run_with_apps(
            "flaskops.stack.doctor", [app], tmp_path, "doctor", "--limit", drained,
            "-e", f"flask_stack_doctor_report={out}", "-e", f"flask_stack_doctor_since={since:.3f}",
            "-e", "flask_stack_doctor_fail_on=warning",
        )  # fmt: skip
    finally:
        subprocess.run(["podman", "exec", drained, "rm", "-f", DRAIN_FLAG], check=True, timeout=60)
    findings = json.loads(out.read_text(encoding="utf-8"))["hosts"][drained]["findings"]
    ids = sorted(f"{f['app']}:{f['id']}" for f in findings)
    report(f"DOCTOR RESULT fault=host_drained_at_the_load_balancer findings={','.join(ids) or 'none'}")
    assert ids == [f"{APP}:host-drained"], findings
    assert findings[0]["symptoms"] == ["lb-down"] and "flaskops_demo on flaskops-fleet-lb" in findings[0]["evidence"]
    # ansible-core 2.19 may print a failed task's message on standard error.
    said = run.stdout + run.stderr
    assert run.returncode != 0 and "1 findings at warning or worse: demo host-drained" in said, why_failed(run)
    assert recap(run.stdout)[drained]["changed"] == 0
    deadline = time.monotonic() + 60
    while not server_checked_up(lb, drained):
        assert time.monotonic() < deadline, stat_row(lb, drained)
        time.sleep(0.5)
