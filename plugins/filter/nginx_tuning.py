# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: nginx_tuning
short_description: Size nginx worker processes and connections from host facts and the apps' plans
version_added: 1.0.0
author: flaskops.stack contributors
description:
  - C(worker_processes) is the number of effective CPUs (cgroup quota included), never C(auto), which counts
    the host's CPUs and ignores container limits.
  - C(worker_connections) holds every app's request slots several times over (client and upstream connection,
    plus idle keep-alive clients), never below 1024; C(worker_rlimit_nofile) covers two descriptors per connection
    plus 64.
  - O(worker_processes) and O(worker_connections) override the derived values; C(worker_rlimit_nofile) then
    follows the given O(worker_connections), and C(explain) says which values were set.
positional: _input
options:
  _input:
    description:
      - The host's facts, C(ansible_facts) or C(hostvars[host]), as for P(flaskops.stack.gunicorn_tuning#filter).
    type: dict
    required: true
  plans:
    description: The plans of the apps this nginx proxies, from P(flaskops.stack.gunicorn_tuning#filter).
    type: list
    elements: dict
    default: []
  extra_connections:
    description: Client connections to allow for beyond the apps' slots (static files, long polling).
    type: int
    default: 0
  max_nofile:
    description:
      - A file-descriptor ceiling nginx must stay under (the host's hard limit); caps the derived connections.
      - A O(worker_connections) override that needs more descriptors than this is an error. At least V(64).
    type: int
  worker_processes:
    description:
      - Override of C(worker_processes), at least V(1). V(null) uses the effective CPUs, rounded up.
      - The derived C(worker_connections) are spread over this many workers.
    type: int
  worker_connections:
    description:
      - Override of C(worker_connections), at least V(1); C(worker_rlimit_nofile) becomes two descriptors per
        connection plus 64. V(null) derives it from the apps' plans.
    type: int
"""

EXAMPLES = r"""
- name: Size nginx for two apps
  ansible.builtin.set_fact:
    nginx_plan: "{{ ansible_facts | flaskops.stack.nginx_tuning(plans=[shop_plan, api_plan]) }}"

- name: Keep worker_connections from the inventory; the descriptor limit follows it
  ansible.builtin.set_fact:
    nginx_plan: "{{ ansible_facts | flaskops.stack.nginx_tuning(plans=[shop_plan], worker_connections=4096) }}"
"""

RETURN = r"""
_value:
  description: The nginx plan.
  type: dict
  contains:
    worker_processes: {description: nginx worker processes (the effective CPUs, rounded up)., type: int}
    worker_connections: {description: Connections per worker., type: int}
    worker_rlimit_nofile: {description: File-descriptor limit per worker., type: int}
    upstream_slots: {description: Sum of the apps' concurrency., type: int}
    explain: {description: One sentence per decision., type: list, elements: str}
"""

from ansible_collections.flaskops.stack.plugins.module_utils.tuning import nginx_plan
from ansible_collections.flaskops.stack.plugins.plugin_utils.tuning_filter import run_filter


def nginx_tuning(facts, **kwargs):
    """Filter: the nginx plan for ``facts`` and the apps' plans."""
    return run_filter("nginx_tuning", nginx_plan, facts, None, kwargs)


class FilterModule:
    """flaskops.stack nginx sizing filter."""

    def filters(self):
        return {"nginx_tuning": nginx_tuning}
