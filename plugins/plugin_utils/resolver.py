# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn the roles' input and the host's facts into complete, checked records (controller side).

Every default is applied here and every check that the roles' argument specs cannot express
(patterns, pairs, uniqueness, the sizing model's rules) is made here, once. Errors name the
input, the app or site, the field and the value. The roles' tasks and templates read the
records and derive nothing themselves. The keys and defaults of an app or a site come from the
roles' ``meta/argument_specs.yml``, the one place they are written.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from functools import cache, wraps

import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.flaskops.stack.plugins.module_utils.tuning import TuningError, gunicorn_plan, nginx_plan

# plugins/plugin_utils/resolver.py -> the collection's roles/ (the same in a source tree and in
# an installed collection).
_ROLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "roles")

_APP_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_WSGI = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*(\(.*\))?\Z")
_RELEASE_ID = re.compile(r"[A-Za-z0-9._-]+\Z")
_SITE_NAME = re.compile(r"[a-z][a-z0-9_-]*\Z")
_STATIC_URL = re.compile(r"/(.*/)?\Z")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]+\Z")
_UNSAFE_HEADER_VALUE = re.compile(r'["\n\\]')
_IMPORT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_FILE_MODE = re.compile(r"0?[0-7]{3}\Z")
# host:port of a listen directive: an IPv4 address or a name, or an IPv6 address in brackets.
_LISTEN = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})\Z")
# A path nginx takes as it is in a location or an if (-f ...): no spaces, quotes or semicolons.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._/-]*\Z")
# What a release holds itself: linked_dirs cannot take these names.
_RELEASE_ENTRIES = ("src", "venv", "env", "gunicorn.conf.py", ".flaskops-release")

# gunicorn settings the stack owns: the socket comes from systemd, and a chdir would take the
# master into one release for good (a later cleanup removes it, and the next reload kills it).
_OWNED_SETTINGS = {
    "bind": "the listening socket is systemd's <app>.socket; set 'socket' instead",
    "chdir": "the app runs from its release; a fixed directory would outlive the release it names",
}
# The role-wide values each resolver takes (the role's variables without their prefix).
GUNICORN_SETTINGS = (
    "base_dir",
    "state_dir",
    "socket_dir",
    "health_retries",
    "health_delay",
    "fleet_hosts",
    "measured_dir",
)
# The workload keys a measured workload file (playbooks/measure.yml, flaskops.stack.measure) may set. The
# first two are one measurement: an app that sets either keeps its own pair.
_MEASURED_PAIR = ("cpu_ms", "wait_ms")
_MEASURED_KEYS = (*_MEASURED_PAIR, "worker_rss_mb", "thread_rss_mb")
NGINX_SETTINGS = (
    "listen_port",
    "listen_tls_port",
    "client_max_body_size",
    "static_expires",
    "rate_limit",
    "rate_limit_burst",
    "content_security_policy",
    "security_headers",
    "hsts_max_age",
    "hsts_include_subdomains",
    "upstream_defaults",
    "extra_connections",
    "max_nofile",
    "worker_processes",
    "worker_connections",
    "lb_health_path",
    "drain_flag",
)
# Fields of a flask_stack_apps item that the stack sets on the nginx site itself.
_STACK_SITE_FIELDS = ("name", "upstream_socket", "plan", "static_dir")


class ResolveError(ValueError):
    """Bad input; the message names the variable, the app or site, the field and the value."""


def as_filter(func):
    """``func`` with ResolveError raised as AnsibleFilterError (the filters' interface)."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ResolveError as exc:
            raise AnsibleFilterError(str(exc)) from None

    return wrapper


@cache
def role_options(role, variable):
    """The options of one item of ``variable`` (a list of dicts) in ``role``'s argument spec."""
    with open(os.path.join(_ROLES_DIR, role, "meta", "argument_specs.yml"), encoding="utf-8") as spec:
        return yaml.safe_load(spec)["argument_specs"]["main"]["options"][variable]["options"]


def _settings(name, settings, keys):
    """``settings`` after checking that it is a dict with ``keys``."""
    missing = [key for key in keys if not isinstance(settings, Mapping) or key not in settings]
    if missing:
        raise ResolveError(
            "%s: settings must be a dict with %s; missing %s" % (name, ", ".join(keys), ", ".join(missing))
        )
    return settings


