"""Demo Flask app for flaskops.stack.

WSGI entry point: ``flaskops_demo:app`` (or ``flaskops_demo:create_app()``).

Endpoints, each cheap to reason about under load:

- ``GET /``          HTML page: release id, pid, worker class when known.
- ``GET /healthz``   ``{"status": "ok", "release": ..., "pid": ...}``.
- ``GET /cpu``       pure-Python CPU work, ``?ms=`` (default 5).
- ``GET /io``        ``?cpu_ms=`` CPU (default 1) then ``?wait_ms=`` sleep (default 50).
- ``GET /mixed``     ``?cpu_ms=`` CPU (default 3) then ``?wait_ms=`` sleep (default 20).
- ``/cpu``, ``/io`` and ``/mixed`` answer with ``ballast_mb``: the MiB the process holds for good (below).
- ``POST /echo``     the request body back, with the request's content type.
- ``GET /static/hello.txt``  a file from the package's ``static/`` directory (``STATIC_DIR``).
- ``GET /alloc``     ``?mb=`` MiB allocated and touched, held ``?hold_s=`` seconds (default 0).
- ``GET /sleep``     sleeps ``?s=`` seconds (default 1).
- ``GET /fail``      a server error on purpose: status ``?status=`` (500 to 599, default 500).
- ``POST /rows``     stores the request body as a row of its SQLite database; ``{"rows": <count>, ...}``.
- ``GET /rows``      ``{"rows": <count>, "greeting": <config GREETING>, "release": ...}``.

State, as Flask's tutorial keeps it: the app's instance folder (``instance_relative_config``) holds
its optional ``config.py`` and its SQLite file (``DATABASE``, default ``<instance>/demo.sqlite``).
``flask --app flaskops_demo init-db`` creates or migrates the database's schema (idempotent: a
release command). Nothing touches the instance folder until a request or the command needs it.

``DEMO_BALLAST_MB`` (environment): the process that creates the app allocates and touches that many MiB and
holds them for its life, as an app that loads a large model or cache when it is imported. gunicorn workers
import the app each (unless ``preload_app``), so each holds its own.

The release id comes from the environment variable ``FLASKOPS_RELEASE`` (set by the deploy), read on
every request, so a reload that changes it shows at once; it defaults to ``dev``.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from flask import Flask, Response, current_app, jsonify, render_template_string, request
from flask.cli import with_appcontext

__all__ = ["MIB", "STATIC_DIR", "app", "burn_cpu", "create_app", "release_id", "worker_class"]
__version__ = "1.0.0"

#: The package's static directory. nginx serves it from disk at ``/static/`` in production;
#: ``python -m flaskops_demo static-dir`` prints it.
STATIC_DIR = Path(__file__).resolve().parent / "static"

MIB = 1024 * 1024
_PAGE = 4096

# Upper bounds for the query parameters: a typo must not pin a worker for an hour.
MAX_CPU_MS = 60_000.0
MAX_WAIT_MS = 600_000.0
MAX_SLEEP_S = 3_600.0
MAX_ALLOC_MB = 65_536.0

# What DEMO_BALLAST_MB made this process hold.
_BALLAST: list[bytearray] = []

# gunicorn imports only the worker class it runs, in the master, before it forks the workers.
_GUNICORN_WORKERS = {
    "gunicorn.workers.gthread": "gthread",
    "gunicorn.workers.ggevent": "gevent",
    "gunicorn.workers.geventlet": "eventlet",
    "gunicorn.workers.gtornado": "tornado",
    "gunicorn.workers.sync": "sync",
}

_INDEX = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>flaskops.stack demo</title></head>
<body>
<h1>flaskops.stack demo</h1>
<dl>
<dt>Release</dt><dd id="release">{{ release }}</dd>
<dt>PID</dt><dd id="pid">{{ pid }}</dd>
<dt>Worker class</dt><dd id="worker-class">{{ worker_class or "unknown" }}</dd>
<dt>Server</dt><dd id="server">{{ server or "unknown" }}</dd>
</dl>
<p><a href="/healthz">/healthz</a> · <a href="/cpu">/cpu</a> · <a href="/io">/io</a> ·
<a href="/mixed">/mixed</a> · <a href="/static/hello.txt">/static/hello.txt</a></p>
</body>
</html>
"""


