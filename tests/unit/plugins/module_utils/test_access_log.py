# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nginx role's flaskops access log format, read back (measure and doctor share the parser)."""

from __future__ import annotations

import calendar

import pytest

from ansible_collections.flaskops.stack.plugins.module_utils import access_log

# The user agent holds "rt=9.999 urt=9.999" and escaped quotes: the times come from after the last quote.
LINE = (
    '10.0.0.7 - - [24/Nov/2026:10:30:01 %s] "GET /orders?page=2 HTTP/1.1" %d 512 "-" '
    '"Mozilla/5.0 (X11; Linux x86_64) \\x22quoted\\x22 rt=9.999 urt=9.999" rt=0.052 urt=%s host=shop.example\n'
)


@pytest.mark.parametrize(
    "value, seconds",
    [("0.050", 0.05), ("0.010, 0.020", 0.03), ("0.010 : 0.003", 0.013), ("-", None), ("-, 0.004", 0.004)],
)
def test_upstream_seconds(value, seconds):
    if seconds is None:
        assert access_log.upstream_seconds(value) is None
    else:
        assert access_log.upstream_seconds(value) == pytest.approx(seconds)


def test_a_line_gives_the_request_the_status_and_the_upstream_time_after_the_last_quote():
    assert access_log.parse(LINE % ("+0000", 404, "0.004")) == ("GET /orders?page=2 HTTP/1.1", 404, "0.004")
    assert access_log.parse(LINE % ("+0000", 301, "-")) == ("GET /orders?page=2 HTTP/1.1", 301, "-")
    # Without its urt= field a line of the format still gives its status.
    assert access_log.parse((LINE % ("+0000", 502, "x")).replace(" urt=x", "")) == (
        "GET /orders?page=2 HTTP/1.1",
        502,
        None,
    )


@pytest.mark.parametrize(
    "line",
    [
        "garbage\n",
        "",
        # nginx's combined format (no rt=, urt=; two quoted fields fewer than the request's three)
        '10.0.0.7 - - [24/Nov/2026:10:30:01 +0000] "GET / HTTP/1.1" 200 5\n',
        # a line nginx is still writing
        (LINE % ("+0000", 200, "0.050"))[:60],
        '10.0.0.7 - - [24/Nov/2026:10:30:01 +0000] "GET / HTTP/1.1" - 5 "-" "curl" rt=0.1 urt=0.1 host=a\n',
    ],
)
def test_what_is_not_a_line_of_the_format_gives_none(line):
    assert access_log.parse(line) is None


@pytest.mark.parametrize("zone, shift", [("+0000", 0), ("+0130", -5400), ("-0800", 28800)])
def test_the_timestamp_is_utc_whatever_the_servers_zone(zone, shift):
    utc = calendar.timegm((2026, 11, 24, 10, 30, 1, 0, 0, 0))
    assert access_log.timestamp(LINE % (zone, 200, "0.050")) == utc + shift


def test_a_line_without_a_time_has_no_timestamp():
    assert access_log.timestamp("garbage\n") is None
    assert access_log.timestamp("[31/Feb/2026:10:30:01 +0000]") is None
