"""Shared pytest fixtures and hooks for the testinfra verifiers of the molecule scenarios.

pytest loads this file for every scenario because .config/molecule/config.yml passes the verifier
option ``--confcutdir=<collection root>/molecule``.

``host`` (testinfra's own fixture)
    molecule hands testinfra its ansible backend; the scenarios connect over SSH (see
    .config/molecule/config.yml), so testinfra runs ``host.run``, ``host.file`` ... over its own ssh
    backend through the same ProxyCommand and a shared control connection (a few ms each), and
    ``host.ansible(...)`` runs Ansible modules. ``container(host)`` names the instance's podman
    container (the scenarios name their instances after their containers).

``ansible_facts``
    ``host.ansible("setup")["ansible_facts"]``, gathered once per test module.

``run_playbook`` and ``recap``
    Run ansible-playbook against the scenario's inventory (colour off: molecule forces it on) and
    read the PLAY RECAP counts of its hosts.

``inventory``, ``apps``, ``app``, ``facts``, ``plans``, ``plan``
    The scenario's inventory variables, its ``flask_stack_apps`` (and the first of them), the
    instance's facts with ``flaskops.stack.resource_facts`` added (as the roles see them), and each
    app's plan from the ``flaskops.stack.gunicorn_tuning`` filter (and the first app's): what a
    verifier expects, derived, never written down.

``nginx_url``, ``Load``, ``report``
    The instance's nginx as the controller reaches it (``http://127.0.0.1:<published port>``);
    ``tools/loadgen/loadgen.py`` in a subprocess against it, started and stopped around a block of a
    test; ``report(line)`` prints a result line (``LOAD RESULT ...``, ``SECURITY RESULT ...``) at once
    and again at the end of the run, and appends it to the file ``$FLASKOPS_RESULTS_FILE`` when set
    (``make molecule`` prints that file after each scenario: molecule wraps its own output at the
    terminal's width).

``wait_ready``
    The app ready by the collection's own readiness check (the module ``flaskops.stack.gunicorn_ready``).

``check_run_changes_nothing``
    The scenario's converge playbook in ``--check --diff`` on the converged instance: 0 changed, 0 failed.

Journal on failure
    When a test fails, the report gets ``journalctl -u <unit>`` for each unit the test names, and
    ``systemctl --failed``. A test module names its units in ``JOURNAL_UNITS``; a test can name its
    own with ``@pytest.mark.journal_units("gunicorn-demo.service", "nginx.service")``. With no unit
    named, the last lines of ``journalctl -xe`` are attached instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.flaskops.stack.plugins.filter.gunicorn_tuning import gunicorn_tuning

JOURNAL_LINES = 200


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "journal_units(*units): systemd units whose journal is printed when the test fails",
    )


def container(host: Any) -> str:
    """The podman container of the instance ``host`` (its inventory name)."""
    return str(host.backend.hostname)


@pytest.fixture(scope="module")
def ansible_facts(host: Any) -> dict[str, Any]:
    """The instance's Ansible facts, gathered once per test module."""
    return host.ansible("setup")["ansible_facts"]


def playbook_command(playbook: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of ansible-playbook ``playbook`` against the scenario's instances, colour off."""
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "PY_COLORS": "0"}
    return ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], playbook, *args], env


def run_playbook(playbook: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """ansible-playbook ``playbook`` against the scenario's instances, output captured as plain text."""
    argv, env = playbook_command(playbook, *args)
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env=env,
    )


RECAP_LINE = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counts per host: {host: {"ok": n, "changed": n, "unreachable": n, "failed": n}}."""
    return {
        host: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, counts), strict=True))
        for host, *counts in RECAP_LINE.findall(stdout)
    }


def succeeded(run: subprocess.CompletedProcess[str]) -> bool:
    """The play ran to its end with no host failed."""
    counts = recap(run.stdout)
    return run.returncode == 0 and bool(counts) and all(c["failed"] == 0 for c in counts.values())


# A failed task as the default callback prints it: "fatal: [host]: ..." or "failed: [host] (item=...)"
# on standard output, or ansible-core 2.19's "[ERROR]: Task failed: ..." on standard error.
FAILED_TASK = re.compile(r"^(?:fatal: |failed: |\[ERROR\]: ).*?(?=^\S|\Z)", re.M | re.S)


def why_failed(run: subprocess.CompletedProcess[str], tail: int = 3000) -> str:
    """A failed play's failed tasks (their messages) first, then the end of its output: a test
    report that shortens the message still shows why."""
    found = FAILED_TASK.finditer(run.stdout + "\n" + run.stderr)
    failures = "\n".join(m.group(0).strip()[:2000] for m in found)
    return (
        f"failed tasks:\n{failures or '(none in the output)'}\n--- end of the output:\n"
        + (run.stdout + run.stderr)[-tail:]
    )


@pytest.fixture(scope="module")
def inventory(_testinfra_host: Any) -> dict[str, Any]:
    """The scenario's inventory variables for the instance (flask_stack_apps and the rest)."""
    backend = _testinfra_host.backend
    return backend.ansible_runner.get_variables(backend.host)


