"""HUPs back to back, each once the previous one is ready: the reload_soak case's driver, run on the instance.

It sits beside the collection's readiness check (``plugins/module_utils/readiness.py``, copied next to it),
and reloads as the roles do: ``systemctl reload`` (HUP to the master), then wait until a whole new
generation of workers is ready under the same master (old workers gone, the planned number running, the
health path answering 200). It measures the master's open file descriptors and threads before the first HUP
and after the last, and prints one JSON object. A reload that does not become ready ends the soak; the
object then carries ``error``.

Usage: ``python3 hup_soak.py --service demo.service --socket /run/flaskops/demo.sock --workers 3 --count 100``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

# Copied beside this file; Python puts a script's directory first on sys.path.
import readiness


def resources(pid):
    """The open file descriptors and threads of process ``pid``."""
    descriptors = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        threads = next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
    return {"fds": descriptors, "threads": threads}


def soak(service, socket_path, workers, count, timeout):
    master = readiness.main_pid(service)
    readiness.wait(service, socket_path, {"master": master, "workers": workers}, timeout)
    result = {"master_before": master, "before": resources(master), "hups": 0}
    waits = []
    start = time.monotonic()
    try:
        for _number in range(count):
            state = readiness.reload_and_wait(service, socket_path, timeout, workers=workers)
            waits.append(state["seconds"])
            result["hups"] += 1
    except readiness.NotReady as error:
        result["error"] = str(error)
    result["seconds"] = round(time.monotonic() - start, 1)
    result["master_after"] = readiness.main_pid(service)
    if result["master_after"] > 0:
        result["after"] = resources(result["master_after"])
    if waits:
        result["ready_s"] = {
            "median": round(statistics.median(waits), 3),
            "max": round(max(waits), 3),
        }
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", required=True, help="the app's service, e.g. demo.service")
    parser.add_argument("--socket", required=True, help="the app's unix socket, for its health path")
    parser.add_argument("--workers", type=int, required=True, help="how many workers the master runs")
    parser.add_argument("--count", type=int, required=True, help="how many HUPs")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one reload may take to be ready")
    args = parser.parse_args()
    print(json.dumps(soak(args.service, args.socket, args.workers, args.count, args.timeout)))


if __name__ == "__main__":
    main()