def _given(item, key):
    """``item[key]``, or None when it is missing, null or an empty string."""
    value = item.get(key)
    return None if value is None or value == "" else value


def _with_defaults(item, options):
    """``item`` with the argument spec's default for every key it leaves out (or sets to null)."""
    record = {key: option.get("default") for key, option in options.items()}
    record.update({key: value for key, value in item.items() if value is not None})
    return record


def _label(variable, kind, item, index):
    name = item.get("name") if isinstance(item, Mapping) else None
    return "%s: %s %s" % (variable, kind, repr(str(name)) if isinstance(name, str) else "#%d" % index)


def _items(variable, value):
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise ResolveError("%s: must be a list of dicts, got %r" % (variable, value))
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ResolveError("%s: item #%d must be a dict, got %r" % (variable, index, item))
    return value


def _unique(variable, what, records, key):
    """Fail when two records share ``record[key]`` (a scalar or a list of scalars)."""
    owners = {}
    for record in records:
        values = record[key] if isinstance(record[key], list) else [record[key]]
        for value in values:
            owners.setdefault(value, []).append(record["name"])
    for value, names in owners.items():
        if len(names) > 1:
            raise ResolveError(
                "%s: %s share the %s %r; each %s must be unique"
                % (variable, " and ".join(repr(n) for n in names), what, value, what)
            )


# --- flask_stack_apps (playbooks) ---------------------------------------------------------


def _stack_fields():
    gunicorn = role_options("gunicorn", "gunicorn_apps")
    nginx = {k: v for k, v in role_options("nginx", "nginx_sites").items() if k not in _STACK_SITE_FIELDS}
    return gunicorn, nginx


def _check_stack_keys(apps):
    """Fail unless every flask_stack_apps item has the required keys and only known ones."""
    gunicorn, nginx = _stack_fields()
    required = [k for k, o in list(gunicorn.items()) + list(nginx.items()) if o.get("required")]
    known = sorted(set(gunicorn) | set(nginx))
    for index, app in enumerate(_items("flask_stack_apps", apps)):
        label = _label("flask_stack_apps", "app", app, index)
        missing = [k for k in required if k not in app]
        if missing:
            raise ResolveError("%s: missing %s" % (label, ", ".join(missing)))
        unknown = sorted(k for k in app if k not in known)
        if unknown:
            raise ResolveError("%s: unknown keys %s (known: %s)" % (label, ", ".join(unknown), ", ".join(known)))
    return gunicorn, nginx


def stack_gunicorn_apps(apps):
    """The gunicorn role's part of each flask_stack_apps item."""
    gunicorn, _nginx = _check_stack_keys(apps)
    return [{k: v for k, v in app.items() if k in gunicorn} for app in apps]


def stack_nginx_sites(apps, gunicorn_records):
    """Each flask_stack_apps item's nginx site, with the socket, plan and static directory of its app."""
    # The keys were checked where the apps' gunicorn records came from (stack_gunicorn_apps).
    _gunicorn, nginx = _stack_fields()
    by_name = {record["name"]: record for record in gunicorn_records}
    sites = []
    for app in apps:
        record = by_name.get(app.get("name"))
        if record is None:
            raise ResolveError("flask_stack_apps: app %r has no resolved gunicorn app" % app.get("name"))
        site = {k: v for k, v in app.items() if k in nginx}
        site.update(
            name=record["name"],
            upstream_socket=record["socket"],
            plan=record["plan"],
            health_path=record["health_path"],
        )
        if record["static_dir"] is not None:
            site["static_dir"] = record["static_dir"]
        sites.append(site)
    return sites


def stack_haproxy_apps(apps):
    """Each flask_stack_apps item's part for the haproxy role: its name, server names and certificate."""
    stack_gunicorn_apps(apps)  # the same checks of the keys as for the other roles
    keys = ("name", "server_name", "tls_certificate")
    return [{k: app[k] for k in keys if _given(app, k) is not None} for app in apps]


def stack_metrics_apps(gunicorn_records):
    """Each resolved gunicorn app's part for the metrics role: where its processes write their metrics."""
    return [
        {"name": r["name"], "directory": r["metrics_dir"], "socket": r["socket"], "user": r["user"]}
        for r in gunicorn_records
    ]


