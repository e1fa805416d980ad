# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""flaskops.stack.doctor on the hybrid host of the measure tests (fixtures/measure/hybrid: a gunicorn master,
PID 100, with three workers, its release r1 and the unit's cgroups), with a listening socket, a cgroup v1
memory hierarchy, logs and a certificate added, and systemctl, ss, journalctl and openssl answered by the
test."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import time
from unittest import mock

import pytest
from ansible.module_utils import _internal as module_utils_internal
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args  # ansible-core 2.19+ (meta/runtime.yml)

from ansible_collections.flaskops.stack.plugins.modules import doctor

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "measure", "hybrid")
USER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name
NOW = time.time()
SERVICE = (
    "ActiveState=active\nSubState=running\nResult=success\nNRestarts=0\nMainPID=100\n"
    "ControlGroup=/system.slice/shop.service\nMemoryHigh=603979776\nMemoryMax=671088640\n"
)
SOCKET_UNIT = "ActiveState=active\nSubState=running\n"
CERT_END = time.strftime("%b %d %H:%M:%S %Y GMT", time.gmtime(NOW + 90 * 86400))


def nginx_time(epoch):
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(epoch))


def access_line(epoch, status=200, path="/orders"):
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch))
    return '10.0.0.7 - - [%s] "GET %s HTTP/1.1" %d 512 "-" "curl" rt=0.052 urt=0.050 host=shop\n' % (
        stamp,
        path,
        status,
    )