@pytest.fixture(scope="module")
def apps(inventory: dict[str, Any]) -> list[dict[str, Any]]:
    """The scenario's apps."""
    return inventory["flask_stack_apps"]


@pytest.fixture(scope="module")
def app(apps: list[dict[str, Any]]) -> dict[str, Any]:
    """The scenario's first app."""
    return apps[0]


@pytest.fixture(scope="module")
def facts(host: Any, ansible_facts: dict[str, Any]) -> dict[str, Any]:
    """setup facts plus flaskops.stack.resource_facts, as the roles see them."""
    resources = host.ansible("flaskops.stack.resource_facts", check=False)["ansible_facts"]
    return {**ansible_facts, "ansible_flaskops_resources": resources["flaskops_resources"]}


@pytest.fixture(scope="module")
def plans(facts: dict[str, Any], apps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each app's plan for this instance, from the collection's filter, by app name; the app's ``settings``
    for workers and threads win, as they do in its gunicorn.conf.py."""
    result = {}
    for item in apps:
        plan = gunicorn_tuning(facts, item.get("workload", {}))
        pinned = {key: item["settings"][key] for key in ("workers", "threads") if key in item.get("settings", {})}
        result[item["name"]] = {**plan, **pinned}
    return result


@pytest.fixture(scope="module")
def plan(plans: dict[str, dict[str, Any]], app: dict[str, Any]) -> dict[str, Any]:
    """The first app's plan."""
    return plans[app["name"]]


def check_run_changes_nothing() -> None:
    """The scenario's converge playbook in --check --diff on the converged instance changes nothing."""
    run = run_playbook(os.path.join(os.environ["MOLECULE_SCENARIO_DIRECTORY"], "converge.yml"), "--check", "--diff")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    counts = recap(run.stdout)
    assert counts, run.stdout[-2000:]
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), run.stdout[-4000:]


