# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The readiness check: what counts as ready, reading workers from /proc, health through a unix socket."""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import threading
import typing

import pytest

from ansible_collections.flaskops.stack.plugins.module_utils import readiness


def state(master=100, workers=(201, 202), status=200, release="r2"):
    return {"master": master, "workers": sorted(workers), "status": status, "release": release}


@pytest.mark.parametrize(
    ("seen", "expect", "wanted"),
    [
        (state(), {}, []),
        (state(), {"master": 100, "old_workers": [101, 102], "workers": 2, "release": "r2"}, []),
        (state(release=None), {"release": "r2"}, []),  # an app that does not report its release
        (state(master=0, workers=(), status=0), {}, ["the service does not run", "the health path answers nothing"]),
        (state(master=300), {"master": 100}, ["the master changed from 100 to 300 (the service restarted)"]),
        (state(workers=(101, 201)), {"old_workers": [101, 102]}, ["old workers 101 still run"]),
        (state(workers=(201,)), {"workers": 2}, ["1 workers run, 2 expected"]),
        (state(status=503), {}, ["the health path answers 503"]),
        (state(release="r1"), {"release": "r2"}, ["the health path reports release r1, not r2"]),
    ],
)
def test_problems(seen, expect, wanted):
    assert readiness.problems(seen, expect) == wanted


def _proc(tmp_path, table):
    for pid, (comm, ppid) in table.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text("%d (%s) S %d 1 1 0 -1\n" % (pid, comm, ppid))
    (tmp_path / "self").mkdir()
    return str(tmp_path)


def test_children_reads_parents_from_proc(tmp_path):
    proc = _proc(
        tmp_path,
        {100: ("gunicorn", 1), 201: ("gunicorn: worker [a) b]", 100), 202: ("python3", 100), 300: ("bash", 201)},
    )
    assert readiness.children(100, proc) == {201, 202}
    assert readiness.children(0, proc) == set()


def test_children_of_this_process_are_real():
    # The real /proc: a child this test starts is found, and nothing else of ours.
    pid = os.fork()
    if pid == 0:
        os._exit(0)  # until it is waited for, the exited child stays in /proc with this process as parent
    try:
        assert pid in readiness.children(os.getpid())
    finally:
        os.waitpid(pid, 0)


class _Handler(http.server.BaseHTTPRequestHandler):
    answers: typing.ClassVar[dict] = {}

    def address_string(self):  # a unix socket has no client address
        return "unix"

    def do_GET(self):
        status, body = self.answers.get(self.path, (404, b"no"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def app_socket(tmp_path):
    path = str(tmp_path / "app.sock")
    server = _UnixServer(path, _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def test_health_through_a_unix_socket(app_socket):
    _Handler.answers = {
        "/healthz": (200, json.dumps({"status": "ok", "release": "r2"}).encode()),
        "/plain": (200, b"ok"),
        "/down": (503, b"{}"),
    }
    assert readiness.health(app_socket, "/healthz") == (200, {"status": "ok", "release": "r2"})
    assert readiness.health(app_socket, "/plain") == (200, None)
    assert readiness.health(app_socket, "/down") == (503, {})
    assert readiness.health(app_socket + ".missing", "/healthz") == (0, None)


def test_working_directory(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cwd").symlink_to("/srv/app/releases/r2")
    assert readiness.working_directory(42, str(tmp_path)) == "/srv/app/releases/r2"
    assert readiness.working_directory(43, str(tmp_path)) is None
    assert readiness.working_directory(0, str(tmp_path)) is None


def test_a_service_that_is_down_is_not_asked(monkeypatch):
    # Its socket would start it (socket activation): looking must not change anything.
    asked = []
    monkeypatch.setattr(readiness, "main_pid", lambda service: 0)
    monkeypatch.setattr(readiness, "health", lambda *args: asked.append(args) or (200, None))
    assert readiness.look("app.service", "/run/app.sock") == {
        "master": 0, "cwd": None, "workers": [], "status": 0, "release": None,
    }  # fmt: skip
    assert asked == []


def test_wait_returns_once_ready(monkeypatch):
    seen = iter([state(workers=(101, 201)), state(status=0), state()])
    monkeypatch.setattr(readiness, "look", lambda *args: next(seen))
    monkeypatch.setattr(readiness, "POLL_INTERVAL_S", 0)
    ready = readiness.wait("app.service", "/run/app.sock", {"old_workers": [101], "release": "r2"}, timeout=10)
    assert ready["workers"] == [201, 202]
    assert ready["seconds"] >= 0


def test_wait_fails_naming_what_is_wrong(monkeypatch):
    monkeypatch.setattr(readiness, "look", lambda *args: state(release="r1"))
    monkeypatch.setattr(readiness, "POLL_INTERVAL_S", 0)
    with pytest.raises(readiness.NotReady, match=r"app\.service not ready after 0 s: .*reports release r1, not r2"):
        readiness.wait("app.service", "/run/app.sock", {"release": "r2"}, timeout=0)


def test_wait_gives_up_at_once_when_the_master_changed(monkeypatch):
    looks = []
    monkeypatch.setattr(readiness, "look", lambda *args: looks.append(1) or state(master=300))
    with pytest.raises(readiness.NotReady, match="the master changed from 100 to 300"):
        readiness.wait("app.service", "/run/app.sock", {"master": 100}, timeout=60)
    assert len(looks) == 1
