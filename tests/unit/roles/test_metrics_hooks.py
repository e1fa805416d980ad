# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The gunicorn role's metrics hooks (roles/gunicorn/files/flaskops_metrics.py) with the real prometheus_client.

prometheus_client picks its multiprocess mode when it is first imported, from PROMETHEUS_MULTIPROC_DIR, as in
gunicorn's master: each scenario runs in a fresh interpreter (a master that forks its workers, as gunicorn
does), and the test reads the files back with the MultiProcessCollector the exporter uses.
"""

from __future__ import annotations

import importlib.util
import inspect
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest
import yaml
from prometheus_client.multiprocess import MultiProcessCollector

ROOT = pathlib.Path(__file__).resolve().parents[3]
HOOKS = ROOT / "roles" / "gunicorn" / "files" / "flaskops_metrics.py"

# A master and its workers, as gunicorn runs the hooks: on_starting in the master, then per worker a fork,
# post_worker_init, pre_request/post_request per request (gunicorn counts worker.nr between them), and
# worker_exit in the worker; child_exit in the master once it has reaped the worker.
SCENARIO = textwrap.dedent(
    """
    import importlib.util, os, sys
    directory, hooks_file, script = sys.argv[1], sys.argv[2], sys.argv[3]
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.environ["FLASKOPS_RELEASE"] = "r1"

    def load():
        spec = importlib.util.spec_from_file_location("flaskops_metrics", hooks_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.Hooks(app="shop", directory=directory, buckets=[0.01, 0.1, 1.0])

    class Worker:
        def __init__(self, max_requests):
            self.pid, self.nr, self.max_requests = os.getpid(), 0, max_requests

    class Request:
        pass

    class Response:
        def __init__(self, code):
            if code is not None:
                self.status_code = code

    def worker(hooks, release, max_requests, codes, in_flight=0, exit_hook=True):
        pid = os.fork()
        if pid:
            os.waitpid(pid, 0)
            return pid
        os.environ["FLASKOPS_RELEASE"] = release
        me = Worker(max_requests)
        hooks.post_worker_init(me)
        for code in codes:
            request = Request()
            hooks.pre_request(me, request)
            me.nr += 1
            hooks.post_request(me, request, {}, None if code == "raised" else Response(code))
        for _ in range(in_flight):
            hooks.pre_request(me, Request())
        if exit_hook:
            hooks.worker_exit(None, me)
        os._exit(0)

    class Dead:
        def __init__(self, pid):
            self.pid = pid

    exec(script)
    """
)


def run(tmp_path, script, expect_log=None):
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"left by an earlier master")
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO, str(directory), str(HOOKS), textwrap.dedent(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    if expect_log is not None:
        assert done.stderr.count(expect_log) == 1, done.stderr
    else:
        assert "Traceback" not in done.stderr, done.stderr
    samples = {}
    for family in MultiProcessCollector.merge([str(p) for p in directory.glob("*.db")], accumulate=True):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = sample.value
    return directory, samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted({"app": "shop", **labels}.items()))))


def test_requests_workers_and_exits_as_a_master_and_its_workers_write_them(tmp_path):
    directory, samples = run(
        tmp_path,
        """
        hooks = load()
        hooks.on_starting(None)
        # A worker recycled after its third request, reaped by the master.
        first = worker(hooks, "r1", 3, [200, 200, 500])
        hooks.child_exit(None, Dead(first))
        # A worker still running with one request in flight (the master has not reaped it).
        worker(hooks, "r1", 100, [404, "raised"], in_flight=1, exit_hook=False)
        # A reload: gunicorn loads the configuration again (new hooks); a worker of the new release.
        os.environ["FLASKOPS_RELEASE"] = "r2"
        hooks = load()
        third = worker(hooks, "r2", 100, [201, 302, 503])
        # gunicorn calls worker_exit in the master for a worker already gone: no recycle counted there.
        hooks.worker_exit(None, Worker(1))
        hooks.child_exit(None, Dead(third))
        """,
    )
    assert not (directory / "counter_1.db").exists(), "on_starting leaves no earlier master's file"
    # The reaped workers' counters and histograms were folded into the archives: the files left are the
    # archives, the master's own counter and the running worker's three.
    names = sorted(
        path.name.rsplit("_", 1)[0] if path.name[-4].isdigit() else path.name for path in directory.glob("*.db")
    )
    assert names == ["counter", "counter", "counter_archive.db", "gauge_livesum", "histogram", "histogram_archive.db"]
    requests = "flaskops_http_requests_total"
    assert value(samples, requests, release="r1", status_class="2xx") == 2
    assert value(samples, requests, release="r1", status_class="4xx") == 1
    # An answer the app never gave (it raised, gunicorn answered 500) counts as 5xx.
    assert value(samples, requests, release="r1", status_class="5xx") == 2
    assert value(samples, requests, release="r2", status_class="2xx") == 1
    assert value(samples, requests, release="r2", status_class="3xx") == 1
    assert value(samples, requests, release="r2", status_class="5xx") == 1
    assert value(samples, requests, release="r2", status_class="1xx") == 0
    # The histogram: every request that ended, per release; the in-flight one is not in it.
    assert value(samples, "flaskops_http_request_duration_seconds_count", release="r1") == 5
    assert value(samples, "flaskops_http_request_duration_seconds_bucket", release="r2", le="+Inf") == 3
    assert value(samples, "flaskops_http_request_duration_seconds_bucket", release="r2", le="1.0") == 3
    # Live gauges: the reaped workers are gone; the running one is a worker with one request in flight.
    assert value(samples, "flaskops_workers", release="r1") == 1
    assert value(samples, "flaskops_workers", release="r2") is None
    assert value(samples, "flaskops_http_requests_in_flight", release="r1") == 1
    # The master counted both exits under the release it ran at the time; one worker was recycled.
    assert value(samples, "flaskops_worker_exits_total", release="r1") == 1
    assert value(samples, "flaskops_worker_exits_total", release="r2") == 1
    assert value(samples, "flaskops_worker_recycles_total", release="r1") == 1
    assert value(samples, "flaskops_worker_recycles_total", release="r2") == 0
    assert value(samples, "flaskops_worker_timeouts_total", release="r2") == 0


def test_recycled_workers_leave_no_files_behind_and_lose_no_count(tmp_path):
    directory, samples = run(
        tmp_path,
        """
        hooks = load()
        hooks.on_starting(None)
        for number in range(40):
            hooks.child_exit(None, Dead(worker(hooks, "r1", 2, [200, 500])))
        """,
    )
    assert value(samples, "flaskops_http_requests_total", release="r1", status_class="2xx") == 40
    assert value(samples, "flaskops_http_requests_total", release="r1", status_class="5xx") == 40
    assert value(samples, "flaskops_http_request_duration_seconds_count", release="r1") == 80
    assert value(samples, "flaskops_worker_recycles_total", release="r1") == 40
    assert value(samples, "flaskops_worker_exits_total", release="r1") == 40
    assert value(samples, "flaskops_workers", release="r1") is None
    # 40 workers came and went: what is left is the master's own counter file and the two archives.
    names = sorted(path.name for path in directory.glob("*.db"))
    assert re.fullmatch(r"counter_\d+\.db", names[0]) and names[1:] == ["counter_archive.db", "histogram_archive.db"]


def test_a_timed_out_worker_is_counted(tmp_path):
    _directory, samples = run(
        tmp_path,
        """
        hooks = load()
        hooks.on_starting(None)
        pid = os.fork()
        if pid == 0:
            me = Worker(100)
            hooks.post_worker_init(me)
            hooks.pre_request(me, Request())
            hooks.worker_abort(me)  # gunicorn's SIGABRT handler, then the worker exits
            hooks.worker_exit(None, me)
            os._exit(1)
        os.waitpid(pid, 0)
        hooks.child_exit(None, Dead(pid))
        """,
    )
    assert value(samples, "flaskops_worker_timeouts_total", release="r1") == 1
    assert value(samples, "flaskops_worker_recycles_total", release="r1") == 0
    assert value(samples, "flaskops_http_requests_in_flight", release="r1") is None


def test_a_reload_makes_the_directory_and_a_failing_hook_never_fails_the_request(tmp_path):
    _directory, samples = run(
        tmp_path,
        """
        import logging, shutil
        logging.basicConfig()
        hooks = load()
        shutil.rmtree(directory)  # metrics turned on by a reload: the service started without them
        hooks.on_reload(None)
        worker(hooks, "r1", 100, [200])
        shutil.rmtree(directory)  # gone under the workers: requests are served, the error logged once
        pid = os.fork()
        if pid == 0:
            me = Worker(100)
            for _ in range(3):
                request = Request()
                hooks.pre_request(me, request)
                hooks.post_request(me, request, {}, Response(200))
            os._exit(0)
        _pid, status = os.waitpid(pid, 0)
        assert status == 0, status
        os.makedirs(directory)
        worker(hooks, "r1", 100, [200, 200])
        """,
        expect_log="flaskops metrics of shop: pre_request failed; requests are served, not counted",
    )
    assert value(samples, "flaskops_http_requests_total", release="r1", status_class="2xx") == 2


def test_the_hooks_take_the_arguments_gunicorn_passes():
    spec = importlib.util.spec_from_file_location("flaskops_metrics_arity", HOOKS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hooks = module.Hooks.__new__(module.Hooks)
    # gunicorn checks each hook's arity (positional parameters) when it loads the configuration.
    arity = {"on_starting": 1, "on_reload": 1, "child_exit": 2, "post_worker_init": 1, "pre_request": 2}
    arity.update(post_request=4, worker_abort=1, worker_exit=2)
    for name, count in arity.items():
        assert len(inspect.signature(getattr(hooks, name)).parameters) == count, name


@pytest.mark.parametrize(
    "code, expected", [(200, "2xx"), (101, "1xx"), (499, "4xx"), (599, "5xx"), (None, "5xx"), (600, "5xx")]
)
def test_status_class(code, expected):
    spec = importlib.util.spec_from_file_location("flaskops_metrics_classes", HOOKS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class Response:
        status_code = code

    assert module.status_class(Response()) == expected
    assert module.status_class(None) == "5xx"


def test_the_tests_use_the_version_the_roles_install():
    pins = [line for line in (ROOT / "requirements-dev.txt").read_text().splitlines() if line.startswith("prometheus")]
    for role in ("gunicorn", "metrics"):
        name = "%s_prometheus_client_version" % role
        defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
        assert pins == ["prometheus-client==%s" % defaults[name]], role
