# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: flask_stack_apps
short_description: Split the stack's apps into each role's part (gunicorn, nginx, haproxy, metrics)
version_added: 1.0.0
author: flaskops.stack contributors
description:
  - The playbooks' C(flask_stack_apps) holds both roles' keys in one item per app. The keys each role takes are
    read from its argument spec (C(gunicorn_apps) and C(nginx_sites)), so a key documented there can be set here.
  - With O(role=gunicorn), checks that each app has the required keys and no unknown one, and returns the gunicorn
    part of each app.
  - With O(role=nginx), returns each app's site with the socket, plan and static directory of its resolved
    gunicorn app (O(gunicorn_apps), from P(flaskops.stack.resolve_gunicorn_apps#filter)).
  - With O(role=haproxy), returns each app's name, server names and certificate, for the
    P(flaskops.stack.haproxy#role)'s C(haproxy_apps).
  - With O(role=metrics), returns each resolved gunicorn app's name, C(directory) (its C(metrics_dir)), socket and
    user, for the P(flaskops.stack.metrics#role)'s C(metrics_apps).
positional: _input, role, gunicorn_apps
options:
  _input:
    description: The stack's apps, C(flask_stack_apps).
    type: list
    elements: dict
    required: true
  role:
    description: Which role's part to return.
    type: str
    choices: [gunicorn, nginx, haproxy, metrics]
    required: true
  gunicorn_apps:
    description:
      For O(role=nginx) and O(role=metrics), the resolved gunicorn apps (the role's C(gunicorn_resolved_apps) fact).
    type: list
    elements: dict
"""

EXAMPLES = r"""
- name: The gunicorn role's apps
  ansible.builtin.set_fact:
    gunicorn_apps: "{{ flask_stack_apps | flaskops.stack.flask_stack_apps('gunicorn') }}"

- name: The nginx role's sites, after the gunicorn role's preflight
  ansible.builtin.set_fact:
    nginx_sites: "{{ flask_stack_apps | flaskops.stack.flask_stack_apps('nginx', gunicorn_resolved_apps) }}"

- name: The metrics role's apps, after the gunicorn role's preflight
  ansible.builtin.set_fact:
    metrics_apps: "{{ flask_stack_apps | flaskops.stack.flask_stack_apps('metrics', gunicorn_resolved_apps) }}"
"""

RETURN = r"""
_value:
  description:
    The apps (O(role=gunicorn), O(role=haproxy), O(role=metrics)) or the sites (O(role=nginx)), one per item, in
    order.
  type: list
  elements: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.flaskops.stack.plugins.plugin_utils.resolver import (
    as_filter,
    stack_gunicorn_apps,
    stack_haproxy_apps,
    stack_metrics_apps,
    stack_nginx_sites,
)


def flask_stack_apps(apps, role, gunicorn_apps=None):
    """Filter: the given role's part of each app of flask_stack_apps."""
    if role == "gunicorn":
        return stack_gunicorn_apps(apps)
    if role == "nginx" and gunicorn_apps is not None:
        return stack_nginx_sites(apps, gunicorn_apps)
    if role == "haproxy":
        return stack_haproxy_apps(apps)
    if role == "metrics" and gunicorn_apps is not None:
        stack_gunicorn_apps(apps)  # the same checks of the keys as for the other roles
        return stack_metrics_apps(gunicorn_apps)
    raise AnsibleFilterError(
        "flask_stack_apps: role must be gunicorn, haproxy, or nginx or metrics with gunicorn_apps; got %r" % role
    )


class FilterModule:
    """flaskops.stack: the roles' parts of flask_stack_apps."""

    def filters(self):
        return {"flask_stack_apps": as_filter(flask_stack_apps)}
