"""Deploy faults under load: the host serves one whole release throughout, and no row is lost.

The app is stateful (its SQLite file and config.py in the instance folder, a release command that migrates
the database). Each case runs with loadgen's requests flowing through nginx from the controller (GET /io,
GET /cpu, POST /echo with its body checked; capped at 100 requests/s so that the plays have room) and prints
``LOAD RESULT scenario=faults case=<case> sent=<n> failed=<n>`` and ``STATE RESULT case=<case>
rows_before=<n> rows_after=<n>``. The cases run in file order on one instance, whose /srv is a 512 MiB file
system of its own (prepare.yml).

``FLASKOPS_SOAK_HUPS`` sets how many HUPs the reload_soak case sends (100; ``make soak`` sends 1000).
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import (
    PROJECT,
    Load,
    container,
    copy_source,
    failures_text,
    live_release,
    rows_request,
    run_with_apps,
    served_releases,
    succeeded,
    unit_property,
    why_failed,
)

JOURNAL_UNITS = ["demo.service", "demo.socket", "nginx.service"]
APP = "demo"
HOME = f"/srv/{APP}"
LOCK = f"/run/lock/flaskops-{APP}.lock"
MIX = ("--mix", "io=2,cpu=1,echo=1", "--host-header", "localhost")
LOAD_ARGS = ("--connections", "16", "--rate", "100", *MIX)
# A package index that refuses every connection.
NO_INDEX = "gunicorn_pip_extra_args='--index-url http://127.0.0.1:9/simple --retries 0 --timeout 2'"
TESTHOST = PROJECT / "tools" / "testhost" / "testhost.sh"
HUP_SOAK = Path(__file__).resolve().parent / "hup_soak.py"
READINESS = PROJECT / "plugins" / "module_utils" / "readiness.py"


def rows(nginx_url, body=None):
    """The row count, after writing a row with ``body`` through nginx when given."""
    return rows_request(nginx_url, body)["rows"]


def write_rows(nginx_url, count, label):
    for number in range(count):
        total = rows(nginx_url, f"{label} {number}")
    return total


def with_env(app, greeting):
    changed = copy.deepcopy(app)
    changed["env"]["DEMO_GREETING"] = greeting
    return changed


def with_new_code(app, tmp_path, label):
    """``app`` with a copy of its source that differs in one file: a new build, named ``label`` in it."""
    source = copy_source(app["source"]["path"], tmp_path / "source")
    (source / "flaskops_demo" / "DEPLOYED").write_text(f"{label}\n", encoding="utf-8")
    changed = copy.deepcopy(app)
    changed["source"]["path"] = str(source)
    return changed


def output_of(run):
    """A play's output, whitespace collapsed (the YAML result format folds long messages)."""
    return " ".join((run.stdout + run.stderr).split())


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
    new_code = with_new_code(app, tmp_path, "index_down")
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
    assert succeeded(again), why_failed(again)
    assert complete_release(host) != live and served_releases(host, "localhost") == {live_release(host, APP)}
    assert load.result["sent"] > 0 and load.result["failed"] == 0, failures_text(load.result)
    assert after == before


def test_a_full_disk_fails_the_install_naming_it_and_a_run_after_space_is_freed_succeeds(
    host, app, nginx_url, tmp_path, case
):
    before = write_rows(nginx_url, 10, "disk_full")
    live = complete_release(host)
    builds = set(host.check_output("ls %s/builds", HOME).split())
    new_code = with_new_code(app, tmp_path, "disk_full")
    # Fill /srv (a file system of its own here) to 4 MiB of free space: the source unpacks, the
    # virtualenv does not install.
    free_kib = int(host.check_output("df --output=avail --block-size=1K /srv | tail -n 1"))
    host.check_output("fallocate --length %sKiB /srv/filler", str(free_kib - 4096))
    try:
        with Load(nginx_url, *LOAD_ARGS) as load:
            run = run_with_apps("flaskops.stack.site", [new_code], tmp_path, "disk-full")
            full = output_of(run)
            assert run.returncode != 0, full[-3000:]
            assert set(host.check_output("ls %s/builds", HOME).split()) == builds
            assert complete_release(host) == live and served_releases(host, "localhost") == {live}
            host.check_output("rm /srv/filler")
            again = run_with_apps("flaskops.stack.site", [new_code], tmp_path, "space-freed")
    finally:
        host.run("rm -f /srv/filler")
    after = rows(nginx_url)
    case("disk_full", load.result, before, after)
    assert "could not be installed" in full, full[-3000:]
    assert "the file system is full: /srv (holding /srv/demo)" in full, full[-3000:]
    assert "the partial build was removed and nothing live was changed" in full, full[-3000:]
    assert succeeded(again), why_failed(again)
    assert complete_release(host) != live and served_releases(host, "localhost") == {live_release(host, APP)}
    assert load.result["sent"] > 0 and load.result["failed"] == 0, failures_text(load.result)
    assert after == before


def test_a_second_deploy_waits_for_the_lock_or_fails_naming_its_holder(host, app, nginx_url, tmp_path, case):
    before = write_rows(nginx_url, 10, "concurrent_deploy")
    # The first play installs new code, so that it holds the lock long after the others start.
    first_app = with_env(with_new_code(app, tmp_path, "concurrent_deploy"), "concurrent first")
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
    change = with_env(with_new_code(app, tmp_path, point) if point == "during_install" else app, f"killed {point}")
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
    assert succeeded(rerun), why_failed(rerun)
    assert "took over the deploy lock" in output_of(rerun) and "its run no longer runs" in output_of(rerun)
    final = complete_release(host)
    assert final != live and served_releases(host, "localhost") == {final}
    assert f"killed {point}" in host.check_output("cat %s/current/env", HOME)
    assert not host.file(LOCK).exists
    assert load.result["sent"] > 0 and load.result["failed"] == 0, failures_text(load.result)
    assert after == before


