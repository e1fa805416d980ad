#!/usr/bin/python

# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: haproxy_server
short_description: Drain, ready or read one server in every HAProxy backend that has it, through the runtime API
version_added: 1.1.0
description:
  - Runs on the load balancer host and talks to HAProxy's runtime API. The server is found by name in every
    backend that has it; a server no backend has, or a host where HAProxy does not run yet (no O(socket)), is
    reported (RV(backends) empty), not an error, so that the first deploy of a fleet, before its load balancer
    exists, can drain and ready its hosts.
  - Every command goes to the current worker through the master CLI (O(master_socket), C(@1)) when HAProxy runs
    in master-worker mode with one, as Debian's unit does. The stats socket may be answered by an old worker,
    with the old configuration and server states of its own - right after a reload, until the new worker has
    bound it (0.2 s measured with HAProxy 2.6), and for good by an old worker that never stopped (as under the
    haproxy role's unit before it allowed C(CAP_KILL)). A drain or a check sent there says nothing of the
    current worker. Without a master CLI the commands go to O(socket).
  - O(state=drained) sets the server to C(drain) (no new requests, those in flight finish) and, with O(wait), waits
    until its sessions and queued requests reach zero, or fails after O(timeout) seconds naming the server and
    what is left.
  - O(state=ready) clears C(drain) and maintenance and, with O(wait), waits until every backend's health checks
    see the server up, or fails after O(timeout) seconds naming the backend, the status and the last check. Up
    means status C(UP) after a health check that passed; every server starts C(UP) when HAProxy starts or
    reloads, before its first check, and that does not count.
  - O(state=read) changes nothing and returns the counters (for an error rate over a window, read twice).
options:
  socket:
    description: The runtime API's unix socket (C(stats socket ... level admin)).
    type: path
    default: /run/haproxy/admin.sock
  master_socket:
    description:
      - The master CLI's unix socket (C(haproxy -S), Debian's C(EXTRAOPTS)). When it exists, commands go through it
        to the current worker; when it does not, to O(socket).
    type: path
    default: /run/haproxy-master.sock
  server:
    description: The server's name in the backends.
    type: str
    required: true
  state:
    description: What to do.
    type: str
    choices: [drained, ready, read]
    default: read
  wait:
    description: Wait for the sessions to drain (O(state=drained)) or the server to be up (O(state=ready)).
    type: bool
    default: true
  timeout:
    description: Seconds to wait.
    type: int
    default: 60
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: In check mode the states are read and the change that would be made is reported; nothing is sent.
  diff_mode:
    support: none
  platform:
    platforms: posix
author:
  - flaskops.stack contributors (@flaskops)
"""

EXAMPLES = r"""
- name: Drain web1 on the load balancer and wait for its requests to finish
  flaskops.stack.haproxy_server:
    server: web1
    state: drained
    timeout: 60
  delegate_to: lb1

- name: Put it back and wait until the health checks see it up
  flaskops.stack.haproxy_server:
    server: web1
    state: ready
  delegate_to: lb1
