"""Smoke test of the molecule plumbing: a booted systemd container, reachable facts, cgroup limits seen."""

from __future__ import annotations

import pytest

# Journals printed when a test here fails (see molecule/conftest.py). None of the smoke tests has a
# unit of its own: systemd's manager log and journald's are the interesting ones.
JOURNAL_UNITS = ["init.scope", "systemd-journald.service"]

MIB = 1024 * 1024
# cgroup v1 reports "no limit" as a huge number rounded down to the page size.
V1_NO_LIMIT = 1 << 62


def test_systemd_is_running_without_failed_units(host):
    state = host.run("timeout 60 systemctl is-system-running --wait")
    failed = host.check_output("systemctl list-units --state=failed --no-legend --plain")
    assert state.stdout.strip() in {"running", "degraded"}, state.stdout + state.stderr
    assert failed == ""


def test_systemd_is_pid_1(host):
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"


def test_private_cgroup_namespace(host):
    # With --cgroupns=private (extra_opts) PID 1 sits at the root of its own cgroup tree; with the
    # host's namespace its path would name the container (libpod-<id>).
    cgroups = host.file("/proc/1/cgroup").content_string
    assert "libpod" not in cgroups, cgroups


def test_ansible_facts_are_reachable(ansible_facts):
    assert ansible_facts["ansible_distribution"] == "Debian"
    assert ansible_facts["ansible_service_mgr"] == "systemd"
    assert ansible_facts["ansible_virtualization_type"] in {"podman", "container"}


def _v1_value(host, controller, name):
    path = f"/sys/fs/cgroup/{controller}/{name}"
    if not host.file(path).exists:
        return None
    return int(host.file(path).content_string.strip())


def _v2_value(host, name):
    path = f"/sys/fs/cgroup/{name}"
    if not host.file(path).exists:
        return None
    return host.file(path).content_string.split()


def test_resource_facts_follow_the_container_limits(host):
    result = host.ansible("flaskops.stack.resource_facts", check=True)
    resources = result["ansible_facts"]["flaskops_resources"]
    assert result["changed"] is False
    assert 0 < resources["cpus"] <= resources["host_cpus"]
    assert 0 < resources["memory_mb"] <= resources["host_memory_mb"]

    quota = _v1_value(host, "cpu", "cpu.cfs_quota_us")
    period = _v1_value(host, "cpu", "cpu.cfs_period_us")
    memory = _v1_value(host, "memory", "memory.limit_in_bytes")
    if quota is None:  # cgroup v2
        cpu_max = _v2_value(host, "cpu.max")
        if cpu_max and cpu_max[0] != "max":
            quota, period = int(cpu_max[0]), int(cpu_max[1])
        memory_max = _v2_value(host, "memory.max")
        memory = int(memory_max[0]) if memory_max and memory_max[0] != "max" else None

    if quota is not None and quota > 0 and quota / period < resources["host_cpus"]:
        assert resources["cpus"] == pytest.approx(quota / period, rel=0.01)
    if memory is not None and memory < V1_NO_LIMIT and memory // MIB < resources["host_memory_mb"]:
        assert resources["memory_mb"] == memory // MIB