class BadParameter(ValueError):
    """A query parameter that is not a number in range."""


def release_id() -> str:
    """The release id the deploy set in ``FLASKOPS_RELEASE``, or ``dev``."""
    return os.environ.get("FLASKOPS_RELEASE") or "dev"


def worker_class() -> str | None:
    """The gunicorn worker class serving this process, if it can be told.

    ``FLASKOPS_WORKER_CLASS`` wins when set; otherwise the gunicorn worker module loaded in this
    process names it. ``None`` when not under gunicorn (Flask's dev server, the test client).
    """
    configured = os.environ.get("FLASKOPS_WORKER_CLASS")
    if configured:
        return configured
    for module, name in _GUNICORN_WORKERS.items():
        if module in sys.modules:
            return name
    return None


def burn_cpu(ms: float) -> float:
    """Run pure-Python arithmetic until this thread has used ``ms`` ms of CPU; return the CPU ms used."""
    start = time.thread_time()
    deadline = start + ms / 1000.0
    x = 0
    while time.thread_time() < deadline:
        for i in range(500):
            x = (x * 31 + i) % 1_000_003
    return (time.thread_time() - start) * 1000.0


def _wait(ms: float) -> float:
    """Sleep ``ms`` ms; return the wall-clock ms slept."""
    start = time.perf_counter()
    if ms > 0:
        time.sleep(ms / 1000.0)
    return (time.perf_counter() - start) * 1000.0


def _number(name: str, default: float, maximum: float) -> float:
    raw = request.args.get(name)
    if raw is None:
        return default
    return _bounded(name, raw, maximum, BadParameter)


def _bounded(name: str, raw: str, maximum: float, error: type[Exception]) -> float:
    """``raw`` as a number within 0 and ``maximum``, else ``error`` naming ``name``."""
    try:
        value = float(raw)
    except ValueError:
        raise error(f"{name} must be a number, got {raw!r}") from None
    if not 0 <= value <= maximum:
        raise error(f"{name} must be between 0 and {maximum:g}, got {raw!r}")
    return value


def _touched(size: int) -> bytearray:
    """``size`` bytes, resident: bytearray() may get lazily mapped zero pages, so one byte per page is written."""
    block = bytearray(size)
    block[::_PAGE] = b"\x01" * len(range(0, size, _PAGE))
    return block


def _ballast_bytes() -> int:
    """What DEMO_BALLAST_MB made this process hold."""
    return sum(len(block) for block in _BALLAST)


def _ballast_from_environment() -> None:
    """Make this process hold, for good, at least the ``DEMO_BALLAST_MB`` MiB the environment asks for."""
    ballast = os.environ.get("DEMO_BALLAST_MB")
    if not ballast:
        return
    wanted = int(_bounded("DEMO_BALLAST_MB", ballast, MAX_ALLOC_MB, ValueError) * MIB)
    if wanted > _ballast_bytes():
        _BALLAST.append(_touched(wanted - _ballast_bytes()))


def _rss_kib() -> int | None:
    """Resident set size of this process in KiB (Linux), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _work(default_cpu_ms: float, default_wait_ms: float, cpu_param: str = "cpu_ms") -> Response:
    cpu_target = _number(cpu_param, default_cpu_ms, MAX_CPU_MS)
    wait_target = _number("wait_ms", default_wait_ms, MAX_WAIT_MS)
    start = time.perf_counter()
    cpu_ms = burn_cpu(cpu_target) if cpu_target > 0 else 0.0
    wait_ms = _wait(wait_target)
    return jsonify(
        pid=os.getpid(),
        release=release_id(),
        cpu_ms=round(cpu_ms, 3),
        wait_ms=round(wait_ms, 3),
        wall_ms=round((time.perf_counter() - start) * 1000.0, 3),
        ballast_mb=_ballast_bytes() // MIB,
    )


# The database's schema, one step per version (SQLite's user_version): init-db applies the missing ones.
_MIGRATIONS = (
    "CREATE TABLE rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
    "ALTER TABLE rows ADD COLUMN release TEXT",
)


def _database() -> sqlite3.Connection:
    """A connection in autocommit mode: each statement, or each explicit BEGIN ... COMMIT, is a transaction."""
    return sqlite3.connect(current_app.config["DATABASE"], timeout=30, isolation_level=None)


def migrate() -> tuple[int, int]:
    """Bring the database's schema to the newest version in one transaction; return (version before, after)."""
    os.makedirs(os.path.dirname(current_app.config["DATABASE"]), exist_ok=True)
    connection = _database()
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("BEGIN IMMEDIATE")
        before = connection.execute("PRAGMA user_version").fetchone()[0]
        for version in range(before, len(_MIGRATIONS)):
            connection.execute(_MIGRATIONS[version])
            connection.execute(f"PRAGMA user_version = {version + 1}")
        connection.execute("COMMIT")
    finally:
        connection.close()
    return before, len(_MIGRATIONS)


