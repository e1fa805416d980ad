# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import json
import os
from unittest import mock

import pytest
from ansible.module_utils import _internal as module_utils_internal
from ansible.module_utils.testing import patch_module_args  # ansible-core 2.19+ (meta/runtime.yml)

from ansible_collections.flaskops.stack.plugins.module_utils import cgroups
from ansible_collections.flaskops.stack.plugins.modules import resource_facts

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "resource_facts")
MIB = 1024 * 1024


def fixture_root(case):
    return os.path.join(FIXTURES, case)


EXPECTED = {
    "v2_limited": {
        "cpus": 1.5,
        "cpu_quota": 1.5,
        "cpu_source": "cgroup_v2",
        "host_cpus": 4,
        "memory_mb": 768,
        "memory_limit_mb": 768,
        "memory_source": "cgroup_v2",
        "host_memory_mb": 7863,
        "cgroup_version": 2,
    },
    "v2_unlimited": {
        "cpus": 8.0,
        "cpu_quota": None,
        "cpu_source": "host",
        "host_cpus": 8,
        "memory_mb": 15921,
        "memory_limit_mb": None,
        "memory_source": "host",
        "host_memory_mb": 15921,
        "cgroup_version": 2,
    },
    "v1_cgroupns": {
        "cpus": 1.0,
        "cpu_quota": 1.0,
        "cpu_source": "cgroup_v1",
        "host_cpus": 4,
        "memory_mb": 768,
        "memory_limit_mb": 768,
        "memory_source": "cgroup_v1",
        "host_memory_mb": 7863,
        "cgroup_version": 1,
    },
    "v1_no_cgroupns": {
        "cpus": 2.0,
        "cpu_quota": 2.0,
        "cpu_source": "cgroup_v1",
        "host_cpus": 8,
        "memory_mb": 1024,
        "memory_limit_mb": 1024,
        "memory_source": "cgroup_v1",
        "host_memory_mb": 15921,
        "cgroup_version": 1,
    },
    "v1_nested": {
        "cpus": 0.5,
        "cpu_quota": 0.5,
        "cpu_source": "cgroup_v1",
        "host_cpus": 8,
        "memory_mb": 512,
        "memory_limit_mb": 512,
        "memory_source": "cgroup_v1",
        "host_memory_mb": 15921,
        "cgroup_version": 1,
    },
    "hybrid": {
        "cpus": 3.0,
        "cpu_quota": 3.0,
        "cpu_source": "cgroup_v1",
        "host_cpus": 4,
        "memory_mb": 2048,
        "memory_limit_mb": 2048,
        "memory_source": "cgroup_v1",
        "host_memory_mb": 7863,
        "cgroup_version": 1,
    },
    "cpuset": {
        "cpus": 3.0,
        "cpu_quota": 4.0,
        "cpu_source": "cpuset",
        "host_cpus": 3,
        "memory_mb": 15921,
        "memory_limit_mb": None,
        "memory_source": "host",
        "host_memory_mb": 15921,
        "cgroup_version": 2,
    },
}


@pytest.fixture
def fake_host(monkeypatch):
    """Make the fallbacks to the real host deterministic: 6 CPUs and 4 GiB."""
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    sysconf = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 1048576}
    monkeypatch.setattr(os, "sysconf", lambda name: sysconf[name])


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_fixture_trees(case, fake_host):
    facts, warnings = resource_facts.gather_resources(fixture_root(case))
    assert facts == EXPECTED[case]
    assert warnings == []
    for key in ("cpus", "cpu_quota"):
        assert facts[key] is None or isinstance(facts[key], float)
    for key in ("host_cpus", "memory_mb", "memory_limit_mb", "host_memory_mb", "cgroup_version"):
        assert facts[key] is None or (isinstance(facts[key], int) and not isinstance(facts[key], bool))


