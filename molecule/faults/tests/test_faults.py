"""Deploy faults under load: the host serves one whole release throughout, and no row is lost.

The app is stateful (its SQLite file and config.py in the instance folder, a release command that migrates
the database). Each case runs with loadgen's requests flowing through nginx from the controller (GET /io,
GET /cpu, POST /echo with its body checked; capped at 100 requests/s so that the plays have room) and prints
``LOAD RESULT scenario=faults case=<case> sent=<n> failed=<n>`` and ``STATE RESULT case=<case>
rows_before=<n> rows_after=<n>``. The cases run in file order on one instance.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest
from conftest import (
    Load,
    copy_source,
    failures_text,
    live_release,
    recap,
    run_with_apps,
    served_releases,
)

JOURNAL_UNITS = ["demo.service", "demo.socket", "nginx.service"]
APP = "demo"
HOME = f"/srv/{APP}"
LOCK = f"/run/lock/flaskops-{APP}.lock"
LOAD_ARGS = ("--connections", "16", "--rate", "100", "--mix", "io=2,cpu=1,echo=1", "--host-header", "localhost")
# A package index that refuses every connection.
NO_INDEX = "gunicorn_pip_extra_args='--index-url http://127.0.0.1:9/simple --retries 0 --timeout 2'"


def rows(nginx_url, body=None):
    """The row count, after writing a row with ``body`` through nginx when given."""
    data = None if body is None else body.encode()
    request = urllib.request.Request(f"{nginx_url}/rows", data=data, headers={"Host": "localhost"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["rows"]


def write_rows(nginx_url, count, label):
    for number in range(count):
        total = rows(nginx_url, f"{label} {number}")
    return total


def with_env(app, greeting):
    changed = copy.deepcopy(app)
    changed["env"]["DEMO_GREETING"] = greeting
    return changed


def output_of(run):
    """A play's output, whitespace collapsed (the YAML result format folds long messages)."""
    return " ".join((run.stdout + run.stderr).split())


def succeeded(run):
    counts = recap(run.stdout)
    return run.returncode == 0 and counts and all(c["failed"] == 0 for c in counts.values())


def complete_release(host):
    """The release ``current`` points at, after checking that it is complete."""
    release = live_release(host, APP)
    assert host.file(f"{HOME}/releases/{release}/.flaskops-release").exists, release
    return release


