# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The doctor's rules: each fault gives exactly its finding, with its traces folded in as evidence."""

from __future__ import annotations

import copy
import pathlib
import re

import pytest

from ansible_collections.flaskops.stack.plugins.module_utils import doctor

APP = {
    "name": "shop",
    "service": "shop.service",
    "socket_unit": "shop.socket",
    "socket": "/run/flaskops/shop.sock",
    "socket_mode": "0660",
    "socket_owner": "root",
    "socket_group": "www-data",
    "nginx_user": "www-data",
    "expected": {"worker_class": "gthread", "workers": 3, "threads": 8, "timeout": 30, "backlog": 2048},
    "memory": {"memory_mb": 200, "MemoryHigh": 576, "MemoryMax": 640},
    "facts": "the plan of today's facts: 2 CPUs (cgroup), 1536 MiB (cgroup)",
}

HEALTHY = {
    "service": {"ActiveState": "active", "SubState": "running", "Result": "success", "NRestarts": "0"},
    "socket_unit": {"ActiveState": "active", "SubState": "running"},
    "socket_file": {"mode": "0660", "owner": "root", "group": "www-data"},
    "connect": "",
    "accept_queue": {"samples": [0, 0, 1, 0, 0], "backlog": 2048, "seconds": 1.0},
    "journal": [
        "[2026-12-05 04:00:00 +0000] [10] [INFO] Booting worker with pid: 11",
        "[2026-12-05 04:00:01 +0000] [10] [INFO] Worker (pid:9) was sent SIGTERM!",
    ],
    "nginx_errors": [],
    "access": {"requests": 1000, "errors": 2, "paths": {"GET /x": 2}},
    "memory_mb": 150,
    "memory_source": "cgroup v1 memory.stat total_rss",
    "oom_kills": 0,
    "running_settings": {"worker_class": "gthread", "workers": 3, "threads": 8, "timeout": 30, "backlog": 2048},
    "running_workers": 3,
    "workers": [3, 3, 3, 3, 3],
    "unit_memory": {"MemoryHigh": 576, "MemoryMax": 640},
    "live_release": "r2",
    "current_release": "r2",
    "disks": [{"path": "/srv/shop", "what": "releases", "size_mb": 10000, "free_mb": 5000, "need_mb": 100}],
    "certificates": [{"path": "/etc/ssl/shop.crt", "not_after": "Mar  5 12:00:00 2027 GMT", "days": 90.0}],
    "drained": False,
    "lb": [{"lb": "lb1", "backend": "flaskops_shop", "status": "UP", "check": "L7OK 200"}],
}


def nginx_line(error, request="GET /orders HTTP/1.1", level="error"):
    return (
        '2026/12/05 04:10:00 [%s] 20#20: *7 %s, client: 127.0.0.1, server: shop, request: "%s", '
        'upstream: "http://unix:/run/flaskops/shop.sock:/orders", host: "shop"' % (level, error, request)
    )


def diagnose(**changes):
    observed = copy.deepcopy(HEALTHY)
    observed.update(changes)
    return doctor.diagnose(APP, observed)


def ids(findings):
    return sorted(f["id"] for f in findings)


def test_a_healthy_app_has_no_findings():
    assert diagnose() == []


def test_a_stopped_service_is_one_finding_with_nginx_refusals_and_5xx_as_its_evidence():
    found = diagnose(
        service={"ActiveState": "inactive", "SubState": "dead", "Result": "success", "NRestarts": "0"},
        socket_unit={"ActiveState": "inactive", "SubState": "dead"},
        connect=None,
        nginx_errors=[nginx_line("connect() to unix:/run/flaskops/shop.sock failed (111: Connection refused) "
                                 "while connecting to upstream")] * 4
        + [nginx_line("recv() failed (104: Connection reset by peer) while reading response header from upstream")],
        access={"requests": 100, "errors": 40, "paths": {"GET /orders": 40}},
    )  # fmt: skip
    assert ids(found) == ["service-down"]
    assert found[0]["severity"] == "error"
    assert found[0]["symptoms"] == ["http-5xx", "upstream-refused", "upstream-reset"]
    assert "shop.service is inactive" in found[0]["evidence"] and "nginx: 4 x" in found[0]["evidence"]
    assert "40 of 100" in found[0]["evidence"]


def test_an_inactive_service_behind_a_listening_socket_is_fine_it_starts_on_the_next_connection():
    assert diagnose(service={"ActiveState": "inactive", "SubState": "dead", "NRestarts": "0"}, connect=None) == []


