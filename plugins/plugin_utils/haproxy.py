# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The haproxy role's input, checked and completed, and HAProxy's sizing (controller side).

One frontend routes each request by its Host header to the backend of the app that owns the
name; each backend holds every app host, health-checked through the host's nginx. Errors name
the variable, the app or host, the field and the value.
"""

from __future__ import annotations

import re

from ansible_collections.flaskops.stack.plugins.module_utils.tuning import TuningError, host_resources
from ansible_collections.flaskops.stack.plugins.plugin_utils.resolver import (
    ResolveError,
    _items,
    _label,
    _settings,
    _unique,
)

HAPROXY_SETTINGS = ("listen_port", "backend_port", "health_path", "maxconn", "nbthread", "memory_share", "max_nofile")

_APP_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_SERVER_NAME = re.compile(r"[A-Za-z0-9*][A-Za-z0-9.*-]*\Z")
_HEALTH_PATH = re.compile(r"/[A-Za-z0-9._/-]*\Z")
_ADDRESS = re.compile(r"[A-Za-z0-9.:_-]+\Z")

#: Memory of one proxied connection: two buffers of tune.bufsize (16 KiB, HAProxy's default),
#: one for the request and one for the response, plus about 2 KiB of session state.
CONNECTION_KIB = 34
#: Descriptors beyond two a connection: listeners, health checks, the runtime API, logs.
_SPARE_FDS = 1024


def _names(label, value):
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and _SERVER_NAME.match(n) for n in names):
        raise ResolveError("%s: 'server_name' must be a host name or a non-empty list of them, got %r" % (label, value))
    return list(dict.fromkeys(n.lower() for n in names))


def _servers(servers):
    records = []
    for index, item in enumerate(_items("haproxy_backend_servers", servers)):
        label = _label("haproxy_backend_servers", "host", item, index)
        name, address = item.get("name"), item.get("address")
        if not isinstance(name, str) or not name:
            raise ResolveError("%s: 'name' must be the inventory host name, got %r" % (label, name))
        if not (isinstance(address, str) and _ADDRESS.match(address)):
            raise ResolveError(
                "%s: 'address' must be an IP address or a resolvable name (gather the host's facts, or set its "
                "haproxy_backend_address), got %r" % (label, address)
            )
        # HAProxy's server names are identifiers; the runtime API finds a server by it.
        records.append({"name": re.sub(r"[^A-Za-z0-9_.-]", "_", name), "host": name, "address": address})
    _unique("haproxy_backend_servers", "name", records, "name")
    return records


def _whole(field, value, minimum):
    if isinstance(value, bool) or not re.match(r"[0-9]+\Z", str(value)) or int(value) < minimum:
        raise ResolveError("haproxy: '%s' must be a whole number of at least %d, got %r" % (field, minimum, value))
    return int(value)


def haproxy_plan(facts, maxconn=None, nbthread=None, memory_share=0.5, max_nofile=None):
    """nbthread and maxconn from the host's effective CPUs, memory and file-descriptor limit, with the reasons."""
    try:
        cpus, memory_mb, explain = host_resources(facts)
    except TuningError as exc:
        raise ResolveError("haproxy sizing: %s" % exc) from None
    share = float(memory_share)
    if not 0 < share <= 1:
        raise ResolveError("haproxy: 'haproxy_memory_share' must be above 0 and at most 1, got %r" % memory_share)
    if nbthread is None:
        nbthread = max(1, int(cpus))
        explain.append("nbthread=%d: one thread per effective CPU (%g)." % (nbthread, cpus))
    else:
        nbthread = _whole("haproxy_nbthread", nbthread, 1)
        explain.append("nbthread=%d: set by haproxy_nbthread." % nbthread)
    if maxconn is None:
        by_memory = max(256, int(memory_mb * share * 1024 // CONNECTION_KIB))
        maxconn = by_memory
        explain.append(
            "maxconn=%d: %d%% of %d MiB at %d KiB a connection (two 16 KiB buffers and the session)."
            % (by_memory, round(share * 100), memory_mb, CONNECTION_KIB)
        )
        if max_nofile is not None:
            limit = _whole("haproxy_max_nofile", max_nofile, 2 * 256 + _SPARE_FDS)
            by_fds = (limit - _SPARE_FDS) // 2
            if by_fds < maxconn:
                maxconn = by_fds
                explain.append(
                    "maxconn=%d: the file-descriptor limit (%d) holds two a connection plus %d."
                    % (maxconn, limit, _SPARE_FDS)
                )
    else:
        maxconn = _whole("haproxy_maxconn", maxconn, 1)
        explain.append("maxconn=%d: set by haproxy_maxconn." % maxconn)
    # Two descriptors a connection (client and server side), plus listeners, checks and logs.
    nofile = 2 * maxconn + _SPARE_FDS
    explain.append("LimitNOFILE=%d: two descriptors a connection, plus %d." % (nofile, _SPARE_FDS))
    return {"nbthread": nbthread, "maxconn": maxconn, "nofile": nofile, "explain": explain}


def resolve_haproxy(apps, facts, settings, servers):
    """The haproxy role's records: the apps' backends with their servers, and the sizing."""
    _settings("resolve_haproxy", settings, HAPROXY_SETTINGS)
    for field in ("listen_port", "backend_port"):
        port = _whole("haproxy_" + field, settings[field], 1)
        if port > 65535:
            raise ResolveError("haproxy: 'haproxy_%s' must be a port (1-65535), got %r" % (field, port))
    if not (isinstance(settings["health_path"], str) and _HEALTH_PATH.match(settings["health_path"])):
        raise ResolveError(
            "haproxy: 'haproxy_health_path' must be the path of nginx's health location for load balancers "
            "(nginx_lb_health_path), got %r" % settings["health_path"]
        )
    records = []
    for index, item in enumerate(_items("haproxy_apps", apps)):
        label = _label("haproxy_apps", "app", item, index)
        name = item.get("name")
        if not (isinstance(name, str) and _APP_NAME.match(name)):
            raise ResolveError("%s: 'name' must match [a-z][a-z0-9_]*, got %r" % (label, name))
        if item.get("tls_certificate"):
            raise ResolveError(
                "%s: 'tls_certificate' is set, but the built-in load balancer speaks plain HTTP to nginx and "
                "nginx redirects a TLS app's plain port; terminate TLS at an external load balancer for this app "
                "(set flask_stack_lb: external) or serve it without a certificate behind the load balancer" % label
            )
        records.append({"name": name, "server_name": _names(label, item.get("server_name"))})
    _unique("haproxy_apps", "name", records, "name")
    _unique("haproxy_apps", "server_name", records, "server_name")
    backends = _servers(servers)
    if records and not backends:
        raise ResolveError(
            "haproxy_backend_servers: no app hosts for %s; set haproxy_backend_hosts (flask_stack_hosts in the "
            "playbooks) to the inventory group of the app hosts" % ", ".join(r["name"] for r in records)
        )
    plan = haproxy_plan(
        facts,
        maxconn=settings["maxconn"],
        nbthread=settings["nbthread"],
        memory_share=settings["memory_share"],
        max_nofile=settings["max_nofile"],
    )
    return {"apps": records, "servers": backends, "tuning": plan}