# --- gunicorn_apps ------------------------------------------------------------------------


def _check_app(label, app):
    name, wsgi, release = app["name"], app["wsgi"], app["release"]
    if not (isinstance(name, str) and _APP_NAME.match(name)):
        raise ResolveError("%s: 'name' must match [a-z][a-z0-9_]*, got %r" % (label, name))
    if not (isinstance(wsgi, str) and _WSGI.match(wsgi)):
        raise ResolveError("%s: 'wsgi' must be 'module:callable', got %r" % (label, wsgi))
    source = app["source"] if isinstance(app["source"], Mapping) else {}
    given = [key for key in ("path", "pip") if _given(source, key) is not None]
    if len(given) != 1:
        raise ResolveError("%s: 'source' needs exactly one of path and pip, got %r" % (label, app["source"]))
    if given == ["path"] and not os.path.isdir(source["path"]):
        raise ResolveError("%s: 'source.path' %r is not a directory on the controller" % (label, source["path"]))
    if release is not None and not (isinstance(release, str) and _RELEASE_ID.match(release)):
        raise ResolveError("%s: 'release' must match [A-Za-z0-9._-]+, got %r" % (label, release))
    if not (isinstance(app["health_path"], str) and app["health_path"].startswith("/")):
        raise ResolveError("%s: 'health_path' must start with /, got %r" % (label, app["health_path"]))
    for key, why in _OWNED_SETTINGS.items():
        if key in app["settings"]:
            raise ResolveError("%s: 'settings.%s' cannot be set: %s" % (label, key, why))


def _relative_path(label, field, value):
    """``value`` normalised, after checking that it is a path inside the directory it is relative to."""
    if not isinstance(value, str) or not value.strip():
        raise ResolveError("%s: '%s' must be a relative path, got %r" % (label, field, value))
    path = posixpath.normpath(value)
    if path.startswith("/") or path in (".", "..") or path.startswith("../"):
        raise ResolveError(
            "%s: '%s' must be a path inside its directory (relative, no '..'), got %r" % (label, field, value)
        )
    return path


def _linked_dirs(label, values):
    linked = []
    for index, value in enumerate(values):
        path = _relative_path(label, "linked_dirs[%d]" % index, value)
        if path.split("/")[0] in _RELEASE_ENTRIES:
            raise ResolveError(
                "%s: 'linked_dirs[%d]' %r is part of every release (%s are)"
                % (label, index, value, ", ".join(_RELEASE_ENTRIES))
            )
        for other in linked:
            if path == other or path.startswith(other + "/") or other.startswith(path + "/"):
                raise ResolveError("%s: 'linked_dirs' %r and %r overlap" % (label, other, path))
        linked.append(path)
    return linked


def _files(label, values):
    files = []
    for index, item in enumerate(values):
        field = "files[%d]" % index
        if not isinstance(item, Mapping):
            raise ResolveError("%s: '%s' must be a dict, got %r" % (label, field, item))
        dest = _relative_path(label, field + ".dest", item.get("dest"))
        if sum(_given(item, key) is not None for key in ("content", "src")) != 1:
            # The value is not shown: content is often a secret.
            raise ResolveError("%s: '%s' (dest %r) needs exactly one of content and src" % (label, field, dest))
        mode = str(item.get("mode") or "0640")
        if not _FILE_MODE.match(mode):
            raise ResolveError("%s: '%s.mode' must be an octal mode such as '0640', got %r" % (label, field, mode))
        if dest in (f["dest"] for f in files):
            raise ResolveError("%s: 'files' has the dest %r twice" % (label, dest))
        files.append({"dest": dest, "content": _given(item, "content"), "src": _given(item, "src"), "mode": mode})
    return files


def _release_commands(label, values):
    commands = []
    for index, line in enumerate(values):
        try:
            argv = shlex.split(line) if isinstance(line, str) else None
        except ValueError as exc:
            raise ResolveError(
                "%s: 'release_commands[%d]' %r cannot be split: %s" % (label, index, line, exc)
            ) from None
        if not argv:
            raise ResolveError(
                "%s: 'release_commands[%d]' must be a non-empty command line, got %r" % (label, index, line)
            )
        commands.append(argv)
    return commands


