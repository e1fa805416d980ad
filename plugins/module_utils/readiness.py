# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""When is a gunicorn app under systemd ready? The one implementation of the collection's readiness check.

Plain Python, standard library only, no Ansible imports: the module ``flaskops.stack.gunicorn_ready`` wraps it
for the roles and the verifiers, and the benchmark copies this file into its hosts and imports it there.

Ready means, after a reload (HUP to the master, ``systemctl reload``) or a start:

* the unit runs, and its master (``MainPID``) is the one that was reloaded, when one was;
* none of the workers that ran before the reload is left (gunicorn starts the new generation, then
  retires the old one gracefully; an old worker still alive would still serve the old code);
* the expected number of workers runs, when a number is given;
* the app's health path answers 200 through its unix socket, and, when the answer is a JSON object with a
  ``release`` key, that key names the expected release (an app that does not report its release is taken
  at its word).
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import socket
import subprocess
import time

#: Seconds one health request may take before it counts as not answered.
HEALTH_REQUEST_TIMEOUT_S = 5.0
#: Seconds between two looks while waiting.
POLL_INTERVAL_S = 0.2


class NotReady(Exception):
    """The app did not become ready in time; ``state`` is the last thing seen."""

    def __init__(self, message, state):
        super().__init__(message)
        self.state = state


def _systemctl(*args):
    return subprocess.run(["systemctl", *args], check=False, capture_output=True, text=True)


def main_pid(service):
    """The unit's ``MainPID``: 0 when it does not run."""
    out = _systemctl("show", "--property=MainPID", "--value", service)
    try:
        return int(out.stdout.strip() or 0)
    except ValueError:
        return 0


def unit_properties(run, systemctl, unit, properties):
    """The named properties of a unit (``systemctl show``): (a dict, None), or ({}, what systemctl said)
    when it failed. ``run`` runs an argv and returns (rc, stdout, stderr), as AnsibleModule.run_command."""
    rc, out, err = run([systemctl, "show", unit] + ["--property=%s" % name for name in properties])[:3]
    if rc != 0:
        return {}, (err or out).strip() or "rc %d" % rc
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line), None


def children(pid, proc="/proc"):
    """The PIDs whose parent is ``pid`` (a gunicorn master's workers), from /proc/<pid>/stat."""
    found = set()
    if pid <= 0:
        return found
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "stat"), encoding="ascii", errors="replace") as handle:
                # The command name may hold spaces and parentheses: fields start after the last ')'.
                fields = handle.read().rpartition(")")[2].split()
        except OSError:  # it exited while we looked
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            found.add(int(entry))
    return found


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def health(socket_path, path="/healthz", timeout=HEALTH_REQUEST_TIMEOUT_S):
    """GET ``path`` through the app's socket: ``(status, body)``, status 0 when nothing answered.

    ``body`` is the parsed JSON object when the answer is one, else ``None``.
    """
    connection = _UnixConnection(socket_path, timeout)
    try:
        connection.request("GET", path, headers={"Host": "localhost"})
        response = connection.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException):
        return 0, None
    finally:
        connection.close()
    try:
        body = json.loads(raw.decode("utf-8"))
    except ValueError:
        body = None
    return response.status, body if isinstance(body, dict) else None


def connect_errno(socket_path, timeout=HEALTH_REQUEST_TIMEOUT_S):
    """0 when a connection to the unix socket succeeds (it is closed at once), else the errno: EACCES when the
    caller may not open it, ECONNREFUSED when nothing listens, EAGAIN when its accept queue is full."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(timeout)
    try:
        connection.connect(socket_path)
    except TimeoutError:
        return errno.ETIMEDOUT
    except OSError as error:
        return error.errno or errno.EIO
    finally:
        connection.close()
    return 0


def working_directory(pid, proc="/proc"):
    """Where ``pid`` runs: a gunicorn master changes into its ``chdir`` setting at start and on every
    reload, so this is the release directory it last loaded. ``None`` when it cannot be read."""
    if pid <= 0:
        return None
    try:
        return os.readlink(os.path.join(proc, str(pid), "cwd"))
    except OSError:
        return None


def look(service, socket_path, health_path="/healthz"):
    """What the app looks like now: master, its working directory, workers, health status and reported release."""
    master = main_pid(service)
    # Asked only of a running master: a connection to a socket-activated service that is down would start it.
    status, body = health(socket_path, health_path) if master > 0 else (0, None)
    return {
        "master": master,
        "cwd": working_directory(master),
        "workers": sorted(children(master)),
        "status": status,
        "release": (body or {}).get("release"),
    }


def problems(state, expect):
    """What keeps ``state`` (from :func:`look`) from being ready for ``expect``; empty when ready.

    ``expect`` may hold ``master`` (the master that must still run), ``old_workers`` (PIDs that must be
    gone), ``workers`` (how many must run) and ``release`` (the release the health path must report).
    """
    found = []
    if state["master"] <= 0:
        found.append("the service does not run")
    elif expect.get("master") and state["master"] != expect["master"]:
        found.append("the master changed from %d to %d (the service restarted)" % (expect["master"], state["master"]))
    left = sorted(set(expect.get("old_workers") or ()) & set(state["workers"]))
    if left:
        found.append("old workers %s still run" % ", ".join(map(str, left)))
    if expect.get("workers") and len(state["workers"]) != expect["workers"]:
        found.append("%d workers run, %d expected" % (len(state["workers"]), expect["workers"]))
    if state["status"] != 200:
        found.append("the health path answers %s" % (state["status"] or "nothing"))
    elif expect.get("release") and state["release"] not in (None, expect["release"]):
        found.append("the health path reports release %s, not %s" % (state["release"], expect["release"]))
    return found


def wait(service, socket_path, expect, timeout, health_path="/healthz"):
    """Wait until :func:`problems` finds nothing; return the state and the seconds waited.

    Raises :class:`NotReady` naming what was still wrong when ``timeout`` seconds have passed. A master
    that changed is final: waiting longer cannot bring the reloaded one back.
    """
    start = time.monotonic()
    while True:
        state = look(service, socket_path, health_path)
        found = problems(state, expect)
        if not found:
            return dict(state, seconds=round(time.monotonic() - start, 3))
        final = expect.get("master") and state["master"] > 0 and state["master"] != expect["master"]
        if final or time.monotonic() - start >= timeout:
            raise NotReady(
                "%s not ready after %.0f s: %s" % (service, time.monotonic() - start, "; ".join(found)), state
            )
        time.sleep(POLL_INTERVAL_S)


def reload(service):
    """``systemctl reload`` (HUP to the master); return the master and the workers it had before."""
    master = main_pid(service)
    if master <= 0:
        raise NotReady("%s does not run: nothing to reload" % service, {"master": master, "workers": []})
    old = sorted(children(master))
    out = _systemctl("reload", service)
    if out.returncode != 0:
        raise NotReady("systemctl reload %s failed: %s" % (service, out.stderr.strip()), {"master": master})
    return master, old


def reload_and_wait(service, socket_path, timeout, health_path="/healthz", **expect):
    """Reload, then wait until a whole new generation of workers is ready under the same master."""
    master, old = reload(service)
    state = wait(service, socket_path, dict(expect, master=master, old_workers=old), timeout, health_path)
    return dict(state, old_workers=old)
