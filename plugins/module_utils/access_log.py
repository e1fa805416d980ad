# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nginx role's ``flaskops`` access log format, read back: one parser for the modules
``flaskops.stack.measure`` (the app's time per request) and ``flaskops.stack.doctor`` (the 5xx share).

Plain Python, standard library only, no Ansible imports. The format (roles/nginx/templates/nginx.conf.j2)::

    $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer"
    "$http_user_agent" rt=$request_time urt=$upstream_response_time host=$host

The request, referer and user agent are quoted (nginx escapes quotes inside them): the status is the
first field after the request, the times are in the part after the last quote.
"""

from __future__ import annotations

import calendar
import re
import time

_TIME = re.compile(r"\[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d) ([+-])(\d\d)(\d\d)\]")
_UPSTREAM = re.compile(r"(?:^|\s)urt=(\S+)")


def parse(line):
    """(request, status, upstream time as logged or None) of a line of the format; None when it is not one.

    The request is what the client sent (``GET /path?query HTTP/1.1``); the upstream time is None when the
    line has no ``urt=`` field."""
    parts = line.split('"')
    if len(parts) < 7:
        return None
    fields = parts[2].split()
    if not fields or not fields[0].isdigit():
        return None
    match = _UPSTREAM.search(parts[-1])
    return parts[1], int(fields[0]), match.group(1) if match else None


def upstream_seconds(value):
    """The app's time of one request from ``$upstream_response_time``: nginx lists one time per upstream
    tried (``0.010, 0.020``, and ``:`` between internal redirects), ``-`` where none answered. None when
    no time is given."""
    times = [float(part) for part in re.split(r"[,:]", value) if re.fullmatch(r"\s*[0-9.]+\s*", part)]
    return sum(times) if times else None


def timestamp(line):
    """The epoch seconds of a line's ``$time_local``; None when it has none."""
    match = _TIME.search(line)
    if match is None:
        return None
    try:
        local = calendar.timegm(time.strptime(match.group(1), "%d/%b/%Y:%H:%M:%S"))
    except ValueError:
        return None
    offset = int(match.group(3)) * 3600 + int(match.group(4)) * 60
    return local - offset if match.group(2) == "+" else local + offset
