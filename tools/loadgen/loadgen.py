# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bounded HTTP load generator for loopback targets (Python standard library only).

Used by the molecule verifiers to keep load flowing through nginx while a test reloads,
deploys or kills things, and to count every request that failed. It only ever talks to
127.0.0.0/8, ``localhost`` or ``::1`` and every run stops by itself (``--duration``, at most
7200 s, and optionally ``--max-requests``).

Two modes:

* ``load`` (default): ``--connections`` threads, each with its own persistent HTTP/1.1
  connection (or a new one per request), sending a weighted mix of ``GET /io``, ``GET /cpu``
  and ``POST /echo`` (random body, the reply must equal it); with ``--open-loop``, requests are due
  at ``--rate`` whatever the answers and latency counts from the due time.
* ``connect``: a rate-bounded loop of fresh TCP connections, each carrying one
  ``GET /healthz``: counts refused connections and failed requests across restarts.

On SIGTERM/SIGINT (or when the duration expires) in-flight requests finish (bounded by
``--timeout``), then one JSON object and a final ``LOAD RESULT ...`` line go to stdout and the
exit status is 0; bad arguments exit 2. ``run(config) -> Result`` does the same from Python.
See README.md beside this file.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import dataclasses
import http.client
import ipaddress
import json
import math
import multiprocessing
import os
import queue
import random
import re
import select
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping

KINDS = ("status", "marked", "body", "reset", "refused", "timeout", "other")
MODES = ("load", "connect")
MAX_DURATION = 7200.0
MAX_CONNECTIONS = 1024
MAX_PROCESSES = 32
MAX_SAMPLES = 20
MAX_ECHO_BYTES = 1 << 20
BUILTIN_ENDPOINTS = {
    "io": ("GET", "/io"),
    "cpu": ("GET", "/cpu"),
    "echo": ("POST", "/echo"),
    "healthz": ("GET", "/healthz"),
}
DEFAULT_MIX = {"load": "io=1,cpu=1,echo=1", "connect": "healthz=1"}
DEFAULT_CONNECTIONS = {"load": 8, "connect": 1}
DEFAULT_RATE = {"load": 0.0, "connect": 100.0}
POLL_S = 0.05

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_LABEL_VALUE_RE = re.compile(r"^[^\s=]*$")
_LOG_STEP = math.log(1.01)  # latency histogram: 1 % wide bins


class ConfigError(ValueError):
    """A bad option: the CLI reports it and exits 2."""


# --------------------------------------------------------------------------- configuration


@dataclasses.dataclass
class Config:
    """What to run. Only ``url`` and ``duration`` are required; ``None`` means the mode's default."""

    url: str
    duration: float
    mode: str = "load"
    max_requests: int | None = None
    connections: int | None = None  # load: 8, connect: 1
    mix: Mapping[str, float] | str | None = None  # load: io=1,cpu=1,echo=1; connect: healthz=1
    paths: Mapping[str, str] = dataclasses.field(default_factory=dict)  # name -> "/path" or "POST /path"
    host_header: str | None = None
    timeout: float = 10.0
    new_connection_per_request: bool = False  # always on in connect mode
    rate: float | None = None  # total requests/s; load: 0 (unbounded), connect: 100
    echo_min: int = 256
    echo_max: int = 4096
    ready_file: str | None = None
    progress_file: str | None = None
    result_file: str | None = None
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    seed: int | None = None
    processes: int = 1
    progress_interval: float = 1.0
    # A non-2xx response whose body holds this text is counted as "marked", not "status": a fault a
    # test caused on purpose (a release that answers 500), told apart from every other failure.
    marker: str | None = None
    # Open loop (load mode, needs rate): requests are due on a fixed schedule whatever the answers, and
    # a request's latency counts from when it was due, so the time it waited for a free connection
    # (the server being slow) is in it. A closed loop hides that queueing (coordinated omission).
    open_loop: bool = False


@dataclasses.dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    echo: bool


