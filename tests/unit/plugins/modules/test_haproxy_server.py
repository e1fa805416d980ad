# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""flaskops.stack.haproxy_server against a stand-in for HAProxy's runtime API on a unix socket."""

from __future__ import annotations

import json
import socket
import threading
from unittest import mock

import pytest
from ansible.module_utils import _internal as module_utils_internal
from ansible.module_utils.testing import patch_module_args  # ansible-core 2.19+ (meta/runtime.yml)

from ansible_collections.flaskops.stack.plugins.modules import haproxy_server

STAT_HEADER = "# pxname,svname,qcur,scur,status,check_status,check_code,hrsp_2xx,hrsp_5xx,"
STATE_HEADER = "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight x"


class FakeRuntimeApi:
    """Answers ``show stat``, ``show servers state`` and ``set server``, one command a connection.

    ``servers`` maps (backend, server) to a dict with ``admin`` (bits), ``op`` (2 running), ``sessions``.
    A drained server's sessions fall by one at each ``show stat``; a readied one is up at once, unless
    ``stuck`` holds its sessions (drain) or ``down`` keeps its checks failing (ready); ``check`` is the
    last check's status (default L7OK)."""

    def __init__(self, path, servers):
        self.path, self.servers, self.commands = str(path), servers, []
        serve(self.path, self.commands, self.answer)

    def status(self, srv):
        if srv["admin"] & 0x01:
            return "MAINT"
        if srv["op"] != 2:
            return "DOWN"
        return "DRAIN" if srv["admin"] & 0x08 else "UP"

    def answer(self, command):
        if command == "show stat":
            lines = [STAT_HEADER]
            for (backend, name), srv in self.servers.items():
                if srv["admin"] & 0x08 and srv["sessions"] and not srv.get("stuck"):
                    srv["sessions"] -= 1
                check = srv.get("check", "L7OK")
                lines.append(f"{backend},{name},0,{srv['sessions']},{self.status(srv)},{check},200,10,1,")
            lines.append("front,FRONTEND,,0,OPEN,,,0,0,")
            return "\n".join(lines) + "\n\n"
        if command == "show servers state":
            rows = [f"1 {b} 1 {n} 10.0.0.1 {s['op']} {s['admin']} 1 1 0" for (b, n), s in self.servers.items()]
            return "1\n" + STATE_HEADER + "\n" + "\n".join(rows) + "\n\n"
        words = command.split()
        if words[:2] == ["set", "server"] and words[3] == "state":
            backend, name = words[2].split("/")
            srv = self.servers[(backend, name)]
            if words[4] == "drain":
                srv["admin"] = (srv["admin"] & ~0x01) | 0x08
            elif words[4] == "ready":
                srv["admin"] = 0
                srv["op"] = 0 if srv.get("down") else 2
            return "\n"
        return "Unknown command.\n"


def serve(path, commands, answer, until_eof=False):
    """A unix socket at ``path`` that answers one command a connection with ``answer(command)``,
    recording each command in ``commands``; ``until_eof``: only once the client has closed its side."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)

    def loop():
        while True:
            conn = listener.accept()[0]
            with conn, conn.makefile() as reader:
                command = (reader.read() if until_eof else reader.readline()).strip()
                commands.append(command)
                conn.sendall(answer(command).encode())

    threading.Thread(target=loop, daemon=True).start()


class FakeMasterCli:
    """HAProxy's master CLI: ``@1 <command>`` goes to the current worker; the master itself knows none
    of the runtime API's commands, and answers once the client has closed its side (HAProxy 2.6)."""

    def __init__(self, path, current):
        self.path, self.current, self.commands = str(path), current, []
        serve(self.path, self.commands, self.answer, until_eof=True)

    def answer(self, command):
        if command.startswith("@1 "):
            self.current.commands.append(command[3:])
            return self.current.answer(command[3:])
        return "Unknown command, but maybe one of the following ones is a better match:\n  show proc\n"


def run_module(args, capsys, check_mode=False):
    # No master CLI unless the test gives one (the machine running the tests may have HAProxy).
    args = {"master_socket": "/nonexistent/haproxy-master.sock", **args}
    with (
        patch_module_args({**args, "_ansible_check_mode": check_mode}),
        mock.patch.object(module_utils_internal, "is_controller", False),
        mock.patch.object(haproxy_server, "_POLL", 0.01),
        pytest.raises(SystemExit),
    ):
        haproxy_server.main()
    return json.loads(capsys.readouterr().out)


def servers(**web1):
    return {
        ("app_a", "web1"): {"admin": 0, "op": 2, "sessions": 3, **web1},
        ("app_b", "web1"): {"admin": 0, "op": 2, "sessions": 1, **web1},
        ("app_a", "web2"): {"admin": 0, "op": 2, "sessions": 5},
    }


@pytest.fixture
def api(tmp_path):
    def make(**web1):
        return FakeRuntimeApi(tmp_path / "admin.sock", servers(**web1))

    return make


def test_drain_sets_every_backend_of_the_server_and_waits_for_its_sessions(api, capsys):
    fake = api()
    result = run_module({"socket": fake.path, "server": "web1", "state": "drained", "timeout": 10}, capsys)
    assert result["changed"] is True
    assert [c for c in fake.commands if c.startswith("set")] == [
        "set server app_a/web1 state drain",
        "set server app_b/web1 state drain",
    ]
    assert {b["backend"]: b["sessions"] for b in result["backends"]} == {"app_a": 0, "app_b": 0}
    assert fake.servers[("app_a", "web2")]["admin"] == 0
    # Again: nothing to change.
    again = run_module({"socket": fake.path, "server": "web1", "state": "drained"}, capsys)
    assert again["changed"] is False


