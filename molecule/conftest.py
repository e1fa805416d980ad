"""Shared pytest fixtures and hooks for the testinfra verifiers of the molecule scenarios.

pytest loads this file for every scenario because .config/molecule/config.yml passes the verifier
option ``--confcutdir=<collection root>/molecule``.

``host``
    molecule hands testinfra its ansible backend. testinfra cannot map Ansible's podman connection to
    one of its own backends, so with it every ``host.run``, ``host.file``, ``host.service`` ... runs an
    ``ansible -m shell`` (about 1 s each). For podman instances this fixture returns the podman
    backend instead (``podman exec``, a few tens of ms), while ``host.ansible(...)`` stays on the
    ansible backend: Ansible modules and facts (``host.ansible("setup")``) work as before.
    ``--force-ansible`` (verifier option ``force-ansible: true``) keeps the ansible backend for all.

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

Journal on failure
    When a test fails, the report gets ``journalctl -u <unit>`` for each unit the test names, and
    ``systemctl --failed``. A test module names its units in ``JOURNAL_UNITS``; a test can name its
    own with ``@pytest.mark.journal_units("gunicorn-demo.service", "nginx.service")``. With no unit
    named, the last lines of ``journalctl -xe`` are attached instead.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Generator, Iterator
from typing import Any

import pytest
import testinfra

from ansible_collections.flaskops.stack.plugins.filter.gunicorn_tuning import gunicorn_tuning

JOURNAL_LINES = 200
PODMAN_CONNECTIONS = frozenset({"podman", "containers.podman.podman"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "journal_units(*units): systemd units whose journal is printed when the test fails",
    )


def fast_host(ansible_host: Any) -> Any:
    """The podman-backed twin of a testinfra host on the ansible backend, or the host itself.

    The twin shares the ansible host's ``ansible`` module, so ``twin.ansible(...)`` still runs Ansible.
    """
    backend = ansible_host.backend
    if backend.NAME != "ansible" or backend.force_ansible:
        return ansible_host
    hostvars = backend.ansible_runner.get_variables(backend.host)
    if hostvars.get("ansible_connection") not in PODMAN_CONNECTIONS:
        return ansible_host
    if hostvars.get("ansible_podman_executable", "podman") != "podman":
        # testinfra's podman backend always runs `podman`.
        return ansible_host
    container = hostvars.get("ansible_podman_host") or hostvars.get("ansible_host") or backend.host
    user = hostvars.get("ansible_user")
    twin = testinfra.get_host(f"podman://{user}@{container}" if user else f"podman://{container}")
    # Host.__getattr__ creates modules on first use; an attribute set here takes precedence.
    twin.ansible = ansible_host.ansible
    return twin


@pytest.fixture(scope="module")
def host(_testinfra_host: Any) -> Any:
    """The instance under test: podman backend for commands, ansible backend for ``host.ansible``."""
    return fast_host(_testinfra_host)


@pytest.fixture(scope="module")
def ansible_facts(host: Any) -> dict[str, Any]:
    """The instance's Ansible facts, gathered once per test module."""
    return host.ansible("setup")["ansible_facts"]


def run_playbook(playbook: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """ansible-playbook ``playbook`` against the scenario's instances, output captured as plain text."""
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "PY_COLORS": "0"}
    return subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], playbook, *args],
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
    """Each app's plan for this instance, from the collection's filter, by app name."""
    return {item["name"]: gunicorn_tuning(facts, item.get("workload", {})) for item in apps}


@pytest.fixture(scope="module")
def plan(plans: dict[str, dict[str, Any]], app: dict[str, Any]) -> dict[str, Any]:
    """The first app's plan."""
    return plans[app["name"]]


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