@dataclasses.dataclass(frozen=True)
class _Plan:
    mode: str
    url: str
    scheme: str
    host: str
    port: int
    endpoints: tuple[Endpoint, ...]
    cumulative: tuple[float, ...]
    duration: float
    max_requests: int | None
    connections: int
    rate: float
    timeout: float
    new_connection: bool
    headers: tuple[tuple[str, str], ...]
    echo_min: int
    echo_max: int
    seed: int
    processes: int
    progress_interval: float
    marker: bytes | None = None
    open_loop: bool = False

    def choose(self, roll: float) -> Endpoint:
        return self.endpoints[min(bisect.bisect_right(self.cumulative, roll), len(self.endpoints) - 1)]

    def new_connection_object(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            # Loopback only, typically a self-signed test certificate: no verification.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=context)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)


def _is_loopback_ip(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if address.version == 4:
        return address in ipaddress.ip_network("127.0.0.0/8")
    return address == ipaddress.IPv6Address("::1")


def check_loopback(url: str) -> tuple[str, str, int, str]:
    """Parse ``url``; return (scheme, host, port, base path) or raise ConfigError unless it is loopback."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError("bad --url %r: %s" % (url, exc)) from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError("bad --url %r: the scheme must be http or https" % url)
    host = parts.hostname
    if not host:
        raise ConfigError("bad --url %r: no host" % url)
    if parts.username is not None or parts.password is not None:
        raise ConfigError("bad --url %r: credentials in the URL are not supported" % url)
    if parts.query or parts.fragment:
        raise ConfigError("bad --url %r: give a base URL, without query or fragment" % url)
    refusal = "refusing target %r: host %r is not loopback (only 127.0.0.0/8, localhost and ::1 are allowed)"
    if host == "localhost":
        try:
            infos = socket.getaddrinfo("localhost", port or 80, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConfigError("cannot resolve localhost: %s" % exc) from None
        addresses = sorted({info[4][0] for info in infos})
        if not addresses or not all(_is_loopback_ip(a) for a in addresses):
            raise ConfigError(refusal % (url, host) + "; localhost resolves to %s" % ", ".join(addresses))
    elif not _is_loopback_ip(host):
        raise ConfigError(refusal % (url, host))
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return parts.scheme, host, port, parts.path.rstrip("/")


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """``a=1,b=2`` -> {"a": "1", "b": "2"}."""
    pairs: dict[str, str] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _NAME_RE.match(key):
            raise ConfigError("bad %s item %r: expected name=value" % (what, item))
        pairs[key] = value.strip()
    return pairs


def _mix_weights(mix: Mapping[str, float] | str) -> dict[str, float]:
    raw = parse_pairs(mix, "--mix") if isinstance(mix, str) else dict(mix)
    weights = {}
    for name, value in raw.items():
        try:
            weight = float(value)
        except (TypeError, ValueError):
            raise ConfigError("bad --mix weight for %r: %r" % (name, value)) from None
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError("bad --mix weight for %r: %r (a number >= 0)" % (name, value))
        weights[name] = weight
    if not any(weights.values()):
        raise ConfigError("--mix needs at least one endpoint with a weight > 0")
    return weights


def _endpoint(name: str, spec: str | None, base_path: str) -> Endpoint:
    method, path = BUILTIN_ENDPOINTS.get(name, ("GET", None))
    if spec is not None:
        words = spec.split()
        if len(words) == 2 and words[0].upper() in ("GET", "POST"):
            method, path = words[0].upper(), words[1]
        elif len(words) == 1:
            path = words[0]
        else:
            raise ConfigError("bad --path for %r: %r (expected /path or 'POST /path')" % (name, spec))
    if path is None:
        known = ", ".join(BUILTIN_ENDPOINTS)
        raise ConfigError("--mix names %r, which is neither built in (%s) nor given by --path" % (name, known))
    if not path.startswith("/") or any(ch.isspace() for ch in path):
        raise ConfigError("bad path for %r: %r (must start with / and contain no spaces)" % (name, path))
    return Endpoint(name, method, base_path + path, method == "POST")


def _positive(value, what: str, kind=float, maximum=None):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError("bad %s: %r" % (what, value)) from None
    too_big = maximum is not None and number > maximum
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0 or too_big:
        limit = "" if maximum is None else " and at most %s" % maximum
        raise ConfigError("bad %s: %r (must be > 0%s)" % (what, value, limit))
    return number


def _echo_sizes(config: Config) -> tuple[int, int]:
    """The echo body's smallest and largest size, in bytes."""
    echo_min = _positive(config.echo_min, "--echo-size minimum", int, MAX_ECHO_BYTES)
    echo_max = _positive(config.echo_max, "--echo-size maximum", int, MAX_ECHO_BYTES)
    if echo_min > echo_max:
        raise ConfigError("bad --echo-size: minimum %d > maximum %d" % (echo_min, echo_max))
    return echo_min, echo_max


def _weighted_endpoints(config: Config, base_path: str) -> tuple[list[Endpoint], list[float]]:
    """The endpoints with a weight > 0 and their cumulative shares of the mix (the last is 1)."""
    weights = _mix_weights(config.mix if config.mix is not None else DEFAULT_MIX[config.mode])
    paths = dict(config.paths or {})
    for name in paths:
        if not _NAME_RE.match(name):
            raise ConfigError("bad --path name %r" % name)
    endpoints, cumulative, total = [], [], 0.0
    for name, weight in weights.items():
        endpoint = _endpoint(name, paths.get(name), base_path)
        if weight > 0:
            total += weight
            endpoints.append(endpoint)
            cumulative.append(total)
    return endpoints, [c / total for c in cumulative]


def _headers(config: Config, new_connection: bool) -> list[tuple[str, str]]:
    """Headers every request carries: the Host override, and ``Connection: close`` without keep-alive."""
    headers = []
    if config.host_header:
        if any(ch.isspace() for ch in config.host_header):
            raise ConfigError("bad --host-header %r" % config.host_header)
        headers.append(("Host", config.host_header))
    if new_connection:
        headers.append(("Connection", "close"))
    return headers


def _check_labels(labels: Mapping[str, str] | None) -> None:
    """Labels lead the LOAD RESULT line as key=value words: no spaces or '=' in a value."""
    for key, value in (labels or {}).items():
        if not _NAME_RE.match(str(key)) or not _LABEL_VALUE_RE.match(str(value)):
            raise ConfigError("bad --label %s=%s (no spaces or '=' in the value)" % (key, value))


def make_plan(config: Config) -> _Plan:
    """Validate ``config`` and resolve defaults; raises ConfigError."""
    if config.mode not in MODES:
        raise ConfigError("bad mode %r (one of %s)" % (config.mode, ", ".join(MODES)))
    scheme, host, port, base_path = check_loopback(config.url)
    if config.duration is None:
        raise ConfigError("--duration is required (seconds, at most %d)" % MAX_DURATION)
    duration = _positive(config.duration, "--duration", float, MAX_DURATION)
    max_requests = None if config.max_requests is None else _positive(config.max_requests, "--max-requests", int)
    connections = config.connections if config.connections is not None else DEFAULT_CONNECTIONS[config.mode]
    connections = _positive(connections, "--connections", int, MAX_CONNECTIONS)
    processes = _positive(config.processes, "--processes", int, MAX_PROCESSES)
    if processes > connections:
        raise ConfigError("--processes (%d) cannot exceed --connections (%d)" % (processes, connections))
    rate = config.rate if config.rate is not None else DEFAULT_RATE[config.mode]
    rate = 0.0 if rate == 0 else _positive(rate, "--rate", float)
    if config.open_loop and (config.mode != "load" or not rate):
        raise ConfigError("--open-loop needs load mode and a --rate (the schedule requests are due on)")
    timeout = _positive(config.timeout, "--timeout", float, MAX_DURATION)
    interval = _positive(config.progress_interval, "progress interval", float)
    echo_min, echo_max = _echo_sizes(config)
    endpoints, cumulative = _weighted_endpoints(config, base_path)
    new_connection = bool(config.new_connection_per_request) or config.mode == "connect"
    headers = _headers(config, new_connection)
    _check_labels(config.labels)
    seed = config.seed if config.seed is not None else random.SystemRandom().getrandbits(32)
    return _Plan(
        mode=config.mode,
        url=config.url,
        scheme=scheme,
        host=host,
        port=port,
        endpoints=tuple(endpoints),
        cumulative=tuple(cumulative),
        duration=duration,
        max_requests=max_requests,
        connections=connections,
        rate=rate,
        timeout=timeout,
        new_connection=new_connection,
        headers=tuple(headers),
        echo_min=echo_min,
        echo_max=echo_max,
        seed=int(seed),
        processes=processes,
        progress_interval=interval,
        marker=config.marker.encode() if config.marker else None,
        open_loop=bool(config.open_loop),
    )


# --------------------------------------------------------------------------- counting


class Histogram:
    """Log-bucketed latency histogram (1 % resolution), mergeable across threads and processes."""

    __slots__ = ("bins", "count", "peak", "total")

    def __init__(self):
        self.bins: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.peak = 0.0

    def add(self, seconds: float) -> None:
        micro = seconds * 1e6
        index = int(math.log(micro) / _LOG_STEP) if micro > 1.0 else 0
        self.bins[index] = self.bins.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        self.peak = max(self.peak, seconds)

    def state(self) -> dict:
        return {"bins": dict(self.bins), "count": self.count, "total": self.total, "peak": self.peak}

    def merge_state(self, state: dict) -> None:
        for index, count in state["bins"].items():
            self.bins[index] = self.bins.get(index, 0) + count
        self.count += state["count"]
        self.total += state["total"]
        self.peak = max(self.peak, state["peak"])

    def percentile_ms(self, fraction: float) -> float:
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen >= rank:
                upper = math.exp((index + 1) * _LOG_STEP) / 1e6
                return round(min(upper, self.peak) * 1000, 3)
        return round(self.peak * 1000, 3)

    def summary(self) -> dict:
        return {
            "p50": self.percentile_ms(0.50),
            "p90": self.percentile_ms(0.90),
            "p99": self.percentile_ms(0.99),
            "max": round(self.peak * 1000, 3),
            "mean": round(self.total / self.count * 1000, 3) if self.count else 0.0,
            "count": self.count,
        }


def _empty_counts(names) -> dict:
    return {
        "sent": 0,
        "ok": 0,
        "failures": dict.fromkeys(KINDS, 0),
        "statuses": {},
        "endpoints": {name: {"sent": 0, "ok": 0, "failed": 0} for name in names},
        "latency": Histogram().state(),
        "connect": Histogram().state(),
        "lag": Histogram().state(),
        "connections_opened": 0,
        "idle_closed": 0,
        "reset_on_reuse": 0,
    }


def merge_counts(snapshots, names) -> dict:
    """Sum counter snapshots (from threads or processes) into one."""
    total = _empty_counts(names)
    latency, connect, lag = Histogram(), Histogram(), Histogram()
    for snap in snapshots:
        for key in ("sent", "ok", "connections_opened", "idle_closed", "reset_on_reuse"):
            total[key] += snap[key]
        for kind, count in snap["failures"].items():
            total["failures"][kind] += count
        for status, count in snap["statuses"].items():
            total["statuses"][status] = total["statuses"].get(status, 0) + count
        for name, counts in snap["endpoints"].items():
            into = total["endpoints"].setdefault(name, {"sent": 0, "ok": 0, "failed": 0})
            for key, count in counts.items():
                into[key] += count
        latency.merge_state(snap["latency"])
        connect.merge_state(snap["connect"])
        lag.merge_state(snap["lag"])
    total["latency"], total["connect"], total["lag"] = latency.state(), connect.state(), lag.state()
    return total


class _Counter:
    """One worker's counts; the lock is uncontended except when the main thread takes a snapshot."""

    def __init__(self, names):
        self.lock = threading.Lock()
        self.sent = 0
        self.ok = 0
        self.failures = dict.fromkeys(KINDS, 0)
        self.statuses: dict[str, int] = {}
        self.endpoints = {name: {"sent": 0, "ok": 0, "failed": 0} for name in names}
        self.latency = Histogram()
        self.connect = Histogram()
        self.lag = Histogram()  # open loop: how late each request went out after it was due
        self.connections_opened = 0
        self.idle_closed = 0
        self.reset_on_reuse = 0

    def snapshot(self) -> dict:
        with self.lock:
            return {
                "sent": self.sent,
                "ok": self.ok,
                "failures": dict(self.failures),
                "statuses": dict(self.statuses),
                "endpoints": {name: dict(counts) for name, counts in self.endpoints.items()},
                "latency": self.latency.state(),
                "connect": self.connect.state(),
                "lag": self.lag.state(),
                "connections_opened": self.connections_opened,
                "idle_closed": self.idle_closed,
                "reset_on_reuse": self.reset_on_reuse,
            }


# --------------------------------------------------------------------------- workers


def _classify(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return "timeout"
    if isinstance(exc, (http.client.IncompleteRead, ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        # ConnectionError: reset, aborted, broken pipe, RemoteDisconnected (EOF before the status line)
        return "reset"
    return "other"


def _closed_by_peer(sock) -> bool:
    """True when an idle kept-alive socket is readable: EOF, RST or unsolicited bytes. Never reuse it."""
    if sock is None:
        return True
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class _Pacer:
    """Spaces request starts to a total rate (0 = unbounded). Closed loop: a start that comes late
    pushes the later ones back. Open loop: the schedule never slips; a late start keeps its due time."""

    def __init__(self, rate: float, open_loop: bool = False):
        self.interval = 1.0 / rate if rate else 0.0
        self.open_loop = open_loop
        self.lock = threading.Lock()
        self.next = 0.0

    def slot(self, halt: threading.Event) -> float | None:
        """Wait for the next start; return when it was due (time.monotonic), or None once halted."""
        if not self.interval:
            return None if halt.is_set() else time.monotonic()
        with self.lock:
            now = time.monotonic()
            if self.open_loop:
                slot = self.next = self.next or now
            else:
                slot = max(now, self.next)
            self.next = slot + self.interval
        delay = slot - now
        if delay > 0 and halt.wait(delay):
            return None
        return None if halt.is_set() else slot


class _Tickets:
    def __init__(self, limit: int | None):
        self.left = limit
        self.lock = threading.Lock()

    def take(self) -> bool:
        if self.left is None:
            return True
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True

    @property
    def exhausted(self) -> bool:
        return self.left is not None and self.left <= 0


class _Shared:
    def __init__(self, plan: _Plan, on_ready: Callable[[], None] | None):
        self.halt = threading.Event()
        self.pacer = _Pacer(plan.rate, plan.open_loop)
        self.tickets = _Tickets(plan.max_requests)
        self.on_ready = on_ready
        self.ready = threading.Event()
        self.lock = threading.Lock()
        self.samples: list[str] = []
        self.start = time.monotonic()

    def first_ok(self) -> None:
        with self.lock:
            if self.ready.is_set():
                return
            self.ready.set()
        if self.on_ready is not None:
            self.on_ready()

    def sample(self, text: str) -> None:
        with self.lock:
            if len(self.samples) < MAX_SAMPLES:
                self.samples.append("+%.3fs %s" % (time.monotonic() - self.start, text))


@dataclasses.dataclass
class _Attempt:
    """One request as it goes: how far it got, what it opened or found closed, and its response."""

    started: float
    phase: str = "connect"  # then send, response, body
    reused: bool = False
    opened: int = 0
    idle_closed: int = 0
    connect_s: float | None = None
    status: int = 0
    data: bytes = b""
    elapsed: float = 0.0
    lag: float = 0.0


def _response_failure(
    endpoint: Endpoint, attempt: _Attempt, body: bytes | None, marker: bytes | None = None
) -> str | None:
    """How a response failed: ``marked`` (not 2xx, the body holds ``marker``), ``status`` (not 2xx), ``body``
    (an echo that differs), or None when it is ok."""
    if not 200 <= attempt.status < 300:
        return "marked" if marker and marker in attempt.data else "status"
    if endpoint.echo and attempt.data != body:
        return "body"
    return None


class _Worker:
    def __init__(self, index: int, plan: _Plan, shared: _Shared):
        self.index = index
        self.plan = plan
        self.shared = shared
        self.counter = _Counter([e.name for e in plan.endpoints])
        self.rng = random.Random(plan.seed * 7919 + index)
        self.conn: http.client.HTTPConnection | None = None
        self.aborted = False
        self.seq = 0
        self.thread = threading.Thread(target=self.run, name="loadgen-%d" % index, daemon=True)

    def run(self) -> None:
        shared = self.shared
        try:
            while not shared.halt.is_set():
                due = shared.pacer.slot(shared.halt)
                if due is None or not shared.tickets.take():
                    break
                self.request(self.plan.choose(self.rng.random()), due if self.plan.open_loop else None)
        finally:
            self.drop()

    def drop(self) -> None:
        conn = self.conn
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def abort(self) -> None:
        """Shutdown: interrupt a request still in flight after the grace period."""
        self.aborted = True
        conn = self.conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def echo_body(self) -> bytes:
        self.seq += 1
        size = self.rng.randint(self.plan.echo_min, self.plan.echo_max)
        head = b'{"nonce":"%d-%d-%016x","pad":"' % (self.index, self.seq, self.rng.getrandbits(64))
        need = max(0, size - len(head) - 2)
        pad = base64.b64encode(self.rng.randbytes(need * 3 // 4 + 3))[:need]
        return head + pad + b'"}'

    def prepare(self, endpoint: Endpoint) -> tuple[bytes | None, dict[str, str]]:
        """The request's body (a fresh random one for echo endpoints) and headers."""
        headers = dict(self.plan.headers)
        body = None
        if endpoint.echo:
            body = self.echo_body()
            headers["Content-Type"] = "application/json"
        return body, headers

    def request(self, endpoint: Endpoint, due: float | None = None) -> None:
        """Send one request, count its outcome and sample what went wrong. ``due`` (open loop): when it
        was due; its latency then counts from then."""
        body, headers = self.prepare(endpoint)
        attempt = _Attempt(started=time.perf_counter())
        if due is not None:
            attempt.lag = max(0.0, time.monotonic() - due)
        try:
            self.exchange(endpoint, body, headers, attempt)
        except Exception as exc:
            self.drop()
            self.count_error(endpoint, attempt, exc)
            return
        attempt.elapsed = time.perf_counter() - attempt.started + attempt.lag
        if self.plan.new_connection:
            self.drop()
        kind = _response_failure(endpoint, attempt, body, self.plan.marker)
        self.count_response(endpoint, attempt, kind)
        self.after_response(endpoint, attempt, kind, body)

    def exchange(self, endpoint: Endpoint, body: bytes | None, headers: dict[str, str], attempt: _Attempt) -> None:
        """Send on the worker's connection, reconnecting when the server closed it while idle (not a
        failure); record in ``attempt`` how far the request got and the response."""
        if self.conn is None:
            self.conn = self.plan.new_connection_object()
        conn = self.conn
        if conn.sock is not None and _closed_by_peer(conn.sock):
            conn.close()  # the server closed it between requests: not a failure
            attempt.idle_closed = 1
        if conn.sock is None:
            conn.connect()
            attempt.opened = 1
            attempt.connect_s = time.perf_counter() - attempt.started
        else:
            attempt.reused = True
        attempt.phase = "send"
        conn.request(endpoint.method, endpoint.path, body=body, headers=headers)
        attempt.phase = "response"
        response = conn.getresponse()
        attempt.phase = "body"
        attempt.data = response.read()
        attempt.status = response.status

    def count_error(self, endpoint: Endpoint, attempt: _Attempt, exc: Exception) -> None:
        """Count a request that raised (a request still in flight at shutdown is a timeout) and sample it."""
        counter = self.counter
        kind = "timeout" if self.aborted else _classify(exc)
        detail = "aborted at shutdown after --timeout" if self.aborted else "%s: %s" % (type(exc).__name__, exc)
        with counter.lock:
            counter.sent += 1
            counter.failures[kind] += 1
            counts = counter.endpoints[endpoint.name]
            counts["sent"] += 1
            counts["failed"] += 1
            counter.connections_opened += attempt.opened
            counter.idle_closed += attempt.idle_closed
            if attempt.reused and kind == "reset" and attempt.phase in ("send", "response"):
                counter.reset_on_reuse += 1
            if attempt.connect_s is not None:
                counter.connect.add(attempt.connect_s)
        self.shared.sample(
            "%s %s %s: %s during %s%s: %s"
            % (
                endpoint.name,
                endpoint.method,
                endpoint.path,
                kind,
                attempt.phase,
                " (reused)" if attempt.reused else "",
                detail,
            )
        )

    def count_response(self, endpoint: Endpoint, attempt: _Attempt, kind: str | None) -> None:
        """Count a request that got a response: ok (with its latency), or failed as ``kind``."""
        counter = self.counter
        with counter.lock:
            counter.sent += 1
            counts = counter.endpoints[endpoint.name]
            counts["sent"] += 1
            key = str(attempt.status)
            counter.statuses[key] = counter.statuses.get(key, 0) + 1
            counter.connections_opened += attempt.opened
            counter.idle_closed += attempt.idle_closed
            if attempt.connect_s is not None:
                counter.connect.add(attempt.connect_s)
            if self.plan.open_loop:
                counter.lag.add(attempt.lag)
            if kind is None:
                counter.ok += 1
                counts["ok"] += 1
                counter.latency.add(attempt.elapsed)
            else:
                counter.failures[kind] += 1
                counts["failed"] += 1

    def after_response(self, endpoint: Endpoint, attempt: _Attempt, kind: str | None, body: bytes | None) -> None:
        """Signal the first success; sample a bad status or an echo that differs (where it first differs)."""
        data = attempt.data
        if kind is None:
            if not self.shared.ready.is_set():
                self.shared.first_ok()
        elif kind in ("status", "marked"):
            self.shared.sample(
                "%s %s %s: status %d: %r" % (endpoint.name, endpoint.method, endpoint.path, attempt.status, data[:120])
            )
        else:
            pairs = enumerate(zip(data, body, strict=False))
            where = next((i for i, (got, sent) in pairs if got != sent), min(len(data), len(body)))
            self.shared.sample(
                "%s %s %s: body: sent %d bytes, got %d, first difference at byte %d"
                % (endpoint.name, endpoint.method, endpoint.path, len(body), len(data), where)
            )


def _drive(
    plan: _Plan,
    stop,
    on_ready: Callable[[], None] | None = None,
    on_progress: Callable[[dict, float], None] | None = None,
) -> dict:
    """Run the workers of one process until the duration, max-requests or ``stop``; return the raw outcome."""
    shared = _Shared(plan, on_ready)
    workers = [_Worker(i, plan, shared) for i in range(plan.connections)]
    names = [e.name for e in plan.endpoints]
    start = shared.start = time.monotonic()
    deadline = start + plan.duration
    for worker in workers:
        worker.thread.start()
    next_progress = start + plan.progress_interval
    while True:
        now = time.monotonic()
        if stop.is_set():
            stopped_by = "stop"
            break
        if now >= deadline:
            stopped_by = "duration"
            break
        if not any(w.thread.is_alive() for w in workers):
            stopped_by = "max_requests"
            break
        if on_progress is not None and now >= next_progress:
            on_progress(merge_counts([w.counter.snapshot() for w in workers], names), now - start)
            next_progress = now + plan.progress_interval
        wait_for = min(POLL_S, deadline - now)
        if on_progress is not None:
            wait_for = min(wait_for, next_progress - now)
        stop.wait(max(0.0, wait_for))
    # Let in-flight requests finish, bounded by --timeout; then interrupt what is left.
    shared.halt.set()
    grace_end = time.monotonic() + plan.timeout + 1.0
    for worker in workers:
        worker.thread.join(max(0.0, grace_end - time.monotonic()))
    stuck = [w for w in workers if w.thread.is_alive()]
    for worker in stuck:
        worker.abort()
    for worker in stuck:
        worker.thread.join(1.0)
    elapsed = time.monotonic() - start
    return {
        "counts": merge_counts([w.counter.snapshot() for w in workers], names),
        "elapsed": elapsed,
        "stopped_by": stopped_by,
        "unfinished": sum(1 for w in workers if w.thread.is_alive()),
        "samples": list(shared.samples),
    }


# --------------------------------------------------------------------------- several processes


def _child_main(index: int, plan: _Plan, stop, ready, channel) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        outcome = _drive(
            plan,
            stop,
            on_ready=ready.set,
            on_progress=lambda counts, elapsed: channel.put(("progress", index, counts)),
        )
        channel.put(("final", index, outcome))
    except BaseException as exc:
        channel.put(("error", index, "%s: %s" % (type(exc).__name__, exc)))
        raise


def _process_share(plan: _Plan, index: int, count: int) -> _Plan:
    """Child ``index``'s share of ``count``: its part of the connections, max-requests and rate, its own seed."""
    return dataclasses.replace(
        plan,
        connections=plan.connections // count + (index < plan.connections % count),
        max_requests=None
        if plan.max_requests is None
        else plan.max_requests // count + (index < plan.max_requests % count),
        rate=plan.rate / count,
        seed=plan.seed + 1000003 * index,
    )


class _Fleet:
    """The forked children of one run and what they reported: progress, a final outcome or an error."""

    def __init__(self, plan: _Plan):
        self.context = multiprocessing.get_context("fork")
        self.stop, self.ready, self.channel = self.context.Event(), self.context.Event(), self.context.Queue()
        self.names = [e.name for e in plan.endpoints]
        self.children: list = []
        self.latest: dict[int, dict] = {}
        self.finals: dict[int, dict] = {}
        self.errors: list[str] = []

    def start(self, plan: _Plan) -> None:
        """Fork one child per share; a share with no requests left to send gets none."""
        count = plan.processes
        for index in range(count):
            share = _process_share(plan, index, count)
            if share.max_requests == 0:
                continue
            child = self.context.Process(
                target=_child_main, args=(index, share, self.stop, self.ready, self.channel), daemon=True
            )
            child.start()
            self.children.append(child)

    @property
    def reporting(self) -> bool:
        """Some child has not sent its final outcome or error yet."""
        return len(self.finals) + len(self.errors) < len(self.children)

    def receive(self) -> str | None:
        """Keep the next report, waiting at most POLL_S; return its kind (None when nothing came)."""
        try:
            kind, index, payload = self.channel.get(timeout=POLL_S)
        except queue.Empty:
            return None
        if kind == "progress":
            self.latest[index] = payload
        elif kind == "final":
            self.finals[index] = payload
        elif kind == "error":
            self.errors.append("process %d: %s" % (index, payload))
        return kind

    def silent(self) -> bool:
        """Every child has exited and nothing is left to read."""
        return not any(c.is_alive() for c in self.children) and self.channel.empty()

    def counts(self) -> dict:
        """The children's counts so far: the final ones where there are, else the latest progress."""
        snaps = [
            self.finals[i]["counts"] if i in self.finals else self.latest[i]
            for i in set(self.latest) | set(self.finals)
        ]
        return merge_counts(snaps, self.names)

    def reap(self) -> None:
        """Stop the children, and kill those that do not exit within 2 s."""
        self.stop.set()
        for child in self.children:
            child.join(2.0)
            if child.is_alive():
                child.kill()

    def outcome(self, stopped: bool, elapsed: float) -> dict:
        """The merged outcome, with the children's samples first and their errors after."""
        outcomes = list(self.finals.values())
        reasons = [o["stopped_by"] for o in outcomes]
        samples = [s for o in outcomes for s in o["samples"]][:MAX_SAMPLES]
        samples += self.errors[: max(0, MAX_SAMPLES - len(samples))]
        return {
            "counts": merge_counts([o["counts"] for o in outcomes], self.names),
            "elapsed": elapsed,
            "stopped_by": "stop" if stopped else ("duration" if "duration" in reasons else "max_requests"),
            "unfinished": sum(o["unfinished"] for o in outcomes) + len(self.children) - len(outcomes),
            "samples": samples,
        }


def _drive_processes(plan: _Plan, stop, on_ready, on_progress) -> dict:
    """Fork ``plan.processes`` children sharing connections, max-requests and rate; merge their counts."""
    fleet = _Fleet(plan)
    fleet.start(plan)
    start = time.monotonic()
    ready_seen = False
    next_progress = start + plan.progress_interval
    hard_end = start + plan.duration + plan.timeout + 10.0
    while fleet.reporting:
        if stop.is_set():
            fleet.stop.set()
        if not ready_seen and fleet.ready.is_set():
            ready_seen = True
            if on_ready is not None:
                on_ready()
        kind = fleet.receive()
        now = time.monotonic()
        if on_progress is not None and now >= next_progress:
            on_progress(fleet.counts(), now - start)
            next_progress = now + plan.progress_interval
        if now > hard_end or (kind is None and fleet.silent()):
            break
    fleet.stop.set()
    if not ready_seen and fleet.ready.is_set() and on_ready is not None:
        on_ready()
    fleet.reap()
    return fleet.outcome(stop.is_set(), time.monotonic() - start)


# --------------------------------------------------------------------------- results


@dataclasses.dataclass
class Result:
    labels: dict
    mode: str
    url: str
    sent: int
    ok: int
    failed: int
    failures: dict
    statuses: dict
    endpoints: dict
    latency_ms: dict
    connect_ms: dict
    rps: float
    elapsed_s: float
    connections: int
    processes: int
    connections_opened: int
    idle_closed: int
    reset_on_reuse: int
    unfinished: int
    stopped_by: str
    samples: list
    open_loop: bool = False
    lag_ms: dict = dataclasses.field(default_factory=dict)  # open loop: start - due, every request answered

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary_line(self, **extra) -> str:
        """``LOAD RESULT <labels> sent= failed= ok= <kinds> p50_ms= ... rps= <extra>``."""
        fields = [*("%s=%s" % item for item in self.labels.items())]
        fields += ["sent=%d" % self.sent, "failed=%d" % self.failed, "ok=%d" % self.ok]
        fields += ["%s=%d" % (kind, self.failures[kind]) for kind in KINDS]
        fields += ["%s_ms=%s" % (key, self.latency_ms[key]) for key in ("p50", "p90", "p99", "max")]
        fields += ["rps=%s" % self.rps]
        fields += ["%s=%s" % item for item in extra.items()]
        return "LOAD RESULT " + " ".join(fields)


def _progress_doc(counts: dict, elapsed: float, running: bool, previous: dict | None) -> dict:
    failed = sum(counts["failures"].values())
    doc = {
        "running": running,
        "elapsed_s": round(elapsed, 3),
        "time": time.time(),
        "sent": counts["sent"],
        "ok": counts["ok"],
        "failed": failed,
        "failures": counts["failures"],
        "statuses": counts["statuses"],
        "rps": round(counts["sent"] / elapsed, 1) if elapsed > 0 else 0.0,
    }
    if previous is not None:
        span = elapsed - previous["elapsed_s"]
        doc["last_interval"] = {
            "seconds": round(span, 3),
            "sent": counts["sent"] - previous["sent"],
            "ok": counts["ok"] - previous["ok"],
            "failed": failed - previous["failed"],
        }
    return doc


def _write_atomic(path: str, text: str) -> None:
    tmp = "%s.tmp.%d.%d" % (path, os.getpid(), threading.get_ident())
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def run(config: Config | Mapping, stop: threading.Event | None = None) -> Result:
    """Run one bounded load (or connect) test and return its counts.

    ``config`` is a Config or a mapping of its fields. Set ``stop`` (a threading.Event) to end the
    run early from another thread; in-flight requests still finish, bounded by ``timeout``.
    Raises ConfigError (a ValueError) for bad options, non-loopback targets included.
    """
    if not isinstance(config, Config):
        config = Config(**dict(config))
    plan = make_plan(config)
    stop = stop if stop is not None else threading.Event()
    state: dict = {"previous": None}

    def on_ready() -> None:
        try:
            _write_atomic(config.ready_file, json.dumps({"ready": True, "time": time.time()}) + "\n")
        except OSError as exc:
            sys.stderr.write("loadgen: cannot write --ready-file: %s\n" % exc)

    def on_progress(counts: dict, elapsed: float) -> None:
        doc = _progress_doc(counts, elapsed, True, state["previous"])
        try:
            _write_atomic(config.progress_file, json.dumps(doc) + "\n")
        except OSError as exc:
            sys.stderr.write("loadgen: cannot write --progress-file: %s\n" % exc)
        state["previous"] = doc

    driver = _drive_processes if plan.processes > 1 else _drive
    outcome = driver(plan, stop, on_ready if config.ready_file else None, on_progress if config.progress_file else None)
    counts, elapsed = outcome["counts"], outcome["elapsed"]
    if config.progress_file:
        _write_atomic(config.progress_file, json.dumps(_progress_doc(counts, elapsed, False, None)) + "\n")
    latency, connect, lag = Histogram(), Histogram(), Histogram()
    latency.merge_state(counts["latency"])
    connect.merge_state(counts["connect"])
    lag.merge_state(counts["lag"])
    result = Result(
        labels={str(k): str(v) for k, v in (config.labels or {}).items()},
        mode=plan.mode,
        url=plan.url,
        sent=counts["sent"],
        ok=counts["ok"],
        failed=sum(counts["failures"].values()),
        failures=counts["failures"],
        statuses=dict(sorted(counts["statuses"].items())),
        endpoints=counts["endpoints"],
        latency_ms=latency.summary(),
        connect_ms=connect.summary(),
        rps=round(counts["sent"] / elapsed, 1) if elapsed > 0 else 0.0,
        elapsed_s=round(elapsed, 3),
        connections=plan.connections,
        processes=plan.processes,
        connections_opened=counts["connections_opened"],
        idle_closed=counts["idle_closed"],
        reset_on_reuse=counts["reset_on_reuse"],
        unfinished=outcome["unfinished"],
        stopped_by=outcome["stopped_by"],
        samples=outcome["samples"],
        open_loop=plan.open_loop,
        lag_ms=lag.summary() if plan.open_loop else {},
    )
    if config.result_file:
        _write_atomic(config.result_file, json.dumps(result.to_dict()) + "\n")
    return result


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadgen.py",
        usage="%(prog)s [load|connect] --url URL --duration SECONDS [options]",
        description="Bounded load generator for loopback HTTP targets. Prints a JSON object, then a "
        "'LOAD RESULT ...' line. Exit 0 when the run completed (whatever it counted), 2 on bad arguments.",
    )
    parser.add_argument("--mode", choices=MODES, help="load (default) or connect; may also be the first word")
    parser.add_argument("--url", required=True, help="base URL on 127.0.0.0/8, localhost or [::1]")
    parser.add_argument("--duration", type=float, required=True, help="seconds, at most %d" % MAX_DURATION)
    parser.add_argument("--max-requests", type=int, help="stop after this many requests in all")
    parser.add_argument("--connections", type=int, help="worker threads, one connection each (load 8, connect 1)")
    parser.add_argument("--processes", type=int, default=1, help="split the connections over N processes")
    parser.add_argument("--mix", help="endpoint weights, e.g. io=2,cpu=1,echo=1 (connect: healthz=1)")
    parser.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="endpoint path, e.g. io=/io?wait_ms=20 or upload='POST /echo' (POST bodies must be echoed)",
    )
    parser.add_argument("--host-header", help="Host header to send (nginx server_name)")
    parser.add_argument("--timeout", type=float, default=10.0, help="socket timeout per request, seconds")
    parser.add_argument("--new-connection-per-request", action="store_true", help="no keep-alive")
    parser.add_argument("--rate", type=float, help="total requests/s cap (load: unbounded, connect: 100)")
    parser.add_argument(
        "--open-loop", action="store_true", help="requests due at --rate whatever the answers; latency from due time"
    )
    parser.add_argument("--echo-size", default="256-4096", metavar="MIN-MAX", help="echo body size in bytes")
    parser.add_argument("--ready-file", help="written once the first request succeeded")
    parser.add_argument("--progress-file", help="JSON with the current counts, rewritten every second")
    parser.add_argument("--result-file", help="also write the final JSON here")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="leading result fields")
    parser.add_argument("--seed", type=int, help="random seed (endpoint choice, bodies)")
    parser.add_argument("--marker", help="count a non-2xx response whose body holds this text as 'marked'")
    return parser


def _repeated_pairs(items: list[str], option: str, form: str) -> dict[str, str]:
    """Values of a repeated ``option KEY=VALUE`` (the value may hold anything, commas included)."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError("bad %s %r (%s)" % (option, item, form))
        pairs[key] = value
    return pairs


def config_from_args(argv: list[str]) -> Config:
    """Parse CLI arguments into a Config; argparse exits 2 on errors, ConfigError for the rest."""
    argv = list(argv)
    word = argv.pop(0) if argv and argv[0] in MODES else None
    args = _parser().parse_args(argv)
    if word and args.mode and word != args.mode:
        raise ConfigError("mode given twice: %s and --mode %s" % (word, args.mode))
    low, sep, high = args.echo_size.partition("-")
    try:
        echo_min, echo_max = int(low), int(high if sep else low)
    except ValueError:
        raise ConfigError("bad --echo-size %r (MIN-MAX bytes)" % args.echo_size) from None
    labels = _repeated_pairs(args.label, "--label", "KEY=VALUE")
    paths = _repeated_pairs(args.path, "--path", "NAME=PATH")
    return Config(
        url=args.url,
        duration=args.duration,
        mode=word or args.mode or "load",
        max_requests=args.max_requests,
        connections=args.connections,
        mix=args.mix,
        paths=paths,
        host_header=args.host_header,
        timeout=args.timeout,
        new_connection_per_request=args.new_connection_per_request,
        rate=args.rate,
        echo_min=echo_min,
        echo_max=echo_max,
        ready_file=args.ready_file,
        progress_file=args.progress_file,
        result_file=args.result_file,
        labels=labels,
        seed=args.seed,
        processes=args.processes,
        marker=args.marker,
        open_loop=args.open_loop,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = config_from_args(argv)
        make_plan(config)  # validate before touching signals
    except ConfigError as exc:
        sys.stderr.write("loadgen: error: %s\n" % exc)
        return 2
    stop = threading.Event()
    signals: list[str] = []

    def handle(signum, frame):
        signals.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = run(config, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if signals:
        result.stopped_by = "signal:%s" % signals[0]
        if config.result_file:  # run() wrote it before the signal's name was known
            _write_atomic(config.result_file, json.dumps(result.to_dict()) + "\n")
    try:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        sys.stdout.write(result.summary_line() + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
