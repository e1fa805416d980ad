# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/doctor.yml on a live host: nothing to report on the converged stack, with changed=0, also in check
mode; then each fault on its own, under light load, must give exactly its finding and nothing else, and is
undone before the next. Each case prints ``DOCTOR RESULT fault=<fault> findings=<app>:<id>,...``.

The tests run in file order (a module-scoped stack): healthy first, the faults, healthy again at the end with a
window that starts after the last fault was undone.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from conftest import Load, recap, run_playbook, succeeded, unit_property, why_failed

DEMO, API = "demo", "api"
SOCKET = "/run/flaskops/demo.sock"
CERTIFICATE = "/etc/ssl/flaskops/api.localhost.crt"
KEY = "/etc/ssl/flaskops/api.localhost.key"
# Light load: 10 requests/s on 2 connections to the demo app, each 1 ms of CPU and 10 ms waiting.
LIGHT = ("--connections", "2", "--rate", "10", "--mix", "io=1", "--path", "io=/io?cpu_ms=1&wait_ms=10",
         "--host-header", "localhost", "--timeout", "60")  # fmt: skip
START = time.time()


class Examined:
    """One doctor.yml run: its findings (from the JSON report) as ``<app>:<id>``."""

    def __init__(self, run: subprocess.CompletedProcess[str], report: dict[str, Any], host: str) -> None:
        self.run, self.report = run, report
        self.findings = report["hosts"][host]["findings"]
        self.ids = sorted("%s:%s" % (f["app"], f["id"]) for f in self.findings)

    def text(self) -> str:
        return json.dumps(self.findings, indent=1)[:4000]


def examine(host: Any, tmp_path: Any, since: float | None = None, *args: str) -> Examined:
    """doctor.yml over the logs since ``since`` (epoch; the default window otherwise): it must succeed and
    change nothing."""
    report = tmp_path / "doctor.json"
    # The logs from the fault's start on: a window back from when the module runs would start later.
    window = ["-e", "flask_stack_doctor_since=%.3f" % since] if since else []
    run = run_playbook("flaskops.stack.doctor", "-e", f"flask_stack_doctor_report={report}", *window, *args)
    assert succeeded(run), why_failed(run)
    counts = recap(run.stdout)
    assert counts and all(c["changed"] == 0 for c in counts.values()), counts
    return Examined(run, json.loads(report.read_text(encoding="utf-8")), host.backend.get_hostname())


def result(report: Any, fault: str, examined: Examined) -> None:
    report(f"DOCTOR RESULT fault={fault} findings={','.join(examined.ids) or 'none'}")


