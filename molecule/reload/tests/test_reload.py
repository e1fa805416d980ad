"""Configuration reloads, a rolling reload, code deploys and rollbacks under load drop no request.

While loadgen keeps GET /io, GET /cpu and POST /echo (body checked) flowing through nginx from the
controller, the test changes the app's configuration five times through playbooks/site.yml (the
environment each time, gunicorn.conf.py every other time: each a new release), runs playbooks/reload.yml
once and deploys new code twice; the scenario's low max_requests recycles workers all along. Then, under
a new load, playbooks/rollback.yml goes back to the release before the live one, forward again, and
refuses a release that is no longer installed. Every failed request counts: a non-2xx status, a wrong
echo body, a reset, a refused or timed-out connection. The load is capped at 100 requests/s: continuous,
and leaving the two cores room to run the plays.

The app keeps state as Flask's tutorial app does (its SQLite file and config.py in the instance folder,
a release command that migrates the database): rows written through nginx before the releases, the
rollbacks and a restart are all there after each (``STATE RESULT case=<case> rows_before=<n>
rows_after=<n>``), and the app's code never ran as root.

The scenario's playbooks (converge and every play of this test) run from the collection's built tarball,
installed into an empty collections path by `make molecule` (molecule.yml sets ANSIBLE_COLLECTIONS_PATH).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time

from conftest import (
    Load,
    check_run_changes_nothing,
    children,
    copy_source,
    failures_text,
    live_release,
    recap,
    rows_request,
    run_with_apps,
    served_releases,
    unit_property,
    wait_ready,
)

JOURNAL_UNITS = ["demo.service", "demo.socket", "nginx.service"]
APP = "demo"
SERVICE = "demo.service"
CONFIG_RELOADS = 5
DEPLOYS = 2


def apply(playbook, app, tmp_path, name):
    """Run ``playbook`` with flask_stack_apps = [app]; it must succeed and change the host."""
    run = run_with_apps(playbook, [app], tmp_path, name)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    counts = recap(run.stdout)
    assert counts and all(c["changed"] > 0 and c["failed"] == 0 for c in counts.values()), run.stdout[-4000:]


STATE_DIR = f"/var/lib/flaskops/{APP}"
ROWS_WRITTEN = 25


def rows_survive(nginx_url, report, case, before):
    after = rows_request(nginx_url)["rows"]
    report(f"STATE RESULT case={case} rows_before={before} rows_after={after}")
    assert after == before, case


def journal_count(host, since, text):
    journal = host.check_output("journalctl -u %s --no-pager -o cat --since @%s", SERVICE, since)
    return journal.count(text)


def test_check_mode_on_the_converged_host_changes_nothing():
    check_run_changes_nothing()


def test_reloads_and_deploys_under_load_drop_nothing(host, apps, nginx_url, tmp_path, report):
    converge = "flaskops.stack.site"
    app = copy.deepcopy(apps[0])
    master, restarts = unit_property(host, SERVICE, "MainPID"), unit_property(host, SERVICE, "NRestarts")
    first_workers = children(host, master)
    since = host.check_output("date +%s")
    releases = [live_release(host, APP)]
    reloads = deploys = 0
    for number in range(ROWS_WRITTEN):
        written = rows_request(nginx_url, f"row {number}")
    rows_before = written["rows"]
    load = Load(
        nginx_url, "--connections", "16", "--rate", "100", "--mix", "io=2,cpu=1,echo=1", "--host-header", "localhost",
    )  # fmt: skip
    with load:
        for number in range(1, CONFIG_RELOADS + 1):
            app["env"]["DEMO_GREETING"] = f"reload {number}"
            if number % 2 == 0:
                app["settings"]["max_requests"] += 1
            before = children(host, master)
            apply(converge, app, tmp_path, f"reload{number}")
            reloads += 1
            # A new configuration or environment is a new release of the same build.
            releases.append(live_release(host, APP))
            assert releases[-1] not in releases[:-1], releases
            # The play returned only once every old worker had gone and the new ones answered.
            assert before.isdisjoint(children(host, master)), number
            assert unit_property(host, SERVICE, "MainPID") == master
            assert served_releases(host, "localhost") == {releases[-1]}
            assert load.progress()["last_interval"]["sent"] > 0, "load stopped flowing"

        apply("flaskops.stack.reload", app, tmp_path, "rolling")
        reloads += 1
        assert live_release(host, APP) == releases[-1]

        for number in range(1, DEPLOYS + 1):
            source = copy_source(app["source"]["path"], tmp_path / f"source{number}")
            (source / "flaskops_demo" / "DEPLOYED").write_text(f"deploy {number}\n", encoding="utf-8")
            app["source"]["path"] = str(source)
            apply(converge, app, tmp_path, f"deploy{number}")
            deploys += 1
            releases.append(live_release(host, APP))
            assert releases[-1] not in releases[:-1], releases
            assert served_releases(host, "localhost") == {releases[-1]}
            assert unit_property(host, SERVICE, "MainPID") == master

        time.sleep(3)  # and the last release serves the load too
    result = load.result
    hups = journal_count(host, since, "Handling signal: hup")
    recycled = journal_count(host, since, "Autorestarting worker after current request")
    report(
        f"LOAD RESULT scenario=reload sent={result.get('sent')} failed={result.get('failed')} reloads={reloads} "
        f"deploys={deploys} hups={hups} recycled={recycled} rps={result.get('rps')}"
    )
    assert result["stopped_by"].startswith("signal"), "the load ended before the changes did"
    assert result["sent"] > 0 and result["failed"] == 0, failures_text(result)
    assert hups == reloads + deploys, "one HUP per change, no more"
    assert recycled > 0, "max_requests never recycled a worker"
    assert (unit_property(host, SERVICE, "MainPID"), unit_property(host, SERVICE, "NRestarts")) == (master, restarts)
    assert first_workers.isdisjoint(children(host, master))
    rows_survive(nginx_url, report, "data_survives_releases", rows_before)


def test_state_lives_outside_the_releases_and_the_app_never_ran_as_root(host, nginx_url):
    # The instance folder of every build is the state directory's; the database and config.py are there.
    instance = host.file(f"/srv/{APP}/current/venv/var/flaskops_demo-instance")
    assert instance.is_symlink and instance.linked_to == f"{STATE_DIR}/instance"
    assert host.file(f"/srv/{APP}/current/uploads").linked_to == f"{STATE_DIR}/uploads"
    answer = rows_request(nginx_url)
    assert answer["greeting"] == "from the state directory" and answer["rows"] >= ROWS_WRITTEN
    config = host.file(f"{STATE_DIR}/instance/config.py")
    assert (config.user, config.group, config.mode) == ("root", APP, 0o640)
    # The release command (init-db) and the app created the database as the app's user; nothing else in
    # the state directory, and nothing in a build's virtualenv, belongs to root.
    assert host.file(f"{STATE_DIR}/instance/demo.sqlite").user == APP
    not_app = host.check_output("find %s ! -user %s", STATE_DIR, APP).split()
    assert not_app == [f"{STATE_DIR}/instance/config.py"], not_app
    created = host.check_output("find /srv/%s/builds -path '*/venv/var/*'", APP).split()
    assert all(path.endswith("/venv/var/flaskops_demo-instance") for path in created), created


def test_rollback_and_forward_under_load_drop_nothing(host, apps, nginx_url, tmp_path, report):
    app = apps[0]
    master = unit_property(host, SERVICE, "MainPID")
    live = live_release(host, APP)
    before = host.file(f"/srv/{APP}/previous").linked_to.rsplit("/", 1)[1]
    installed = set(host.check_output("ls /srv/%s/releases", APP).split())
    since = host.check_output("date +%s")
    rows_before = rows_request(nginx_url, "before the rollback")["rows"]
    load = Load(
        nginx_url, "--connections", "16", "--rate", "100", "--mix", "io=2,cpu=1,echo=1", "--host-header", "localhost",
    )  # fmt: skip
    with load:
        apply("flaskops.stack.rollback", app, tmp_path, "back")
        assert live_release(host, APP) == before
        assert served_releases(host, "localhost") == {before}
        # The release it left is the previous one now: the same playbook goes forward again.
        apply("flaskops.stack.rollback", app, tmp_path, "forward")
        assert live_release(host, APP) == live
        assert served_releases(host, "localhost") == {live}
        # A release that is not installed (any more) is refused, and nothing changes.
        gone = run_with_apps(
            "flaskops.stack.rollback", [app], tmp_path, "gone", "-e", "flask_stack_rollback_release=gone-0"
        )
        assert gone.returncode != 0
        output = " ".join((gone.stdout + gone.stderr).split())
        assert "release 'gone-0' is not a complete release" in output, output[-3000:]
        assert all(release in output for release in installed), (installed, output[-3000:])
        assert live_release(host, APP) == live
        time.sleep(3)
    result = load.result
    report(f"LOAD RESULT scenario=reload case=rollback sent={result.get('sent')} failed={result.get('failed')}")
    assert result["sent"] > 0 and result["failed"] == 0, failures_text(result)
    assert unit_property(host, SERVICE, "MainPID") == master
    assert journal_count(host, since, "Handling signal: hup") == 2, "one HUP back, one forward, none for the refusal"
    rows_survive(nginx_url, report, "data_survives_rollback", rows_before)


def test_data_survives_a_restart(host, plan, nginx_url, report):
    rows_before = rows_request(nginx_url, "before the restart")["rows"]
    master = unit_property(host, SERVICE, "MainPID")
    host.check_output("systemctl restart %s", SERVICE)
    ready = wait_ready(host, APP, workers=plan["workers"])
    assert str(ready["master"]) != master
    rows_survive(nginx_url, report, "data_survives_restart", rows_before)


def test_playbooks_run_from_the_built_tarball():
    # What Ansible resolves flaskops.stack to (the first collections path holding it) is the tarball that
    # `make installed` built and installed: ansible-galaxy writes MANIFEST.json, the work tree has none.
    shown = subprocess.run(
        ["ansible-doc", "-t", "module", "flaskops.stack.gunicorn_ready", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    module = json.loads(shown.stdout)["flaskops.stack.gunicorn_ready"]["doc"]["filename"]
    installed = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], ".build", "installed")
    root = os.path.join(installed, "ansible_collections", "flaskops", "stack")
    assert module == os.path.join(root, "plugins", "modules", "gunicorn_ready.py"), module
    assert os.path.isfile(os.path.join(root, "MANIFEST.json")), root
    assert not os.path.islink(root), root
