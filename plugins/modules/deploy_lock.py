#!/usr/bin/python

# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploy_lock
short_description: Take or give back the lock that lets one play at a time change an app on a host
version_added: 1.1.0
description:
  - A lock file per app and host, created atomically, that names the run holding it. The roles take it before
    they change an app (deploy, reload, rollback) and give it back when they are done, failed or not, so that two
    plays never change one app on one host at once.
  - O(state=acquired) waits up to O(timeout) seconds for a lock another run holds, then fails naming the holder
    (user, controller, process, play, since when). A lock whose run no longer runs - its ansible-playbook
    process is gone from the controller it names, which is this controller - is taken over at once with a
    warning; so is a lock older than O(stale_after) seconds, whoever holds it.
  - O(state=released) removes the lock if this run holds it, and leaves another run's lock alone.
  - The lock identifies a run by the controller's host name and the ansible-playbook process (its PID and start
    time), which every task of one run shares; an action plugin on the controller works that out and does the
    waiting.
  - Never reports a change - a lock lives for one run.
options:
  path:
    description:
      - The lock file. The roles use C(/run/lock/flaskops-<app>.lock), which a reboot (which ends every run)
        clears.
    type: path
    required: true
  state:
    description: Take (V(acquired)) or give back (V(released)) the lock.
    type: str
    choices: [acquired, released]
    default: acquired
  timeout:
    description: Seconds to wait for a lock another running play holds.
    type: int
    default: 300
  stale_after:
    description:
      - Seconds after which a lock is taken over whoever holds it (a run on another controller that was killed
        cannot be told from one that still runs).
    type: int
    default: 7200
  what:
    description: What the run does, recorded in the lock and shown to a run that waits for it.
    type: str
    default: deploy
  holder:
    description: Internal, set by the action plugin - the lock record of this run.
    type: dict
  take_over:
    description: Internal, set by the action plugin - the id of a dead run's lock that may be replaced.
    type: str
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: In check mode the lock is only read; a lock another run holds is reported, not waited for.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - flaskops.stack contributors (@flaskops)
"""

EXAMPLES = r"""
- name: Take the deploy lock of the shop
  flaskops.stack.deploy_lock:
    path: /run/lock/flaskops-shop.lock
    what: site.yml
    timeout: 600

- name: Give it back
  flaskops.stack.deploy_lock:
    path: /run/lock/flaskops-shop.lock
    state: released
"""

RETURN = r"""
acquired:
  description: Whether this run holds the lock now.
  returned: state is acquired
  type: bool
holder:
  description:
    - The lock's record (C(id), C(controller), C(pid), C(user), C(what), C(since)) - this run's once acquired,
      otherwise the run that holds it.
  returned: when there is one
  type: dict
released:
  description: Whether this run gave the lock back (V(false) when it held none).
  returned: state is released
  type: bool
taken_over:
  description: The record of a dead or stale run's lock that this run replaced.
  returned: when a lock was taken over
  type: dict
waited:
  description: Seconds waited for the lock.
  returned: state is acquired
  type: float
"""

import contextlib
import fcntl
import json
import os

from ansible.module_utils.basic import AnsibleModule


def read_lock(path):
    """The lock's record, ``{}`` for an unreadable one, or None when there is no lock."""
    try:
        with open(path, encoding="utf-8") as lock:
            record = json.load(lock)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write(path, record):
    """Write the lock holding ``record`` in one rename (a reader never sees half of it)."""
    temporary = "%s.%s.tmp" % (path, os.getpid())
    with open(temporary, "w", encoding="utf-8") as lock:
        json.dump(record, lock)
    os.chmod(temporary, 0o644)
    os.rename(temporary, path)


@contextlib.contextmanager
def guarded(path):
    """Hold an exclusive flock on ``<path>.guard`` meanwhile: runs that look at the lock at once take turns."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".guard", "a", encoding="utf-8") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        yield


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["acquired", "released"], "default": "acquired"},
            "timeout": {"type": "int", "default": 300},
            "stale_after": {"type": "int", "default": 7200},
            "what": {"type": "str", "default": "deploy"},
            "holder": {"type": "dict"},
            "take_over": {"type": "str"},
        },
        supports_check_mode=True,
    )
    path, mine = module.params["path"], module.params["holder"]
    if not mine or not mine.get("id"):
        module.fail_json(msg="deploy_lock: run it through its action plugin (flaskops.stack.deploy_lock)")
    if module.check_mode:
        current = read_lock(path)
        module.exit_json(changed=False, acquired=current is None or current.get("id") == mine["id"], holder=current)
    with guarded(path):
        result = update(path, mine, module.params["state"], module.params["take_over"])
    # A lock lives for one run: taking or giving it back changes nothing a later run would find.
    module.exit_json(changed=False, **result)


def update(path, mine, state, take_over):
    """Take or give back the lock (under its guard); the module's result."""
    current = read_lock(path)
    if state == "released":
        if current is not None and current.get("id") == mine["id"]:
            os.unlink(path)
            return {"released": True}
        return {"released": False, "holder": current}
    if current is not None and current.get("id") == mine["id"]:
        return {"acquired": True, "holder": current}
    if current is None:
        write(path, mine)
        return {"acquired": True, "holder": mine}
    if take_over is not None and current.get("id", "") == take_over:
        write(path, mine)
        return {"acquired": True, "holder": mine, "taken_over": current}
    return {"acquired": False, "holder": current}


if __name__ == "__main__":
    main()