def test_a_socket_of_the_wrong_mode_is_one_finding_with_the_permission_errors():
    found = diagnose(
        socket_file={"mode": "0600", "owner": "root", "group": "www-data"},
        connect="Permission denied",
        nginx_errors=[nginx_line("connect() to unix:/run/flaskops/shop.sock failed (13: Permission denied) while "
                                 "connecting to upstream", level="crit")],
        access={"requests": 50, "errors": 10, "paths": {"GET /orders": 10}},
    )  # fmt: skip
    assert ids(found) == ["socket-permissions"]
    assert "mode 0600" in found[0]["evidence"] and "planned 0660" in found[0]["evidence"]
    assert "chmod 0660 /run/flaskops/shop.sock" in found[0]["fix"]
    assert found[0]["symptoms"] == ["http-5xx", "upstream-permission-denied"]


def test_a_saturated_accept_queue_is_an_error_and_explains_the_full_queue_errors():
    found = diagnose(
        accept_queue={"samples": [2048, 2048, 2047], "backlog": 2048, "seconds": 1.0},
        connect="Resource temporarily unavailable",
        nginx_errors=[nginx_line("connect() to unix:/run/flaskops/shop.sock failed (11: Resource temporarily "
                                 "unavailable) while connecting to upstream")] * 3,
    )  # fmt: skip
    assert ids(found) == ["accept-queue"]
    assert found[0]["severity"] == "error"
    assert "2047 connections wait" in found[0]["evidence"]


def test_a_queue_that_empties_between_samples_is_no_finding():
    assert diagnose(accept_queue={"samples": [900, 0, 700], "backlog": 2048, "seconds": 1.0}) == []


def test_a_partly_filled_queue_held_over_the_samples_is_a_warning():
    found = diagnose(accept_queue={"samples": [400, 420, 410], "backlog": 2048, "seconds": 1.0})
    assert [(f["id"], f["severity"]) for f in found] == [("accept-queue", "warning")]


def test_requests_past_the_read_timeout_are_upstream_timed_out_with_their_paths():
    line = nginx_line("upstream timed out (110: Connection timed out) while reading response header from upstream",
                      request="GET /report?year=2026 HTTP/1.1")  # fmt: skip
    found = diagnose(nginx_errors=[line, line], access={"requests": 30, "errors": 2, "paths": {"GET /report": 2}})
    assert ids(found) == ["upstream-timed-out"]
    assert "GET /report (2)" in found[0]["evidence"]


def test_worker_timeouts_explain_the_closed_connections():
    found = diagnose(
        journal=["[10] [CRITICAL] WORKER TIMEOUT (pid:12)", "[10] [WARNING] Worker (pid:12) was sent SIGABRT!"],
        nginx_errors=[nginx_line("upstream prematurely closed connection while reading response header from "
                                 "upstream")],
    )  # fmt: skip
    assert ids(found) == ["worker-timeout"]
    assert found[0]["symptoms"] == ["upstream-closed"]


def test_a_worker_killed_in_a_cgroup_that_counted_an_oom_kill_is_an_oom_kill():
    found = diagnose(
        journal=["[10] [ERROR] Worker (pid:12) was sent SIGKILL! Perhaps out of memory?"],
        oom_kills=1,
        nginx_errors=[nginx_line("upstream prematurely closed connection while reading response header from "
                                 "upstream")],
    )  # fmt: skip
    assert ids(found) == ["oom-kill"]
    assert "MemoryMax=640M" in found[0]["evidence"] and "oom_kill 1" in found[0]["evidence"]


def test_a_worker_killed_without_an_oom_kill_counted_crashed():
    found = diagnose(journal=["[10] [ERROR] Worker (pid:12) was sent SIGKILL! Perhaps out of memory?"])
    assert ids(found) == ["worker-crashed"]
    found = diagnose(journal=["[10] [ERROR] Worker (pid:13) exited with code 1."])
    assert ids(found) == ["worker-crashed"] and "exit code 1 (1)" in found[0]["evidence"]


def test_a_boot_error_explains_the_failed_service():
    found = diagnose(
        service={"ActiveState": "failed", "SubState": "failed", "Result": "exit-code", "NRestarts": "5"},
        connect=None,
        journal=["[10] [ERROR] Exception in worker process", "[10] [ERROR] Worker (pid:12) exited with code 3.",
                 "[10] [ERROR] Reason: Worker failed to boot."],
    )  # fmt: skip
    assert ids(found) == ["boot-error"]
    assert set(found[0]["symptoms"]) == {"service-down", "service-restarts"}


