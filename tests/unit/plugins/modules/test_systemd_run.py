# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""flaskops.stack.systemd_run: the systemd-run command lines it builds, and its stop at the first failure."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from ansible.module_utils import _internal as module_utils_internal
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args  # ansible-core 2.19+ (meta/runtime.yml)

from ansible_collections.flaskops.stack.plugins.modules import systemd_run


def run_module(args, capsys, outcomes=()):
    """Run the module with ``args``; systemd-run's exits are ``outcomes`` (rc, stdout, stderr) in turn.
    Returns (the module's result, the command lines it ran)."""
    ran, outcomes = [], list(outcomes)

    def run_command(_module, argv, **_kwargs):
        ran.append(argv)
        return outcomes.pop(0)

    with (
        patch_module_args(args),
        mock.patch.object(module_utils_internal, "is_controller", False),
        mock.patch.object(AnsibleModule, "get_bin_path", return_value="/usr/bin/systemd-run"),
        mock.patch.object(AnsibleModule, "run_command", run_command),
        pytest.raises(SystemExit),
    ):
        systemd_run.main()
    return json.loads(capsys.readouterr().out), ran


def test_property_args_follow_unit_file_rules():
    properties = {
        "User": "shop",
        "NoNewPrivileges": True,
        "PrivateNetwork": False,
        "SystemCallFilter": ["@system-service", "~@privileged @resources"],
        "CapabilityBoundingSet": "",
        "MemoryMax": 536870912,
        "Skipped": None,
    }
    assert systemd_run.property_args(properties) == [
        "-p", "User=shop",
        "-p", "NoNewPrivileges=yes",
        "-p", "PrivateNetwork=no",
        "-p", "SystemCallFilter=@system-service",
        "-p", "SystemCallFilter=~@privileged @resources",
        "-p", "CapabilityBoundingSet=",
        "-p", "MemoryMax=536870912",
    ]  # fmt: skip


def test_commands_run_in_order_each_in_its_own_transient_service(capsys):
    args = {"commands": [["flask", "db", "upgrade"], ["true"]], "properties": {"User": "shop"}, "unit": "shop-release"}
    result, ran = run_module(args, capsys, [(0, "upgraded\n", ""), (0, "", "")])
    assert result["changed"] is True and "failed" not in result
    assert [entry["cmd"] for entry in result["results"]] == [["flask", "db", "upgrade"], ["true"]]
    assert result["results"][0]["stdout"] == "upgraded\n"
    units = []
    for number, (argv, command) in enumerate(zip(ran, args["commands"], strict=True), 1):
        separator = argv.index("--")
        assert argv[separator + 1 :] == command
        assert argv[:6] == ["/usr/bin/systemd-run", "--wait", "--pipe", "--collect", "--quiet", "--service-type=exec"]
        assert ["-p", "User=shop"] == argv[6:8]
        (unit,) = [arg for arg in argv[:separator] if arg.startswith("--unit=")]
        assert unit.startswith("--unit=shop-release-%d-" % number)
        units.append(unit)
    assert len(set(units)) == 2, "each command has its own unit"


def test_the_first_failure_stops_the_rest_and_quotes_its_output(capsys):
    lines = "".join("line %d\n" % n for n in range(100))
    args = {"commands": [["true"], ["sh", "-c", "exit 3"], ["never"]], "output_lines": 5}
    result, ran = run_module(args, capsys, [(0, "", ""), (3, lines, "boom\n")])
    assert result["failed"] is True and result["rc"] == 3
    assert len(ran) == 2 and len(result["results"]) == 2
    assert result["msg"].startswith("command 2 of 3 exited with 3: sh -c 'exit 3'\n")
    assert result["msg"].endswith("line 96\nline 97\nline 98\nline 99\nboom")


def test_check_mode_runs_nothing(capsys):
    result, ran = run_module({"commands": [["flask", "db", "upgrade"]], "_ansible_check_mode": True}, capsys)
    assert ran == [] and result["changed"] is True and result["results"] == []


def test_an_empty_command_is_refused(capsys):
    result, ran = run_module({"commands": [["true"], []]}, capsys)
    assert ran == [] and result["failed"] is True and "at least one argument" in result["msg"]


def test_a_command_stopped_at_its_runtime_limit_says_so(capsys):
    args = {"commands": [["sleep", "10"]], "properties": {"RuntimeMaxSec": 3}}
    with mock.patch.object(systemd_run.time, "monotonic", side_effect=[100.0, 103.2]):
        result, _ran = run_module(args, capsys, [(1, "", "")])
    assert result["msg"].startswith("command 1 of 1 was stopped after RuntimeMaxSec=3 s: sleep 10")
