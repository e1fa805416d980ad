"""The converged stack, as a user sees it: services, socket, plan, nginx, HTTP, and a clean check run.

Expected values come from the instance's own facts through the collection's filters and from the
scenario's inventory (flask_stack_apps), never from literals: the fixtures app, facts and plan are in
molecule/conftest.py. Shared by the default, debian13 and constrained scenarios.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import urllib.request
import uuid

from conftest import recap, run_playbook

from ansible_collections.flaskops.stack.plugins.filter.nginx_tuning import nginx_tuning

JOURNAL_UNITS = ["demo.service", "demo.socket", "nginx.service"]
PLAN_KEYS = [
    "worker_class",
    "workers",
    "threads",
    "worker_connections",
    "max_requests",
    "max_requests_jitter",
    "timeout",
    "graceful_timeout",
    "keepalive",
    "backlog",
]


def test_services_active_and_enabled(host, app):
    for unit in (f"{app['name']}.socket", f"{app['name']}.service", "nginx.service"):
        service = host.service(unit)
        assert service.is_running, unit
        assert service.is_enabled, unit


def test_socket_listens_with_mode_and_group(host, app):
    path = f"/run/flaskops/{app['name']}.sock"
    sock = host.file(path)
    assert sock.is_socket
    assert sock.mode == 0o660
    assert sock.user == "root"
    assert sock.group == "www-data"
    assert host.socket(f"unix://{path}").is_listening


def test_service_user_cannot_log_in(host, app):
    user = host.user(app["name"])
    assert user.exists
    assert user.shell == "/usr/sbin/nologin"


def test_master_runs_the_planned_workers(host, app, plan):
    master = host.check_output("systemctl show -p MainPID --value %s.service", f"{app['name']}")
    workers = host.check_output("pgrep -P %s", master).split()
    assert len(workers) == plan["workers"], plan["explain"]


def test_gunicorn_conf_holds_the_plan(host, app, plan):
    script = (
        "import json, runpy; ns = runpy.run_path('/etc/flaskops/%s/gunicorn.conf.py'); "
        "print(json.dumps({k: ns.get(k) for k in %r}))" % (app["name"], PLAN_KEYS)
    )
    conf = json.loads(host.check_output("/srv/%s/current/venv/bin/python -c %s", app["name"], script))
    assert conf == {key: plan[key] for key in PLAN_KEYS}


def test_unit_carries_the_plan_limits(host, app, plan):
    shown = host.check_output(
        "systemctl show -p TimeoutStopUSec -p MemoryHigh -p MemoryMax --value %s.service", app["name"]
    ).split()
    stop, high, top = shown
    assert stop == "%ds" % plan["systemd"]["TimeoutStopSec"] or stop == "%dmin %ds" % divmod(
        plan["systemd"]["TimeoutStopSec"], 60
    )
    assert int(high) == int(plan["systemd"]["MemoryHigh"].rstrip("M")) * 1024 * 1024
    assert int(top) == int(plan["systemd"]["MemoryMax"].rstrip("M")) * 1024 * 1024


def test_nginx_workers_are_the_effective_cpus(host, facts, plan):
    expected = nginx_tuning(facts, plans=[plan])["worker_processes"]
    assert expected == math.ceil(plan["cpus"])
    config = host.check_output("nginx -T 2>/dev/null")
    assert re.search(r"^\s*worker_processes\s+%d;" % expected, config, re.M)
    master = host.file("/run/nginx.pid").content_string.strip()
    assert len(host.check_output("pgrep -P %s", master).split()) == expected


def _get(host, path):
    """curl through nginx inside the instance: (status, headers, body)."""
    out = host.run("curl -sS -D - http://127.0.0.1%s", path)
    assert out.rc == 0, out.stderr
    head, _sep, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
    status = int(head.split()[1])
    fields = (line.partition(":") for line in head.splitlines()[1:])
    headers = {name.strip().lower(): value.strip() for name, _colon, value in fields}
    return status, headers, body


def test_page_and_health_through_nginx(host, app):
    status, headers, body = _get(host, "/")
    assert status == 200
    assert "flaskops.stack demo" in body
    assert headers["server"] == "nginx"  # no version
    status, _headers, body = _get(host, "/healthz")
    assert status == 200
    health = json.loads(body)
    release = host.file(f"/srv/{app['name']}/current").linked_to.rsplit("/", 1)[1]
    assert health["status"] == "ok"
    assert health["release"] == release


def test_published_port_reaches_nginx_from_the_controller(host):
    port = subprocess.run(["podman", "port", host.backend.name, "80"], capture_output=True, text=True, check=True)
    address = port.stdout.split()[0]
    with urllib.request.urlopen("http://%s/healthz" % address, timeout=10) as response:
        assert response.status == 200
        assert json.load(response)["status"] == "ok"


def test_static_file_is_served_by_nginx(host, app):
    source = os.path.join(app["source"]["path"], app["static_dir"], "hello.txt")
    with open(source, encoding="utf-8") as handle:
        expected = handle.read()
    probe = uuid.uuid4().hex
    status, headers, body = _get(host, "/static/hello.txt?probe=%s" % probe)
    assert status == 200
    assert body == expected
    assert "max-age" in headers.get("cache-control", "")
    # gunicorn logs every request it serves; this one never reached it.
    assert probe not in host.check_output("journalctl -u %s.service --no-pager -n 500", app["name"])


def test_check_mode_on_the_converged_host_changes_nothing():
    run = run_playbook(os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], "converge.yml"), "--check", "--diff")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    counts = recap(run.stdout)
    assert counts, run.stdout[-2000:]
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), run.stdout[-4000:]