def _state(label, app):
    """The instance name, linked_dirs, files and release_commands of ``app``, checked and normalised."""
    instance = _given(app, "instance")
    if instance is not None and not (isinstance(instance, str) and _IMPORT_NAME.match(instance)):
        raise ResolveError("%s: 'instance' must be a Python import name such as 'shop', got %r" % (label, instance))
    return {
        "instance": instance,
        "linked_dirs": _linked_dirs(label, app["linked_dirs"]),
        "files": _files(label, app["files"]),
        "release_commands": _release_commands(label, app["release_commands"]),
    }


def _measured(label, measured_dir, name):
    """The measured workload of app ``name``, ``<measured_dir>/<name>.yml``, checked; None when there is none."""
    if not measured_dir:
        return None
    path = os.path.join(measured_dir, "%s.yml" % name)
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as exc:
        raise ResolveError("%s: cannot read the measured workload %s: %s" % (label, path, exc)) from None
    workload = data.get("workload") if isinstance(data, Mapping) else None
    if not isinstance(workload, Mapping):
        raise ResolveError(
            "%s: the measured workload %s has no 'workload' dict (see playbooks/measure.yml)" % (label, path)
        )
    if data.get("app", name) != name:
        raise ResolveError("%s: the measured workload %s is app %r's" % (label, path, data["app"]))
    pair = [key for key in _MEASURED_PAIR if workload.get(key) is not None]
    if len(pair) == 1:
        raise ResolveError(
            "%s: the measured workload %s sets %s without %s"
            % (label, path, pair[0], " and ".join(key for key in _MEASURED_PAIR if key not in pair))
        )
    unknown = sorted(str(key) for key in workload if key not in _MEASURED_KEYS)
    if unknown:
        raise ResolveError(
            "%s: the measured workload %s sets %s; it may set only %s"
            % (label, path, ", ".join(unknown), ", ".join(_MEASURED_KEYS))
        )
    return {
        "file": path,
        "requests": data.get("requests"),
        "window_s": data.get("window_s"),
        "measured_at": data.get("measured_at"),
        "workload": {key: value for key, value in workload.items() if value is not None},
    }


def _with_measured(given, measured):
    """The app's workload ``given`` over the ``measured`` one: (the merged workload, the measured keys used)."""
    if measured is None:
        return dict(given), []
    mine = {key for key, value in given.items() if value is not None}
    taken = [key for key in _MEASURED_KEYS if key in measured["workload"] and key not in mine]
    if mine & set(_MEASURED_PAIR):
        taken = [key for key in taken if key not in _MEASURED_PAIR]
    workload = dict(given)
    workload.update((key, measured["workload"][key]) for key in taken)
    return workload, taken


def _measured_record(measured, taken):
    """What the app's record says of its measured workload: the file, its requests and date, the keys used."""
    if measured is None:
        return None
    return {
        "file": measured["file"],
        "requests": measured["requests"],
        "measured_at": measured["measured_at"],
        "used": taken,
    }


def _measured_sentence(measured, taken, given):
    used = ", ".join("%s %s" % (key, measured["workload"][key]) for key in taken) or "none of its figures"
    kept = sorted(set(measured["workload"]) - set(taken))
    sentence = "Measured workload %s (%s requests over %s s, %s): %s used" % (
        measured["file"],
        measured["requests"],
        measured["window_s"],
        measured["measured_at"],
        used,
    )
    if kept:
        sentence += "; the app's own workload sets %s" % ", ".join(kept)
    if given.get("profile") and "cpu_ms" in taken:
        sentence += "; the measured cpu_ms and wait_ms win over the profile '%s'" % given["profile"]
    return sentence + "."


