"""The converged stack, as a user sees it: services, socket, plan, nginx, HTTP, and a clean check run.

Expected values come from the instance's own facts through the collection's filters and from the
scenario's inventory (flask_stack_apps), never from literals: the fixtures app, facts and plan are in
molecule/conftest.py. Runs on each instance of the default scenario (Debian 12, Debian 13, and
Debian 12 limited to 1 CPU and 768 MiB).
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.request
import uuid

from conftest import check_run_changes_nothing, published_address

from ansible_collections.flaskops.stack.plugins.filter.gunicorn_tuning import gunicorn_tuning
from ansible_collections.flaskops.stack.plugins.filter.nginx_tuning import nginx_tuning
from ansible_collections.flaskops.stack.plugins.module_utils.tuning import GUNICORN_SETTINGS

JOURNAL_UNITS = ["demo.service", "demo.socket", "api.service", "api.socket", "nginx.service"]
MIB = 1024 * 1024


def test_services_active_and_enabled(host, apps):
    units = [f"{app['name']}.{kind}" for app in apps for kind in ("socket", "service")] + ["nginx.service"]
    for unit in units:
        service = host.service(unit)
        assert service.is_running, unit
        assert service.is_enabled, unit


def test_sockets_listen_with_mode_and_group(host, apps):
    for app in apps:
        path = f"/run/flaskops/{app['name']}.sock"
        sock = host.file(path)
        assert sock.is_socket, path
        assert (sock.mode, sock.user, sock.group) == (0o660, "root", "www-data"), path
        assert host.socket(f"unix://{path}").is_listening, path


def test_service_users_cannot_log_in(host, apps):
    for app in apps:
        user = host.user(app["name"])
        assert user.exists, app["name"]
        assert user.shell == "/usr/sbin/nologin", app["name"]


def test_masters_run_the_planned_workers(host, apps, plans):
    for app in apps:
        plan = plans[app["name"]]
        master = host.check_output("systemctl show -p MainPID --value %s.service", app["name"])
        workers = host.check_output("pgrep -P %s", master).split()
        assert len(workers) == plan["workers"], (app["name"], plan["explain"])


def test_gevent_workers_run_from_a_build_with_gunicorns_gevent_extra(host, apps, plans):
    gevent_apps = [app["name"] for app in apps if plans[app["name"]]["worker_class"] == "gevent"]
    assert gevent_apps, "the scenario has no app on gevent workers"
    for name in gevent_apps:
        venv = "/srv/%s/current/venv" % name
        host.check_output("%s/bin/python -c 'import gevent, packaging'", venv)
        # The master logs the class it loaded when it starts (gunicorn's arbiter).
        master = host.check_output("systemctl show -p MainPID --value %s.service", name)
        log = host.check_output("journalctl -u %s.service _PID=%s --no-pager -o cat", name, master)
        assert "Using worker: gevent" in log, (name, log[-1000:])


def test_gunicorn_conf_holds_the_plan(host, apps, plans):
    for app in apps:
        script = (
            "import json, runpy; ns = runpy.run_path('/srv/%s/current/gunicorn.conf.py'); "
            "print(json.dumps({k: ns.get(k) for k in %r}))" % (app["name"], GUNICORN_SETTINGS)
        )
        conf = json.loads(host.check_output("/srv/%s/current/venv/bin/python -c %s", app["name"], script))
        assert conf == {key: plans[app["name"]][key] for key in GUNICORN_SETTINGS}, app["name"]


def test_units_carry_the_plan_limits(host, apps, plans):
    for app in apps:
        plan = plans[app["name"]]
        shown = host.check_output(
            "systemctl show -p TimeoutStopUSec -p MemoryHigh -p MemoryMax --value %s.service", app["name"]
        )
        stop, high, top = shown.split()
        minutes, seconds = divmod(plan["systemd"]["TimeoutStopSec"], 60)
        assert stop == (f"{minutes}min {seconds}s" if minutes else f"{seconds}s"), app["name"]
        assert int(high) == int(plan["systemd"]["MemoryHigh"].rstrip("M")) * MIB, app["name"]
        assert int(top) == int(plan["systemd"]["MemoryMax"].rstrip("M")) * MIB, app["name"]


def test_memory_shares_split_the_budget(facts, apps, plans):
    # Each app plans within its memory_share, so together the apps' budgets, and their reload peaks,
    # fit the one budget the host has (what a single app with the whole share would get).
    whole = gunicorn_tuning(facts, {**apps[0].get("workload", {}), "memory_share": 1.0})["memory_budget_mb"]
    assert sum(plan["memory_budget_mb"] for plan in plans.values()) <= whole
    assert sum(plan["memory_peak_mb"] for plan in plans.values()) <= whole


def test_nginx_workers_are_the_effective_cpus(host, facts, plans):
    expected = nginx_tuning(facts, plans=list(plans.values()))
    assert expected["worker_processes"] == math.ceil(next(iter(plans.values()))["cpus"])
    config = host.check_output("nginx -T 2>/dev/null")
    assert re.search(r"^\s*worker_processes\s+%d;" % expected["worker_processes"], config, re.M)
    assert re.search(r"^\s*worker_connections\s+%d;" % expected["worker_connections"], config, re.M)
    master = host.file("/run/nginx.pid").content_string.strip()
    assert len(host.check_output("pgrep -P %s", master).split()) == expected["worker_processes"]


def _get(host, path, app):
    """curl through nginx inside the instance, as the app's first server_name: (status, headers, body)."""
    name = app["server_name"][0]
    if app.get("tls_certificate"):
        out = host.run("curl -sS -k -D - --resolve %s https://%s%s", f"{name}:443:127.0.0.1", name, path)
    else:
        out = host.run("curl -sS -D - -H %s http://127.0.0.1%s", f"Host: {name}", path)
    assert out.rc == 0, out.stderr
    head, _sep, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
    status = int(head.split()[1])
    fields = (line.partition(":") for line in head.splitlines()[1:])
    headers = {name.strip().lower(): value.strip() for name, _colon, value in fields}
    return status, headers, body