def test_memory_at_memory_high_is_an_error_and_above_the_plan_a_warning():
    assert [(f["id"], f["severity"]) for f in diagnose(memory_mb=600)] == [("memory-high", "error")]
    assert [(f["id"], f["severity"]) for f in diagnose(memory_mb=260)] == [("memory-over-plan", "warning")]
    # During a reload two generations run: more memory is expected.
    assert diagnose(memory_mb=260, workers=[6, 6, 5, 3, 3]) == []


def test_a_running_configuration_other_than_todays_plan_is_drift_with_both_values():
    running = dict(HEALTHY["running_settings"], workers=5)
    found = diagnose(running_settings=running, running_workers=5, workers=[5] * 5)
    assert ids(found) == ["plan-drift"]
    assert "workers 5 (plan 3)" in found[0]["evidence"] and "2 CPUs" in found[0]["evidence"]
    found = diagnose(unit_memory={"MemoryHigh": 576, "MemoryMax": 1024})
    assert ids(found) == ["plan-drift"] and "MemoryMax=1024M (plan 640M)" in found[0]["evidence"]


def test_a_master_on_another_release_than_current_is_release_drift():
    found = diagnose(live_release="r1")
    assert ids(found) == ["release-drift"] and "runs release r1 but current" in found[0]["evidence"]


def test_workers_other_than_configured_in_every_sample_is_a_finding():
    assert ids(diagnose(workers=[5, 5, 5, 5, 5])) == ["worker-count"]
    assert ids(diagnose(workers=[2, 2, 2, 2, 2])) == ["worker-count"]
    # A worker recycled (max_requests) between two samples is not.
    assert diagnose(workers=[3, 2, 3, 3, 3]) == []


@pytest.mark.parametrize(
    ("days", "severity"), [(5.0, "error"), (-1.0, "error"), (20.0, "warning"), (21.5, None)]
)  # fmt: skip
def test_certificates_expiring_within_21_days(days, severity):
    cert = {"path": "/etc/ssl/shop.crt", "not_after": "Dec 10 12:00:00 2026 GMT", "days": days}
    found = diagnose(certificates=[cert])
    assert [(f["id"], f["severity"]) for f in found] == ([("certificate-expiry", severity)] if severity else [])


def test_disk_below_the_room_of_a_deploy_is_an_error_and_nearly_full_a_warning():
    low = {"path": "/srv/shop", "what": "releases", "size_mb": 10000, "free_mb": 80, "need_mb": 100}
    assert [(f["id"], f["severity"]) for f in diagnose(disks=[low])] == [("disk-space", "error")]
    full = dict(low, free_mb=400, inodes_used_share=0.1)
    assert [(f["id"], f["severity"]) for f in diagnose(disks=[full])] == [("disk-space", "warning")]


def test_a_drained_host_explains_what_the_load_balancer_sees():
    found = diagnose(
        drained=True,
        drain_flag="/var/lib/flaskops-nginx/drained",
        lb=[{"lb": "lb1", "backend": "flaskops_shop", "status": "DOWN", "check": "L7STS 503"}],
    )
    assert ids(found) == ["host-drained"] and found[0]["symptoms"] == ["lb-down"]
    found = diagnose(lb=[{"lb": "lb1", "backend": "flaskops_shop", "status": "DRAIN", "check": "L7OK 200"}])
    assert [(f["id"], f["severity"]) for f in found] == [("lb-drained", "warning")]


def test_5xx_of_the_app_itself_are_reported_with_their_paths():
    found = diagnose(access={"requests": 200, "errors": 30, "paths": {"POST /pay": 25, "GET /x": 5}})
    assert [(f["id"], f["severity"]) for f in found] == [("http-5xx", "error")]
    assert "POST /pay (25), GET /x (5)" in found[0]["evidence"]


def test_flask_exceptions_explain_the_5xx():
    found = diagnose(
        journal=["Exception on /pay [POST]"] * 6,
        access={"requests": 200, "errors": 6, "paths": {"POST /pay": 6}},
    )
    assert ids(found) == ["app-exceptions"] and found[0]["symptoms"] == ["http-5xx"]


def test_every_finding_id_the_rules_can_give_is_documented_in_the_readme():
    root = pathlib.Path(__file__).resolve().parents[4]
    readme = (root / "README.md").read_text(encoding="utf-8")
    source = (root / "plugins" / "module_utils" / "doctor.py").read_text(encoding="utf-8")
    given = set(re.findall(r'Finding\(\s*"([a-z0-9-]+)"', source))
    given |= {cause[0] for cause in doctor.NGINX_UPSTREAM_ERRORS} | {"http-5xx"}
    missing = sorted(ident for ident in given if "`%s`" % ident not in readme)
    assert not missing, missing
