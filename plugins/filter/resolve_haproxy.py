# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: resolve_haproxy
short_description: Check the haproxy role's apps and app hosts, and size HAProxy from the host's facts
version_added: 1.1.0
author: flaskops.stack contributors
description:
  - The one place where the P(flaskops.stack.haproxy#role)'s input is checked and completed; the role's tasks and
    template read the result.
  - Each app becomes a backend chosen by the request's C(Host) header; every app host is a server of every backend,
    health-checked through its nginx (the health location for load balancers, see the nginx role).
  - C(nbthread) is the number of effective CPUs (cgroup quota included); C(maxconn) fits a share of the effective
    memory at 34 KiB a connection (two 16 KiB buffers and the session), and the open-file limit (C(max_nofile))
    at two descriptors a connection plus 1024; C(nofile) (the unit's C(LimitNOFILE)) is two descriptors a
    connection plus 1024. Overrides win, and C(explain) says which values were set.
  - Bad input fails with a message naming the variable, the app or host, the field and the value.
positional: _input, facts, settings, servers
options:
  _input:
    description: The apps, C(haproxy_apps) (C(name), C(server_name); a C(tls_certificate) is refused).
    type: list
    elements: dict
    required: true
  facts:
    description: The load balancer host's facts (C(ansible_facts)), as for P(flaskops.stack.gunicorn_tuning#filter).
    type: dict
    required: true
  settings:
    description:
      - The role-wide values, each the C(haproxy_) variable of the same name without its prefix - C(listen_port),
        C(backend_port), C(health_path), C(maxconn), C(nbthread), C(memory_share) and C(max_nofile)
        (V(null) for no limit).
    type: dict
    required: true
  servers:
    description: The app hosts, each C(name) (inventory host name) and C(address) (where the load balancer reaches it).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Resolve the apps and servers as the haproxy role does
  ansible.builtin.set_fact:
    resolved: "{{ haproxy_apps | flaskops.stack.resolve_haproxy(ansible_facts, _haproxy_settings, _haproxy_servers) }}"
"""

RETURN = r"""
_value:
  description: The backends and HAProxy's sizing.
  type: dict
  contains:
    apps: {description: One record per app, C(name) and C(server_name) (lower case list)., type: list, elements: dict}
    servers:
      description: One record per app host, C(name) (the HAProxy server name), C(host) and C(address).
      type: list
      elements: dict
    tuning: {description: C(nbthread), C(maxconn), C(nofile) and C(explain)., type: dict}
"""

from ansible_collections.flaskops.stack.plugins.plugin_utils.haproxy import resolve_haproxy
from ansible_collections.flaskops.stack.plugins.plugin_utils.resolver import as_filter


class FilterModule:
    """flaskops.stack: the haproxy role's resolved input."""

    def filters(self):
        return {"resolve_haproxy": as_filter(resolve_haproxy)}
