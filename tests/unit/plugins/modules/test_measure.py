# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""flaskops.stack.measure: a window of traffic on fixture trees of /proc, the cgroups and nginx's log.

Each tree under fixtures/measure is a host at the start of the window: a gunicorn master (PID 100) with three
workers (201-203), an unrelated process (300), the unit's cgroups, its release's gunicorn.conf.py and two old
lines in the access log. The window's sleep is replaced by what the traffic does meanwhile: lines appended to
the log, the CPU counters moved on.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from unittest import mock

import pytest
from ansible.module_utils import _internal as module_utils_internal
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common import warnings as module_warnings
from ansible.module_utils.testing import patch_module_args  # ansible-core 2.19+ (meta/runtime.yml)

from ansible_collections.flaskops.stack.plugins.module_utils import cgroups
from ansible_collections.flaskops.stack.plugins.modules import measure

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "measure")
LOG = "var/log/nginx/flaskops-shop.access.log"
UNIT = "MainPID=100\nControlGroup=/system.slice/shop.service\nActiveState=active\n"


def log_line(status=200, urt="0.050", path="/orders"):
    return (
        '10.0.0.7 - - [24/Nov/2026:10:30:01 +0000] "GET %s HTTP/1.1" %d 512 "-" '
        '"Mozilla/5.0 (X11; Linux x86_64) \\x22quoted\\x22 rt=9.999 urt=9.999" rt=0.052 urt=%s host=shop.example\n'
        % (path, status, urt)
    )


def proc_stat(pid, ppid, utime, stime, cutime=0, cstime=0):
    return "%d (gunicorn: worker [shop]) S %d %d %d 0 -1 4194560 21541 0 0 0 %d %d %d %d 20 0 1 0 123456\n" % (
        pid,
        ppid,
        pid,
        pid,
        utime,
        stime,
        cutime,
        cstime,
    )


@pytest.fixture(autouse=True)
def own_warnings(monkeypatch):
    """Module warnings are kept in a global until a module exits: each test (and the tests after it) starts
    with none."""
    monkeypatch.setattr(module_warnings, "_global_warnings", {})


class Host:
    """A copy of a fixture tree, with the master's working directory (a link to its release) in place.

    The release's gunicorn.conf.py is kept as gunicorn.conf.py.txt, so that linters and ansible-test's sanity
    tests do not take it for the collection's Python, and the link is made here (ansible-test refuses links
    that point out of the collection).
    """

    def __init__(self, case, tmp_path):
        self.root = str(tmp_path / case)
        self.slept, self.ran = None, None  # set by run_module
        shutil.copytree(os.path.join(FIXTURES, case), self.root)
        os.symlink("/srv/shop/releases/r1", self.path("proc/100/cwd"))
        config = self.path("srv/shop/releases/r1/gunicorn.conf.py")
        os.rename(config + ".txt", config)

    def path(self, relative):
        return os.path.join(self.root, relative)

    def write(self, relative, text, mode="w"):
        os.makedirs(os.path.dirname(self.path(relative)), exist_ok=True)
        with open(self.path(relative), mode, encoding="utf-8") as handle:
            handle.write(text)

    def requests(self, count, status=200, urt="0.050"):
        self.write(LOG, log_line(status, urt) * count, mode="a")


class Clock:
    """time for the module: sleep() runs the window's traffic instead of waiting; monotonic() moves on by
    the seconds slept; the rest is the real time module."""

    def __init__(self, traffic):
        self.now, self.traffic, self.slept = 1000.0, traffic, []

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.traffic()
        self.now += seconds

    def monotonic(self):
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def run_module(host, args, capsys, traffic, unit_states=(UNIT, UNIT)):
    """Run the module on ``host`` with ``args``; ``traffic`` is what happens during the window, systemctl
    show answers ``unit_states`` in turn. Returns the result; ``host.slept`` has the seconds slept and
    ``host.ran`` the systemctl command lines."""
    states, ran = list(unit_states), []

    def run_command(_module, argv, **_kwargs):
        ran.append(argv)
        return 0, states.pop(0), ""

    clock = Clock(traffic)
    with (
        patch_module_args(args),
        mock.patch.object(module_utils_internal, "is_controller", False),
        mock.patch.object(AnsibleModule, "get_bin_path", return_value="/usr/bin/systemctl"),
        mock.patch.object(AnsibleModule, "run_command", run_command),
        mock.patch.object(measure, "ROOT", host.root),
        mock.patch.object(measure, "time", clock),
        pytest.raises(SystemExit),
    ):
        measure.main()
    host.slept, host.ran = clock.slept, ran
    return json.loads(capsys.readouterr().out)