def resolve_gunicorn_apps(apps, facts, settings):
    """The gunicorn role's record of each app: its input with every default, its names and its plan.

    ``settings`` holds the role-wide values (base_dir, state_dir, socket_dir, health_retries, health_delay,
    fleet_hosts, measured_dir: the gunicorn_* variables without their prefix). An app with a measured workload,
    ``<measured_dir>/<app>.yml``, is planned with its figures where its own workload does not set them.
    """
    _settings("resolve_gunicorn_apps", settings, GUNICORN_SETTINGS)
    base_dir, socket_dir = settings["base_dir"].rstrip("/"), settings["socket_dir"].rstrip("/")
    state_dir = settings["state_dir"].rstrip("/")
    retries, delay = int(settings["health_retries"]), int(settings["health_delay"])
    options = role_options("gunicorn", "gunicorn_apps")
    records = []
    for index, item in enumerate(_items("gunicorn_apps", apps)):
        label = _label("gunicorn_apps", "app", item, index)
        app = _with_defaults(item, options)
        app["health_path"] = _given(item, "health_path") or options["health_path"]["default"]
        _check_app(label, app)
        given = dict(app["workload"] or {})
        measured = _measured(label, settings["measured_dir"], app["name"])
        workload, taken = _with_measured(given, measured)
        if workload.get("db_max_connections") is not None and workload.get("fleet_hosts") is None:
            # The database budget is shared by every host of the fleet (gunicorn_fleet_hosts).
            workload["fleet_hosts"] = _whole(label, "gunicorn_fleet_hosts", settings["fleet_hosts"], 1)
        try:
            plan = gunicorn_plan(facts, **workload)
        except TuningError as exc:
            where = "measured workload %s" % measured["file"] if exc.field in taken else "workload"
            raise ResolveError("%s: %s: %s" % (label, where, exc)) from None
        if measured is not None:
            plan["explain"].insert(0, _measured_sentence(measured, taken, given))
        home = "%s/%s" % (base_dir, app["name"])
        static_dir = _given(item, "static_dir")
        if static_dir is not None and not static_dir.startswith("/"):
            # Relative: a directory of the live release's source copy.
            static_dir = "%s/current/src/%s" % (home, static_dir)
        app.update(_state(label, app))
        app.update(
            source={"path": _given(app["source"], "path"), "pip": _given(app["source"], "pip")},
            state_dir="%s/%s" % (state_dir, app["name"]),
            user=_given(item, "user") or app["name"],
            home=home,
            socket=_given(item, "socket") or "%s/%s.sock" % (socket_dir, app["name"]),
            # The service's RuntimeDirectory (systemd empties it at every start and stop), and in it the
            # directory where its processes write their metrics (gunicorn_metrics).
            runtime_dir="/run/flaskops-%s" % app["name"],
            metrics_dir="/run/flaskops-%s/metrics" % app["name"],
            static_dir=static_dir,
            plan=plan,
            measured=_measured_record(measured, taken),
            # preload_app imports the app in the master, which a reload keeps: another release
            # needs a restart.
            preload=bool(app["settings"].get("preload_app", False)),
            # The class the workers run (settings win over the plan): gevent workers need gunicorn's
            # "gevent" extra in the build.
            worker_class=app["settings"].get("worker_class", plan["worker_class"]),
            # What flaskops.stack.gunicorn_ready waits: the health checks, plus the graceful timeout
            # within which a reload retires the old workers.
            ready_timeout=plan["graceful_timeout"] + retries * delay,
        )
        records.append(app)
    _unique("gunicorn_apps", "name", records, "name")
    _unique("gunicorn_apps", "socket", records, "socket")
    return records


# --- nginx_sites --------------------------------------------------------------------------


def _whole(label, field, value, minimum=0):
    if isinstance(value, bool) or not re.match(r"[0-9]+\Z", str(value)) or int(value) < minimum:
        raise ResolveError("%s: '%s' must be a whole number of at least %d, got %r" % (label, field, minimum, value))
    return int(value)


def _header_value(label, field, value):
    if not isinstance(value, (str, int, float)) or _UNSAFE_HEADER_VALUE.search(str(value)):
        raise ResolveError(
            "%s: '%s' must be a string without double quotes, backslashes or line breaks, got %r"
            % (label, field, value)
        )
    return str(value)


def _security_headers(security_headers):
    """nginx_security_headers as a list of checked {key, value} items."""
    if not isinstance(security_headers, Mapping):
        raise ResolveError("nginx_security_headers: must map header names to values, got %r" % security_headers)
    headers = []
    for name, value in security_headers.items():
        if not _HEADER_NAME.match(str(name)):
            raise ResolveError("nginx_security_headers: %r is not a header name ([A-Za-z0-9-]+)" % name)
        headers.append({"key": str(name), "value": _header_value("nginx_security_headers", name, value)})
    return headers


