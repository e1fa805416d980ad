# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: gunicorn_tuning
short_description: Size gunicorn, its nginx upstream and its systemd unit from host facts and a workload
version_added: 1.0.0
author: flaskops.stack contributors
description:
  - Turns a host's facts and an app's workload into gunicorn settings (worker class, workers, threads,
    timeouts, recycling), the matching nginx upstream timeouts, and systemd stop and memory limits.
  - Effective CPUs are the smaller of C(processor_vcpus) and the cgroup CPU quota; effective memory the smaller
    of C(memtotal_mb) and the cgroup memory limit. The cgroup values come from the C(flaskops_resources) fact
    set by M(flaskops.stack.resource_facts) and win when present.
  - CPU-bound work gets C(sync) workers (one per core plus a spare); I/O-bound work gets C(gthread) with enough
    threads to keep the cores busy - the requests in flight that Little's law gives for the effective CPUs and the
    request's CPU share, times a headroom of 2 for queueing at full load (measured by the collection's benchmark) -
    at most as many threads a process as keep its requests' CPU share within 0.75 of a CPU (its GIL), spread over
    one process per core plus a spare up to two per core plus one.
  - Two generations of workers (a reload's overlap) always fit the memory budget; never fewer than one worker.
  - Bad input (unknown option, profile or worker class; a missing, negative, zero, non-finite or non-numeric
    number; missing facts) fails with a message naming the filter, the field and the value.
positional: _input, workload
options:
  _input:
    description:
      - The host's facts, C(ansible_facts) or C(hostvars[host]) (C(ansible_)-prefixed keys).
      - Needs C(processor_vcpus) and C(memtotal_mb), or C(flaskops_resources).
    type: dict
    required: true
  workload:
    description:
      - The workload as one dict with any of the options below; keyword arguments win over its keys.
    type: dict
  profile:
    description:
      - Preset CPU share of a request, used when O(cpu_ms) and O(wait_ms) are not given.
      - Per request, V(cpu) 20 ms CPU + 0 ms waiting; V(mixed) 4.5 ms CPU + 20 ms waiting;
        V(io) 2 ms CPU + 48 ms waiting; V(api) 3.5 ms CPU + 200 ms waiting (requests that wait for an external
        API or another slow service).
      - Defaults to V(mixed) when neither a profile nor measurements are given.
    type: str
    choices: [cpu, mixed, io, api]
  cpu_ms:
    description: Measured CPU time per request in milliseconds; give together with O(wait_ms). Wins over O(profile).
    type: float
  wait_ms:
    description: Measured time per request spent waiting (database, HTTP, disk) in milliseconds.
    type: float
  worker_rss_mb:
    description: Resident memory of one worker process with the app loaded, in MiB.
    type: float
    default: 100
  thread_rss_mb:
    description: Extra resident memory per thread while it serves a request, in MiB.
    type: float
    default: 4
  memory_share:
    description: Share of the memory left after O(memory_reserve_mb) that this app may use (0 to 1).
    type: float
    default: 1.0
  memory_reserve_mb:
    description:
      - Memory kept for the OS, nginx and caches, in MiB.
      - Default 10% of memory, at least 256 MiB and at most 2 GiB, never more than half.
    type: float
  min_workers:
    description: Fewest worker processes; the memory budget still wins.
    type: int
    default: 1
  max_workers:
    description: Most worker processes.
    type: int
  max_threads:
    description: Most threads per C(gthread) worker.
    type: int
    default: 32
  timeout:
    description: gunicorn worker timeout in seconds; graceful timeout, nginx and systemd timeouts follow from it.
    type: int
    default: 30
  db_pool_max:
    description: Database connections the app may open in all; C(workers * threads) stays within it.
    type: int
  db_max_connections:
    description:
      - The database server's connection limit, shared by the O(fleet_hosts) hosts that run this app against it.
      - C(fleet_hosts * workers * threads * 2) stays within it (times 2 because during a reload the old and the new
        workers both hold connections, and every host may be reloading at once); with O(db_pool_max) the smaller
        cap wins. An error when even 1 worker with 1 thread per host does not fit.
    type: int
  fleet_hosts:
    description: Hosts that run this app against the database of O(db_max_connections); unused without it.
    type: int
    default: 1
  worker_class:
    description:
      - Force a worker class instead of deriving it.
      - V(gevent) needs gevent in the app's virtualenv, and an app that is safe under gevent's monkey-patching;
        the P(flaskops.stack.gunicorn#role) role installs gunicorn's C(gevent) extra (gevent and packaging) for it.
    type: str
    choices: [sync, gthread, gevent]
  async_safe:
    description:
      - The app is safe under gevent's monkey-patching (its libraries cooperate with gevent or are pure Python,
        nothing relies on real threads). When its requests wait more than they compute, the plan then gives it
        V(gevent) workers instead of V(gthread), and the P(flaskops.stack.gunicorn#role) role installs gunicorn's
        C(gevent) extra. C(make bench-quick) of 2026-12-05 (2 CPUs, requests of 1 ms of CPU and 50 ms of sleep)
        measured 1.11 x the requests/s of the V(gthread) plan with 3 gevent workers, and 0.42 x its open-loop p99
        latency, at 64 connections; at 256 connections C(make bench) of 2026-12-05 measured 0.65 x (1 CPU) and
        0.85 x (2 CPUs) the best grid point, where the V(gthread) plan reached 0.92 x and 1.00 x.
    type: bool
    default: false
  upstream_keepalive:
    description:
      - Whether nginx keeps idle connections to gunicorn open. When true, gunicorn's keepalive outlives nginx's
        upstream C(keepalive_timeout). Has no effect with C(sync) workers, which close every connection.
    type: bool
    default: false
  max_requests:
    description: Requests after which a worker is recycled (10% jitter added); V(0) turns recycling off.
    type: int
    default: 2000
"""

EXAMPLES = r"""
- name: Plan an I/O-bound app on this host
  ansible.builtin.set_fact:
    app_plan: "{{ ansible_facts | flaskops.stack.gunicorn_tuning(profile='io', worker_rss_mb=120) }}"

- name: Plan from measured numbers, for another host, from a workload dict
  ansible.builtin.debug:
    msg: "{{ hostvars['web1'] | flaskops.stack.gunicorn_tuning(**app_workload) }}"
  vars:
    app_workload:
      cpu_ms: 3
      wait_ms: 40
      db_pool_max: 50

- name: Show why the plan is what it is
  ansible.builtin.debug:
    msg: "{{ (ansible_facts | flaskops.stack.gunicorn_tuning({'profile': 'cpu'})).explain }}"
"""

RETURN = r"""
_value:
  description: The plan.
  type: dict
  contains:
    worker_class: {description: gunicorn worker class., type: str}
    workers: {description: Worker processes., type: int}
    threads: {description: Threads per worker (1 for sync and gevent)., type: int}
    worker_connections: {description: Connections one worker accepts at once., type: int}
    max_requests: {description: Requests before a worker is recycled (0 = never)., type: int}
    max_requests_jitter: {description: Random extra requests before recycling., type: int}
    timeout: {description: gunicorn worker timeout (s)., type: int}
    graceful_timeout: {description: Seconds workers get to finish on reload or stop., type: int}
    keepalive: {description: gunicorn keep-alive (s)., type: int}
    backlog: {description: Listen backlog for the socket., type: int}
    concurrency: {description: Requests in flight the plan holds (workers x threads or connections)., type: int}
    cpus: {description: Effective CPUs used., type: float}
    memory_budget_mb: {description: Memory budget for this app (MiB)., type: int}
    memory_mb: {description: Expected steady resident memory (MiB)., type: int}
    memory_peak_mb: {description: Expected peak during a reload, two generations of workers (MiB)., type: int}
    db_pool_size: {description: Database pool size each worker process should use., type: int}
    db_connections_per_host:
      description: >-
        Database connections one host may hold of O(db_max_connections), C(db_max_connections // (2 * fleet_hosts));
        null when O(db_max_connections) is not given.
      type: int
    nginx:
      description: >-
        Upstream settings for nginx: C(proxy_read_timeout), C(proxy_send_timeout), C(proxy_connect_timeout),
        C(upstream_keepalive) (idle connections, 0 = off), C(upstream_keepalive_timeout),
        C(upstream_keepalive_requests).
      type: dict
    systemd:
      description: Unit settings C(TimeoutStopSec), C(MemoryHigh), C(MemoryMax).
      type: dict
    explain:
      description: One plain sentence per decision, naming the numbers behind it.
      type: list
      elements: str
"""

from ansible_collections.flaskops.stack.plugins.module_utils.tuning import gunicorn_plan
from ansible_collections.flaskops.stack.plugins.plugin_utils.tuning_filter import run_filter


def gunicorn_tuning(facts, workload=None, **kwargs):
    """Filter: the gunicorn plan for ``facts`` and a workload."""
    return run_filter("gunicorn_tuning", gunicorn_plan, facts, workload, kwargs)


class FilterModule:
    """flaskops.stack gunicorn sizing filter."""

    def filters(self):
        return {"gunicorn_tuning": gunicorn_tuning}