def warnings(result):
    """The module's warnings as text (ansible-core 2.19 returns each as a summary dict)."""
    return [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", [])]


def hybrid_traffic(host, requests=600, urt="0.050", cpu_usec=6_200_000):
    def traffic():
        host.requests(requests, urt=urt)
        host.requests(5, status=502, urt="0.003")  # the app failed them: not counted
        host.requests(3, status=499, urt="0.020")  # the client left: not counted
        host.requests(4, status=301, urt="-")  # nginx's own redirect: not the app's
        host.write(LOG, "garbage line\n", mode="a")
        host.write(LOG, log_line()[:40], mode="a")  # nginx is still writing it: left out
        host.write(
            "sys/fs/cgroup/unified/system.slice/shop.service/cpu.stat",
            "usage_usec %d\nuser_usec 1\nsystem_usec 1\n" % cpu_usec,
        )

    return traffic


# --- A normal window, and check mode ---------------------------------------------------------


@pytest.mark.parametrize("check_mode", [False, True])
def test_a_window_of_traffic_on_the_test_containers_layout(tmp_path, capsys, check_mode):
    host = Host("hybrid", tmp_path)
    args = {"app": "shop", "window": 60, "_ansible_check_mode": check_mode}
    result = run_module(host, args, capsys, hybrid_traffic(host))

    assert "failed" not in result, result.get("msg")
    assert result["changed"] is False
    assert host.slept == [60]
    assert host.ran[0][1:] == [
        "show",
        "shop.service",
        "--property=MainPID",
        "--property=ControlGroup",
        "--property=ActiveState",
    ]
    # 600 requests at 50 ms; the unit's cgroup v2 used 1.2 s of CPU: 2 ms each, 48 ms waiting.
    assert result["requests"] == 600
    assert result["errors"] == 5
    assert result["window_s"] == 60.0
    assert result["cpu_ms"] == 2.0
    assert result["wait_ms"] == 48.0
    assert result["utilization"] == 0.01  # 1.2 s of 2 CPUs x 60 s
    assert result["in_flight"] == 0.5  # 600 x 0.05 s / 60 s
    assert result["cpus"] == 2.0
    # gthread, 3 workers x 4 threads from the release's gunicorn.conf.py.
    assert (result["workers"], result["threads"], result["capacity"]) == (3, 4, 12)
    # Workers' anonymous memory less their threads' stacks and arenas: 67840, 69440, 79020 kB -> median.
    assert result["worker_rss_mb"] == 67.8
    # Per thread: 2160/4, 2560/4, 980/2 kB -> median 540 kB.
    assert result["thread_rss_mb"] == 0.53
    assert result["saturated"] is False
    assert result["workload"] == {"cpu_ms": 2.0, "wait_ms": 48.0, "worker_rss_mb": 67.8, "thread_rss_mb": 0.53}
    assert result["sources"] == {
        "requests": "/var/log/nginx/flaskops-shop.access.log",
        "cpu": "cgroup_v2",
        "cpu_file": "/sys/fs/cgroup/unified/system.slice/shop.service/cpu.stat",
        "cpus": "host",
        "memory": "smaps_rollup",
        "threads": "smaps",
        "capacity": "/srv/shop/releases/r1/gunicorn.conf.py",
    }
    assert result["measured_at"].endswith("Z") and len(result["measured_at"]) == 20
    assert warnings(result) == [
        "app shop: 1 lines of /var/log/nginx/flaskops-shop.access.log are not in the stack's log format "
        "(rt=... urt=...) and were skipped"
    ]


def test_unit_and_log_can_be_named(tmp_path, capsys):
    host = Host("hybrid", tmp_path)
    os.rename(host.path(LOG), host.path("var/log/shop.log"))
    result = run_module(
        host,
        {"app": "shop", "unit": "shop-web.service", "access_log": "/var/log/shop.log", "min_requests": 10},
        capsys,
        lambda: (
            host.write("var/log/shop.log", log_line(urt="0.010") * 20, mode="a"),
            host.write("sys/fs/cgroup/unified/system.slice/shop.service/cpu.stat", "usage_usec 5020000\n"),
        ),
    )
    assert host.ran[0][2] == "shop-web.service"
    assert (result["requests"], result["cpu_ms"], result["wait_ms"]) == (20, 1.0, 9.0)
    assert result["sources"]["requests"] == "/var/log/shop.log"


# --- The CPU sources -------------------------------------------------------------------------


def test_cgroup_v1_cpuacct_of_the_unit(tmp_path, capsys):
    host = Host("v1", tmp_path)

    def traffic():
        host.requests(1000, urt="0.004")
        host.write("sys/fs/cgroup/cpu,cpuacct/system.slice/shop.service/cpuacct.usage", "10000000000\n")

    result = run_module(host, {"app": "shop"}, capsys, traffic)
    assert "failed" not in result, result.get("msg")
    # 3 s over 1000 requests of 4 ms.
    assert (result["cpu_ms"], result["wait_ms"]) == (3.0, 1.0)
    assert result["sources"]["cpu"] == "cgroup_v1"
    assert result["sources"]["cpu_file"] == "/sys/fs/cgroup/cpu,cpuacct/system.slice/shop.service/cpuacct.usage"
    # sync workers run no thread besides their main one: no thread figure, and none passed on.
    assert result["thread_rss_mb"] is None
    assert result["sources"]["threads"] is None
    assert result["workload"] == {
        "cpu_ms": 3.0,
        "wait_ms": 1.0,
        "worker_rss_mb": 50.8,
    }  # median of 50000, 52000, 90000 kB
    # The override "workers = 3" after the plan's "workers = 2" is what runs.
    assert (result["threads"], result["capacity"]) == (1, 3)


def test_proc_when_the_unit_has_no_cgroup_of_its_own(tmp_path, capsys):
    """Only the unit's slice has cgroups here (as in a container whose cpu hierarchy is not delegated): they hold
    other processes too, so /proc is read. Worker 203 is recycled during the window: its time moves to the
    master's cutime, and worker 204 starts."""
    host = Host("proc", tmp_path)
    ticks_before = (500 + 100 + 1000 + 200) + 3 * (300 + 50)

    def traffic():
        host.requests(1000, urt="0.010")
        host.write("proc/100/stat", proc_stat(100, 1, 520, 110, 1000 + 500, 200 + 100))  # 203 reaped: 600 ticks
        host.write("proc/201/stat", proc_stat(201, 100, 300 + 50, 50 + 10))
        host.write("proc/202/stat", proc_stat(202, 100, 300 + 40, 50 + 10))
        shutil.rmtree(host.path("proc/203"))
        shutil.copytree(host.path("proc/202"), host.path("proc/204"))
        host.write("proc/204/stat", proc_stat(204, 100, 8, 2))

    result = run_module(host, {"app": "shop"}, capsys, traffic)
    assert "failed" not in result, result.get("msg")
    ticks_after = (520 + 110 + 1500 + 300) + (350 + 60) + (340 + 60) + (8 + 2)
    # 203's first 350 ticks were in the first reading as a worker's, all its 600 in the second as the master's.
    assert ticks_after - ticks_before == 400
    assert result["sources"]["cpu"] == "proc"
    assert result["sources"]["cpu_file"] is None
    assert result["cpu_ms"] == 4.0  # 4 s over 1000 requests
    assert result["wait_ms"] == 6.0
    assert result["workers"] == 3  # 201, 202, 204


def test_cgroup_v2_wins_over_v1(tmp_path, capsys):
    """A hybrid host where the unit has CPUAccounting=yes: a cgroup of its own in both hierarchies."""
    host = Host("hybrid", tmp_path)
    host.write("sys/fs/cgroup/cpu,cpuacct/system.slice/shop.service/cgroup.procs", "100\n201\n202\n203\n")
    host.write("sys/fs/cgroup/cpu,cpuacct/system.slice/shop.service/cpuacct.usage", "1000\n")
    result = run_module(host, {"app": "shop"}, capsys, hybrid_traffic(host))
    assert result["sources"]["cpu"] == "cgroup_v2"
    assert result["cpu_ms"] == 2.0


def test_a_cgroup_without_the_master_is_someone_elses(tmp_path, capsys):
    """From a container without a cgroup namespace of its own, the unit's path can name a cgroup of the host's:
    only a cgroup that holds the unit's master is the unit's."""
    host = Host("hybrid", tmp_path)
    host.write("sys/fs/cgroup/unified/system.slice/shop.service/cgroup.procs", "4242\n")
    host.write("proc/100/stat", proc_stat(100, 1, 500, 100))

    def traffic():
        hybrid_traffic(host)()
        host.write("proc/100/stat", proc_stat(100, 1, 500 + 300, 100))  # 3 s

    result = run_module(host, {"app": "shop"}, capsys, traffic)
    assert "failed" not in result, result.get("msg")
    assert result["sources"]["cpu"] == "proc"
    assert (result["cpu_ms"], result["wait_ms"]) == (5.0, 45.0)


def test_proc_refuses_a_cpu_time_its_ticks_cannot_measure(tmp_path, capsys):
    host = Host("proc", tmp_path)

    def traffic():
        host.requests(600, urt="0.010")
        host.write("proc/100/stat", proc_stat(100, 1, 500 + 30, 100, 1000, 200))  # 0.3 s of CPU

    result = run_module(host, {"app": "shop"}, capsys, traffic)
    assert result["failed"] is True
    assert "app shop" in result["msg"]
    assert "0.30 s" in result["msg"] and "4 processes" in result["msg"] and "at most 2 %" in result["msg"]


# --- Refusals ----------------------------------------------------------------------------------


def test_too_few_requests_are_refused(tmp_path, capsys):
    host = Host("hybrid", tmp_path)
    result = run_module(host, {"app": "shop"}, capsys, hybrid_traffic(host, requests=499))
    assert result["failed"] is True
    assert result["msg"].startswith("app shop: 499 requests answered in the 60 s window")
    assert "fewer than min_requests=500" in result["msg"]
    assert result["requests"] == 499
    assert "cpu_ms" not in result and "workload" not in result


def test_the_minimum_can_be_lowered(tmp_path, capsys):
    host = Host("hybrid", tmp_path)
    result = run_module(
        host, {"app": "shop", "min_requests": 499}, capsys, hybrid_traffic(host, requests=499, cpu_usec=5_998_000)
    )
    assert "failed" not in result, result.get("msg")
    assert result["requests"] == 499
    assert result["cpu_ms"] == 2.0


def test_a_busy_cpu_is_refused(tmp_path, capsys):
    host = Host("hybrid", tmp_path)
    # 72 s of CPU in 60 s on 2 CPUs: 0.6 of them.
    result = run_module(host, {"app": "shop"}, capsys, hybrid_traffic(host, cpu_usec=77_000_000))
    assert result["failed"] is True
    assert result["msg"].startswith("app shop was too busy for a clean estimate: it used 0.60 of its 2 CPUs")
    assert "max_utilization 0.5" in result["msg"]
    assert result["utilization"] == 0.6
    assert result["saturated"] is True
    # The figures show why; there is no workload to plan with (measure.yml writes only those).
    assert result["cpu_ms"] == 120.0
    assert "workload" not in result


def test_a_busy_app_is_kept_with_a_warning_when_asked(tmp_path, capsys):
    host = Host("hybrid", tmp_path)
    result = run_module(
        host, {"app": "shop", "on_saturation": "warn"}, capsys, hybrid_traffic(host, cpu_usec=77_000_000)
    )
    assert "failed" not in result, result.get("msg")
    assert result["saturated"] is True
    assert result["cpu_ms"] == 120.0
    assert any(w.startswith("app shop was too busy") for w in warnings(result))


def test_requests_near_the_capacity_are_refused(tmp_path, capsys):
    host = Host("hybrid", tmp_path)
    # 600 requests of 1 s in 60 s: 10 in flight, of 3 x 4 = 12 (more than 0.75 x 12).
    result = run_module(host, {"app": "shop"}, capsys, hybrid_traffic(host, urt="1.000"))
    assert result["failed"] is True
    assert "10.0 requests were in flight, of a capacity of 12 (max_in_flight 0.75)" in result["msg"]
    assert "wait_ms (998.00 ms here)" in result["msg"]
    assert "workload" not in result
    # A capacity given explicitly wins over the configuration.
    host = Host("hybrid", tmp_path / "again")
    result = run_module(host, {"app": "shop", "capacity": 40}, capsys, hybrid_traffic(host, urt="1.000"))
    assert "failed" not in result, result.get("msg")
    assert (result["capacity"], result["sources"]["capacity"]) == (40, "option")


def test_a_restart_during_the_window_is_refused(tmp_path, capsys):
    host = Host("hybrid", tmp_path)
    restarted = UNIT.replace("MainPID=100", "MainPID=150")
    result = run_module(host, {"app": "shop"}, capsys, hybrid_traffic(host), (UNIT, restarted))
    assert result["failed"] is True
    assert result["msg"] == "app shop: shop.service restarted during the window (master 100, then 150); measure again"


def test_a_new_release_during_the_window_is_refused(tmp_path, capsys):
    host = Host("hybrid", tmp_path)

    def traffic():
        hybrid_traffic(host)()
        os.remove(host.path("proc/100/cwd"))
        os.symlink("/srv/shop/releases/r2", host.path("proc/100/cwd"))

    result = run_module(host, {"app": "shop"}, capsys, traffic)
    assert result["failed"] is True
    assert (
        "loaded another release during the window (/srv/shop/releases/r1, then /srv/shop/releases/r2)"
        in (result["msg"])
    )


def test_a_rotated_log_is_refused(tmp_path, capsys):
    host = Host("hybrid", tmp_path)

    def traffic():
        os.rename(host.path(LOG), host.path(LOG + ".1"))
        host.requests(600)

    result = run_module(host, {"app": "shop"}, capsys, traffic)
    assert result["failed"] is True
    assert "was rotated during the window; measure again" in result["msg"]


def test_a_unit_that_does_not_run(tmp_path, capsys):
    host = Host("hybrid", tmp_path)
    stopped = "MainPID=0\nControlGroup=\nActiveState=inactive\n"
    result = run_module(host, {"app": "shop"}, capsys, hybrid_traffic(host), (stopped,))
    assert result["failed"] is True
    assert result["msg"] == "app shop: shop.service does not run (inactive); nothing to measure"
    assert host.slept == []


def test_a_missing_log(tmp_path, capsys):
    host = Host("hybrid", tmp_path)
    os.remove(host.path(LOG))
    result = run_module(host, {"app": "shop"}, capsys, hybrid_traffic(host))
    assert result["failed"] is True
    assert result["msg"].startswith("app shop: cannot read its access log")
    assert "Set access_log" in result["msg"]
    assert host.slept == []


@pytest.mark.parametrize(
    "args, words",
    [
        ({"window": 0}, "window must be at least 1, got 0"),
        ({"min_requests": 0}, "min_requests must be at least 1, got 0"),
        ({"max_utilization": 1.5}, "max_utilization must be above 0 and at most 1, got 1.5"),
        ({"max_in_flight": 0}, "max_in_flight must be above 0 and at most 1, got 0.0"),
        ({"capacity": 0}, "capacity must be at least 1, got 0"),
    ],
)
def test_bad_options(tmp_path, capsys, args, words):
    host = Host("hybrid", tmp_path)
    result = run_module(host, dict(args, app="shop"), capsys, hybrid_traffic(host))
    assert result["failed"] is True
    assert result["msg"] == words
    assert host.slept == []


def test_no_configuration_skips_the_in_flight_check_with_a_warning(tmp_path, capsys):
    host = Host("hybrid", tmp_path)
    os.remove(host.path("srv/shop/releases/r1/gunicorn.conf.py"))
    result = run_module(host, {"app": "shop"}, capsys, hybrid_traffic(host, urt="1.000"))
    assert "failed" not in result, result.get("msg")
    assert (result["capacity"], result["threads"], result["sources"]["capacity"]) == (None, None, None)
    assert any("the in-flight check is skipped; set capacity" in w for w in warnings(result))


# --- The parts ---------------------------------------------------------------------------------


def test_the_tally_counts_what_the_app_answered():
    # The user agent holds "rt=9.999 urt=9.999" (and escaped quotes): the times come from after it.
    lines = [log_line(), log_line(404, "0.010"), log_line(500), log_line(499), log_line(429, "-"), "garbage\n"]
    assert measure.tally(lines) == {
        "requests": 2,
        "upstream_s": pytest.approx(0.06),
        "errors": 1,
        "aborted": 1,
        "other": 1,
        "unparsed": 1,
    }


def test_thread_memory_counts_stacks_and_arenas_only():
    """The fixtures' smaps hold, besides thread stacks and arenas, a 64 MiB-aligned obmalloc arena, a read-write
    mapping after a 2 MiB PROT_NONE reservation, a library's gap, [heap] and [stack]: none of them counts."""
    expected = {201: 4 * 40 + 2 * 1000, 202: 4 * 40 + 2 * 1200, 203: 2 * 40 + 900}
    for pid, kb in expected.items():
        with open(os.path.join(FIXTURES, "hybrid", "proc", str(pid), "smaps"), encoding="ascii") as handle:
            assert cgroups.thread_memory_kb(handle) == kb
    arena_full = "7f3c40000000-7f3c44000000 rw-p 00000000 00:00 0\nAnonymous:  65536 kB\n"
    assert cgroups.thread_memory_kb(arena_full.splitlines()) == 65536


def test_memory_without_smaps_rollup(tmp_path):
    host = Host("hybrid", tmp_path)
    for pid in (201, 202, 203):
        os.remove(host.path("proc/%d/smaps_rollup" % pid))
    memory = measure.worker_memory(host.root, 100)
    # The sums over smaps: 10276 - 2160, 10676 - 2560, 9096 - 980 kB.
    assert memory["worker_kb"] == 8116
    assert memory["memory_source"] == "smaps"


def test_cgroup_readers():
    assert cgroups.parse_cpu_stat_usage("usage_usec 1500\nuser_usec 1000\n") == 1_500_000
    assert cgroups.parse_cpu_stat_usage("user_usec 1000\n") is None
    assert cgroups.parse_cpuacct_usage("123\n") == 123
    assert cgroups.parse_cgroup_procs("1\n22\n") == {1, 22}
    assert cgroups.parse_proc_stat_times(proc_stat(5, 1, 10, 20, 30, 40)) == (30, 70)
    mount = {"version": 2, "root": "/", "mountpoint": "/sys/fs/cgroup/unified", "options": []}
    assert (
        cgroups.unit_cgroup_dir("/r", mount, "/system.slice/a.service")
        == "/r/sys/fs/cgroup/unified/system.slice/a.service"
    )
    assert cgroups.unit_cgroup_dir("/", dict(mount, root="/machine.slice"), "/system.slice/a.service") is None
