#!/usr/bin/python

# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gunicorn_ready
short_description: Reload a gunicorn app under systemd and wait until it is ready
version_added: 1.0.0
description:
  - Waits until a gunicorn app run by a systemd service answers on its health path through its unix socket,
    optionally after reloading it (C(systemctl reload), a HUP to the gunicorn master).
  - After a reload, ready means that the master is the one that was reloaded, that none of the workers that ran
    before is left (an old worker would still serve the old code and configuration), that O(workers) workers run
    when given, and that the health path answers 200 - and, when its answer is a JSON object with a C(release)
    key, names O(release).
  - Fails, saying what was still wrong, when the app is not ready after O(timeout) seconds. A master that changed
    during the wait (the service restarted) fails at once.
  - The same check serves the collection's roles, its benchmark and its tests.
options:
  service:
    description: The app's systemd service, for example V(shop.service).
    type: str
    required: true
  socket:
    description: Path of the app's listening unix socket; the health path is asked through it.
    type: path
    required: true
  health_path:
    description: Path the app answers with 200 when it is ready.
    type: str
    default: /healthz
  reload:
    description:
      - Reload the service first (HUP to the master), then wait for a whole new generation of workers.
      - The module then reports a change.
    type: bool
    default: false
  release:
    description:
      - The release the health path must report in the C(release) key of a JSON answer. An answer without
        the key is accepted.
    type: str
  workers:
    description: How many workers must run; V(0) does not count them.
    type: int
    default: 0
  timeout:
    description: Seconds to wait before failing.
    type: int
    default: 30
  wait:
    description:
      - Wait until the app is ready. V(false) only reports what runs now (RV(master), RV(cwd), RV(workers),
        RV(release)) and never fails for an app that is down; it cannot be combined with O(reload).
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: partial
    details: In check mode a reload is reported and not done, and nothing is waited for.
  diff_mode:
    support: none
  platform:
    platforms: linux
author:
  - flaskops.stack contributors (@flaskops)
"""

EXAMPLES = r"""
- name: Reload the shop and wait until release 3f2a9c answers from new workers
  flaskops.stack.gunicorn_ready:
    service: shop.service
    socket: /run/flaskops/shop.sock
    release: 3f2a9c
    reload: true
    timeout: 60

- name: Wait until the shop runs its four workers and answers
  flaskops.stack.gunicorn_ready:
    service: shop.service
    socket: /run/flaskops/shop.sock
    workers: 4
"""

RETURN = r"""
master:
  description: PID of the gunicorn master; V(0) when the service does not run.
  returned: success
  type: int
  sample: 4242
cwd:
  description:
    - The master's working directory, or V(null) when it does not run. gunicorn changes into its C(chdir)
      setting at start and on every reload, so for the collection's apps this is the release the master loaded
      last.
  returned: success
  type: str
  sample: /srv/shop/releases/3f2a9c1b2d4e-5e6f7a8b
workers:
  description: PIDs of the workers running when the app was found ready.
  returned: success
  type: list
  elements: int
  sample: [4301, 4302, 4303]
old_workers:
  description: PIDs of the workers that ran before the reload.
  returned: success and O(reload) is true
  type: list
  elements: int
  sample: [4250, 4251, 4252]
release:
  description: The release the health path reported, or V(null) when it reports none.
  returned: success
  type: str
  sample: 3f2a9c
seconds:
  description: Seconds waited.
  returned: success and O(wait) is true
  type: float
  sample: 1.4
status:
  description: HTTP status of the health path (V(0) when nothing answered).
  returned: success and O(wait) is false
  type: int
  sample: 200
state:
  description: What was seen last (C(master), C(workers), C(status), C(release)), when the app was not ready.
  returned: failure
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flaskops.stack.plugins.module_utils import readiness


def main():
    module = AnsibleModule(
        argument_spec={
            "service": {"type": "str", "required": True},
            "socket": {"type": "path", "required": True},
            "health_path": {"type": "str", "default": "/healthz"},
            "reload": {"type": "bool", "default": False},
            "release": {"type": "str"},
            "workers": {"type": "int", "default": 0},
            "timeout": {"type": "int", "default": 30},
            "wait": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    if not params["health_path"].startswith("/"):
        module.fail_json(msg="health_path must start with '/', got %r" % params["health_path"])
    if params["workers"] < 0 or params["timeout"] < 0:
        module.fail_json(msg="workers and timeout must be at least 0")
    if not params["wait"]:
        if params["reload"]:
            module.fail_json(msg="reload needs wait: a reload is only done when the module waits for its result")
        module.exit_json(changed=False, **readiness.look(params["service"], params["socket"], params["health_path"]))
    if module.check_mode:
        module.exit_json(changed=params["reload"], msg="check mode: nothing reloaded or waited for")
    expect = {"release": params["release"], "workers": params["workers"]}
    try:
        if params["reload"]:
            result = readiness.reload_and_wait(
                params["service"], params["socket"], params["timeout"], params["health_path"], **expect
            )
        else:
            result = readiness.wait(
                params["service"], params["socket"], expect, params["timeout"], params["health_path"]
            )
    except readiness.NotReady as error:
        module.fail_json(msg=str(error), state=error.state)
    result.pop("status", None)
    module.exit_json(changed=params["reload"], **result)


if __name__ == "__main__":
    main()
