# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""gunicorn server hooks that count what an app's workers do, in Prometheus's format, without the app's code.

The gunicorn role copies this file into each release when ``gunicorn_metrics`` is on, and the release's
``gunicorn.conf.py`` loads it and binds its hooks. ``prometheus_client`` (installed into the release's
virtualenv) keeps the values in multiprocess mode: each process writes its own files in
``PROMETHEUS_MULTIPROC_DIR`` (the app's runtime directory, emptied when the service starts), and the
collection's exporter (the metrics role) merges them. Workers write the request metrics; the master writes
the worker exits and drops the live gauges of a worker that has gone.

Every series has the labels ``app`` and ``release`` (``FLASKOPS_RELEASE`` of the process that wrote it): after
a reload the new workers count under the new release, and the old release's counters stay, so a sum over
releases has no gap.

prometheus_client leaves a file per process and kind; with workers recycled by ``max_requests`` the directory (a
tmpfs) would grow without end, and every scrape would read more. When the master reaps a worker it folds the
worker's counters and histograms into one archive file per kind and removes the worker's files, under the
directory's lock, which the exporter takes to read: a scrape never sees a value twice or not at all.
"""

from __future__ import annotations

import fcntl
import functools
import glob
import logging
import os
import time

from prometheus_client import Counter, Gauge, Histogram, multiprocess
from prometheus_client.mmap_dict import MmapedDict

_LABELS = ("app", "release")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Where a request's start is kept between pre_request and post_request (gunicorn's Request object).
_START = "flaskops_metrics_start"
#: The lock file of the directory: the master folds a reaped worker's files into the archive under it
#: (exclusive), the exporter reads the files under it (shared).
LOCK = ".lock"
#: The files whose values only add up (prometheus_client's counter, histogram and summary files): a reaped
#: worker's are folded into <kind>_archive.db, so that the directory holds one set per live process, not
#: one per worker that ever ran (max_requests recycles them all along).
CUMULATIVE = ("counter", "histogram", "summary")


def _quietly(hook):
    """The hook, never failing: gunicorn answers 500 when pre_request raises, and a worker whose hooks fail
    still serves. An error is logged once per process (gunicorn's error log: the journal)."""

    @functools.wraps(hook)
    def run(self, *args):
        try:
            hook(self, *args)
        except Exception:  # pylint: disable=broad-exception-caught  # metrics never fail a request
            if self.failed != os.getpid():
                self.failed = os.getpid()
                logging.getLogger("gunicorn.error").exception(
                    "flaskops metrics of %s: %s failed; requests are served, not counted", self.app, hook.__name__
                )

    return run


def status_class(response):
    """``2xx``... of a gunicorn response; ``5xx`` when the app sent none (it raised: gunicorn answers 500)."""
    code = getattr(response, "status_code", None) if response is not None else None
    if not isinstance(code, int) or not 100 <= code <= 599:
        return "5xx"
    return "%dxx" % (code // 100)


class Hooks:
    """The hooks of one app. ``directory`` is PROMETHEUS_MULTIPROC_DIR; it must be in the environment
    before ``prometheus_client`` is imported (gunicorn.conf.py sets it first). ``buckets``: the upper bounds
    of the duration histogram's buckets, in seconds (gunicorn_metrics_buckets)."""

    def __init__(self, app, directory, buckets):
        self.app, self.directory = app, directory
        # registry=None: in multiprocess mode the values live in the files, and the exporter reads those.
        self.requests = Counter(
            "flaskops_http_requests",
            "Requests the app answered, by status class.",
            [*_LABELS, "status_class"],
            registry=None,
        )
        self.duration = Histogram(
            "flaskops_http_request_duration_seconds",
            "Time from gunicorn parsing a request to the end of the app's response.",
            _LABELS,
            buckets=tuple(buckets),
            registry=None,
        )
        self.in_flight = Gauge(
            "flaskops_http_requests_in_flight",
            "Requests the workers are handling.",
            _LABELS,
            multiprocess_mode="livesum",
            registry=None,
        )
        self.workers = Gauge(
            "flaskops_workers",
            "Workers that have loaded the app and not exited.",
            _LABELS,
            multiprocess_mode="livesum",
            registry=None,
        )
        self.exits = Counter(
            "flaskops_worker_exits",
            "Workers the master reaped: recycled, timed out, killed (the OOM killer) or retired by a reload.",
            _LABELS,
            registry=None,
        )
        self.recycles = Counter(
            "flaskops_worker_recycles",
            "Workers that exited after max_requests requests.",
            _LABELS,
            registry=None,
        )
        self.timeouts = Counter(
            "flaskops_worker_timeouts",
            "Workers the master aborted for being silent longer than timeout.",
            _LABELS,
            registry=None,
        )
        self._bound, self.failed = None, None

    def _labels(self):
        return {"app": self.app, "release": os.environ.get("FLASKOPS_RELEASE", "")}

    def _worker(self):
        """The series of this worker (its release does not change while it lives), made once per process."""
        if self._bound is None or self._bound[0] != os.getpid():
            labels = self._labels()
            self._bound = (
                os.getpid(),
                self.in_flight.labels(**labels),
                self.duration.labels(**labels),
                {name: self.requests.labels(status_class=name, **labels) for name in STATUS_CLASSES},
            )
        return self._bound

    # --- In the master -----------------------------------------------------------------------------

    def _prepare(self):
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        os.close(os.open(os.path.join(self.directory, LOCK), os.O_CREAT | os.O_RDWR, 0o640))
        self.exits.labels(**self._labels())

    @_quietly
    def on_starting(self, _server):
        """At the master's start: files left by an earlier master are not this run's."""
        os.makedirs(self.directory, mode=0o750, exist_ok=True)
        for path in glob.glob(os.path.join(self.directory, "*.db")):
            os.remove(path)
        self._prepare()

    @_quietly
    def on_reload(self, _server):
        """At a reload, before the new workers: the directory, when metrics were off at the start."""
        self._prepare()

    @_quietly
    def child_exit(self, _server, worker):
        multiprocess.mark_process_dead(worker.pid, self.directory)
        self.exits.labels(**self._labels()).inc()
        self.fold(worker.pid)

    def fold(self, pid):
        """Add a reaped worker's counters, histograms and summaries to the archive files and remove its own."""
        with open(os.path.join(self.directory, LOCK), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for kind in CUMULATIVE:
                path = os.path.join(self.directory, "%s_%d.db" % (kind, pid))
                if not os.path.exists(path):
                    continue
                archive = MmapedDict(os.path.join(self.directory, "%s_archive.db" % kind))
                try:
                    for key, value, timestamp, _position in MmapedDict.read_all_values_from_file(path):
                        total, latest = archive.read_value(key)
                        archive.write_value(key, total + value, max(latest, timestamp))
                finally:
                    archive.close()
                os.remove(path)

    # --- In a worker -------------------------------------------------------------------------------

    @_quietly
    def post_worker_init(self, _worker):
        # Every series of the worker exists from its start, at 0 until something happens.
        self._worker()
        labels = self._labels()
        self.recycles.labels(**labels)
        self.timeouts.labels(**labels)
        self.workers.labels(**labels).set(1)

    @_quietly
    def pre_request(self, _worker, request):
        setattr(request, _START, time.perf_counter())
        self._worker()[1].inc()

    @_quietly
    def post_request(self, _worker, request, _environ, response):
        started = getattr(request, _START, None)
        if started is None:  # pre_request failed before it counted the request
            return
        _pid, in_flight, duration, requests = self._worker()
        in_flight.dec()
        duration.observe(time.perf_counter() - started)
        requests[status_class(response)].inc()

    @_quietly
    def worker_abort(self, _worker):
        self.timeouts.labels(**self._labels()).inc()

    @_quietly
    def worker_exit(self, _server, worker):
        # gunicorn also calls this in the master for a worker that was already gone when it signalled it.
        if worker.pid == os.getpid() and getattr(worker, "nr", 0) >= getattr(worker, "max_requests", 1 << 62):
            self.recycles.labels(**self._labels()).inc()
