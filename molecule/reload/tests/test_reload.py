"""Configuration reloads, a rolling reload and code deploys under load drop no request.

While loadgen keeps GET /io, GET /cpu and POST /echo (body checked) flowing through nginx from the
controller, the test changes the app's configuration five times through playbooks/site.yml (the
environment each time, gunicorn.conf.py every other time), runs playbooks/reload.yml once and deploys
new code twice; the scenario's low max_requests recycles workers all along. Every failed request
counts: a non-2xx status, a wrong echo body, a reset, a refused or timed-out connection. The load is
capped at 100 requests/s: continuous, and leaving the two cores room to run the plays.
"""

from __future__ import annotations

import copy
import time

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
            # The play returned only once every old worker had gone and the new ones answered.
            assert before.isdisjoint(children(host, master)), number
            assert unit_property(host, SERVICE, "MainPID") == master
            assert served_releases(host, "localhost") == {releases[-1]}
            assert load.progress()["last_interval"]["sent"] > 0, "load stopped flowing"

        apply("flaskops.stack.reload", app, tmp_path, "rolling")
        reloads += 1

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