def first_answer(url, timeout=180.0):
    """The status of the first HTTP answer from ``url`` (GET /rows through nginx); connections that fail
    (nothing listens yet) are retried until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(f"{url}/rows", headers={"Host": "localhost"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            assert time.monotonic() < deadline, f"nothing answered at {url} for {timeout} s"
            time.sleep(0.05)


def test_reboot_serves_the_live_release_and_its_data_through_a_socket_that_came_up_first(
    host, app, nginx_url, tmp_path, case
):
    before = write_rows(nginx_url, 10, "reboot")
    live = complete_release(host)
    # A clean reboot: podman stops the instance's systemd (SIGRTMIN+3), which stops every service, then boots it.
    subprocess.run(["podman", "restart", "--time", "120", container(host)], check=True, capture_output=True)
    subprocess.run([TESTHOST, "pin", container(host)], check=True, capture_output=True)
    # nginx is up before the app's socket is not: its first answer after the boot is the app's 200, not a 502.
    assert first_answer(nginx_url) == 200
    with Load(nginx_url, *LOAD_ARGS) as load:
        booted = host.run("systemctl is-system-running --wait").stdout.strip()
        socket_up = int(unit_property(host, f"{APP}.socket", "ActiveEnterTimestampMonotonic"))
        service_up = int(unit_property(host, f"{APP}.service", "ExecMainStartTimestampMonotonic"))
        states = host.check_output("systemctl is-active %s.socket %s.service nginx.service", APP, APP).split()
        served = served_releases(host, "localhost")
        time.sleep(5)
    after = rows(nginx_url)
    case("reboot", load.result, before, after)
    assert booted in ("running", "degraded"), booted
    assert states == ["active"] * 3, states
    assert 0 < socket_up < service_up, (socket_up, service_up)
    assert complete_release(host) == live and served == {live}
    assert not host.file(LOCK).exists
    assert load.result["sent"] > 0 and load.result["failed"] == 0, failures_text(load.result)
    assert after == before


SOAK_HUPS = int(os.environ.get("FLASKOPS_SOAK_HUPS", "100"))
SOAK_DIR = "/root/flaskops-soak"
SOAK_CONNECTIONS = ("--connections", "64")


def test_reload_soak_hups_back_to_back_at_80_percent_of_capacity_fail_nothing_and_leak_nothing(
    host, app, plan, nginx_url, report
):
    # What the host serves: the same mix, unbounded, for 10 s. 64 connections: more than the app's worker
    # threads (24 here), so that the app, not the client's concurrency, is the limit.
    with Load(nginx_url, *SOAK_CONNECTIONS, *MIX) as probe:
        time.sleep(10)
    assert probe.result["sent"] > 0 and probe.result["failed"] == 0, failures_text(probe.result)
    capacity = probe.result["rps"]
    rate = round(0.8 * capacity, 1)
    # The driver runs on the instance, beside the collection's readiness check, as the roles reload.
    host.check_output("mkdir -p %s", SOAK_DIR)
    for path in (HUP_SOAK, READINESS):
        subprocess.run(["podman", "cp", str(path), f"{container(host)}:{SOAK_DIR}/"], check=True)
    restarts = unit_property(host, f"{APP}.service", "NRestarts")
    with Load(nginx_url, *SOAK_CONNECTIONS, "--rate", str(rate), *MIX, duration=7200) as load:
        start = load.progress()
        soak = json.loads(
            host.check_output(
                "python3 %s/hup_soak.py --service %s.service --socket /run/flaskops/%s.sock --workers %s --count %s",
                SOAK_DIR, APP, APP, str(plan["workers"]), str(SOAK_HUPS),
            )
        )  # fmt: skip
        end = load.progress()
    # The rate served while the HUPs ran (loadgen's progress file is rewritten every second).
    served_rps = round((end["sent"] - start["sent"]) / max(end["elapsed_s"] - start["elapsed_s"], 1.0), 1)
    before, after = soak["before"], soak.get("after", {})
    report(
        f"LOAD RESULT scenario=faults case=reload_soak sent={load.result.get('sent')} "
        f"failed={load.result.get('failed')} hups={soak['hups']} capacity_rps={capacity} offered_rps={rate} "
        f"served_rps={served_rps} fds={before['fds']}->{after.get('fds')} "
        f"threads={before['threads']}->{after.get('threads')} ready_median_s={soak.get('ready_s', {}).get('median')} "
        f"seconds={soak['seconds']}"
    )
    assert "error" not in soak and soak["hups"] == SOAK_HUPS, soak
    assert soak["master_after"] == soak["master_before"], soak
    assert unit_property(host, f"{APP}.service", "NRestarts") == restarts
    assert abs(after["fds"] - before["fds"]) <= 2 and abs(after["threads"] - before["threads"]) <= 2, soak
    assert load.result["sent"] > 0 and load.result["failed"] == 0, failures_text(load.result)
    # The HUPs cost the app capacity (each boots a new generation of workers), so less than the offered rate
    # is served while they run; half the capacity shows the load did not stall.
    assert served_rps >= 0.5 * capacity, (served_rps, capacity)
