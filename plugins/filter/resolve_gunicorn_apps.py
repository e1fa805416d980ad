# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: resolve_gunicorn_apps
short_description: Check the gunicorn role's apps and resolve each into a complete record with its plan
version_added: 1.0.0
author: flaskops.stack contributors
description:
  - The one place where the P(flaskops.stack.gunicorn#role)'s apps are checked and completed; the role's preflight
    calls it once and its tasks and templates read the records.
  - Applies the defaults of the role's argument spec to every key of every app, and checks what the spec cannot
    express (the name and C(wsgi) patterns, exactly one of C(source.path) and C(source.pip), the source directory
    on the controller, the release id, C(health_path), settings the stack owns, unique names and sockets).
  - Plans each app with P(flaskops.stack.gunicorn_tuning#filter) from the host's facts and its C(workload), over the
    app's measured workload when there is one (C(<measured_dir>/<app>.yml), written by the C(measure) playbook) -
    the app's own C(workload) keys win, the measured C(cpu_ms) and C(wait_ms) win over a C(profile), and the plan's
    C(explain) starts by naming the file and the requests its figures rest on.
  - Bad input fails with a message naming the app, the field and the value.
positional: _input, facts, settings
options:
  _input:
    description: The apps, C(gunicorn_apps) (see the role's argument spec for the keys of an app).
    type: list
    elements: dict
    required: true
  facts:
    description: The host's facts (C(ansible_facts)), as for P(flaskops.stack.gunicorn_tuning#filter).
    type: dict
    required: true
  settings:
    description:
      - The role-wide values, each the C(gunicorn_) variable of the same name without its prefix - C(base_dir)
        (an app's home is C(<base_dir>/<name>)), C(state_dir), C(socket_dir) (where an app's socket is unless it
        sets C(socket)), C(health_retries), C(health_delay), C(fleet_hosts) and C(measured_dir) (the directory of
        the host's measured workloads, or V(null)).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Resolve the apps as the gunicorn role does
  ansible.builtin.set_fact:
    apps: >-
      {{ gunicorn_apps | flaskops.stack.resolve_gunicorn_apps(ansible_facts, {'base_dir': '/srv',
         'state_dir': '/var/lib/flaskops', 'socket_dir': '/run/flaskops', 'health_retries': 30, 'health_delay': 1,
         'fleet_hosts': 1, 'measured_dir': none}) }}
"""

RETURN = r"""
_value:
  description: One record per app, in order; the app's keys with every default applied, and the keys below.
  type: list
  elements: dict
  contains:
    user: {description: The user and group the app runs as., type: str}
    home: {description: The app's directory (builds, releases, C(current), C(previous))., type: str}
    socket: {description: The app's listening unix socket., type: str}
    runtime_dir:
      description: The service's runtime directory (C(RuntimeDirectory=)), V(/run/flaskops-<name>).
      type: str
    metrics_dir:
      description:
        - Where the app's gunicorn processes write their metrics when C(gunicorn_metrics) is on
          (C(PROMETHEUS_MULTIPROC_DIR)), V(<runtime_dir>/metrics); the metrics role's exporter reads it.
      type: str
    static_dir: {description: The absolute directory of its static files, or V(null)., type: str}
    plan: {description: The app's plan from P(flaskops.stack.gunicorn_tuning#filter)., type: dict}
    measured:
      description:
        - The app's measured workload - C(file), C(requests), C(measured_at) and C(used) (the keys the plan took
          from it) - or V(null) when it has none.
      type: dict
    preload: {description: Whether C(settings.preload_app) is on (a new release then needs a restart)., type: bool}
    worker_class:
      description:
        - The workers' class, C(settings.worker_class) or else the plan's. For V(gevent) the build gets gunicorn's
          C(gevent) extra (gevent and packaging).
      type: str
    ready_timeout: {description: Seconds the readiness check waits after a start or reload., type: int}
"""

from ansible_collections.flaskops.stack.plugins.plugin_utils.resolver import as_filter, resolve_gunicorn_apps


class FilterModule:
    """flaskops.stack: the gunicorn role's resolved apps."""

    def filters(self):
        return {"resolve_gunicorn_apps": as_filter(resolve_gunicorn_apps)}