def test_garbage(fake_host):
    facts, warnings = resource_facts.gather_resources(fixture_root("garbage"))
    assert facts == {
        "cpus": 6.0,
        "cpu_quota": None,
        "cpu_source": "host",
        "host_cpus": 6,
        "memory_mb": 4096,
        "memory_limit_mb": None,
        "memory_source": "host",
        "host_memory_mb": 4096,
        "cgroup_version": 2,
    }
    joined = "\n".join(warnings)
    for name in (
        "proc/self/status",
        "proc/meminfo",
        "app.scope/cpu.max",
        "app.scope/memory.max",
        "cgroup/cpu.max",
        "cgroup/memory.max",
    ):
        assert name in joined
    assert len(warnings) == 6


def test_empty_root(tmp_path, fake_host):
    facts, warnings = resource_facts.gather_resources(str(tmp_path))
    assert facts == {
        "cpus": 6.0,
        "cpu_quota": None,
        "cpu_source": "host",
        "host_cpus": 6,
        "memory_mb": 4096,
        "memory_limit_mb": None,
        "memory_source": "host",
        "host_memory_mb": 4096,
        "cgroup_version": None,
    }
    assert warnings == []


def test_tiny_quota_and_limit_at_host_memory(tmp_path, fake_host):
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "mountinfo").write_text("30 24 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    (tmp_path / "proc" / "self" / "cgroup").write_text("0::/\n")
    (tmp_path / "proc" / "self" / "status").write_text("Cpus_allowed_list:\t0-1\n")
    (tmp_path / "proc" / "meminfo").write_text("MemTotal: 1048576 kB\n")
    cg = tmp_path / "sys" / "fs" / "cgroup"
    cg.mkdir(parents=True)
    (cg / "cgroup.controllers").write_text("cpu memory\n")
    (cg / "cpu.max").write_text("1000 1000000\n")
    (cg / "memory.max").write_text("%d\n" % (1024 * MIB))
    facts, warnings = resource_facts.gather_resources(str(tmp_path))
    assert warnings == []
    assert facts["cpus"] == 0.01
    assert facts["cpu_quota"] == 0.001
    assert facts["cpu_source"] == "cgroup_v2"
    # a limit equal to MemTotal is no limit
    assert facts["memory_limit_mb"] is None
    assert facts["memory_source"] == "host"
    assert facts["memory_mb"] == facts["host_memory_mb"] == 1024


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0-3,6", 5),
        ("0", 1),
        ("0-1\n", 2),
        ("1,3-4", 3),
        ("0-63,128-191", 128),
    ],
)
def test_count_cpu_list(text, expected):
    assert cgroups.count_cpu_list(text) == expected


@pytest.mark.parametrize("text", ["", "a-b", "3-1", "0,,1", "-1", "0-"])
def test_count_cpu_list_bad(text):
    with pytest.raises(ValueError):
        cgroups.count_cpu_list(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("max 100000", None),
        ("max", None),
        ("150000 100000", 1.5),
        ("50000 100000\n", 0.5),
    ],
)
def test_parse_cpu_max(text, expected):
    assert cgroups.parse_cpu_max(text) == expected


@pytest.mark.parametrize("text", ["", "max x", "0 100000", "100000 0", "1 2 3", "1.5 100000"])
def test_parse_cpu_max_bad(text):
    with pytest.raises(ValueError):
        cgroups.parse_cpu_max(text)


def test_parse_cfs():
    assert cgroups.parse_cfs("-1\n", "100000\n") is None
    assert cgroups.parse_cfs("250000\n", "100000\n") == 2.5
    with pytest.raises(ValueError):
        cgroups.parse_cfs("-2", "100000")
    with pytest.raises(ValueError):
        cgroups.parse_cfs("100000", "0")


def test_parse_memory_limits():
    assert cgroups.parse_memory_max("max\n") is None
    assert cgroups.parse_memory_max("805306368\n") == 805306368
    assert cgroups.parse_v1_memory_limit("9223372036854771712\n") is None
    assert cgroups.parse_v1_memory_limit("9223372036854710272") is None
    assert cgroups.parse_v1_memory_limit("536870912") == 536870912
    assert cgroups.parse_hierarchical_memory_limit("cache 1\nhierarchical_memory_limit 4096\n") == 4096
    assert cgroups.parse_hierarchical_memory_limit("cache 1\n") is None
    with pytest.raises(ValueError):
        cgroups.parse_memory_max("-1")
    with pytest.raises(ValueError):
        cgroups.parse_v1_memory_limit("lots")