"""

RETURN = r"""
backends:
  description:
    - One item per backend that has the server, after the change - C(backend), C(status) (HAProxy's, such as
      C(UP), C(DRAIN), C(DOWN), C(MAINT)), C(sessions), C(queued), C(requests) (responses counted, all statuses),
      C(errors_5xx), C(check) (the last check's status and code).
  returned: always
  type: list
  elements: dict
waited:
  description: Seconds waited.
  returned: always
  type: float
cli:
  description: The socket the commands went to (O(master_socket) or O(socket)).
  returned: when HAProxy runs
  type: str
"""

import os
import socket
import time

from ansible.module_utils.basic import AnsibleModule

_POLL = 0.25
# The master CLI's prefix that routes a command to the current worker (relative process 1).
_CURRENT_WORKER = "@1 "


class Cli:
    """Where runtime API commands go: the master CLI, prefixed for the current worker, when there is one;
    else the stats socket."""

    def __init__(self, stats_socket, master_socket):
        if master_socket and os.path.exists(master_socket):
            self.path, self.prefix = master_socket, _CURRENT_WORKER
        else:
            self.path, self.prefix = stats_socket, ""

    def __call__(self, command):
        return _ask(self.path, self.prefix + command)


def _ask(path, command):
    """One runtime API command on a fresh connection (non-interactive mode); its whole answer."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    try:
        conn.connect(path)
        conn.sendall(command.encode() + b"\n")
        # The end of the request: the master CLI answers a command only once its client has said so.
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        conn.close()
    return b"".join(chunks).decode("utf-8", "replace")


def _rows(cli, server):
    """The ``show stat`` rows of ``server``, one per backend, as dicts keyed by the CSV header."""
    lines = cli("show stat").splitlines()
    if not lines or not lines[0].startswith("# "):
        raise RuntimeError("unexpected answer to 'show stat': %r" % "\n".join(lines[:3]))
    header = lines[0][2:].split(",")
    rows = []
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("svname") == server and row.get("pxname"):
            rows.append(row)
    return rows


# srv_admin_state bits (HAProxy's SRV_ADMF_*): forced maintenance and forced drain, which the
# runtime API's "state ready" clears. ``show stat`` cannot tell them once checks fail: it says DOWN.
_FORCED_MAINT = 0x01
_FORCED_DRAIN = 0x08


def _admin_states(cli, server):
    """``{backend: srv_admin_state}`` of ``server``, from ``show servers state``."""
    lines = [line for line in cli("show servers state").splitlines() if line.strip()]
    header = next((line[2:].split() for line in lines if line.startswith("# ")), None)
    if header is None or "srv_admin_state" not in header:
        raise RuntimeError("unexpected answer to 'show servers state': %r" % "\n".join(lines[:3]))
    states = {}
    for line in lines:
        if line.startswith("#") or len(line.split()) < len(header) - 5:
            continue
        row = dict(zip(header, line.split(), strict=False))
        if row.get("srv_name") == server:
            states[row["be_name"]] = int(row["srv_admin_state"])
    return states


def _number(row, key):
    try:
        return int(row.get(key) or 0)
    except ValueError:
        return 0


def _summary(row):
    check = " ".join(v for v in (row.get("check_status", ""), row.get("check_code", "")) if v)
    return {
        "backend": row["pxname"],
        "status": row.get("status", ""),
        "sessions": _number(row, "scur"),
        "queued": _number(row, "qcur"),
        "requests": sum(_number(row, k) for k in ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx")),
        "errors_5xx": _number(row, "hrsp_5xx"),
        "check": check,
    }


# check_status of a health check that passed ("* " before it marks a check in progress).
_CHECK_PASSED = frozenset(("L4OK", "L6OK", "L7OK", "L7OKC"))


def _up(row):
    """Up by a health check that passed: not the UP every server starts in when HAProxy starts or
    reloads (its first check not done: INI), nor UP while its checks fail ("UP 1/3", going down)."""
    return row.get("status") == "UP" and row.get("check_status", "").lstrip("* ") in _CHECK_PASSED


def _settled(state, rows):
    if state == "drained":
        return all(_number(r, "scur") == 0 and _number(r, "qcur") == 0 for r in rows)
    return all(_up(r) for r in rows)


def _unsettled(state, server, rows, timeout):
    if state == "drained":
        left = ", ".join(
            "%s: %d sessions, %d queued" % (r["pxname"], _number(r, "scur"), _number(r, "qcur"))
            for r in rows
            if _number(r, "scur") or _number(r, "qcur")
        )
        return "server %s still has requests after %ds of drain (%s)" % (server, timeout, left)
    down = ", ".join(
        "%s: %s, last check %s" % (r["pxname"], r.get("status", "?"), _summary(r)["check"] or "none")
        for r in rows
        if not _up(r)
    )
    return "server %s is not up after %ds (%s)" % (server, timeout, down)


def _run(module, cli, server, state):
    rows = _rows(cli, server)
    changed = False
    if state != "read" and rows:
        admin = "drain" if state == "drained" else "ready"
        admin_states = _admin_states(cli, server)
        if state == "drained":
            todo = [r for r in rows if not admin_states.get(r["pxname"], 0) & _FORCED_DRAIN]
        else:
            todo = [r for r in rows if admin_states.get(r["pxname"], 0) & (_FORCED_DRAIN | _FORCED_MAINT)]
        changed = bool(todo)
        if todo and not module.check_mode:
            for row in todo:
                answer = cli("set server %s/%s state %s" % (row["pxname"], server, admin)).strip()
                if answer:
                    module.fail_json(
                        msg="HAProxy refused 'set server %s/%s state %s': %s" % (row["pxname"], server, admin, answer)
                    )
    start = time.monotonic()
    if state != "read" and rows and module.params["wait"] and not module.check_mode:
        deadline = start + module.params["timeout"]
        rows = _rows(cli, server)
        while not _settled(state, rows):
            if time.monotonic() >= deadline:
                module.fail_json(
                    msg=_unsettled(state, server, rows, module.params["timeout"]),
                    backends=[_summary(r) for r in rows],
                    changed=changed,
                )
            time.sleep(_POLL)
            rows = _rows(cli, server)
    elif state != "read" and not module.check_mode:
        rows = _rows(cli, server)
    module.exit_json(
        changed=changed,
        backends=[_summary(r) for r in rows],
        waited=round(time.monotonic() - start, 2),
        cli=cli.path,
    )


def main():
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "default": "/run/haproxy/admin.sock"},
            "master_socket": {"type": "path", "default": "/run/haproxy-master.sock"},
            "server": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["drained", "ready", "read"], "default": "read"},
            "wait": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 60},
        },
        supports_check_mode=True,
    )
    path, server, state = module.params["socket"], module.params["server"], module.params["state"]
    if not os.path.exists(path):
        # A load balancer not set up yet (the first deploy of a fleet) has no server to drain.
        module.exit_json(
            changed=False, backends=[], waited=0.0, msg="no runtime API at %s: HAProxy does not run" % path
        )
    cli = Cli(path, module.params["master_socket"])
    try:
        _run(module, cli, server, state)
    except (OSError, RuntimeError) as exc:
        module.fail_json(msg="HAProxy's runtime API at %s: %s" % (cli.path, exc))


if __name__ == "__main__":
    main()
