# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""tools/loadgen/loadgen.py against a local threaded http.server: exact counts per failure kind."""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

LOADGEN_DIR = Path(__file__).resolve().parents[3] / "tools" / "loadgen"
if str(LOADGEN_DIR) not in sys.path:
    sys.path.insert(0, str(LOADGEN_DIR))

import loadgen  # noqa: E402

OK_BODY = b'{"status":"ok"}'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def log_message(self, format, *args):
        pass

    def reply(self, status, body, close=False, keep_alive_header=True):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close and keep_alive_header:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        if close:
            self.close_connection = True

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        path = url.path
        if path in ("/io", "/cpu", "/healthz", "/ok"):
            self.reply(200, OK_BODY)
        elif path == "/error":
            self.reply(500, b"boom")
        elif path == "/slow":
            time.sleep(float(query.get("s", ["1"])[0]))
            self.reply(200, OK_BODY)
        elif path == "/drop_body":  # promises 1000 bytes, sends 10, closes
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True
        elif path == "/drop_head":  # reads the request, closes without a reply
            self.close_connection = True
        elif path == "/rst":  # reads the request, answers with a TCP reset
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
            self.close_connection = True
        elif path == "/garbage":
            self.wfile.write(b"NOT-HTTP garbage\r\n\r\n")
            self.close_connection = True
        elif path == "/close_announced":  # Connection: close, a clean close between requests
            self.reply(200, OK_BODY, close=True)
        elif path == "/close_silent":  # keep-alive reply, then the server closes the idle connection
            self.reply(200, OK_BODY, close=True, keep_alive_header=False)
        else:
            self.reply(404, b"not found")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/echo":
            self.reply(200, body)
        elif self.path == "/badecho":
            self.reply(200, body[:-1] + b"X")
        else:
            self.reply(404, b"not found")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        pass  # the failure endpoints break connections on purpose


@pytest.fixture(scope="module")
def base_url():
    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port_url():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    return "http://127.0.0.1:%d" % port


def run(url, **options):
    options.setdefault("duration", 20)
    options.setdefault("seed", 1)
    return loadgen.run(loadgen.Config(url=url, **options))


def assert_only(result, kind, count):
    expected = dict.fromkeys(loadgen.KINDS, 0)
    if kind:
        expected[kind] = count
    assert result.failures == expected
    assert result.failed == sum(expected.values())
    assert result.sent == result.ok + result.failed


# --- the happy path -------------------------------------------------------------------------------


def test_default_mix_on_persistent_connections(base_url):
    result = run(base_url, max_requests=300, connections=4)
    assert (result.sent, result.ok, result.failed) == (300, 300, 0)
    assert_only(result, None, 0)
    assert result.statuses == {"200": 300}
    assert set(result.endpoints) == {"io", "cpu", "echo"}
    assert sum(e["ok"] for e in result.endpoints.values()) == 300
    assert all(e["sent"] > 0 for e in result.endpoints.values())
    assert 1 <= result.connections_opened <= 4  # at most one persistent connection per worker
    assert result.latency_ms["count"] == 300
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p90"] <= result.latency_ms["p99"]
    assert result.latency_ms["p99"] <= result.latency_ms["max"]
    assert result.stopped_by == "max_requests"
    assert result.unfinished == 0
    assert result.samples == []


def test_mix_weights_and_custom_paths(base_url):
    result = run(base_url, max_requests=200, connections=2, mix="io=0,healthz=1,post=1", paths={"post": "POST /echo"})
    assert set(result.endpoints) == {"healthz", "post"}
    assert result.ok == 200
    assert result.endpoints["healthz"]["sent"] + result.endpoints["post"]["sent"] == 200


def test_new_connection_per_request(base_url):
    result = run(base_url, max_requests=40, connections=4, new_connection_per_request=True)
    assert (result.sent, result.ok) == (40, 40)
    assert result.connections_opened == 40
    assert result.connect_ms["count"] == 40


def test_server_announced_close_is_not_a_failure(base_url):
    result = run(base_url, max_requests=30, connections=3, mix="c=1", paths={"c": "/close_announced"})
    assert (result.sent, result.ok) == (30, 30)
    assert_only(result, None, 0)
    assert result.connections_opened == 30