def _with_csp(headers, csp):
    """``headers`` and a Content-Security-Policy, when ``csp`` is set (a checked value)."""
    return [*headers, {"key": "Content-Security-Policy", "value": csp}] if csp else list(headers)


def _site(label, item, options, settings, security_headers):
    site = _with_defaults(item, options)
    names = [site["server_name"]] if isinstance(site["server_name"], str) else site["server_name"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ResolveError(
            "%s: 'server_name' must be a name or a non-empty list of non-empty names, got %r"
            % (label, site["server_name"])
        )
    if not (isinstance(site["upstream_socket"], str) and site["upstream_socket"].startswith("/")):
        raise ResolveError(
            "%s: 'upstream_socket' must be the absolute path of gunicorn's unix socket, got %r"
            % (label, site["upstream_socket"])
        )
    if (_given(item, "tls_certificate") is None) != (_given(item, "tls_certificate_key") is None):
        raise ResolveError("%s: set 'tls_certificate' and 'tls_certificate_key' together (both or neither)" % label)
    static_dir = _given(item, "static_dir")
    if static_dir is not None and not static_dir.startswith("/"):
        raise ResolveError("%s: 'static_dir' must be an absolute path, got %r" % (label, static_dir))
    static_url = _given(item, "static_url") or "/static/"
    if not _STATIC_URL.match(static_url):
        raise ResolveError("%s: 'static_url' must start and end with '/', e.g. /static/, got %r" % (label, static_url))
    if not (isinstance(site["health_path"], str) and _PLAIN_PATH.match(site["health_path"])):
        raise ResolveError(
            "%s: 'health_path' must be a path such as /healthz (letters, digits, . _ - /), got %r"
            % (label, site["health_path"])
        )
    plan = site["plan"]
    if plan is not None and not isinstance(plan.get("nginx") if isinstance(plan, Mapping) else None, Mapping):
        raise ResolveError("%s: 'plan' must be a flaskops.stack.gunicorn_tuning plan (it has no 'nginx' dict)" % label)
    rate = settings["rate_limit"] if site["rate_limit"] is None else site["rate_limit"]
    rate = _whole(label, "rate_limit", rate)
    burst = settings["rate_limit_burst"] if site["rate_limit_burst"] is None else site["rate_limit_burst"]
    burst = rate if burst is None else _whole(label, "rate_limit_burst", burst)
    csp = site["content_security_policy"]
    csp = settings["content_security_policy"] if csp is None else csp
    if csp is not None:
        csp = _header_value(label, "content_security_policy", csp)
    tls = _given(item, "tls_certificate") is not None
    redirect_headers = _with_csp(security_headers, csp)
    headers = list(redirect_headers)
    if tls and int(settings["hsts_max_age"]) > 0:
        subdomains = "; includeSubDomains" if settings["hsts_include_subdomains"] else ""
        hsts = "max-age=%d%s" % (int(settings["hsts_max_age"]), subdomains)
        headers.append({"key": "Strict-Transport-Security", "value": hsts})
    site.update(
        server_name=list(dict.fromkeys(names)),
        listen_port=int(_given(item, "listen_port") or settings["listen_port"]),
        listen_tls_port=int(_given(item, "listen_tls_port") or settings["listen_tls_port"]),
        tls=tls,
        static_dir=static_dir.rstrip("/") if static_dir else None,
        static_url=static_url,
        static_expires=_given(item, "static_expires") or settings["static_expires"],
        client_max_body_size=_given(item, "client_max_body_size") or settings["client_max_body_size"],
        rate_limit=rate,
        rate_limit_burst=burst,
        upstream=dict(settings["upstream_defaults"], **(plan["nginx"] if plan is not None else {})),
        headers=headers,
        redirect_headers=redirect_headers,
    )
    return site


def _clashes(sites):
    """Fail when two sites answer the same server name on the same port."""
    owners = {}
    for site in sites:
        ports = [site["listen_port"]] + ([site["listen_tls_port"]] if site["tls"] else [])
        for name in site["server_name"]:
            for port in dict.fromkeys(ports):
                owners.setdefault("%s:%d" % (name.lower(), port), []).append(site["name"])
    clashes = [
        "%s is claimed by sites %s" % (key, " and ".join(names)) for key, names in owners.items() if len(set(names)) > 1
    ]
    if clashes:
        raise ResolveError(
            "nginx_sites: %s. Change 'server_name' or 'listen_port' so that each name and port pair belongs to one site"
            % "; ".join(clashes)
        )


def _status_listen(settings, records):
    """``nginx_status_listen`` (optional in ``settings``): None, or host:port on a port no site listens on."""
    value = _given(settings, "status_listen")
    if value is None:
        return None
    match = _LISTEN.match(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        raise ResolveError(
            "nginx: 'nginx_status_listen' must be host:port (such as 127.0.0.1:8089) or null, got %r" % (value,)
        )
    ports = {s["listen_port"] for s in records} | {s["listen_tls_port"] for s in records if s["tls"]}
    if int(match.group(1)) in (ports or {int(settings["listen_port"])}):
        raise ResolveError(
            "nginx: 'nginx_status_listen' %s: port %s is a site's; stub_status needs a port of its own"
            % (value, match.group(1))
        )
    return value


def resolve_nginx_sites(sites, facts, settings):
    """The nginx role's records: each site with every default applied, the catch-all's ports, the sizing.

    ``settings`` holds the role-wide values (the nginx_* variables without their prefix).
    """
    _settings("resolve_nginx_sites", settings, NGINX_SETTINGS)
    _whole("nginx", "nginx_rate_limit", settings["rate_limit"])
    if settings["rate_limit_burst"] is not None:
        _whole("nginx", "nginx_rate_limit_burst", settings["rate_limit_burst"])
    for key in ("lb_health_path", "drain_flag"):
        value = settings[key]
        if not (value is None and key == "lb_health_path") and not (
            isinstance(value, str) and _PLAIN_PATH.match(value)
        ):
            raise ResolveError(
                "nginx: 'nginx_%s' must be an absolute path (letters, digits, . _ - /)%s, got %r"
                % (key, " or null" if key == "lb_health_path" else "", value)
            )
    security_headers = _security_headers(settings["security_headers"])
    csp = settings["content_security_policy"]
    default_server_headers = _with_csp(
        security_headers, None if csp is None else _header_value("nginx", "nginx_content_security_policy", csp)
    )
    options = role_options("nginx", "nginx_sites")
    records = []
    for index, item in enumerate(_items("nginx_sites", sites)):
        label = _label("nginx_sites", "site", item, index)
        missing = [k for k, o in options.items() if o.get("required") and _given(item, k) is None]
        if missing:
            raise ResolveError("%s: missing %s" % (label, ", ".join(missing)))
        if not (isinstance(item["name"], str) and _SITE_NAME.match(item["name"])):
            raise ResolveError(
                "%s: 'name' must match [a-z][a-z0-9_-]* (it names the site's file and upstream), got %r"
                % (label, item["name"])
            )
        records.append(_site(label, item, options, settings, security_headers))
    _unique("nginx_sites", "name", records, "name")
    _clashes(records)
    try:
        tuning = nginx_plan(
            facts,
            plans=[site["plan"] for site in records if site["plan"] is not None],
            extra_connections=settings["extra_connections"],
            max_nofile=settings["max_nofile"],
            worker_processes=settings["worker_processes"],
            worker_connections=settings["worker_connections"],
        )
    except TuningError as exc:
        raise ResolveError("nginx sizing (nginx_max_nofile, nginx_worker_*): %s" % exc) from None
    # The catch-all listens on every port a site listens on (nginx_listen_port when there are no
    # sites); on the TLS ports it rejects handshakes for names no site has.
    return {
        "sites": records,
        "default_server_ports": sorted({s["listen_port"] for s in records}) or [int(settings["listen_port"])],
        "default_server_tls_ports": sorted({s["listen_tls_port"] for s in records if s["tls"]}),
        "default_server_headers": default_server_headers,
        "lb_health_path": settings["lb_health_path"],
        "drain_flag": settings["drain_flag"],
        "status_listen": _status_listen(settings, records),
        "tuning": tuning,
    }
