# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The metrics role's exporter (roles/metrics/files/flaskops_exporter.py): the apps' files merged, the
accept queues from ss, and the process itself serving them over HTTP."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
EXPORTER = ROOT / "roles" / "metrics" / "files" / "flaskops_exporter.py"
SS_OUTPUT = (
    "u_str LISTEN 3    2048   /run/flaskops/shop.sock 4242  * 0\n"
    "u_str LISTEN 0    4096   /run/flaskops/api.sock 4243  * 0\n"
    "u_str LISTEN 0    128    /run/systemd/private 17  * 0\n"
)


def load():
    spec = importlib.util.spec_from_file_location("flaskops_exporter", EXPORTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_counts(directory, release, count):
    """One worker's files, as the gunicorn role's hooks write them (prometheus_client in multiprocess mode)."""
    script = textwrap.dedent(
        """
        import os, sys
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
        from prometheus_client import Counter
        counter = Counter("flaskops_http_requests", "h", ["app", "release", "status_class"], registry=None)
        counter.labels(app=sys.argv[2], release=sys.argv[3], status_class="2xx").inc(int(sys.argv[4]))
        """
    )
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-c", script, str(directory), directory.parent.name, release, str(count)], check=True
    )


def fake_ss(tmp_path, output=SS_OUTPUT, rc=0):
    path = tmp_path / "ss"
    path.write_text("#!/bin/sh\ncat <<'EOF'\n%sEOF\nexit %d\n" % (output, rc))
    path.chmod(0o755)
    return str(path)


def samples(collector):
    found = {}
    for family in collector.collect():
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def apps(tmp_path):
    return [
        {"name": "shop", "directory": str(tmp_path / "shop" / "metrics"), "socket": "/run/flaskops/shop.sock"},
        {"name": "api", "directory": str(tmp_path / "api" / "metrics"), "socket": "/run/flaskops/api.sock"},
    ]


def test_listening_queues_of_ss():
    exporter = load()
    assert exporter.listening_queues(SS_OUTPUT + "garbage\nu_str ESTAB 0 0 /x 1 * 2\n") == {
        "/run/flaskops/shop.sock": (3, 2048),
        "/run/flaskops/api.sock": (0, 4096),
        "/run/systemd/private": (0, 128),
    }


def test_every_apps_files_merged_and_each_apps_queue(tmp_path):
    write_counts(tmp_path / "shop" / "metrics", "r1", 5)
    write_counts(tmp_path / "shop" / "metrics", "r2", 7)  # another process: its own file
    exporter = load()
    found = samples(exporter.AppsCollector(apps(tmp_path), ss=fake_ss(tmp_path)))
    shop = {"app": "shop", "status_class": "2xx"}
    assert found[("flaskops_http_requests_total", tuple(sorted({**shop, "release": "r1"}.items())))] == 5
    assert found[("flaskops_http_requests_total", tuple(sorted({**shop, "release": "r2"}.items())))] == 7
    # api does not run: no directory, no series of its own but the up gauge (0) and its socket's queue.
    assert found[("flaskops_app_metrics_up", (("app", "shop"),))] == 1
    assert found[("flaskops_app_metrics_up", (("app", "api"),))] == 0
    assert found[("flaskops_socket_queued_connections", (("app", "shop"),))] == 3
    assert found[("flaskops_socket_backlog", (("app", "shop"),))] == 2048
    assert found[("flaskops_socket_backlog", (("app", "api"),))] == 4096


def test_the_exporter_reads_under_the_directorys_lock(tmp_path):
    """While the master folds a reaped worker's files (it holds the lock), a scrape waits for it."""
    write_counts(tmp_path / "shop" / "metrics", "r1", 2)
    lock_path = tmp_path / "shop" / "metrics" / ".lock"
    lock_path.touch()
    exporter = load()
    collector = exporter.AppsCollector(apps(tmp_path), ss=fake_ss(tmp_path))
    found = []
    with open(lock_path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        reader = threading.Thread(target=lambda: found.append(samples(collector)))
        reader.start()
        reader.join(0.5)
        assert reader.is_alive() and not found, "the scrape did not wait for the lock"
    reader.join(10)
    key = ("flaskops_http_requests_total", (("app", "shop"), ("release", "r1"), ("status_class", "2xx")))
    assert found and found[0][key] == 2


@pytest.mark.parametrize("ss", ["missing", "failing"])
def test_without_ss_the_queues_are_left_out(tmp_path, ss):
    write_counts(tmp_path / "shop" / "metrics", "r1", 1)
    exporter = load()
    path = str(tmp_path / "no-ss") if ss == "missing" else fake_ss(tmp_path, "", rc=1)
    collector = exporter.AppsCollector(apps(tmp_path), ss=path)
    names = {name for name, _labels in samples(collector)}
    assert "flaskops_http_requests_total" in names
    assert "flaskops_socket_queued_connections" not in names


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_exporter_serves_the_text_format(tmp_path):
    write_counts(tmp_path / "shop" / "metrics", "r1", 4)
    port = free_port()
    config = tmp_path / "apps.json"
    config.write_text(json.dumps({"listen": "127.0.0.1:%d" % port, "apps": apps(tmp_path)}))
    env = dict(os.environ, PATH="%s:%s" % (tmp_path, os.environ["PATH"]))
    fake_ss(tmp_path)
    process = subprocess.Popen([sys.executable, str(EXPORTER), "--config", str(config)], env=env)
    try:
        deadline, text = time.monotonic() + 10, None
        while text is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=2) as answer:
                    text = answer.read().decode()
            except OSError:
                time.sleep(0.1)
        assert text is not None, "the exporter did not answer"
        assert 'flaskops_http_requests_total{app="shop",release="r1",status_class="2xx"} 4.0' in text
        assert 'flaskops_socket_queued_connections{app="shop"} 3.0' in text
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_a_bad_configuration_names_the_file(tmp_path):
    config = tmp_path / "apps.json"
    config.write_text('{"listen": "127.0.0.1:9380"}')
    argv = [sys.executable, str(EXPORTER), "--config", str(config)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert str(config) in done.stderr and "apps" in done.stderr