def published_address(host: Any, port: int) -> str:
    """``127.0.0.1:<n>``: where the controller reaches the instance's ``port`` (molecule's published_ports)."""
    out = subprocess.run(["podman", "port", container(host), str(port)], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


@pytest.fixture(scope="module")
def nginx_url(host: Any) -> str:
    """The instance's nginx (port 80) as the controller reaches it."""
    return "http://" + published_address(host, 80)


RESULTS_KEY = pytest.StashKey[list[str]]()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Any:
    """``report(line)``: print ``line`` now (uncaptured) and again in the summary at the end of the run."""
    config = request.config

    def keep(line: str) -> None:
        config.stash.setdefault(RESULTS_KEY, []).append(line)
        if os.environ.get("FLASKOPS_RESULTS_FILE"):
            with open(os.environ["FLASKOPS_RESULTS_FILE"], "a", encoding="utf-8") as results:
                results.write(line + "\n")
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(line)

    return keep


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(RESULTS_KEY, [])
    if lines:
        terminalreporter.section("results")
        for line in lines:
            terminalreporter.write_line(line)


#: The collection's checkout (molecule/ is one level down).
PROJECT = Path(__file__).resolve().parent.parent
LOADGEN = PROJECT / "tools" / "loadgen" / "loadgen.py"


class Load:
    """tools/loadgen/loadgen.py in a subprocess, as a context manager.

    ``with Load(url, "--connections", "16", ...) as load:`` returns once the first request succeeded;
    leaving the block stops the run (SIGTERM: requests in flight finish) and ``load.result`` holds its
    final JSON (``sent``, ``failed``, ``failures`` by kind, ``statuses``, ``samples``, ...). Runs are
    bounded: ``duration`` seconds at most (loadgen refuses more than 7200).
    """

    def __init__(self, url: str, *args: str, duration: float = 1800, mode: str = "load") -> None:
        self.workdir = tempfile.TemporaryDirectory(prefix="flaskops-load-")
        self.files = {name: os.path.join(self.workdir.name, name) for name in ("ready", "progress", "result")}
        self.argv = [
            sys.executable, str(LOADGEN), "--mode", mode, "--url", url, "--duration", str(duration),
            "--ready-file", self.files["ready"], "--progress-file", self.files["progress"],
            "--result-file", self.files["result"], *args,
        ]  # fmt: skip
        self.process: subprocess.Popen[str] | None = None
        self.result: dict[str, Any] = {}

    def __enter__(self) -> Load:
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.files["ready"]):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("loadgen never got a request through: %s" % json.dumps(self.result)[:2000])
            time.sleep(0.1)
        return self

    def progress(self) -> dict[str, Any]:
        """The counts so far (loadgen's progress file, written every second: the first may be a second away)."""
        deadline = time.monotonic() + 5
        while not os.path.exists(self.files["progress"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        with open(self.files["progress"], encoding="utf-8") as handle:
            return json.load(handle)

    def stop(self) -> dict[str, Any]:
        """Stop the run (idempotent) and return its result."""
        if self.process is not None and not self.result:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            stdout, stderr = self.process.communicate(timeout=60)
            if os.path.exists(self.files["result"]):
                with open(self.files["result"], encoding="utf-8") as handle:
                    self.result = json.load(handle)
            else:
                self.result = {"error": "no result (exit %s)" % self.process.returncode, "stdout": stdout[-2000:],
                               "stderr": stderr[-2000:]}  # fmt: skip
            self.workdir.cleanup()
        return self.result

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def unit_property(host: Any, unit: str, prop: str) -> str:
    """``systemctl show -p <prop> --value <unit>``."""
    return host.check_output("systemctl show -p %s --value %s", prop, unit)


def children(host: Any, pid: str) -> set[str]:
    """The PIDs of ``pid``'s children (a gunicorn master's workers)."""
    return set(host.check_output("pgrep -P %s", pid).split())


def wait_ready(host: Any, app: str, **expect: Any) -> dict[str, Any]:
    """Wait until ``app`` is ready by the collection's own check, the module flaskops.stack.gunicorn_ready
    (``expect``: its options ``workers``, ``release``, ``timeout``, ...); return its result."""
    args = {"service": f"{app}.service", "socket": f"/run/flaskops/{app}.sock", "timeout": 60, **expect}
    return host.ansible(
        "flaskops.stack.gunicorn_ready", " ".join(f"{key}={value}" for key, value in args.items()), check=False
    )


def live_release(host: Any, app: str) -> str:
    """The release id ``/srv/<app>/current`` points at."""
    return host.file(f"/srv/{app}/current").linked_to.rsplit("/", 1)[1]


def served_releases(host: Any, server_name: str, count: int = 5) -> set[str]:
    """The releases answering ``/healthz`` through nginx (plain HTTP) over ``count`` requests."""
    seen = set()
    for _attempt in range(count):
        body = host.check_output("curl -sS --fail -H %s http://127.0.0.1/healthz", f"Host: {server_name}")
        seen.add(json.loads(body)["release"])
    return seen


def run_with_apps(playbook: str, apps: list[dict[str, Any]], directory: Path, name: str, *args: str) -> Any:
    """``playbook`` with ``flask_stack_apps`` = ``apps`` (an extra-vars file ``<directory>/<name>.json``) and
    ``args``."""
    extra = directory / f"{name}.json"
    extra.write_text(json.dumps({"flask_stack_apps": apps}), encoding="utf-8")
    return run_playbook(playbook, "-e", f"@{extra}", *args)


def rows_request(nginx_url: str, body: str | None = None) -> dict[str, Any]:
    """``GET /rows`` (or ``POST /rows`` with ``body``) of the demo app through nginx; the JSON answer."""
    data = None if body is None else body.encode()
    request = urllib.request.Request(f"{nginx_url}/rows", data=data, headers={"Host": "localhost"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def copy_source(source: str, target: Path) -> Path:
    """A copy of an app's source directory without build leftovers, to change for a new release."""
    shutil.copytree(
        source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    )
    return target


def failures_text(result: dict[str, Any]) -> str:
    """A failed load run's counts and samples, for an assertion message."""
    keys = ("sent", "failed", "failures", "statuses", "samples", "error", "stderr")
    return json.dumps({key: result[key] for key in keys if key in result}, indent=1)[:4000]


def journal_units(item: pytest.Item) -> list[str]:
    """The units a test names for its failure report: its marker, else its module's JOURNAL_UNITS."""
    marker = item.get_closest_marker("journal_units")
    if marker is not None:
        return list(marker.args)
    module = getattr(item, "module", None)
    return list(getattr(module, "JOURNAL_UNITS", ()))


def journal_sections(host: Any, units: list[str]) -> Iterator[tuple[str, str]]:
    """(title, text) pairs with the instance's failed units and the journal of ``units``."""
    commands: list[tuple[str, str, tuple[str, ...]]] = [("systemctl --failed", "systemctl --failed --no-pager", ())]
    if units:
        commands += [
            (f"journalctl -u {unit}", f"journalctl -u %s --no-pager -o short-precise -n {JOURNAL_LINES}", (unit,))
            for unit in units
        ]
    else:
        commands.append(("journalctl -xe", f"journalctl -xe --no-pager -n {JOURNAL_LINES}", ()))
    name = host.backend.get_pytest_id()
    for title, command, args in commands:
        try:
            result = host.run(command, *args)
        except Exception as error:  # a report helper must not hide the failure it reports on
            text = f"could not run {title!r}: {error!r}"
        else:
            text = result.stdout + result.stderr
        yield f"{title} ({name})", text


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when in {"setup", "call"}:
        target = getattr(item, "funcargs", {}).get("host")
        if target is not None:
            for title, text in journal_sections(target, journal_units(item)):
                report.sections.append((title, text))
    return report
