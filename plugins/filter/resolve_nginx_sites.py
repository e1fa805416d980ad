# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: resolve_nginx_sites
short_description: Check the nginx role's sites and resolve them, with the catch-all's ports and nginx's sizing
version_added: 1.0.0
author: flaskops.stack contributors
description:
  - The one place where the P(flaskops.stack.nginx#role)'s sites and role-wide settings are checked and completed;
    the role's preflight calls it once and its templates read the result.
  - Applies every default (the argument spec's, and the role-wide value where a site leaves a field out), and
    checks what the spec cannot express (name pattern and uniqueness, server names, the socket path, the TLS pair,
    static paths, rate limits, header values, two sites claiming one name and port).
  - Sizes nginx with P(flaskops.stack.nginx_tuning#filter) from the host's facts and the sites' plans.
  - Bad input fails with a message naming the site, the field and the value.
positional: _input, facts, settings
options:
  _input:
    description: The sites, C(nginx_sites) (see the role's argument spec for the keys of a site).
    type: list
    elements: dict
    required: true
  facts:
    description: The host's facts (C(ansible_facts)), as for P(flaskops.stack.nginx_tuning#filter).
    type: dict
    required: true
  settings:
    description:
      - The role-wide values, each the C(nginx_) variable of the same name without its prefix -
        C(listen_port), C(listen_tls_port), C(client_max_body_size), C(static_expires), C(rate_limit),
        C(rate_limit_burst), C(content_security_policy), C(security_headers), C(hsts_max_age),
        C(hsts_include_subdomains), C(upstream_defaults), C(extra_connections), C(max_nofile),
        C(worker_processes), C(worker_connections), C(lb_health_path) and C(drain_flag); optionally
        C(status_listen).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Resolve the sites as the nginx role does
  ansible.builtin.set_fact:
    resolved: "{{ nginx_sites | flaskops.stack.resolve_nginx_sites(ansible_facts, _nginx_settings) }}"
"""

RETURN = r"""
_value:
  description: The resolved sites and what the role derives from all of them.
  type: dict
  contains:
    sites:
      description:
        - One record per site, in order, every field set; C(server_name) is a list, C(tls) says whether the site
          has a certificate, C(upstream) holds the upstream timeouts and keep-alive, C(headers) and
          C(redirect_headers) the response headers of the site and of its HTTP-to-HTTPS redirect.
      type: list
      elements: dict
    default_server_ports: {description: The plain-HTTP ports of the catch-all server., type: list, elements: int}
    default_server_tls_ports: {description: The TLS ports of the catch-all server., type: list, elements: int}
    default_server_headers: {description: The response headers of the catch-all server., type: list, elements: dict}
    lb_health_path: {description: The path of each site's health location for load balancers, or null., type: str}
    drain_flag: {description: The file whose presence drains the host., type: str}
    status_listen: {description: host:port of the stub_status server (C(nginx_status_listen)), or null., type: str}
    tuning: {description: The result of P(flaskops.stack.nginx_tuning#filter) for the sites' plans., type: dict}
"""

from ansible_collections.flaskops.stack.plugins.plugin_utils.resolver import as_filter, resolve_nginx_sites


class FilterModule:
    """flaskops.stack: the nginx role's resolved sites."""

    def filters(self):
        return {"resolve_nginx_sites": as_filter(resolve_nginx_sites)}