def test_parse_meminfo_and_status():
    assert cgroups.parse_meminfo_total("MemFree: 1 kB\nMemTotal:  2048 kB\n") == 2 * MIB
    assert cgroups.parse_meminfo_total("MemFree: 1 kB\n") is None
    assert cgroups.parse_status_cpus("Cpus_allowed:\tff\nCpus_allowed_list:\t0-3,6\n") == 5
    assert cgroups.parse_status_cpus("Name:\tx\n") is None


def test_parse_mountinfo():
    text = (
        "22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
        "26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
        "32 25 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw shared:13 master:2 - cgroup cgroup rw,cpu,cpuacct\n"
        "33 25 0:30 / /mnt/my\\040cgroups rw - cgroup cgroup rw,memory\n"
        "garbage\n"
    )
    assert cgroups.parse_mountinfo(text) == [
        {"version": 2, "root": "/", "mountpoint": "/sys/fs/cgroup/unified", "options": ["rw", "nsdelegate"]},
        {
            "version": 1,
            "root": "/docker/abc",
            "mountpoint": "/sys/fs/cgroup/cpu,cpuacct",
            "options": ["rw", "cpu", "cpuacct"],
        },
        {"version": 1, "root": "/", "mountpoint": "/mnt/my cgroups", "options": ["rw", "memory"]},
    ]


def test_parse_proc_cgroup():
    text = "12:pids:/a\n4:cpu,cpuacct:/b:c\n1:name=systemd:/d\n0::/e\nbroken\n"
    assert cgroups.parse_proc_cgroup(text) == (
        "/e",
        {"pids": "/a", "cpu": "/b:c", "cpuacct": "/b:c", "name=systemd": "/d"},
    )
    assert cgroups.parse_proc_cgroup("") == (None, {})


@pytest.mark.parametrize(
    "mount_root, proc_path, expected",
    [
        ("/", "/", ""),
        ("/", "/a/b", "a/b"),
        ("/docker/x", "/docker/x", ""),
        ("/docker/x", "/docker/x/y", "y"),
        ("/docker/x", "/docker/xy", None),
        ("/docker/x", "/system.slice", None),
        ("/", "/../..", None),
    ],
)
def test_relative_cgroup_path(mount_root, proc_path, expected):
    assert cgroups.relative_cgroup_path(mount_root, proc_path) == expected


def test_cgroup_dirs():
    mount = {"version": 2, "root": "/", "mountpoint": "/sys/fs/cgroup", "options": []}
    assert cgroups.cgroup_dirs("/r", mount, "/a/b") == [
        "/r/sys/fs/cgroup/a/b",
        "/r/sys/fs/cgroup/a",
        "/r/sys/fs/cgroup",
    ]
    mount = {"version": 1, "root": "/docker/x", "mountpoint": "/sys/fs/cgroup/memory", "options": ["memory"]}
    assert cgroups.cgroup_dirs("/", mount, "/elsewhere") == ["/sys/fs/cgroup/memory"]


def run_module(args, capsys):
    # A module runs on the target. Once any test has imported controller code (the filters do),
    # ansible-core sends module warnings to the controller's display instead of the module's result:
    # run it as on a target, whatever the test order.
    with patch_module_args(args), mock.patch.object(module_utils_internal, "is_controller", False):
        with pytest.raises(SystemExit) as exc:
            resource_facts.main()
    assert exc.value.code == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("check_mode", [False, True])
def test_module_end_to_end(check_mode, capsys, fake_host):
    args = {"root": fixture_root("v2_limited")}
    if check_mode:
        args["_ansible_check_mode"] = True
    result = run_module(args, capsys)
    assert result["changed"] is False
    assert result["ansible_facts"] == {"flaskops_resources": EXPECTED["v2_limited"]}
    assert not result.get("warnings")


def test_module_warns_on_garbage(capsys, fake_host):
    result = run_module({"root": fixture_root("garbage")}, capsys)
    assert result["changed"] is False
    assert result["ansible_facts"]["flaskops_resources"]["host_cpus"] == 6
    assert len(result["warnings"]) == 6