def test_silent_close_between_requests_is_not_a_failure(base_url):
    # The server closes each kept-alive connection after replying; spaced requests see the close
    # before they are sent and reconnect.
    result = run(base_url, max_requests=8, connections=1, rate=25, mix="c=1", paths={"c": "/close_silent"})
    assert (result.sent, result.ok) == (8, 8)
    assert_only(result, None, 0)
    assert result.connections_opened == 8
    assert result.idle_closed == 7


# --- each failure kind, counted exactly -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind", "status"),
    [
        ("/error", "status", "500"),
        ("/missing", "status", "404"),
        ("POST /badecho", "body", "200"),
        ("/drop_body", "reset", None),
        ("/drop_head", "reset", None),
        ("/rst", "reset", None),
        ("/garbage", "other", None),
    ],
)
def test_each_failure_kind_is_counted_exactly(base_url, path, kind, status):
    result = run(base_url, max_requests=25, connections=3, mix="x=1", paths={"x": path})
    assert (result.sent, result.ok) == (25, 0)
    assert_only(result, kind, 25)
    assert result.endpoints == {"x": {"sent": 25, "ok": 0, "failed": 25}}
    assert result.statuses == ({status: 25} if status else {})
    assert len(result.samples) == loadgen.MAX_SAMPLES
    assert all(kind in sample for sample in result.samples)


def test_a_marked_failure_is_counted_apart_from_other_statuses(base_url):
    # /error answers 500 "boom", /missing 404 without it: only the first is the fault the marker names.
    paths = {"err": "/error", "miss": "/missing"}
    result = run(base_url, max_requests=60, connections=3, mix="err=1,miss=1", paths=paths, marker="boom")
    assert result.sent == 60
    assert result.failures["marked"] == result.endpoints["err"]["sent"] > 0
    assert result.failures["status"] == result.endpoints["miss"]["sent"] > 0
    assert result.failed == 60


def test_timeout_is_counted(base_url):
    started = time.monotonic()
    result = run(base_url, max_requests=4, connections=4, timeout=0.3, mix="slow=1", paths={"slow": "/slow?s=1"})
    assert time.monotonic() - started < 1.0
    assert (result.sent, result.ok) == (4, 0)
    assert_only(result, "timeout", 4)


def test_refused_is_counted(closed_port_url):
    result = run(closed_port_url, max_requests=12, connections=3)
    assert (result.sent, result.ok) == (12, 0)
    assert_only(result, "refused", 12)
    assert result.connections_opened == 0


def test_mixed_failures_match_their_endpoints_exactly(base_url):
    paths = {"bad": "POST /badecho", "err": "/error", "drop": "/drop_body", "junk": "/garbage"}
    result = run(base_url, max_requests=400, connections=8, mix="io=3,echo=2,bad=1,err=1,drop=1,junk=1", paths=paths)
    ends = result.endpoints
    assert result.sent == 400
    assert result.ok == ends["io"]["sent"] + ends["echo"]["sent"]
    assert result.failures == {
        "status": ends["err"]["sent"],
        "marked": 0,
        "body": ends["bad"]["sent"],
        "reset": ends["drop"]["sent"],
        "refused": 0,
        "timeout": 0,
        "other": ends["junk"]["sent"],
    }
    assert result.statuses["500"] == ends["err"]["sent"]
    assert all(result.failures[kind] > 0 for kind in ("status", "body", "reset", "other"))
    assert len(result.samples) == loadgen.MAX_SAMPLES


# --- connect mode ---------------------------------------------------------------------------------


def test_connect_mode_counts_connections(base_url):
    result = run(base_url, mode="connect", max_requests=20, rate=400)
    assert result.mode == "connect"
    assert (result.sent, result.ok) == (20, 20)
    assert result.endpoints == {"healthz": {"sent": 20, "ok": 20, "failed": 0}}
    assert result.connections_opened == 20


def test_connect_mode_counts_refused(closed_port_url):
    result = run(closed_port_url, mode="connect", max_requests=10, rate=400)
    assert_only(result, "refused", 10)