class Host:
    """A copy of the hybrid tree, with the master's working directory, ``current``, a socket, the memory cgroup
    and the logs added."""

    def __init__(self, tmp_path):
        self.root = str(tmp_path / "h")
        shutil.copytree(FIXTURES, self.root)
        os.symlink("/srv/shop/releases/r1", self.path("proc/100/cwd"))
        os.rename(
            self.path("srv/shop/releases/r1/gunicorn.conf.py.txt"), self.path("srv/shop/releases/r1/gunicorn.conf.py")
        )
        os.symlink("releases/r1", self.path("srv/shop/current"))
        os.makedirs(self.path("srv/shop/releases/r1/venv/bin"))
        self.write("srv/shop/releases/r1/venv/bin/python", "x" * 4096)
        os.makedirs(self.path("var/lib/flaskops/shop"))
        self.write("proc/self/mountinfo", "36 25 0:33 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n", "a")
        memory = "sys/fs/cgroup/memory/system.slice/shop.service/"
        self.write(memory + "cgroup.procs", "100\n201\n202\n203\n")
        self.write(memory + "memory.stat", "cache 1048576\nrss 130023424\ntotal_rss 157286400\n")
        self.write(memory + "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
        self.write("var/log/nginx/flaskops-shop.error.log", "")
        self.write("var/log/nginx/flaskops-shop.access.log", access_line(NOW - 60) * 50)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket.bind(self.path("run/shop.sock"))
        self.socket.listen(16)
        os.chmod(self.path("run/shop.sock"), 0o660)
        self.journal, self.service, self.queue = [], SERVICE, 0
        self.ran = []

    def path(self, relative):
        os.makedirs(os.path.dirname(os.path.join(self.root, relative)), exist_ok=True)
        return os.path.join(self.root, relative)

    def write(self, relative, text, mode="w"):
        with open(self.path(relative), mode, encoding="utf-8") as handle:
            handle.write(text)

    def run_command(self, argv):
        self.ran.append(argv)
        tool = os.path.basename(argv[0])
        if tool == "systemctl":
            return 0, self.service if argv[2] == "shop.service" else SOCKET_UNIT, ""
        if tool == "ss":
            return 0, "u_str LISTEN %d 2048 /run/shop.sock 4242 * 0\n" % self.queue, ""
        if tool == "journalctl":
            return 0, "".join(json.dumps({"MESSAGE": m}) + "\n" for m in self.journal), ""
        if tool == "openssl":
            return 0, "notAfter=%s\n" % CERT_END, ""
        raise AssertionError(argv)


ARGS = {
    "app": "shop",
    "socket": "/run/shop.sock",
    "socket_owner": USER,
    "socket_group": GROUP,
    "nginx_user": USER,
    "home": "/srv/shop",
    "state_dir": "/var/lib/flaskops/shop",
    "expected": {"worker_class": "gthread", "workers": 3, "threads": 4, "timeout": 30, "backlog": 2048},
    "memory": {"memory_mb": 200, "MemoryHigh": "576M", "MemoryMax": "640M"},
    "certificates": ["/etc/ssl/shop.crt"],
    "samples": 2,
    "window": 600,
}


def run_module(host, capsys, **changes):
    with (
        patch_module_args(dict(ARGS, **changes)),
        mock.patch.object(module_utils_internal, "is_controller", False),
        mock.patch.object(AnsibleModule, "get_bin_path", lambda _self, name, *a, **k: "/usr/bin/" + name),
        mock.patch.object(AnsibleModule, "run_command", lambda _module, argv, **_kwargs: host.run_command(argv)),
        mock.patch.object(doctor, "ROOT", host.root),
        mock.patch.object(doctor.time, "sleep", lambda _s: None),
        pytest.raises(SystemExit),
    ):
        doctor.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def host(tmp_path):
    made = Host(tmp_path)
    yield made
    made.socket.close()


def test_the_healthy_host_has_no_findings_and_nothing_changed(host, capsys):
    started = time.time()
    result = run_module(host, capsys)
    assert result["changed"] is False
    assert result["findings"] == [], result
    observed = result["observed"]
    assert observed["memory_mb"] == 150 and observed["memory_source"] == "cgroup v1 memory.stat total_rss"
    assert observed["running_settings"]["threads"] == 4 and observed["running_workers"] == 3
    assert observed["live_release"] == observed["current_release"] == "r1"
    assert observed["socket_file"] == {"mode": "0660", "owner": USER, "group": GROUP}
    assert observed["accept_queue"]["samples"] == [0, 0]
    assert observed["access"] == {"requests": 50, "errors": 0, "paths": {}}
    assert observed["unit_memory"] == {"MemoryHigh": 576, "MemoryMax": 640}
    assert observed["certificates"][0]["days"] == pytest.approx(90, abs=0.1)
    # The journal is read from the window's start; the connection made as nginx's user (here the test's).
    journal = next(argv for argv in host.ran if argv[0].endswith("journalctl"))
    assert started - 601 <= int(journal[journal.index("--since") + 1].lstrip("@")) <= time.time() - 599, journal
    assert observed["connect"] == ("" if os.geteuid() == 0 else None)


def test_only_the_log_lines_of_the_window_count(host, capsys):
    old = nginx_time(NOW - 7200)
    new = nginx_time(NOW - 30)
    refused = (
        "[error] 9#9: *1 connect() to unix:/run/shop.sock failed (111: Connection refused) while connecting to "
        'upstream, client: 127.0.0.1, server: shop, request: "GET /orders HTTP/1.1", upstream: "http://unix:/x"\n'
    )
    host.write("var/log/nginx/flaskops-shop.error.log", "%s %s%s %s" % (old, refused, new, refused) * 1)
    host.write("var/log/nginx/flaskops-shop.access.log", access_line(NOW - 7200, 502) * 20 + access_line(NOW - 20))
    result = run_module(host, capsys)
    assert [(f["id"], f["severity"]) for f in result["findings"]] == [("upstream-refused", "warning")]
    assert "nginx: 1 x" in result["findings"][0]["evidence"]
    assert result["observed"]["access"]["requests"] == 1
    # since, instead of the window, reaches back to the old lines too.
    result = run_module(host, capsys, since=NOW - 7300)
    assert "nginx: 2 x" in result["findings"][0]["evidence"], result["findings"]
    assert result["observed"]["access"]["requests"] == 21


def test_an_oom_kill_counted_by_the_v1_cgroup(host, capsys):
    host.journal = ["Worker (pid:202) was sent SIGKILL! Perhaps out of memory?"]
    host.write(
        "sys/fs/cgroup/memory/system.slice/shop.service/memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    )
    result = run_module(host, capsys)
    assert [f["id"] for f in result["findings"]] == ["oom-kill"]
    assert "oom_kill 2" in result["findings"][0]["evidence"] and "MemoryMax=640M" in result["findings"][0]["evidence"]


def test_a_socket_of_the_wrong_mode(host, capsys):
    os.chmod(host.path("run/shop.sock"), 0o600)
    result = run_module(host, capsys)
    assert [f["id"] for f in result["findings"]] == ["socket-permissions"]
    assert "mode 0600" in result["findings"][0]["evidence"]


def test_a_drifted_plan_and_release(host, capsys):
    os.makedirs(host.path("srv/shop/releases/r2/venv"))
    os.remove(host.path("srv/shop/current"))
    os.symlink("releases/r2", host.path("srv/shop/current"))
    result = run_module(host, capsys, expected=dict(ARGS["expected"], workers=5), facts="4 CPUs")
    assert sorted(f["id"] for f in result["findings"]) == ["plan-drift", "release-drift"]


def test_a_stopped_service_is_not_connected_to(host, capsys):
    host.service = host.service.replace("ActiveState=active", "ActiveState=failed").replace("MainPID=100", "MainPID=0")
    result = run_module(host, capsys)
    assert [f["id"] for f in result["findings"]] == ["service-down"]
    assert result["observed"]["connect"] is None


def test_bad_input_names_the_app_and_the_field(host, capsys):
    result = run_module(host, capsys, socket_mode="660")
    assert result["failed"] and "app shop: socket_mode" in result["msg"]
    result = run_module(host, capsys, expected={"workerz": 3})
    assert result["failed"] and "app shop: expected: unknown settings workerz" in result["msg"]


@pytest.mark.parametrize(
    ("value", "mib"),
    [("671088640", 640), ("640M", 640), ("1G", 1024), ("524288K", 512), ("infinity", None), ("", None)],
)
def test_systemd_sizes(value, mib):
    assert doctor.systemd_size_mib(value) == mib
