"""Unit tests of the demo Flask app (playbooks/files/flaskops_demo), through Flask's test client."""

from __future__ import annotations

import ctypes
import os
import sqlite3
import sys
import time
from pathlib import Path

import pytest

DEMO_ROOT = Path(__file__).resolve().parents[3] / "playbooks" / "files" / "flaskops_demo"
if str(DEMO_ROOT) not in sys.path:
    sys.path.insert(0, str(DEMO_ROOT))

import flaskops_demo  # noqa: E402
from flaskops_demo import __main__ as demo_main  # noqa: E402


@pytest.fixture
def client(monkeypatch):
    monkeypatch.delenv("FLASKOPS_RELEASE", raising=False)
    monkeypatch.delenv("FLASKOPS_WORKER_CLASS", raising=False)
    return flaskops_demo.create_app({"TESTING": True}).test_client()


def test_module_exposes_wsgi_app():
    assert callable(flaskops_demo.app)
    assert flaskops_demo.app.name == "flaskops_demo"
    assert flaskops_demo.create_app() is not flaskops_demo.app


def test_index_html(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "<title>flaskops.stack demo</title>" in page
    assert f'<dd id="pid">{os.getpid()}</dd>' in page
    assert '<dd id="release">dev</dd>' in page
    assert '<dd id="worker-class">unknown</dd>' in page


def test_index_shows_release_and_worker_class_escaped(client, monkeypatch):
    monkeypatch.setenv("FLASKOPS_RELEASE", "<r1>")
    monkeypatch.setenv("FLASKOPS_WORKER_CLASS", "gthread")
    page = client.get("/").get_data(as_text=True)
    assert '<dd id="release">&lt;r1&gt;</dd>' in page
    assert '<dd id="worker-class">gthread</dd>' in page


def test_worker_class_from_loaded_gunicorn_module(monkeypatch):
    monkeypatch.delenv("FLASKOPS_WORKER_CLASS", raising=False)
    for module in list(sys.modules):
        if module.startswith("gunicorn.workers."):
            monkeypatch.delitem(sys.modules, module)
    assert flaskops_demo.worker_class() is None
    monkeypatch.setitem(sys.modules, "gunicorn.workers.gthread", object())
    assert flaskops_demo.worker_class() == "gthread"


def test_healthz_default_release(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.is_json
    assert response.get_json() == {"status": "ok", "release": "dev", "pid": os.getpid()}


def test_healthz_release_from_environment_on_each_request(client, monkeypatch):
    monkeypatch.setenv("FLASKOPS_RELEASE", "20260101T000000")
    assert client.get("/healthz").get_json()["release"] == "20260101T000000"
    monkeypatch.setenv("FLASKOPS_RELEASE", "20260102T000000")
    assert client.get("/healthz").get_json()["release"] == "20260102T000000"


def _work(client, url):
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"pid", "release", "cpu_ms", "wait_ms", "wall_ms", "ballast_mb"}
    assert body["pid"] == os.getpid()
    return body


def test_cpu_default_is_about_5ms_of_cpu(client):
    body = _work(client, "/cpu")
    assert body["cpu_ms"] >= 5.0
    assert body["wait_ms"] < 5.0


def test_cpu_ms_is_tunable(client):
    body = _work(client, "/cpu?ms=20")
    assert body["cpu_ms"] >= 20.0
    assert body["wall_ms"] >= body["cpu_ms"] * 0.9
    assert _work(client, "/cpu?ms=0")["cpu_ms"] == 0.0


def test_io_default_is_mostly_waiting(client):
    body = _work(client, "/io")
    assert body["cpu_ms"] >= 1.0
    assert body["wait_ms"] >= 50.0
    assert body["wall_ms"] >= 51.0


def test_io_wait_ms_is_tunable(client):
    body = _work(client, "/io?wait_ms=5&cpu_ms=2")
    assert body["cpu_ms"] >= 2.0
    assert 5.0 <= body["wait_ms"] < 50.0


def test_mixed_default(client):
    body = _work(client, "/mixed")
    assert body["cpu_ms"] >= 3.0
    assert body["wait_ms"] >= 20.0


@pytest.mark.parametrize(
    "url",
    ["/cpu?ms=abc", "/cpu?ms=-1", "/io?wait_ms=nan", "/io?wait_ms=1e9", "/mixed?cpu_ms=inf", "/sleep?s=x"],
)
def test_bad_numbers_are_400(client, url):
    response = client.get(url)
    assert response.status_code == 400
    assert "must be" in response.get_json()["error"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"a": [1, 2, 3]}', "application/json"),
        (b"plain text\n", "text/plain; charset=utf-8"),
        (bytes(range(256)) * 64, "application/octet-stream"),
        (b"", "application/x-empty"),
    ],
)
def test_echo_returns_body_and_content_type(client, body, content_type):
    response = client.post("/echo", data=body, content_type=content_type)
    assert response.status_code == 200
    assert response.get_data() == body
    assert response.headers["Content-Type"] == content_type


def test_echo_without_content_type(client):
    response = client.post("/echo", data=b"raw")
    assert response.get_data() == b"raw"
    assert response.headers["Content-Type"] == "application/octet-stream"


def test_echo_is_post_only(client):
    assert client.get("/echo").status_code == 405


def test_static_hello(client):
    response = client.get("/static/hello.txt")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data() == (flaskops_demo.STATIC_DIR / "hello.txt").read_bytes()
    response.close()


def test_static_dir_is_the_package_static_folder():
    assert flaskops_demo.STATIC_DIR == Path(flaskops_demo.__file__).resolve().parent / "static"
    assert flaskops_demo.STATIC_DIR.is_dir()
    assert Path(flaskops_demo.app.static_folder) == flaskops_demo.STATIC_DIR