class Background:
    """ansible-playbook running site.yml in its own process group, its output in a file."""

    def __init__(self, app, tmp_path, name, *args):
        extra = tmp_path / f"{name}.json"
        extra.write_text(json.dumps({"flask_stack_apps": [app]}), encoding="utf-8")
        self.log = tmp_path / f"{name}.log"
        env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "PY_COLORS": "0"}
        argv = [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            "flaskops.stack.site",
            "-e",
            f"@{extra}",
        ]
        with open(self.log, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                [*argv, *args], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def kill(self):
        """SIGKILL ansible-playbook and every process it started on the controller, as a crash would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)

    def wait(self, timeout=900):
        self.process.wait(timeout=timeout)
        return self.process.returncode, self.log.read_text(encoding="utf-8")


def wait_until(what, predicate, process=None, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process is None or process.poll() is None, f"the play ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


@pytest.fixture
def case(report):
    """``case(name, load_result, rows_before, rows_after)``: report the case's LOAD and STATE RESULT lines."""

    def lines(name, result, rows_before, rows_after):
        report(f"LOAD RESULT scenario=faults case={name} sent={result.get('sent')} failed={result.get('failed')}")
        report(f"STATE RESULT case={name} rows_before={rows_before} rows_after={rows_after}")

    return lines


def test_release_command_that_fails_changes_nothing_live(host, app, nginx_url, tmp_path, case):
    before = write_rows(nginx_url, 10, "release_command_fails")
    live = complete_release(host)
    bad = with_env(app, "a migration that fails")
    bad["release_commands"] = [*app["release_commands"], "sh -c 'echo half-migrated; exit 3'"]
    with Load(nginx_url, *LOAD_ARGS) as load:
        run = run_with_apps("flaskops.stack.site", [bad], tmp_path, "migration")
    after = rows(nginx_url)
    case("release_command_fails", load.result, before, after)
    output = output_of(run)
    assert run.returncode != 0, output[-3000:]
    assert "command 3 of 3 exited with 3" in output and "half-migrated" in output, output[-3000:]
    assert "nothing live was changed" in output, output[-3000:]
    assert load.result["sent"] > 0 and load.result["failed"] == 0, failures_text(load.result)
    assert complete_release(host) == live and served_releases(host, "localhost") == {live}
    assert after == before


def test_package_index_down_removes_the_partial_build_and_a_later_run_succeeds(host, app, nginx_url, tmp_path, case):
    before = write_rows(nginx_url, 10, "index_down")
    live = complete_release(host)
    builds = set(host.check_output("ls %s/builds", HOME).split())
    source = copy_source(app["source"]["path"], tmp_path / "source")
    (source / "flaskops_demo" / "DEPLOYED").write_text("index_down\n", encoding="utf-8")
    new_code = copy.deepcopy(app)
    new_code["source"]["path"] = str(source)
    with Load(nginx_url, *LOAD_ARGS) as load:
        run = run_with_apps("flaskops.stack.site", [new_code], tmp_path, "no-index", "-e", NO_INDEX)
        down = output_of(run)
        assert run.returncode != 0, down[-3000:]
        assert set(host.check_output("ls %s/builds", HOME).split()) == builds
        assert complete_release(host) == live and served_releases(host, "localhost") == {live}
        # The index is back.
        again = run_with_apps("flaskops.stack.site", [new_code], tmp_path, "index-back")
    after = rows(nginx_url)
    case("index_down", load.result, before, after)
    assert "could not be installed" in down and "the partial build was removed" in down, down[-3000:]
    assert "nothing live was changed" in down and "127.0.0.1:9" in down, down[-3000:]
    assert succeeded(again), output_of(again)[-3000:]
    assert complete_release(host) != live and served_releases(host, "localhost") == {live_release(host, APP)}
    assert load.result["sent"] > 0 and load.result["failed"] == 0, failures_text(load.result)
    assert after == before


def test_a_second_deploy_waits_for_the_lock_or_fails_naming_its_holder(host, app, nginx_url, tmp_path, case):
    before = write_rows(nginx_url, 10, "concurrent_deploy")
    # The first play installs new code, so that it holds the lock long after the others start.
    source = copy_source(app["source"]["path"], tmp_path / "source")
    (source / "flaskops_demo" / "DEPLOYED").write_text("concurrent_deploy\n", encoding="utf-8")
    first_app = with_env(app, "concurrent first")
    first_app["source"]["path"] = str(source)
    with Load(nginx_url, *LOAD_ARGS) as load:
        first = Background(first_app, tmp_path, "first")
        wait_until("the first play holds the deploy lock", lambda: host.file(LOCK).exists, first.process)
        holder = json.loads(host.file(LOCK).content_string)
        patient = Background(with_env(app, "concurrent patient"), tmp_path, "patient", "-v")
        impatient = run_with_apps(
            "flaskops.stack.site", [with_env(app, "concurrent impatient")], tmp_path, "impatient",
            "-e", "gunicorn_lock_timeout=2",
        )  # fmt: skip
        first_rc, first_log = first.wait()
        patient_rc, patient_log = patient.wait()
    after = rows(nginx_url)
    case("concurrent_deploy", load.result, before, after)
    refused = output_of(impatient)
    assert impatient.returncode != 0
    assert "another run holds the deploy lock" in refused and f"ansible-playbook pid {holder['pid']}" in refused, (
        refused[-3000:]
    )
    assert first_rc == 0, first_log[-3000:]
    assert patient_rc == 0, patient_log[-3000:]
    waited = [float(seconds) for seconds in re.findall(r'"?waited"?: ([0-9.]+)', patient_log)]
    assert waited and max(waited) > 0, "the patient play never waited for the lock"
    assert not host.file(LOCK).exists
    assert "concurrent patient" in host.check_output("cat %s/current/env", HOME)
    assert load.result["sent"] > 0 and load.result["failed"] == 0, failures_text(load.result)
    assert after == before


def new_build_installing(host):
    return host.run("for d in %s/builds/*/; do test -e $d.flaskops-build || echo $d; done", HOME).stdout.strip() != ""


def complete_releases(host):
    return host.run("ls %s/releases/*/.flaskops-release", HOME).stdout.count(".flaskops-release")


KILL_POINTS = {
    # While pip installs the new build: nothing of it is live.
    "during_install": lambda host, live, complete: new_build_installing(host),
    # The new release is complete and checked, `current` not switched yet.
    "release_complete": lambda host, live, complete: complete_releases(host) > complete,
    # `current` switched, the master not reloaded yet: the previous release still serves.
    "after_switch": lambda host, live, complete: live_release(host, APP) != live,
}


@pytest.mark.parametrize("point", KILL_POINTS)
def test_controller_killed_mid_deploy_leaves_one_whole_release_and_a_rerun_converges(
    host, app, nginx_url, tmp_path, case, point
):
    before = write_rows(nginx_url, 5, point)
    live = complete_release(host)
    complete = complete_releases(host)
    change = with_env(app, f"killed {point}")
    if point == "during_install":
        source = copy_source(app["source"]["path"], tmp_path / "source")
        (source / "flaskops_demo" / "DEPLOYED").write_text(f"{point}\n", encoding="utf-8")
        change["source"]["path"] = str(source)
    with Load(nginx_url, *LOAD_ARGS) as load:
        play = Background(change, tmp_path, point)
        wait_until(point, lambda: KILL_POINTS[point](host, live, complete), play.process)
        play.kill()
        killed_at = complete_release(host)
        served = served_releases(host, "localhost")
        # The killed run's lock is left behind; the rerun takes it over, saying so.
        assert host.file(LOCK).exists
        rerun = run_with_apps("flaskops.stack.site", [change], tmp_path, f"{point}-rerun")
    after = rows(nginx_url)
    case(f"controller_kill_{point}", load.result, before, after)
    # One whole release serves: the one that was live, or (killed after the reload) the new one.
    assert len(served) == 1 and served <= {live, killed_at}, (served, live, killed_at)
    if point == "during_install":
        assert killed_at == live and served == {live}
    assert succeeded(rerun), output_of(rerun)[-3000:]
    assert "took over the deploy lock" in output_of(rerun) and "its run no longer runs" in output_of(rerun)
    final = complete_release(host)
    assert final != live and served_releases(host, "localhost") == {final}
    assert f"killed {point}" in host.check_output("cat %s/current/env", HOME)
    assert not host.file(LOCK).exists
    assert load.result["sent"] > 0 and load.result["failed"] == 0, failures_text(load.result)
    assert after == before
