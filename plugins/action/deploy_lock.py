# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of flaskops.stack.deploy_lock: who this run is, whether a holder still runs, the wait.

Only the controller can tell whether the run that holds a lock still runs: the lock names the
controller and its ansible-playbook process, and this plugin checks that process when the lock names
this controller. Every task of a run executes in a worker forked from the run's ansible-playbook
process, so the worker's parent is that process.
"""

from __future__ import annotations

import getpass
import os
import socket
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

POLL_SECONDS = 2.0


def process_start(pid):
    """The start time of process ``pid`` (clock ticks since boot, /proc/<pid>/stat field 22), or None."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii") as stat:
            # The command name (field 2) may hold spaces; the fields after it do not.
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError, ValueError):
        return None


def this_run(what):
    """The lock record of this run."""
    pid = os.getppid()
    controller = socket.gethostname()
    start = process_start(pid) or "?"
    return {
        "id": "%s:%d:%s" % (controller, pid, start),
        "controller": controller,
        "pid": pid,
        "user": getpass.getuser(),
        "what": what,
        "since": int(time.time()),
    }


def runs_here(holder):
    """Whether ``holder`` is a run of this controller that still runs (None: not this controller's)."""
    if holder.get("controller") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return None
    start = process_start(holder["pid"])
    return start is not None and holder.get("id") == "%s:%d:%s" % (holder["controller"], holder["pid"], start)


def describe(holder):
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if isinstance(since, int) else "?"
    return "%s by %s@%s (ansible-playbook pid %s) since %s" % (
        holder.get("what", "?"),
        holder.get("user", "?"),
        holder.get("controller", "?"),
        holder.get("pid", "?"),
        when,
    )


class ActionModule(ActionBase):
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        for internal in ("holder", "take_over"):
            if internal in args:
                raise AnsibleActionFail("deploy_lock: '%s' is set by the action plugin, not by the task" % internal)
        timeout = int(args.get("timeout", 300))
        stale_after = int(args.get("stale_after", 7200))
        args["holder"] = this_run(args.get("what", "deploy"))
        started = time.monotonic()
        while True:
            answer = self._execute_module(
                module_name="flaskops.stack.deploy_lock", module_args=args, task_vars=task_vars
            )
            if answer.get("failed") or args.get("state", "acquired") == "released" or answer.get("acquired"):
                break
            holder = answer.get("holder") or {}
            since = holder.get("since")
            dead = runs_here(holder) is False
            stale = not isinstance(since, int) or time.time() - since > stale_after
            if self._task.check_mode:
                self._display.warning("%s: the deploy lock is held: %s" % (args["path"], describe(holder)))
                break
            if (dead or stale) and "take_over" not in args:
                args["take_over"] = holder.get("id", "")
                continue
            if time.monotonic() - started >= timeout:
                answer.update(
                    failed=True,
                    msg="%s: another run holds the deploy lock: %s; waited %d s (timeout %d s)"
                    % (args["path"], describe(holder), time.monotonic() - started, timeout),
                )
                break
            args.pop("take_over", None)
            time.sleep(POLL_SECONDS)
        if answer.get("taken_over"):
            old = answer["taken_over"]
            why = "its run no longer runs" if runs_here(old) is False else "it was older than %d s" % stale_after
            self._display.warning("%s: took over the deploy lock left by %s: %s" % (args["path"], describe(old), why))
        answer["waited"] = round(time.monotonic() - started, 1)
        result.update(answer)
        return result
