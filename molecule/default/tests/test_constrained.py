"""A container limited to 1 CPU and 768 MiB: the plan follows the cgroup limits, not the host.

Runs on the scenario's group ``constrained`` only (``testinfra_hosts``): the other instances have no limits.
"""

from __future__ import annotations

from ansible_collections.flaskops.stack.plugins.filter.gunicorn_tuning import gunicorn_tuning

JOURNAL_UNITS = ["demo.service", "nginx.service"]
# A host pattern of the scenario's inventory: testinfra expands it through Ansible.
testinfra_hosts = ["constrained"]
MIB = 1024 * 1024


def _limit(host, path):
    return int(host.file(path).content_string.strip())


def test_resource_facts_see_the_container_limits(host, facts):
    quota = _limit(host, "/sys/fs/cgroup/cpu/cpu.cfs_quota_us") / _limit(host, "/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    memory = _limit(host, "/sys/fs/cgroup/memory/memory.limit_in_bytes") // MIB
    resources = facts["ansible_flaskops_resources"]
    assert resources["cpus"] == quota < facts["ansible_processor_vcpus"]
    assert resources["memory_mb"] == memory < facts["ansible_memtotal_mb"]


def test_plan_follows_the_limits(facts, app, plan):
    unconstrained = {key: value for key, value in facts.items() if key != "ansible_flaskops_resources"}
    host_plan = gunicorn_tuning(unconstrained, app.get("workload", {}))
    assert plan["cpus"] == facts["ansible_flaskops_resources"]["cpus"]
    assert plan["workers"] < host_plan["workers"]


def test_unit_memory_limits_fit_inside_the_container(host, app, plan):
    limit = _limit(host, "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    shown = host.check_output("systemctl show -p MemoryHigh -p MemoryMax --value %s.service", app["name"])
    high, top = (int(value) for value in shown.split())
    assert high <= top <= limit
    assert plan["memory_peak_mb"] * MIB <= high
