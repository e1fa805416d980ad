"""Bad app definitions fail playbooks/site.yml before any change, naming the app and the field.

Each case runs the real playbook against the fresh instance with one bad flask_stack_apps; the test
checks the failure message and the play recap (nothing changed). Then the valid stack runs in check
mode on the still bare instance. At the end the instance's packages, users, units and directories
are exactly what they were before the first case.
"""

from __future__ import annotations

import json
import os
import tempfile

import pytest
from conftest import recap, run_playbook

JOURNAL_UNITS: list[str] = []

# What would change if a run got past its checks: packages, accounts, units, the stack's files.
SNAPSHOT = (
    "dpkg-query -W -f '${Package} ${Version} ${Status}\\n' | sort; getent passwd | sort; getent group | sort; "
    "systemctl list-unit-files --no-legend --no-pager | sort; "
    "ls -laR /srv /etc/nginx /etc/systemd/system /run/flaskops 2>&1 | grep -v '^total'"
)


def demo_app(**changes):
    """A valid app (the scenario's demo app) with ``changes`` applied; a None value drops the key."""
    app = {
        "name": "demo",
        "wsgi": "flaskops_demo:app",
        "source": {"path": os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "playbooks/files/flaskops_demo")},
        "static_dir": "flaskops_demo/static",
        "server_name": ["localhost"],
        "workload": {"profile": "mixed"},
    }
    app.update(changes)
    return {key: value for key, value in app.items() if value is not None}


CASES = {
    "missing wsgi": ([demo_app(wsgi=None)], ["'demo'", "wsgi"]),
    "unknown profile": ([demo_app(workload={"profile": "webscale"})], ["'demo'", "profile", "webscale"]),
    "non-numeric worker count": ([demo_app(workload={"max_workers": "four"})], ["'demo'", "max_workers", "four"]),
    "missing source path": (
        [demo_app(source={"path": "/nonexistent/flaskops-app"})],
        ["'demo'", "source.path", "/nonexistent/flaskops-app"],
    ),
    "two apps on one socket": (
        [
            demo_app(socket="/run/flaskops/shared.sock"),
            demo_app(name="shop", socket="/run/flaskops/shared.sock", server_name=["shop.example"]),
        ],
        ["demo", "shop", "socket", "/run/flaskops/shared.sock"],
    ),
    "static_url without a trailing slash": ([demo_app(static_url="/assets")], ["'demo'", "static_url", "/assets"]),
    "settings that the stack owns": ([demo_app(settings={"chdir": "/srv"})], ["'demo'", "settings.chdir"]),
    "two apps on one server name": (
        [demo_app(), demo_app(name="shop")],
        ["demo", "shop", "server_name", "localhost"],
    ),
}


@pytest.fixture(scope="module")
def before(host):
    """The instance's state before any case ran."""
    return host.check_output(SNAPSHOT)


def run_site(apps):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as extra:
        json.dump({"flask_stack_apps": apps}, extra)
    try:
        site = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "playbooks/site.yml")
        return run_playbook(site, "-e", "@" + extra.name, timeout=600)
    finally:
        os.unlink(extra.name)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_before_any_change(before, case):
    apps, expected = CASES[case]
    run = run_site(apps)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    failed = [line for line in output.splitlines() if "fatal:" in line or "failed:" in line or '"msg"' in line]
    message = "\n".join(failed)
    for word in expected:
        assert word in message, (word, message[-3000:])
    counts = recap(run.stdout)
    assert [c["changed"] for c in counts.values()] == [0], run.stdout[-3000:]


@pytest.mark.parametrize("metrics", [False, True], ids=["stack", "stack_with_metrics"])
def test_check_mode_on_a_fresh_host(before, metrics):
    # A valid stack in check mode on the still bare instance, also with the metrics role: the play runs
    # through and reports what it would change; test_host_unchanged_after_every_case proves it changed nothing.
    site = os.path.join(os.environ["MOLECULE_PROJECT_DIRECTORY"], "playbooks/site.yml")
    run = run_playbook(site, "--check", "--diff", "-e", "flask_stack_metrics=%s" % str(metrics).lower())
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    counts = recap(run.stdout)
    assert counts, run.stdout[-2000:]
    assert all(c["failed"] == 0 and c["unreachable"] == 0 and c["changed"] > 0 for c in counts.values()), counts


def test_host_unchanged_after_every_case(host, before):
    # Runs after the parametrized cases (pytest keeps file order).
    assert host.check_output(SNAPSHOT) == before