def wait_until(check: Any, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting until " + what
        time.sleep(0.5)


def serves(url: str) -> bool:
    request = urllib.request.Request(url + "/healthz", headers={"Host": "localhost"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except (OSError, urllib.error.HTTPError):
        return False


def get(url: str, path: str, timeout: float) -> int:
    request = urllib.request.Request(url + path, headers={"Host": "localhost"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def light_load(nginx_url: str) -> Any:
    with Load(nginx_url, *LIGHT) as load:
        yield load


def test_a_healthy_host_has_no_findings_and_the_play_changes_nothing(host, tmp_path, report):
    examined = examine(host, tmp_path)
    result(report, "none", examined)
    assert examined.ids == [], examined.text()
    assert examined.report["window_s"] == 3600
    assert "no findings" in examined.run.stdout
    checked = examine(host, tmp_path, None, "--check")
    result(report, "none_check_mode", checked)
    assert checked.ids == [], checked.text()


def test_socket_mode_0600(host, tmp_path, report, light_load):
    since = time.time()
    host.check_output("chmod 0600 %s", SOCKET)
    try:
        time.sleep(3)  # nginx meets it under the load
        examined = examine(host, tmp_path, since)
    finally:
        host.check_output("chmod 0660 %s", SOCKET)
    result(report, "socket_mode_0600", examined)
    assert examined.ids == ["demo:socket-permissions"], examined.text()
    evidence = examined.findings[0]["evidence"]
    assert "mode 0600" in evidence and "Permission denied" in evidence, evidence


def test_service_stopped(host, tmp_path, report, nginx_url, light_load):
    # Stopping the service alone leaves its socket listening, and the next request starts it again (socket
    # activation): an app is stopped with its socket unit.
    since = time.time()
    host.check_output("systemctl stop demo.socket demo.service")
    try:
        time.sleep(3)
        examined = examine(host, tmp_path, since)
    finally:
        host.check_output("systemctl start demo.socket demo.service")
    wait_until(lambda: serves(nginx_url), what="demo serves again")
    result(report, "service_stopped", examined)
    assert examined.ids == ["demo:service-down"], examined.text()


def test_a_worker_past_memory_max(host, tmp_path, report, nginx_url, light_load):
    limit_mb = int(unit_property(host, "demo.service", "MemoryMax")) // (1024 * 1024)
    since = time.time()
    status = get(nginx_url, f"/alloc?mb={limit_mb + 64}", timeout=60)
    assert status == 502, status
    examined = examine(host, tmp_path, since)
    result(report, "worker_past_memory_max", examined)
    assert examined.ids == ["demo:oom-kill"], examined.text()
    assert f"MemoryMax={limit_mb}M" in examined.findings[0]["evidence"], examined.text()


def test_an_endpoint_slower_than_timeout(host, tmp_path, report, nginx_url, plans, light_load):
    timeout = plans[DEMO]["timeout"]
    read_timeout = plans[DEMO]["nginx"]["proxy_read_timeout"]
    since = time.time()
    # gthread workers keep serving a request past gunicorn's timeout (their main loop still heartbeats);
    # nginx gives up at proxy_read_timeout and answers 504.
    status = get(nginx_url, f"/sleep?s={read_timeout + 5}", timeout=read_timeout + 30)
    assert status == 504, (status, timeout, read_timeout)
    examined = examine(host, tmp_path, since)
    result(report, "endpoint_slower_than_timeout", examined)
    assert examined.ids == ["demo:upstream-timed-out"], examined.text()
    assert "GET /sleep" in examined.findings[0]["evidence"], examined.text()


def test_accept_queue_saturated(host, tmp_path, report, nginx_url, light_load):
    # The app's processes stopped (SIGSTOP), then more connections than the backlog opened and held by a
    # helper on the host; the doctor runs while they wait. Kept short: the master must not see its workers
    # silent past their timeout once they continue.
    backlog = int(host.check_output("ss -xlnH | awk '$5 == \"%s\" {print $4}'" % SOCKET))
    helper = (
        "import os, resource, socket, sys, time\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
        "held = []\n"
        "for _ in range(%d):\n"
        "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.setblocking(False)\n"
        "    try:\n"
        "        s.connect(%r)\n"
        "    except BlockingIOError:\n"
        "        s.close(); break\n"
        "    held.append(s)\n"
        "open('/run/flaskops-queue-held', 'w').write(str(len(held)))\n"
        "time.sleep(120)\n"
    ) % (backlog + 64, SOCKET)
    host.check_output("cat > /run/flaskops-queue.py <<'EOF'\n%sEOF" % helper)
    since = time.time()
    host.check_output("systemctl kill --signal=SIGSTOP demo.service")
    try:
        host.check_output("rm -f /run/flaskops-queue-held; (python3 /run/flaskops-queue.py >/dev/null 2>&1 &)")
        wait_until(lambda: host.file("/run/flaskops-queue-held").exists, 15, "the queue is full")
        examined = examine(host, tmp_path, since)
    finally:
        host.run("pkill -f /run/flaskops-queue.py")
        host.check_output("systemctl kill --signal=SIGCONT demo.service")
    wait_until(lambda: serves(nginx_url), what="demo serves again")
    result(report, "accept_queue_saturated", examined)
    assert examined.ids == ["demo:accept-queue"], examined.text()
    assert examined.findings[0]["severity"] == "error", examined.text()


def test_certificate_expiring_in_5_days(host, tmp_path, report, light_load):
    since = time.time()
    host.check_output("cp -p %s %s.doctor", CERTIFICATE, CERTIFICATE)
    try:
        host.check_output("openssl req -x509 -new -key %s -days 5 -subj /CN=api.localhost -out %s", KEY, CERTIFICATE)
        examined = examine(host, tmp_path, since)
    finally:
        host.check_output("mv %s.doctor %s", CERTIFICATE, CERTIFICATE)
    result(report, "certificate_expires_in_5_days", examined)
    assert examined.ids == ["api:certificate-expiry"], examined.text()
    assert examined.findings[0]["severity"] == "error", examined.text()
    assert re.search(r"in (4\.[5-9]|5\.0) days", examined.findings[0]["evidence"]), examined.text()


def test_cpu_limit_changed_under_the_running_plan(host, tmp_path, report, light_load):
    container = host.backend.get_hostname()
    since = time.time()
    subprocess.run(["podman", "update", "--cpus=1", container], check=True, capture_output=True)
    try:
        examined = examine(host, tmp_path, since)
    finally:
        subprocess.run(["podman", "update", "--cpus=2", container], check=True, capture_output=True)
    result(report, "cpu_limit_changed", examined)
    assert examined.ids == ["api:plan-drift", "demo:plan-drift"], examined.text()
    for finding in examined.findings:
        assert "(plan " in finding["evidence"], finding
        assert re.search(r"today's facts: 1(\.0+)? CPUs", finding["evidence"]), finding


def test_healthy_again_once_every_fault_is_undone(host, tmp_path, report):
    since = time.time()
    time.sleep(2)
    examined = examine(host, tmp_path, since)
    result(report, "undone", examined)
    assert examined.ids == [], examined.text()