def test_drain_that_does_not_finish_fails_naming_what_is_left(api, capsys):
    fake = api(stuck=True)
    result = run_module({"socket": fake.path, "server": "web1", "state": "drained", "timeout": 1}, capsys)
    assert result["failed"] is True
    assert "server web1 still has requests after 1s of drain (app_a: 3 sessions, 0 queued" in result["msg"]


def test_ready_clears_drain_and_maintenance_and_waits_until_up(api, capsys):
    fake = api(admin=0x08)
    fake.servers[("app_b", "web1")]["admin"] = 0x01
    result = run_module({"socket": fake.path, "server": "web1", "state": "ready"}, capsys)
    assert result["changed"] is True
    assert {b["status"] for b in result["backends"]} == {"UP"}
    again = run_module({"socket": fake.path, "server": "web1", "state": "ready"}, capsys)
    assert again["changed"] is False


def test_ready_that_never_comes_up_fails_naming_the_backend_and_check(api, capsys):
    fake = api(admin=0x08, down=True)
    result = run_module({"socket": fake.path, "server": "web1", "state": "ready", "timeout": 1}, capsys)
    assert result["failed"] is True
    assert "server web1 is not up after 1s (app_a: DOWN, last check L7OK 200" in result["msg"]


@pytest.mark.parametrize("check", ["INI", "* INI", "L7STS"])
def test_up_before_a_check_passed_is_not_up(api, capsys, check):
    # Every server is UP when HAProxy starts or reloads, before its first check (INI); or UP while
    # its checks fail, before "fall" of them. Neither is a host the health checks see up.
    fake = api(admin=0x08, check=check)
    result = run_module({"socket": fake.path, "server": "web1", "state": "ready", "timeout": 1}, capsys)
    assert result["failed"] is True
    assert f"server web1 is not up after 1s (app_a: UP, last check {check} 200, app_b: UP" in result["msg"]


def test_up_with_a_check_in_progress_after_one_that_passed_is_up(api, capsys):
    fake = api(admin=0x08, check="* L7OK")
    result = run_module({"socket": fake.path, "server": "web1", "state": "ready", "timeout": 1}, capsys)
    assert result["changed"] is True and "failed" not in result


def test_check_mode_reports_the_change_and_sends_nothing(api, capsys):
    fake = api()
    result = run_module({"socket": fake.path, "server": "web1", "state": "drained"}, capsys, check_mode=True)
    assert result["changed"] is True
    assert not [c for c in fake.commands if c.startswith("set")]


def test_read_returns_the_counters_of_each_backend(api, capsys):
    fake = api()
    result = run_module({"socket": fake.path, "server": "web1", "state": "read"}, capsys)
    assert result["changed"] is False
    assert result["backends"][0] == {
        "backend": "app_a", "status": "UP", "sessions": 3, "queued": 0, "requests": 11, "errors_5xx": 1,
        "check": "L7OK 200",
    }  # fmt: skip


def test_an_unknown_server_or_no_haproxy_is_left_alone(api, capsys, tmp_path):
    fake = api()
    unknown = run_module({"socket": fake.path, "server": "web9", "state": "drained"}, capsys)
    assert (unknown["changed"], unknown["backends"]) == (False, [])
    missing = run_module({"socket": str(tmp_path / "none.sock"), "server": "web1", "state": "drained"}, capsys)
    assert (missing["changed"], missing["backends"]) == (False, [])
    assert "HAProxy does not run" in missing["msg"]


def test_commands_go_to_the_current_worker_through_the_master_cli(tmp_path, capsys):
    # After a reload an old worker (old configuration, its own server states) still answers on the
    # stats socket beside the current one: there web1 is not drained and its checks fail. The drain
    # and the ready must act on the current worker, and the ready's wait must see its checks.
    current = FakeRuntimeApi(tmp_path / "current.sock", servers())
    old = FakeRuntimeApi(tmp_path / "admin.sock", servers(op=0, check="L4TOUT"))
    master = FakeMasterCli(tmp_path / "master.sock", current)
    args = {"socket": old.path, "master_socket": master.path, "server": "web1", "timeout": 2}
    drained = run_module({**args, "state": "drained"}, capsys)
    assert drained["changed"] is True and drained["cli"] == master.path
    assert current.servers[("app_a", "web1")]["admin"] == 0x08
    ready = run_module({**args, "state": "ready"}, capsys)
    assert ready["changed"] is True and "failed" not in ready, ready
    assert current.servers[("app_a", "web1")]["admin"] == 0
    assert "set server app_a/web1 state ready" in current.commands
    assert old.commands == []
    assert all(c.startswith("@1 ") for c in master.commands)


def test_without_a_master_cli_commands_go_to_the_stats_socket(api, capsys, tmp_path):
    fake = api(admin=0x08)
    args = {"socket": fake.path, "master_socket": str(tmp_path / "none.sock"), "server": "web1"}
    result = run_module({**args, "state": "ready"}, capsys)
    assert result["changed"] is True and result["cli"] == fake.path
    assert "set server app_a/web1 state ready" in fake.commands
