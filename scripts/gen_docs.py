# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Regenerate the generated parts of README.md from the code.

No ecosystem tool renders tables of a filter's *results*, so this script
does: it runs the real sizing model for a few host sizes and profiles and
writes the table between the ``BEGIN/END GENERATED plans`` markers.
``--check`` fails (exit 1) when README.md is out of date; ``make lint`` runs it.
"""

from __future__ import annotations

import argparse
import difflib
import pathlib
import re
import sys

from ansible_collections.flaskops.stack.plugins.module_utils.tuning import gunicorn_plan, nginx_plan

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

HOSTS = [(1, 1024), (2, 4096), (8, 16384), (64, 262144)]
PROFILES = ["cpu", "mixed", "io"]


def plans_table():
    rows = [
        "| host | profile | class | workers x threads | in flight | peak MiB (reload) | MemoryMax "
        "| nginx workers x connections |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cpus, mem in HOSTS:
        facts = {"processor_vcpus": cpus, "memtotal_mb": mem}
        for profile in PROFILES:
            plan = gunicorn_plan(facts, profile=profile)
            nginx = nginx_plan(facts, plans=[plan])
            rows.append(
                "| %d vCPU / %s | %s | %s | %d x %d | %d | %d | %s | %d x %d |"
                % (
                    cpus,
                    "%d GiB" % (mem // 1024),
                    profile,
                    plan["worker_class"],
                    plan["workers"],
                    plan["threads"],
                    plan["concurrency"],
                    plan["memory_peak_mb"],
                    plan["systemd"]["MemoryMax"],
                    nginx["worker_processes"],
                    nginx["worker_connections"],
                )
            )
    return "\n".join(rows)


def worked_example():
    plan = gunicorn_plan({"processor_vcpus": 2, "memtotal_mb": 4096}, cpu_ms=2, wait_ms=48)
    return "\n".join("%d. %s" % (i, line) for i, line in enumerate(plan["explain"], 1))


SECTIONS = {"plans": plans_table, "example": worked_example}


def render(text):
    for name, build in SECTIONS.items():
        pattern = re.compile(
            r"(<!-- BEGIN GENERATED %s[^\n]*-->\n)(?:.*?\n)?(<!-- END GENERATED %s -->)" % (name, name), re.S
        )
        if not pattern.search(text):
            raise SystemExit("README.md has no GENERATED %s markers" % name)
        text = pattern.sub(lambda m, b=build: m.group(1) + b() + "\n" + m.group(2), text)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is not up to date")
    args = parser.parse_args()
    current = README.read_text(encoding="utf-8")
    wanted = render(current)
    if args.check:
        if current != wanted:
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(True), wanted.splitlines(True), "README.md", "README.md (generated)"
                )
            )
            print("README.md is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    if current != wanted:
        README.write_text(wanted, encoding="utf-8")
        print("README.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