def test_pages_and_health_through_nginx(host, apps):
    for app in apps:
        status, headers, body = _get(host, "/", app)
        assert status == 200, app["name"]
        assert "flaskops.stack demo" in body
        assert headers["server"] == "nginx"  # no version
        status, _headers, body = _get(host, "/healthz", app)
        assert status == 200, app["name"]
        health = json.loads(body)
        release = host.file(f"/srv/{app['name']}/current").linked_to.rsplit("/", 1)[1]
        assert health["status"] == "ok"
        assert health["release"] == release, app["name"]
        # The request reached this app's own gunicorn, not another app's.
        master = host.check_output("systemctl show -p MainPID --value %s.service", app["name"])
        assert str(health["pid"]) in host.check_output("pgrep -P %s", master).split(), app["name"]


def test_published_port_reaches_nginx_from_the_controller(host):
    address = published_address(host, 80)
    with urllib.request.urlopen("http://%s/healthz" % address, timeout=10) as response:
        assert response.status == 200
        assert json.load(response)["status"] == "ok"


def test_static_files_are_served_by_nginx(host, apps):
    served = [app for app in apps if app.get("static_dir")]
    assert served
    for app in served:
        source = os.path.join(app["source"]["path"], app["static_dir"], "hello.txt")
        with open(source, encoding="utf-8") as handle:
            expected = handle.read()
        probe = uuid.uuid4().hex
        status, headers, body = _get(host, "/static/hello.txt?probe=%s" % probe, app)
        assert status == 200
        assert body == expected
        assert "max-age" in headers.get("cache-control", "")
        # gunicorn logs every request it serves; this one never reached it.
        assert probe not in host.check_output("journalctl -u %s.service --no-pager -n 500", app["name"])


def test_check_mode_on_the_converged_host_changes_nothing():
    check_run_changes_nothing()
