# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The doctor's rules: from what was seen of one app on its host to findings, each with a cause and a fix.

Plain Python, standard library only, no Ansible imports: the module ``flaskops.stack.doctor`` gathers what a
host shows (systemd, the socket, the logs, the cgroup, the files) into an ``observed`` dict and calls
:func:`diagnose`; the unit tests call it with made-up observations.

A finding is a **cause** (the service is down, the socket's mode is wrong, a worker was killed for memory) or
a **symptom** (nginx's error log says ``connect() failed (111: Connection refused)``, 5xx answers). A symptom
that a cause of the same app explains is not reported on its own: its evidence joins the cause's, and its id
is listed in the cause's ``symptoms``. So one fault gives one finding, with every trace of it as evidence.
"""

from __future__ import annotations

import re
import time

ERROR, WARNING = "error", "warning"
#: How much worse each severity is (``fail_on`` compares with it).
SEVERITY_RANK = {WARNING: 1, ERROR: 2}

#: nginx's error log lines about the upstream, by cause: (id, pattern, what it means, fix).
NGINX_UPSTREAM_ERRORS = (
    (
        "upstream-permission-denied",
        r"\(13: Permission denied\) while connecting to upstream",
        "nginx could not open the app's socket (13: Permission denied)",
        "Give the socket back the mode and group of {socket_unit} (run site.yml, or restart {socket_unit} and "
        "{service}): nginx's user must be in its group.",
    ),
    (
        "upstream-refused",
        r"\(111: Connection refused\) while connecting to upstream",
        "nothing accepted connections on the app's socket (111: Connection refused)",
        "Check that {socket_unit} listens and {service} runs (systemctl status {socket_unit} {service}); a stopped "
        "socket unit refuses every request.",
    ),
    (
        "upstream-missing",
        r"\(2: No such file or directory\) while connecting to upstream",
        "the app's socket file did not exist (2: No such file or directory)",
        "Start {socket_unit} (or run site.yml): systemd creates the socket file.",
    ),
    (
        "upstream-queue-full",
        r"\(11: Resource temporarily unavailable\) while connecting to upstream",
        "the socket's accept queue was full (11: Resource temporarily unavailable)",
        "The app accepted too slowly for the load: find the slow requests (nginx's access log, rt= and urt=) or "
        "add capacity (more CPUs, more hosts).",
    ),
    (
        "upstream-reset",
        r"\(104: Connection reset by peer\)",
        "the app reset connections (104: Connection reset by peer)",
        "Workers died or were recycled with requests in flight: read the journal of {service} for killed workers.",
    ),
    (
        "upstream-closed",
        r"upstream prematurely closed connection",
        "the app closed connections before answering (upstream prematurely closed connection)",
        "Workers died with requests in flight: read the journal of {service} for killed workers.",
    ),
    (
        "upstream-timed-out",
        r"upstream timed out",
        "requests ran past nginx's proxy_read_timeout (upstream timed out)",
        "Make the listed requests faster or move their work out of the request; if they must take that long, "
        "raise the app's workload.timeout.",
    ),
    (
        "upstream-no-live",
        r"no live upstreams",
        "nginx had no live upstream (no live upstreams)",
        "nginx stopped trying the socket after errors: fix the errors before these lines.",
    ),
)

#: gunicorn's and systemd's journal lines of a unit.
_WORKER_TIMEOUT = re.compile(r"WORKER TIMEOUT \(pid:(\d+)\)")
_WORKER_SIGNAL = re.compile(r"Worker \(pid:(\d+)\) was sent (\w+)!")
_WORKER_EXIT = re.compile(r"Worker \(pid:(\d+)\) exited with code (\d+)")
_BOOT_ERROR = re.compile(r"Worker failed to boot|App failed to load|Exception in worker process")
_SYSTEMD_OOM = re.compile(r"killed by the OOM killer|Failed with result 'oom-kill'")
_APP_EXCEPTION = re.compile(r"Exception on (\S+) \[(\w+)\]")
#: gunicorn's exit codes for a worker that could not boot, or an app that could not load.
_BOOT_EXIT_CODES = ("3", "4")

#: A cause explains these symptoms of the same app.
EXPLAINS = {
    # Stopping (or losing) the service also resets the connections it had in flight.
    "service-down": {
        "upstream-refused",
        "upstream-missing",
        "upstream-reset",
        "upstream-closed",
        "upstream-no-live",
        "http-5xx",
        "service-restarts",
    },
    "socket-down": {"upstream-refused", "upstream-missing", "upstream-no-live", "http-5xx"},
    "socket-missing": {"upstream-missing", "upstream-no-live", "http-5xx"},
    "socket-permissions": {"upstream-permission-denied", "upstream-no-live", "http-5xx"},
    "socket-unreachable": {"upstream-refused", "upstream-missing", "upstream-no-live", "http-5xx"},
    "accept-queue": {"upstream-queue-full", "upstream-timed-out", "upstream-no-live", "http-5xx"},
    "boot-error": {
        "service-down",
        "upstream-refused",
        "upstream-closed",
        "upstream-reset",
        "upstream-no-live",
        "http-5xx",
        "service-restarts",
    },
    "worker-timeout": {"upstream-closed", "upstream-reset", "upstream-timed-out", "upstream-no-live", "http-5xx"},
    "oom-kill": {"upstream-closed", "upstream-reset", "upstream-no-live", "http-5xx", "memory-high"},
    "worker-crashed": {"upstream-closed", "upstream-reset", "upstream-no-live", "http-5xx"},
    "upstream-timed-out": {"http-5xx"},
    "upstream-queue-full": {"http-5xx"},
    "upstream-closed": {"http-5xx"},
    "upstream-reset": {"http-5xx"},
    "upstream-refused": {"http-5xx", "upstream-no-live"},
    "upstream-missing": {"http-5xx", "upstream-no-live"},
    "upstream-permission-denied": {"http-5xx", "upstream-no-live"},
    "app-exceptions": {"http-5xx"},
    "host-drained": {"lb-drained", "lb-down"},
    # The memory is compared with the plan of today's facts, which is not the one that runs.
    "plan-drift": {"memory-over-plan"},
}

#: The gunicorn settings compared between the running configuration and the plan.
DRIFT_SETTINGS = (
    "worker_class",
    "workers",
    "threads",
    "worker_connections",
    "timeout",
    "graceful_timeout",
    "keepalive",
    "backlog",
    "max_requests",
    "max_requests_jitter",
)
#: The systemd properties of the service compared with the plan (MiB for memory).
DRIFT_UNIT = ("MemoryHigh", "MemoryMax")

#: Sustained accept queue (the smallest of the samples), as a share of the backlog: a warning, an error.
QUEUE_WARNING_SHARE, QUEUE_ERROR_SHARE = 0.1, 0.9
#: 5xx answers, as a share of the app's requests in the window: a warning (with at least HTTP_5XX_MIN_COUNT of
#: them), an error.
HTTP_5XX_WARNING_SHARE, HTTP_5XX_ERROR_SHARE, HTTP_5XX_MIN_COUNT = 0.01, 0.05, 5
#: Memory now above the plan's steady memory by this factor (outside a reload) is a warning.
MEMORY_OVER_PLAN = 1.25
#: Disk: used share (space or inodes) for a warning; below the room a next deploy needs, an error.
DISK_USED_WARNING = 0.95
#: Days before a certificate expires: an error within this many (the warning's are a parameter).
CERTIFICATE_ERROR_DAYS = 7


class Finding:
    """One finding: a stable ``id``, a ``severity``, the ``evidence`` (what was seen, with its numbers) and the
    ``fix`` in one sentence."""

    def __init__(self, ident, severity, evidence, fix):
        self.id, self.severity, self.evidence, self.fix = ident, severity, [evidence], fix
        self.symptoms = []

    def absorb(self, other):
        self.symptoms.append(other.id)
        self.symptoms.extend(other.symptoms)
        self.evidence.extend(other.evidence)
        if SEVERITY_RANK[other.severity] > SEVERITY_RANK[self.severity]:
            self.severity = other.severity

    def as_dict(self, app):
        return {
            "app": app,
            "id": self.id,
            "severity": self.severity,
            "evidence": "; ".join(self.evidence),
            "fix": self.fix,
            "symptoms": sorted(set(self.symptoms)),
        }


def _names(app):
    return {"service": app["service"], "socket_unit": app["socket_unit"], "socket": app["socket"]}


def _clock(epoch):
    return time.strftime("%H:%M:%S", time.localtime(epoch))


# --- systemd ---------------------------------------------------------------------------------------


def unit_findings(app, observed):
    """The service and its socket unit: down, failed, restarted."""
    service, socket_unit = observed["service"], observed["socket_unit"]
    names = _names(app)
    found = []
    service_up = service.get("ActiveState") in ("active", "reloading", "activating")
    socket_up = socket_unit.get("ActiveState") == "active"
    if not service_up:
        evidence = "%s is %s (%s, result %s); %s is %s (%s)" % (
            app["service"],
            service.get("ActiveState", "unknown"),
            service.get("SubState", "?"),
            service.get("Result", "?"),
            app["socket_unit"],
            socket_unit.get("ActiveState", "unknown"),
            socket_unit.get("SubState", "?"),
        )
        if socket_up and service.get("ActiveState") == "inactive":
            # Socket activation starts it at the next connection: only a failed service is an error.
            return found
        found.append(
            Finding(
                "service-down",
                ERROR,
                evidence,
                "Start it: systemctl start {socket_unit} {service} (or run site.yml); journalctl -u {service} "
                "says why it stopped.".format(**names),
            )
        )
    elif not socket_up:
        found.append(
            Finding(
                "socket-down",
                ERROR,
                "%s runs but %s is %s (%s): the socket unit that owns its listening socket is down"
                % (app["service"], app["socket_unit"], socket_unit.get("ActiveState"), socket_unit.get("SubState")),
                "Restart both (systemctl restart {socket_unit} {service}) or run site.yml.".format(**names),
            )
        )
    restarts = int(service.get("NRestarts") or 0)
    if restarts > 0:
        found.append(
            Finding(
                "service-restarts",
                WARNING,
                "systemd restarted %s %d times since it was last started (NRestarts=%d)"
                % (app["service"], restarts, restarts),
                "The master died and Restart=on-failure brought it back: read journalctl -u {service} for why "
                "(boot errors, a crash).".format(**names),
            )
        )
    return found


# --- The socket ------------------------------------------------------------------------------------


def socket_findings(app, observed):
    """The socket file (mode, owner, group) and a connection to it as nginx's user."""
    names = _names(app)
    info = observed.get("socket_file")
    connect = observed.get("connect")
    if observed["socket_unit"].get("ActiveState") != "active":
        return []  # unit_findings has reported it
    if info is None:
        return [
            Finding(
                "socket-missing",
                ERROR,
                "%s is active but %s does not exist" % (app["socket_unit"], app["socket"]),
                "Restart {socket_unit} and {service} (or run site.yml): systemd makes the socket file again.".format(
                    **names
                ),
            )
        ]
    planned = (app["socket_mode"], app["socket_owner"], app["socket_group"])
    seen = (info["mode"], info["owner"], info["group"])
    connect_text = ""
    if connect is not None:
        connect_text = "; a connection as %s: %s" % (app["nginx_user"], connect or "succeeded")
    if seen != planned or connect == "Permission denied":
        return [
            Finding(
                "socket-permissions",
                ERROR,
                "%s is mode %s, %s:%s (planned %s, %s:%s)%s"
                % (app["socket"], seen[0], seen[1], seen[2], planned[0], planned[1], planned[2], connect_text),
                "Give it back the unit's mode and group: chown {owner}:{group} {socket} && chmod {mode} {socket} "
                "(or restart {socket_unit} and {service}).".format(
                    owner=planned[1], group=planned[2], mode=planned[0], **names
                ),
            )
        ]
    if connect and connect != "Resource temporarily unavailable":
        # A full queue (EAGAIN) is the accept queue's finding.
        return [
            Finding(
                "socket-unreachable",
                ERROR,
                "%s is mode %s, %s:%s as planned%s" % (app["socket"], seen[0], seen[1], seen[2], connect_text),
                "The file is not the socket {socket_unit} listens on: restart {socket_unit} and {service}.".format(
                    **names
                ),
            )
        ]
    return []


def queue_findings(app, observed):
    """The socket's accept queue against its backlog, now (``ss -xl``: Recv-Q and Send-Q)."""
    queue = observed.get("accept_queue")
    if not queue or not queue.get("samples"):
        return []
    sustained, backlog = min(queue["samples"]), int(queue["backlog"])
    if backlog <= 0 or sustained < max(1, backlog * QUEUE_WARNING_SHARE):
        return []
    severity = ERROR if sustained >= backlog * QUEUE_ERROR_SHARE else WARNING
    return [
        Finding(
            "accept-queue",
            severity,
            "%d connections wait in %s's accept queue of %d (at least that many in each of %d samples over %.1f s)"
            % (sustained, app["socket"], backlog, len(queue["samples"]), queue.get("seconds", 0)),
            "The workers are not accepting: all busy (add capacity, find slow requests) or stuck (the journal of "
            "{service}; py-spy dump on a worker shows where).".format(**_names(app)),
        )
    ]


# --- Logs ------------------------------------------------------------------------------------------

_NGINX_REQUEST = re.compile(r'request: "(\S+) (\S+?)(?:\?\S*)? HTTP')
_NGINX_TIME = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) ")


def nginx_error_time(line):
    """The epoch of an nginx error log line (local time), or None."""
    match = _NGINX_TIME.match(line)
    if match is None:
        return None
    try:
        return time.mktime(time.strptime(match.group(1), "%Y/%m/%d %H:%M:%S"))
    except ValueError:
        return None


def _top(counter, limit=3):
    ranked = sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return ", ".join("%s (%d)" % item for item in ranked)


def nginx_findings(app, observed):
    """nginx's error log of the app in the window, grouped by cause."""
    lines = observed.get("nginx_errors") or []
    found = []
    for ident, pattern, meaning, fix in NGINX_UPSTREAM_ERRORS:
        matched = [line for line in lines if re.search(pattern, line)]
        if not matched:
            continue
        requests = {}
        for line in matched:
            request = _NGINX_REQUEST.search(line)
            if request:
                key = "%s %s" % request.groups()
                requests[key] = requests.get(key, 0) + 1
        times = [t for t in (nginx_error_time(line) for line in matched) if t is not None]
        when = " from %s to %s" % (_clock(min(times)), _clock(max(times))) if times else ""
        evidence = "nginx: %d x %s%s" % (len(matched), meaning, when)
        if requests:
            evidence += ", requests %s" % _top(requests)
        found.append(Finding(ident, WARNING, evidence, fix.format(**_names(app))))
    return found


def access_findings(app, observed):
    """The share of 5xx answers in nginx's access log of the app in the window."""
    access = observed.get("access")
    if not access or not access.get("requests"):
        return []
    total, errors = access["requests"], access["errors"]
    share = float(errors) / total
    if errors < HTTP_5XX_MIN_COUNT or share < HTTP_5XX_WARNING_SHARE:
        return []
    evidence = "nginx answered %d of %d requests with 5xx (%.1f %%)" % (errors, total, share * 100)
    if access.get("paths"):
        evidence += ", requests %s" % _top(access["paths"])
    return [
        Finding(
            "http-5xx",
            ERROR if share >= HTTP_5XX_ERROR_SHARE else WARNING,
            evidence,
            "The app failed these requests itself: its tracebacks are in journalctl -u {service}.".format(
                **_names(app)
            ),
        )
    ]


def journal_events(messages):
    """What the unit's journal lines tell: the pids of WORKER TIMEOUTs, the signal or exit code each worker
    ended with, boot errors, systemd's OOM lines and Flask's unhandled exceptions by request."""
    events = {"timeouts": [], "signals": {}, "exits": {}, "boot": [], "oom_lines": 0, "exceptions": {}}
    for message in messages:
        events["timeouts"].extend(_WORKER_TIMEOUT.findall(message))
        events["signals"].update(_WORKER_SIGNAL.findall(message))
        events["exits"].update(_WORKER_EXIT.findall(message))
        if _BOOT_ERROR.search(message):
            events["boot"].append(message.strip())
        if _SYSTEMD_OOM.search(message):
            events["oom_lines"] += 1
        for path, method in _APP_EXCEPTION.findall(message):
            key = "%s %s" % (method, path)
            events["exceptions"][key] = events["exceptions"].get(key, 0) + 1
    return events


def journal_findings(app, observed):
    """gunicorn's and systemd's lines of the unit in the window: timeouts, killed and crashed workers, boot
    errors, OOM kills, the app's exceptions."""
    events = journal_events(observed.get("journal") or [])
    timeouts, signals, exits = events["timeouts"], events["signals"], events["exits"]
    boot, oom_lines, exceptions = events["boot"], events["oom_lines"], events["exceptions"]
    names = _names(app)
    found = []
    if timeouts:
        found.append(
            Finding(
                "worker-timeout",
                ERROR,
                "gunicorn: %d x WORKER TIMEOUT (a worker silent for more than timeout=%ss was killed)"
                % (len(timeouts), app["expected"].get("timeout", "?")),
                "A request held a worker past gunicorn's timeout: find it (nginx's access log, urt=) and make it "
                "faster, or raise the app's workload.timeout.",
            )
        )
    timed_out = set(timeouts)
    # How each worker ended that gunicorn did not kill for a timeout, nor stop (SIGTERM), nor lose at boot.
    ended = {pid: name for pid, name in signals.items() if pid not in timed_out and name != "SIGTERM"}
    for pid, code in exits.items():
        if pid not in timed_out and pid not in ended and code not in _BOOT_EXIT_CODES:
            ended[pid] = "exit code %s" % code
    oom_count = observed.get("oom_kills")
    oom = bool(oom_lines or (oom_count or 0) > 0)
    killed = [pid for pid, how in ended.items() if how == "SIGKILL"] if oom else []
    if killed:
        found.append(
            Finding(
                "oom-kill",
                ERROR,
                "gunicorn: %d x a worker was sent SIGKILL; the kernel's OOM killer acted in %s's cgroup (%s), "
                "MemoryMax=%sM"
                % (
                    len(killed),
                    app["service"],
                    "oom_kill %s since the unit started" % oom_count if oom_count else "systemd logged it",
                    app["memory"].get("MemoryMax", "?"),
                ),
                "A worker went past MemoryMax: find the request that allocates (nginx's access log at those times) "
                "or give the app more memory (its workload's memory_share, worker_rss_mb).",
            )
        )
    crashed = {pid: how for pid, how in ended.items() if pid not in killed}
    if crashed:
        how = {}
        for way in crashed.values():
            how[way] = how.get(way, 0) + 1
        found.append(
            Finding(
                "worker-crashed",
                ERROR,
                "gunicorn: %d workers ended abnormally (%s)" % (len(crashed), _top(how)),
                "Read the lines before them in journalctl -u {service}: a crash in the app or a native extension, "
                "or a process that signalled the workers.".format(**names),
            )
        )
    if boot:
        found.append(
            Finding(
                "boot-error",
                ERROR,
                "gunicorn: %d boot errors, the last: %s" % (len(boot), boot[-1][:200]),
                "The app failed to import or start: run the release by hand (<release>/venv/bin/python "
                "<release>/gunicorn.conf.py python -c 'import ...') and read journalctl -u {service}.".format(**names),
            )
        )
    if exceptions:
        found.append(
            Finding(
                "app-exceptions",
                WARNING,
                "Flask logged %d unhandled exceptions: %s" % (sum(exceptions.values()), _top(exceptions)),
                "Fix the exceptions whose tracebacks journalctl -u {service} shows.".format(**names),
            )
        )
    return found


# --- Memory, drift, processes ----------------------------------------------------------------------


def memory_findings(app, observed):
    """Memory now against the plan's steady memory, MemoryHigh and MemoryMax (MiB)."""
    now = observed.get("memory_mb")
    memory = app["memory"]
    if now is None or not memory:
        return []
    high, limit, steady = memory.get("MemoryHigh"), memory.get("MemoryMax"), memory.get("memory_mb")
    text = "%s uses %d MiB now (%s); the plan: about %s MiB steady, MemoryHigh=%sM, MemoryMax=%sM" % (
        app["service"],
        now,
        observed.get("memory_source", "?"),
        steady,
        high,
        limit,
    )
    if high is not None and now >= high:
        return [
            Finding(
                "memory-high",
                ERROR,
                text,
                "The kernel reclaims and then kills at MemoryMax: find what grows (a leak: lower max_requests; "
                "a large request) or give the app more memory.",
            )
        ]
    reloading = observed.get("workers") and max(observed["workers"]) > int(observed.get("running_workers") or 0)
    if steady and now > steady * MEMORY_OVER_PLAN and not reloading:
        return [
            Finding(
                "memory-over-plan",
                WARNING,
                text,
                "The app is larger than its plan assumes: measure it (playbooks/measure.yml) or set its "
                "workload.worker_rss_mb, then run site.yml.",
            )
        ]
    return []


def drift_findings(app, observed):
    """The running gunicorn.conf.py and unit against the plan of today's facts; the live release against the
    last deploy (``current``)."""
    found = []
    running = observed.get("running_settings")
    if running is not None:
        expected = app["expected"]
        differ = [name for name in DRIFT_SETTINGS if name in expected and str(running.get(name)) != str(expected[name])]
        unit = observed.get("unit_memory") or {}
        differ_unit = [
            name
            for name in DRIFT_UNIT
            if unit.get(name) is not None and app["memory"].get(name) is not None and unit[name] != app["memory"][name]
        ]
        if differ or differ_unit:
            parts = ["%s %s (plan %s)" % (name, running.get(name), expected[name]) for name in differ]
            parts += ["%s=%sM (plan %sM)" % (name, unit[name], app["memory"][name]) for name in differ_unit]
            found.append(
                Finding(
                    "plan-drift",
                    WARNING,
                    "%s runs %s; %s" % (app["service"], ", ".join(parts), app.get("facts", "")),
                    "Run site.yml: it writes the plan of today's facts and reloads the app without dropping requests.",
                )
            )
    live, current = observed.get("live_release"), observed.get("current_release")
    if live and current and live != current:
        found.append(
            Finding(
                "release-drift",
                WARNING,
                "the master runs release %s but current (the last deploy) is %s" % (live, current),
                "A deploy switched current without its reload: run playbooks/reload.yml (or site.yml).",
            )
        )
    workers, configured = observed.get("workers"), observed.get("running_workers")
    if workers and configured:
        if min(workers) > configured or max(workers) < configured:
            found.append(
                Finding(
                    "worker-count",
                    WARNING,
                    "the master has %s workers (samples %s); its configuration says %d"
                    % ("more" if min(workers) > configured else "fewer", "/".join(map(str, workers)), configured),
                    "Someone sent TTIN/TTOU, or workers fail to start (journalctl -u {service}): reload the app "
                    "(systemctl reload {service}).".format(**_names(app)),
                )
            )
    return found


# --- Disk, certificates, load balancer -------------------------------------------------------------


def disk_findings(app, observed):
    """Free space and inodes where the releases and the persistent data live."""
    found = []
    for disk in observed.get("disks") or []:
        need = disk.get("need_mb")
        used = 1.0 - float(disk["free_mb"]) / disk["size_mb"] if disk["size_mb"] else 0.0
        inodes = disk.get("inodes_used_share") or 0.0
        text = "%s (%s): %d MiB free of %d (%.0f %% used), %.0f %% of inodes used" % (
            disk["path"],
            disk["what"],
            disk["free_mb"],
            disk["size_mb"],
            used * 100,
            inodes * 100,
        )
        if need is not None and disk["free_mb"] < need:
            found.append(
                Finding(
                    "disk-space",
                    ERROR,
                    text + "; a next deploy needs about %d MiB" % need,
                    "Free space on that file system (old logs; cleanup keeps gunicorn_keep_releases releases) "
                    "before the next deploy.",
                )
            )
        elif used >= DISK_USED_WARNING or inodes >= DISK_USED_WARNING:
            found.append(
                Finding(
                    "disk-space",
                    WARNING,
                    text,
                    "Free space on that file system before it fills: logs, old releases, the app's own data.",
                )
            )
    return found


def certificate_findings(app, observed, warn_days):
    """TLS certificates that expire within ``warn_days``."""
    found = []
    for cert in observed.get("certificates") or []:
        if cert.get("error"):
            found.append(
                Finding(
                    "certificate-unreadable",
                    ERROR,
                    "%s: %s" % (cert["path"], cert["error"]),
                    "Put the site's certificate back where tls_certificate says (PEM), then reload nginx.",
                )
            )
            continue
        days = cert["days"]
        if days > warn_days:
            continue
        found.append(
            Finding(
                "certificate-expiry",
                ERROR if days <= CERTIFICATE_ERROR_DAYS else WARNING,
                "%s %s %s (%s)"
                % (cert["path"], "expired on" if days < 0 else "expires on", cert["not_after"], _days(days)),
                "Renew it and reload nginx (systemctl reload nginx): clients refuse an expired certificate.",
            )
        )
    return found


def _days(days):
    if days < 0:
        return "%.1f days ago" % -days
    return "in %.1f days" % days


def lb_findings(app, observed):
    """The host as the load balancers see it, and the host's own drain flag."""
    found = []
    if observed.get("drained"):
        found.append(
            Finding(
                "host-drained",
                WARNING,
                "the drain flag %s exists: the health location for load balancers answers 503"
                % observed.get("drain_flag"),
                "If no rollout runs, undrain the host: the nginx role's undrain entry point (or remove the flag).",
            )
        )
    for row in observed.get("lb") or []:
        status = str(row.get("status", ""))
        where = "%s on %s" % (row.get("backend", "?"), row.get("lb", "?"))
        if status.startswith(("DRAIN", "MAINT")) or "DRAIN" in status:
            found.append(
                Finding(
                    "lb-drained",
                    WARNING,
                    "%s: this host is %s" % (where, status),
                    "If no rollout runs, ready it: flaskops.stack.haproxy_server state=ready on the load balancer.",
                )
            )
        elif status.startswith("DOWN") or status == "NOLB":
            found.append(
                Finding(
                    "lb-down",
                    ERROR,
                    "%s: this host is %s (last check: %s)" % (where, status, row.get("check", "?")),
                    "The load balancer's health checks fail: see this host's other findings, or its health "
                    "location's answer.",
                )
            )
    return found


# --- All of it -------------------------------------------------------------------------------------


def correlate(findings):
    """Fold each symptom into a finding of the same app that explains it, until nothing folds: a chain (the
    service down, so nginx was refused, so clients got 5xx) ends in one finding. The first explaining finding,
    in the order given, takes a symptom that two explain."""
    kept = list(findings)
    while True:
        pair = next(
            (
                (cause, other)
                for cause in kept
                for other in kept
                if other is not cause and other.id in EXPLAINS.get(cause.id, ())
            ),
            None,
        )
        if pair is None:
            return kept
        pair[0].absorb(pair[1])
        kept.remove(pair[1])


def diagnose(app, observed, certificate_days=21):
    """The findings of one app: ``app`` holds what was planned (names, socket mode, expected settings,
    memory), ``observed`` what the host shows. Returns a list of dicts (see :meth:`Finding.as_dict`)."""
    findings = []
    findings += unit_findings(app, observed)
    findings += socket_findings(app, observed)
    findings += queue_findings(app, observed)
    findings += journal_findings(app, observed)
    findings += nginx_findings(app, observed)
    findings += access_findings(app, observed)
    findings += memory_findings(app, observed)
    findings += drift_findings(app, observed)
    findings += disk_findings(app, observed)
    findings += certificate_findings(app, observed, certificate_days)
    findings += lb_findings(app, observed)
    return [finding.as_dict(app["name"]) for finding in correlate(findings)]
