#!/usr/bin/python

# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: resource_facts
short_description: Report the CPUs and memory a process on the host can really use
version_added: 1.0.0
description:
  - Reports the host's B(effective) CPUs and memory, that is what a process on the host can really use.
  - CPU and memory limits are read from the cgroup (v1 or v2) of the module's own process, walking from
    its cgroup up to the root of the mounted hierarchy and keeping the tightest limit. The CPU affinity
    (C(Cpus_allowed_list)) and the host's C(MemTotal) are used when there is no tighter cgroup limit.
  - Works on pure cgroup v2 hosts, cgroup v1 hosts, hybrid hosts (an empty cgroup v2 hierarchy next to v1
    controllers), and inside containers with or without a private cgroup namespace.
  - The module only reads files below O(root); it never changes anything.
  - Missing or unreadable files are skipped; files with unexpected content are skipped with a warning.
options:
  root:
    description:
      - Path prefix for every file read (C(proc/self/...), C(proc/meminfo), the cgroup mount points).
      - Mount points found in C(proc/self/mountinfo) are re-based under this path.
      - Meant for inspecting a chroot or container root from outside, and for tests.
    type: path
    default: /
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
  platform:
    platforms: linux
notes:
  - When O(root) is not V(/), the host values that cannot be read from files below O(root) fall back to the
    values of the host running the module (the Python function C(os.cpu_count) for CPUs, C(sysconf) for memory).
  - The module inspects the cgroup of its own process, which usually is the cgroup of the login session or
    container the connection lands in.
seealso:
  - name: Control Group v2
    description: Linux kernel documentation of cgroup v2, including C(cpu.max) and C(memory.max).
    link: https://docs.kernel.org/admin-guide/cgroup-v2.html
author:
  - flaskops.stack contributors (@flaskops)
"""

EXAMPLES = r"""
- name: Gather the effective CPUs and memory
  flaskops.stack.resource_facts:

- name: Size the worker count from the usable CPUs
  ansible.builtin.set_fact:
    worker_count: "{{ [(ansible_facts['flaskops_resources']['cpus'] * 2) | round(0, 'ceil') | int, 1] | max }}"

- name: Inspect a container root file system from outside
  flaskops.stack.resource_facts:
    root: /var/lib/machines/app
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    flaskops_resources:
      description: The effective CPUs and memory of the host.
      returned: always
      type: dict
      contains:
        cpus:
          description:
            - Usable CPUs, the smaller of RV(ansible_facts.flaskops_resources.host_cpus) and
              RV(ansible_facts.flaskops_resources.cpu_quota), rounded to 2 decimals.
            - Never below V(0.01).
          returned: always
          type: float
          sample: 1.5
        cpu_quota:
          description:
            - The tightest cgroup CPU quota along the cgroup path, in cores.
            - V(null) when no quota is set.
          returned: always
          type: float
          sample: 1.5
        cpu_source:
          description:
            - What bound RV(ansible_facts.flaskops_resources.cpus).
            - V(cgroup_v2) or V(cgroup_v1) for a cgroup CPU quota, V(cpuset) for a CPU affinity smaller
              than the number of online CPUs, V(host) otherwise.
          returned: always
          type: str
          choices: [cgroup_v2, cgroup_v1, cpuset, host]
          sample: cgroup_v2
        host_cpus:
          description:
            - CPUs the process may run on, counted from C(Cpus_allowed_list) in C(/proc/self/status).
            - Falls back to the number of CPUs of the host running the module.
          returned: always
          type: int
          sample: 4
        memory_mb:
          description:
            - Usable memory in MiB (rounded down), the smaller of the host memory and the cgroup memory limit.
          returned: always
          type: int
          sample: 768
        memory_limit_mb:
          description:
            - The tightest cgroup memory limit along the cgroup path, in MiB (rounded down).
            - V(null) when there is no limit, including limits not below the host memory.
          returned: always
          type: int
          sample: 768
        memory_source:
          description: What bound RV(ansible_facts.flaskops_resources.memory_mb).
          returned: always
          type: str
          choices: [cgroup_v2, cgroup_v1, host]
          sample: cgroup_v2
        host_memory_mb:
          description:
            - C(MemTotal) from C(/proc/meminfo) in MiB (rounded down).
            - Falls back to the memory of the host running the module.
          returned: always
          type: int
          sample: 7953
        cgroup_version:
          description:
            - V(2) when the CPU or memory controller is on cgroup v2, V(1) when they are on cgroup v1,
              V(null) when neither controller was found.
          returned: always
          type: int
          sample: 2
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flaskops.stack.plugins.module_utils.cgroups import gather_resources


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", default="/"),
        ),
        supports_check_mode=True,
    )

    facts, warnings = gather_resources(module.params["root"])
    for warning in warnings:
        module.warn(warning)

    module.exit_json(changed=False, ansible_facts=dict(flaskops_resources=facts))


if __name__ == "__main__":
    main()