def test_static_dir_command(capsys):
    assert demo_main.main(["static-dir"]) == 0
    assert capsys.readouterr().out.strip() == str(flaskops_demo.STATIC_DIR)


def test_alloc(client):
    response = client.get("/alloc?mb=8")
    assert response.status_code == 200
    body = response.get_json()
    assert body["pid"] == os.getpid()
    assert body["bytes"] == 8 * flaskops_demo.MIB
    if sys.platform == "linux":
        assert body["rss_kib"] >= 8 * 1024


def test_alloc_holds(client):
    start = time.perf_counter()
    assert client.get("/alloc?mb=1&hold_s=0.05").status_code == 200
    assert time.perf_counter() - start >= 0.05


def test_alloc_rejects_negative(client):
    assert client.get("/alloc?mb=-1").status_code == 400


def _resident_kib(block):
    """Resident KiB of the memory mapping that holds ``block`` (/proc/self/smaps): a large bytearray gets a
    mapping of its own, so this is the block's own residency, whatever the rest of the process does."""
    address = ctypes.addressof(ctypes.c_char.from_buffer(block))
    inside = False
    with open("/proc/self/smaps", encoding="ascii") as smaps:
        for line in smaps:
            first = line.split()[0]
            if "-" in first and not first.endswith(":"):
                start, end = (int(part, 16) for part in first.split("-"))
                inside = start <= address < end
            elif inside and first == "Rss:":
                return int(line.split()[1])
    raise AssertionError("no mapping holds the block")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/smaps")
def test_ballast_from_the_environment_is_held_by_the_process_that_creates_the_app(monkeypatch):
    monkeypatch.setattr(flaskops_demo, "_BALLAST", [])
    monkeypatch.setenv("DEMO_BALLAST_MB", "16")
    client = flaskops_demo.create_app({"TESTING": True}).test_client()
    assert client.get("/io?wait_ms=0").get_json()["ballast_mb"] == 16
    # Another app in the same process asking for more adds only the difference; less keeps what is held.
    monkeypatch.setenv("DEMO_BALLAST_MB", "24")
    flaskops_demo.create_app()
    monkeypatch.setenv("DEMO_BALLAST_MB", "4")
    flaskops_demo.create_app()
    blocks = flaskops_demo._BALLAST
    assert [len(block) for block in blocks] == [16 * flaskops_demo.MIB, 8 * flaskops_demo.MIB]
    # Every page of it is resident, not merely reserved.
    assert [_resident_kib(block) >= len(block) // 1024 for block in blocks] == [True, True]
    assert client.get("/cpu?ms=0").get_json()["ballast_mb"] == 24


@pytest.mark.parametrize("value", ["lots", "-1", "1e9"])
def test_a_bad_ballast_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("DEMO_BALLAST_MB", value)
    with pytest.raises(ValueError, match="DEMO_BALLAST_MB must be"):
        flaskops_demo.create_app()


def test_sleep(client):
    start = time.perf_counter()
    response = client.get("/sleep?s=0.1")
    elapsed = time.perf_counter() - start
    assert response.status_code == 200
    body = response.get_json()
    assert body["pid"] == os.getpid()
    assert body["slept_ms"] >= 100.0
    assert elapsed >= 0.1


def test_fail_is_a_server_error_on_purpose(client):
    response = client.get("/fail")
    assert response.status_code == 500
    assert response.get_json()["error"] == "failed on purpose"
    assert client.get("/fail?status=503").status_code == 503
    assert client.get("/fail?status=404").status_code == 400
    assert client.get("/fail?status=600").status_code == 400


def test_unknown_path_is_404(client):
    assert client.get("/nope").status_code == 404


@pytest.fixture
def stateful(tmp_path, monkeypatch):
    """The app with its instance folder (config.py, SQLite file) in a temporary directory."""
    monkeypatch.delenv("FLASKOPS_RELEASE", raising=False)
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text('GREETING = "from config.py"\n', encoding="utf-8")
    app = flaskops_demo.create_app({"TESTING": True})
    app.instance_path = str(instance)
    app.config.from_pyfile(str(instance / "config.py"))
    app.config["DATABASE"] = str(instance / "demo.sqlite")
    return app


def test_init_db_creates_then_migrates_nothing_twice(stateful):
    runner = stateful.test_cli_runner()
    first = runner.invoke(args=["init-db"])
    assert first.exit_code == 0, first.output
    assert "schema version 0 -> 2" in first.output
    again = runner.invoke(args=["init-db"])
    assert again.exit_code == 0 and "schema version 2 -> 2" in again.output


def test_rows_are_stored_and_counted(stateful, monkeypatch):
    stateful.test_cli_runner().invoke(args=["init-db"])
    client = stateful.test_client()
    monkeypatch.setenv("FLASKOPS_RELEASE", "r1")
    assert client.post("/rows", data="one").get_json()["rows"] == 1
    added = client.post("/rows", data="two").get_json()
    assert added["rows"] == 2 and added["release"] == "r1"
    counted = client.get("/rows").get_json()
    assert counted == {"rows": 2, "greeting": "from config.py", "release": "r1"}


def test_rows_need_the_schema_init_db_creates(stateful):
    # TESTING propagates the error that production answers with 500.
    with pytest.raises(sqlite3.OperationalError, match="no such table: rows"):
        stateful.test_client().get("/rows")


def test_instance_folder_is_untouched_until_needed(tmp_path, monkeypatch):
    # Importing and creating the app neither creates the instance folder nor fails without it.
    app = flaskops_demo.create_app({"TESTING": True})
    assert app.config["DATABASE"] == os.path.join(app.instance_path, "demo.sqlite")
    assert app.config["GREETING"] is None or isinstance(app.config["GREETING"], str)
