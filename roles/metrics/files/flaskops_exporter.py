# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's exporter of its Flask apps' metrics, in Prometheus's text format.

    python flaskops_exporter.py --config /etc/flaskops-metrics/apps.json

The configuration (written by the metrics role) names the address to listen on and, per app, its name,
the directory its gunicorn processes write their metrics to (``PROMETHEUS_MULTIPROC_DIR``, see the gunicorn
role's ``flaskops_metrics.py``) and its listening socket::

    {"listen": "127.0.0.1:9380",
     "apps": [{"name": "shop", "directory": "/run/flaskops-shop/metrics", "socket": "/run/flaskops/shop.sock"}]}

At each scrape it merges every app's files with ``prometheus_client``'s MultiProcessCollector (the
library the workers write them with) and adds, per app, what no process of the app can count itself: the
connections waiting in its socket's accept queue and the queue's size (``ss``, as the kernel reports a
listening socket's Recv-Q and Send-Q), and whether its metrics directory exists (``flaskops_app_metrics_up``:
0 while the app does not run).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import json
import os
import shutil
import signal
import subprocess
import sys

from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import CollectorRegistry

SS_TIMEOUT_S = 5
#: The lock file of an app's metrics directory (the gunicorn role's flaskops_metrics.py): its master folds a
#: reaped worker's files into the archive under it, exclusively; the exporter reads under it, shared.
LOCK = ".lock"


def listening_queues(text):
    """{socket path: (queued connections, backlog)} of ``ss -xlnH`` output (unix listening sockets)."""
    queues = {}
    for line in text.splitlines():
        fields = line.split()
        # Netid State Recv-Q Send-Q Local-Address Port Peer-Address Port
        if len(fields) >= 5 and fields[1] == "LISTEN" and fields[2].isdigit() and fields[3].isdigit():
            queues[fields[4]] = (int(fields[2]), int(fields[3]))
    return queues


class AppsCollector:
    """What the apps' processes wrote, merged, and each app's accept queue."""

    def __init__(self, apps, ss=None):
        self.apps = apps
        self.ss = ss if ss is not None else shutil.which("ss")

    def _queues(self):
        if self.ss is None:
            return {}
        try:
            done = subprocess.run([self.ss, "-xlnH"], capture_output=True, text=True, timeout=SS_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return {}
        return listening_queues(done.stdout) if done.returncode == 0 else {}

    def _merged(self, present):
        """The apps' files merged, read under each directory's lock (shared)."""
        with contextlib.ExitStack() as locks:
            files = []
            for app in present:
                try:
                    lock = locks.enter_context(open(os.path.join(app["directory"], LOCK), "rb"))
                except FileNotFoundError:  # a master that has not made it yet has folded nothing
                    pass
                else:
                    fcntl.flock(lock, fcntl.LOCK_SH)
                files.extend(glob.glob(os.path.join(app["directory"], "*.db")))
            return list(MultiProcessCollector.merge(files, accumulate=True))

    def collect(self):
        up = GaugeMetricFamily(
            "flaskops_app_metrics_up", "1 when the app's metrics directory exists (its service runs).", labels=["app"]
        )
        present = [app for app in self.apps if os.path.isdir(app["directory"])]
        for app in self.apps:
            up.add_metric([app["name"]], 1 if app in present else 0)
        # A service that stops (its directory removed) or restarts (emptied) while it is read: read again.
        for attempt in range(3):
            try:
                merged = self._merged(present)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        yield from merged
        yield up
        if self.ss is None:
            return
        queues = self._queues()
        queued = GaugeMetricFamily(
            "flaskops_socket_queued_connections",
            "Connections in the app socket's accept queue, not yet taken by a worker.",
            labels=["app"],
        )
        backlog = GaugeMetricFamily(
            "flaskops_socket_backlog", "Size of the app socket's accept queue (its backlog).", labels=["app"]
        )
        for app in self.apps:
            if app["socket"] in queues:
                queued.add_metric([app["name"]], queues[app["socket"]][0])
                backlog.add_metric([app["name"]], queues[app["socket"]][1])
        yield queued
        yield backlog


def read_config(path):
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    host, port = config["listen"].rsplit(":", 1)
    apps = [{"name": a["name"], "directory": a["directory"], "socket": a["socket"]} for a in config["apps"]]
    return host.strip("[]"), int(port), apps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the JSON configuration the metrics role writes")
    args = parser.parse_args(argv)
    try:
        host, port, apps = read_config(args.config)
    except (OSError, ValueError, KeyError, TypeError) as error:
        sys.exit("%s: %s: %s" % (sys.argv[0], args.config, error))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AppsCollector(apps))
    start_http_server(port, addr=host, registry=registry)
    signal.signal(signal.SIGTERM, lambda *args: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
