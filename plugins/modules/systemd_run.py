#!/usr/bin/python

# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: systemd_run
short_description: Run commands one after another, each in a transient systemd service with the given properties
version_added: 1.1.0
description:
  - Runs each command of O(commands) with C(systemd-run --wait --pipe --collect) as a transient service that has
    the O(properties) of a unit's C([Service]) section (C(User=), C(WorkingDirectory=), the sandboxing directives,
    C(MemoryMax=), ...), so that a command runs as the service it prepares would run, not as the user Ansible
    connects as.
  - Stops at the first command that exits non-zero and fails with its exit status and the end of its output;
    the commands after it do not run.
  - Standard input is empty; standard output and standard error are returned, never written to the journal.
  - The flaskops.stack.systemd role's C(run) entry point calls it with a unit's directives and the role's
    hardening; the gunicorn role runs each release's checks and release commands that way.
options:
  commands:
    description: The commands, each a list of arguments (no shell); run in this order.
    type: list
    elements: list
    required: true
  properties:
    description:
      - C([Service]) directives of the transient services, directive to value. V(true)/V(false) become
        C(yes)/C(no); a list gives the directive once per element (as repeated lines of a unit file do); V(null)
        leaves the directive out.
    type: dict
    default: {}
  unit:
    description:
      - Prefix of the transient units' names; a number and a random suffix complete each name, so that runs never
        share a unit.
    type: str
    default: flaskops-run
  output_lines:
    description: How many of the last lines of a failing command's output the failure message quotes.
    type: int
    default: 40
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: In check mode nothing runs; the module reports what would run as a change.
  diff_mode:
    support: none
  platform:
    platforms: linux
notes:
  - Needs root (or a user allowed to start system services) and systemd-run on the host.
seealso:
  - name: systemd-run(1)
    description: The tool this module drives.
    link: https://www.freedesktop.org/software/systemd/man/latest/systemd-run.html
author:
  - flaskops.stack contributors (@flaskops)
"""

EXAMPLES = r"""
- name: Migrate the shop's database as its user, sandboxed like its service
  flaskops.stack.systemd_run:
    unit: shop-release
    commands:
      - [/srv/shop/releases/3f2a9c/venv/bin/flask, --app, shop, db, upgrade]
    properties:
      User: shop
      Group: shop
      WorkingDirectory: /srv/shop/releases/3f2a9c
      ProtectSystem: strict
      ReadWritePaths: /var/lib/flaskops/shop
      MemoryMax: 512M
"""

RETURN = r"""
results:
  description: One entry per command that ran, in order (the last one failed when the module failed).
  returned: always
  type: list
  elements: dict
  contains:
    cmd:
      description: The command.
      type: list
      elements: str
    rc:
      description: Its exit status (V(-1) when systemd could not start it).
      type: int
    stdout:
      description: Its standard output.
      type: str
    stderr:
      description: Its standard error, and systemd-run's own messages.
      type: str
"""

import shlex
import time
import uuid

from ansible.module_utils.basic import AnsibleModule


def property_args(properties):
    """``-p Name=value`` arguments of systemd-run, in the order given."""
    args = []
    for name, value in properties.items():
        for one in value if isinstance(value, list) else [value]:
            if one is not None:
                args.extend(["-p", "%s=%s" % (name, ("yes" if one else "no") if isinstance(one, bool) else one)])
    return args


def tail(text, lines):
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def main():
    module = AnsibleModule(
        argument_spec={
            "commands": {"type": "list", "elements": "list", "required": True},
            "properties": {"type": "dict", "default": {}},
            "unit": {"type": "str", "default": "flaskops-run"},
            "output_lines": {"type": "int", "default": 40},
        },
        supports_check_mode=True,
    )
    commands = [[str(arg) for arg in command] for command in module.params["commands"]]
    if any(not command for command in commands):
        module.fail_json(msg="commands: every command needs at least one argument")
    if module.check_mode:
        module.exit_json(changed=bool(commands), results=[], msg="check mode: would run %d command(s)" % len(commands))
    systemd_run = module.get_bin_path("systemd-run", required=True)
    prefix = [systemd_run, "--wait", "--pipe", "--collect", "--quiet", "--service-type=exec"]
    prefix += property_args(module.params["properties"])
    results = []
    suffix = uuid.uuid4().hex[:8]
    limit = module.params["properties"].get("RuntimeMaxSec")
    for number, command in enumerate(commands, 1):
        unit = "%s-%d-%s" % (module.params["unit"], number, suffix)
        started = time.monotonic()
        rc, stdout, stderr = module.run_command([*prefix, "--unit=" + unit, "--", *command], data="", binary_data=True)
        results.append({"cmd": command, "rc": rc, "stdout": stdout, "stderr": stderr})
        if rc != 0:
            # systemd-run --quiet says nothing when systemd stops a command at RuntimeMaxSec=.
            stopped = limit is not None and time.monotonic() - started >= float(limit)
            module.fail_json(
                msg="command %d of %d %s: %s\n%s"
                % (
                    number,
                    len(commands),
                    ("was stopped after RuntimeMaxSec=%s s" % limit) if stopped else ("exited with %d" % rc),
                    shlex.join(command),
                    tail(stdout + stderr, module.params["output_lines"]),
                ),
                results=results,
                rc=rc,
            )
    module.exit_json(changed=bool(commands), results=results)


if __name__ == "__main__":
    main()
