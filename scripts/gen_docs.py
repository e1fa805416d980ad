# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Regenerate the generated parts of README.md and the roles' READMEs from the code, and check roles.

No ecosystem tool renders tables of a filter's *results* or README variable
tables from role argument specs, so this script does:

* ``plans`` / ``example``: runs the real sizing model for a few host sizes and
  profiles and writes the table and worked example;
* ``workload``: the options of the ``gunicorn_tuning`` filter from its
  DOCUMENTATION, which tests/unit/plugins/filter checks against the model;
* ``vars-<role>``: each role's variable table in ``roles/<role>/README.md``, from
  its ``meta/argument_specs.yml`` (aar-doc, the maintained generator, was tried:
  it repeats a spec shared by several entry points once per entry point and
  writes anchor links that do not resolve);
* it fails when a role's ``meta/argument_specs.yml`` and ``defaults/main.yml``
  drift apart (a key in one and not the other, or different default values).

Sections sit between ``<!-- BEGIN GENERATED name ... -->`` and
``<!-- END GENERATED name -->``. ``--check`` fails (exit 1) when a file is
out of date or a role's specs drift; ``make lint`` runs it.
"""

from __future__ import annotations

import argparse
import difflib
import pathlib
import re
import sys

import yaml

from ansible_collections.flaskops.stack.plugins.filter import gunicorn_tuning as gunicorn_filter
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


ROLES = sorted(p.parent.parent.name for p in (ROOT / "roles").glob("*/meta/argument_specs.yml"))


def _load(path):
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _spec(role):
    return _load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]


def spec_drift(role):
    """Differences between a role's argument specs and its defaults."""
    options = _spec(role).get("options", {})
    defaults = _load(ROOT / "roles" / role / "defaults" / "main.yml")
    problems = []
    for key in sorted(set(defaults) - set(options)):
        problems.append("%s: defaults/main.yml has %s, meta/argument_specs.yml does not" % (role, key))
    for key, option in sorted(options.items()):
        if option.get("required"):
            if key in defaults:
                problems.append("%s: %s is required in the specs but has a default" % (role, key))
            continue
        if key not in defaults:
            problems.append("%s: meta/argument_specs.yml has %s, defaults/main.yml does not" % (role, key))
        elif option.get("default") != defaults[key]:
            problems.append(
                "%s: %s defaults to %r in defaults/main.yml but %r in the specs"
                % (role, key, defaults[key], option.get("default"))
            )
    return problems


def _yaml_value(value):
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


def _description(option):
    text = option.get("description", "")
    text = " ".join(text) if isinstance(text, list) else text
    # Ansible doc markup C(x), O(x), V(x), P(x#type) -> Markdown code.
    return re.sub(r"\b[COVP]\(([^()#]*(?:\([^()]*\))?[^()#]*)(?:#[a-z]+)?\)", r"`\1`", text)


def _rows(options, prefix=""):
    for key, option in sorted(options.items()):
        kind = option.get("type", "str")
        if kind == "list" and option.get("elements"):
            kind = "list of %s" % option["elements"]
        if option.get("choices"):
            kind += " (%s)" % ", ".join(str(c) for c in option["choices"])
        default = "required" if option.get("required") else "`%s`" % _yaml_value(option.get("default"))
        yield "| `%s%s` | %s | %s | %s |" % (prefix, key, _cell(kind), _cell(default), _cell(_description(option)))
        if option.get("options"):
            sub = "%s%s%s." % (prefix, key, "[]" if option.get("type") == "list" else "")
            yield from _rows(option["options"], sub)


def vars_table(role):
    rows = ["| variable | type | default | description |", "|---|---|---|---|"]
    rows.extend(_rows(_spec(role).get("options", {})))
    return "\n".join(rows)


def workload_table():
    """The workload options of the gunicorn_tuning filter, as ansible-doc shows them."""
    options = yaml.safe_load(gunicorn_filter.DOCUMENTATION)["options"]
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for key, option in options.items():
        if key in ("_input", "workload"):
            continue
        kind = option.get("type", "str")
        if option.get("choices"):
            kind += " (%s)" % ", ".join(str(c) for c in option["choices"])
        default = "`%s`" % _yaml_value(option["default"]) if "default" in option else "-"
        rows.append("| `%s` | %s | %s | %s |" % (key, _cell(kind), default, _cell(_description(option))))
    return "\n".join(rows)


# Each file and the generated sections it holds.
FILES = {README: {"plans": plans_table, "example": worked_example, "workload": workload_table}}
FILES.update(
    {ROOT / "roles" / role / "README.md": {"vars-%s" % role: (lambda r=role: vars_table(r))} for role in ROLES}
)


def render(path, text):
    for name, build in FILES[path].items():
        pattern = re.compile(
            r"(<!-- BEGIN GENERATED %s[^\n]*-->\n)(?:.*?\n)?(<!-- END GENERATED %s -->)" % (name, name), re.S
        )
        if not pattern.search(text):
            raise SystemExit("%s has no GENERATED %s markers" % (path.relative_to(ROOT), name))
        text = pattern.sub(lambda m, b=build: m.group(1) + b() + "\n" + m.group(2), text)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a generated file is not up to date")
    args = parser.parse_args()
    drift = [problem for role in ROLES for problem in spec_drift(role)]
    for problem in drift:
        print("argument specs drift: " + problem, file=sys.stderr)
    if drift:
        return 1
    stale = []
    for path in FILES:
        current = path.read_text(encoding="utf-8")
        wanted = render(path, current)
        if current == wanted:
            continue
        name = str(path.relative_to(ROOT))
        if args.check:
            sys.stdout.writelines(
                difflib.unified_diff(current.splitlines(True), wanted.splitlines(True), name, name + " (generated)")
            )
            stale.append(name)
        else:
            path.write_text(wanted, encoding="utf-8")
            print(name + " updated")
    if stale:
        print("%s out of date: run `make docs`" % ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