@click.command("init-db")
@with_appcontext
def init_db() -> None:
    """Create or migrate the database's schema (safe to run again)."""
    before, after = migrate()
    click.echo(f"database {current_app.config['DATABASE']}: schema version {before} -> {after}")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the demo app; ``config`` updates ``app.config`` (tests pass ``{"TESTING": True}``)."""
    flask_app = Flask(__name__, instance_relative_config=True, static_folder=str(STATIC_DIR), static_url_path="/static")
    flask_app.config.from_mapping(DATABASE=os.path.join(flask_app.instance_path, "demo.sqlite"), GREETING=None)
    flask_app.config.from_pyfile("config.py", silent=True)
    if config:
        flask_app.config.update(config)
    flask_app.cli.add_command(init_db)
    _ballast_from_environment()

    @flask_app.errorhandler(BadParameter)
    def bad_parameter(error: BadParameter) -> tuple[Response, int]:
        return jsonify(error=str(error)), 400

    @flask_app.get("/")
    def index() -> str:
        return render_template_string(
            _INDEX,
            release=release_id(),
            pid=os.getpid(),
            worker_class=worker_class(),
            server=request.environ.get("SERVER_SOFTWARE"),
        )

    @flask_app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok", release=release_id(), pid=os.getpid())

    @flask_app.get("/cpu")
    def cpu() -> Response:
        return _work(5.0, 0.0, cpu_param="ms")

    @flask_app.get("/io")
    def io() -> Response:
        return _work(1.0, 50.0)

    @flask_app.get("/mixed")
    def mixed() -> Response:
        return _work(3.0, 20.0)

    @flask_app.post("/echo")
    def echo() -> Response:
        return Response(
            request.get_data(),
            status=200,
            content_type=request.content_type or "application/octet-stream",
        )

    @flask_app.get("/alloc")
    def alloc() -> Response:
        mb = _number("mb", 1.0, MAX_ALLOC_MB)
        hold_s = _number("hold_s", 0.0, MAX_SLEEP_S)
        block = _touched(int(mb * MIB))
        rss_kib = _rss_kib()
        _wait(hold_s * 1000.0)
        held = len(block)
        del block
        return jsonify(pid=os.getpid(), mb=mb, bytes=held, rss_kib=rss_kib)

    @flask_app.get("/sleep")
    def sleep() -> Response:
        seconds = _number("s", 1.0, MAX_SLEEP_S)
        slept_ms = _wait(seconds * 1000.0)
        return jsonify(pid=os.getpid(), release=release_id(), slept_ms=round(slept_ms, 3))

    @flask_app.get("/fail")
    def fail() -> tuple[Response, int]:
        # A server error on purpose, status 500 to 599 (default 500): the error rate a test or a load asks for.
        status = int(_number("status", 500.0, 599.0))
        if status < 500:
            raise BadParameter("status must be 500 to 599, got %d" % status)
        return jsonify(error="failed on purpose", release=release_id(), pid=os.getpid()), status

    @flask_app.post("/rows")
    def add_row() -> Response:
        connection = _database()
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                "INSERT INTO rows (body, release) VALUES (?, ?)", (request.get_data(as_text=True), release_id())
            )
            count = connection.execute("SELECT count(*) FROM rows").fetchone()[0]
            connection.execute("COMMIT")
        finally:
            connection.close()
        return jsonify(rows=count, release=release_id(), pid=os.getpid())

    @flask_app.get("/rows")
    def rows() -> Response:
        connection = _database()
        try:
            count = connection.execute("SELECT count(*) FROM rows").fetchone()[0]
        finally:
            connection.close()
        return jsonify(rows=count, greeting=flask_app.config["GREETING"], release=release_id())

    return flask_app


app = create_app()
