# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue between the pure sizing model and Ansible's filter interface."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.flaskops.stack.plugins.module_utils.tuning import TuningError


def run_filter(name, func, facts, workload, kwargs):
    """Call ``func(facts, **options)``; map bad input to AnsibleFilterError.

    ``workload`` is an optional dict given positionally; keyword arguments
    win over its keys. Errors name the filter, the field and the value.
    """
    options = {}
    if workload is not None:
        if not isinstance(workload, Mapping):
            raise AnsibleFilterError(
                "%s: 'workload' must be a dict, got %r (%s)" % (name, workload, type(workload).__name__)
            )
        options.update(workload)
    options.update(kwargs)
    try:
        return func(facts, **options)
    except TuningError as exc:
        raise AnsibleFilterError("%s: %s" % (name, exc)) from None
