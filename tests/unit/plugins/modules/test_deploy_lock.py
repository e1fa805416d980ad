# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""flaskops.stack.deploy_lock: the lock file on the host, and the controller's view of who holds it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from ansible_collections.flaskops.stack.plugins.action import deploy_lock as action
from ansible_collections.flaskops.stack.plugins.modules import deploy_lock

MINE = {"id": "ctl:10:100", "controller": "ctl", "pid": 10, "user": "me", "what": "deploy", "since": 1}
OTHER = {"id": "ctl:20:200", "controller": "ctl", "pid": 20, "user": "you", "what": "reload", "since": 2}


def test_a_free_lock_is_taken_and_given_back(tmp_path):
    path = str(tmp_path / "app.lock")
    assert deploy_lock.update(path, MINE, "acquired", None) == {"acquired": True, "holder": MINE}
    assert deploy_lock.read_lock(path) == MINE
    # Taking it again in the same run (another app's loop, a rerun of the task) is a no-op.
    assert deploy_lock.update(path, MINE, "acquired", None)["acquired"] is True
    assert deploy_lock.update(path, MINE, "released", None) == {"released": True}
    assert not os.path.exists(path)


def test_another_runs_lock_is_neither_taken_nor_given_back(tmp_path):
    path = str(tmp_path / "app.lock")
    deploy_lock.update(path, OTHER, "acquired", None)
    assert deploy_lock.update(path, MINE, "acquired", None) == {"acquired": False, "holder": OTHER}
    assert deploy_lock.update(path, MINE, "released", None) == {"released": False, "holder": OTHER}
    assert deploy_lock.read_lock(path) == OTHER
    # Only the id the controller judged dead may be replaced.
    assert deploy_lock.update(path, MINE, "acquired", "ctl:99:999")["acquired"] is False
    taken = deploy_lock.update(path, MINE, "acquired", OTHER["id"])
    assert taken == {"acquired": True, "holder": MINE, "taken_over": OTHER}
    assert deploy_lock.read_lock(path) == MINE


def test_an_unreadable_lock_reads_as_empty(tmp_path):
    path = tmp_path / "app.lock"
    path.write_text("{half a record", encoding="utf-8")
    assert deploy_lock.read_lock(str(path)) == {}
    assert deploy_lock.update(str(path), MINE, "acquired", "")["taken_over"] == {}


def test_this_run_is_the_parent_process_with_its_start_time():
    run = action.this_run("deploy")
    assert run["pid"] == os.getppid() and run["controller"] == socket.gethostname()
    assert run["id"] == "%s:%d:%s" % (socket.gethostname(), os.getppid(), action.process_start(os.getppid()))
    assert action.runs_here(run) is True


def test_a_run_whose_process_is_gone_or_reused_no_longer_runs():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone = {"id": "%s:%d:1" % (socket.gethostname(), child.pid), "controller": socket.gethostname(), "pid": child.pid}
    assert action.runs_here(gone) is False
    # The same PID with another start time is another process.
    reused = dict(action.this_run("deploy"), id="%s:%d:1" % (socket.gethostname(), os.getppid()))
    assert action.runs_here(reused) is False
    # Another controller's run cannot be judged from here.
    assert action.runs_here(dict(gone, controller="elsewhere")) is None


@pytest.mark.parametrize("holder", [{}, {"what": "deploy"}, OTHER])
def test_a_holder_is_described_whatever_it_holds(holder):
    text = action.describe(holder)
    assert " by " in text and " since " in text