# --- loopback only, bounded, bad arguments -> 2 ---------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8080",
        "http://192.168.1.10/",
        "http://example.com",
        "http://127.0.0.1.nip.io/",
        "http://0.0.0.0:8080",
        "http://[::2]:8080",
        "http://[::ffff:10.0.0.1]/",
    ],
)
def test_non_loopback_targets_are_refused(url, capsys):
    assert loadgen.main(["--url", url, "--duration", "1"]) == 2
    assert "not loopback" in capsys.readouterr().err
    with pytest.raises(loadgen.ConfigError, match="not loopback"):
        loadgen.make_plan(loadgen.Config(url=url, duration=1))


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "http://127.9.8.7/", "http://localhost:8080", "http://[::1]:80"])
def test_loopback_targets_are_accepted(url):
    loadgen.make_plan(loadgen.Config(url=url, duration=1))


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "http://127.0.0.1:1"],
        ["--url", "http://127.0.0.1:1", "--duration", str(int(loadgen.MAX_DURATION) + 1)],
        ["--url", "http://127.0.0.1:1", "--duration", "0"],
        ["--url", "http://127.0.0.1:1", "--duration", "1", "--mix", "nosuch=1"],
        ["--url", "http://127.0.0.1:1", "--duration", "1", "--mix", "io=0"],
        ["--url", "http://127.0.0.1:1", "--duration", "1", "--connections", "0"],
        ["--url", "ftp://127.0.0.1:1", "--duration", "1"],
        ["--url", "http://127.0.0.1:1", "--duration", "1", "--label", "a=b c"],
        ["connect", "--mode", "load", "--url", "http://127.0.0.1:1", "--duration", "1"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    try:
        code = loadgen.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    assert capsys.readouterr().err


def test_duration_bounds_the_run(base_url):
    result = run(base_url, duration=0.3, rate=100, connections=2)
    assert result.stopped_by == "duration"
    assert 0.25 <= result.elapsed_s < 1.5
    assert 10 <= result.sent <= 40
    assert result.failed == 0


# --- open loop ------------------------------------------------------------------------------------


def test_open_loop_counts_the_wait_for_a_connection_that_a_closed_loop_hides(base_url):
    # One connection, 50 ms a request: it can answer 20/s. Asked for 40/s for 1 s, a closed loop
    # just sends slower and sees 50 ms; the open loop's requests fall further behind their due
    # times, up to about half a second by the end, and its latency says so.
    slow = {"mix": "s=1", "paths": {"s": "/slow?s=0.05"}, "connections": 1, "rate": 40, "duration": 1}
    closed = run(base_url, **slow)
    opened = run(base_url, open_loop=True, **slow)
    assert (closed.failed, opened.failed, closed.open_loop, opened.open_loop) == (0, 0, False, True)
    assert closed.latency_ms["p99"] < 150, closed.latency_ms
    assert opened.latency_ms["p99"] > 300, opened.latency_ms
    assert opened.lag_ms["max"] > 250 and opened.lag_ms["count"] == opened.ok, opened.lag_ms
    assert closed.lag_ms == {}


def test_open_loop_with_enough_connections_keeps_to_its_schedule(base_url):
    result = run(base_url, mix="s=1", paths={"s": "/slow?s=0.05"}, connections=8, rate=40, duration=1, open_loop=True)
    assert result.failed == 0
    assert 30 <= result.sent <= 48, result.to_dict()
    assert result.latency_ms["p50"] < 120, result.latency_ms
    assert result.lag_ms["p50"] < 20, result.lag_ms


@pytest.mark.parametrize("options", [{"open_loop": True}, {"open_loop": True, "mode": "connect", "rate": 10}])
def test_open_loop_needs_load_mode_and_a_rate(base_url, options):
    with pytest.raises(loadgen.ConfigError, match="--open-loop needs load mode and a --rate"):
        run(base_url, **options)


# --- stopping, ready and progress files -----------------------------------------------------------


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_stop_lets_in_flight_requests_finish(base_url):
    stop = threading.Event()
    box = {}
    config = loadgen.Config(url=base_url, duration=20, connections=3, mix="s=1", paths={"s": "/slow?s=0.5"}, timeout=3)
    thread = threading.Thread(target=lambda: box.setdefault("result", loadgen.run(config, stop)))
    thread.start()
    time.sleep(0.2)  # all three requests are in flight
    stop.set()
    thread.join(5)
    result = box["result"]
    assert (result.sent, result.ok, result.failed) == (3, 3, 0)
    assert result.stopped_by == "stop"


def test_ready_and_progress_files(base_url, tmp_path):
    ready, progress = tmp_path / "ready", tmp_path / "progress.json"
    stop = threading.Event()
    box = {}
    config = loadgen.Config(
        url=base_url,
        duration=20,
        connections=2,
        rate=200,
        ready_file=str(ready),
        progress_file=str(progress),
        progress_interval=0.1,
    )
    thread = threading.Thread(target=lambda: box.setdefault("result", loadgen.run(config, stop)))
    thread.start()
    try:
        assert wait_for(ready.exists)
        assert json.loads(ready.read_text())["ready"] is True

        def flowing():
            try:
                doc = json.loads(progress.read_text())
            except (OSError, ValueError):
                return False
            return doc["running"] and doc["ok"] > 0 and doc.get("last_interval", {}).get("ok", 0) > 0

        assert wait_for(flowing)
    finally:
        stop.set()
        thread.join(5)
    final = json.loads(progress.read_text())
    assert final["running"] is False
    assert final["sent"] == box["result"].sent
    assert not list(tmp_path.glob("*.tmp.*"))


def test_ready_file_not_written_without_success(closed_port_url, tmp_path):
    ready = tmp_path / "ready"
    run(closed_port_url, max_requests=3, connections=1, ready_file=str(ready))
    assert not ready.exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_prints_result_and_exits_0(base_url, tmp_path, signum):
    ready = tmp_path / "ready"
    command = [
        sys.executable,
        str(LOADGEN_DIR / "loadgen.py"),
        "--url",
        base_url,
        "--duration",
        "60",
        "--connections",
        "4",
        "--ready-file",
        str(ready),
        "--label",
        "scenario=unit",
        "--label",
        "case=%s" % signum.name,
        "--result-file",
        str(tmp_path / "result.json"),
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert wait_for(ready.exists), process.stderr.read() if process.poll() is not None else "not ready"
            process.send_signal(signum)
            out, err = process.communicate(timeout=8)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2
    doc = json.loads(lines[0])
    assert lines[1].startswith("LOAD RESULT scenario=unit case=%s sent=%d failed=0 ok=" % (signum.name, doc["sent"]))
    assert doc["sent"] == doc["ok"] > 0
    assert doc["stopped_by"] == "signal:%s" % signum.name
    assert doc["labels"] == {"scenario": "unit", "case": signum.name}
    assert json.loads((tmp_path / "result.json").read_text()) == doc


# --- several processes, the result object ---------------------------------------------------------


def test_processes_split_the_work(base_url):
    result = run(base_url, max_requests=60, connections=4, processes=2, mix="io=1,echo=1")
    summary = result.to_dict()
    assert (result.sent, result.ok, result.processes) == (60, 60, 2), summary
    assert 2 <= result.connections_opened <= 4, summary  # persistent; a thread may find no ticket left
    assert result.stopped_by == "max_requests", summary


def test_summary_line_and_json():
    result = loadgen.Result(
        labels={"scenario": "reload"},
        mode="load",
        url="http://127.0.0.1:1",
        sent=10,
        ok=9,
        failed=1,
        failures={"status": 1, "marked": 0, "body": 0, "reset": 0, "refused": 0, "timeout": 0, "other": 0},
        statuses={"200": 9, "502": 1},
        endpoints={},
        latency_ms={"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0, "mean": 1.5, "count": 9},
        connect_ms={},
        rps=5.0,
        elapsed_s=2.0,
        connections=1,
        processes=1,
        connections_opened=1,
        idle_closed=0,
        reset_on_reuse=0,
        unfinished=0,
        stopped_by="duration",
        samples=[],
    )
    assert result.summary_line(reloads=5) == (
        "LOAD RESULT scenario=reload sent=10 failed=1 ok=9 status=1 marked=0 body=0 reset=0 refused=0 timeout=0 other=0"
        " p50_ms=1.0 p90_ms=2.0 p99_ms=3.0 max_ms=4.0 rps=5.0 reloads=5"
    )
    assert json.loads(json.dumps(result.to_dict()))["statuses"] == {"200": 9, "502": 1}


def test_histogram_percentiles_within_one_percent():
    histogram = loadgen.Histogram()
    for ms in range(1, 1001):
        histogram.add(ms / 1000)
    summary = histogram.summary()
    assert summary["p50"] == pytest.approx(500, rel=0.011)
    assert summary["p99"] == pytest.approx(990, rel=0.011)
    assert summary["max"] == 1000.0
    assert summary["count"] == 1000
