"""Hardening on by default: the app units' exposure, the socket's permissions, nginx's answers and TLS.

Runs on each instance of the default scenario (Debian 12, Debian 13, and Debian 12 limited to 1 CPU and
768 MiB). The scenarios' api app has TLS (a self-signed certificate made by molecule/prepare.yml), a
rate limit and a small client_max_body_size; the demo app has none of these.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

from conftest import published_address

JOURNAL_UNITS = ["demo.service", "api.service", "nginx.service"]
MAX_EXPOSURE = 2.0
SECURITY_HEADERS = ("x-content-type-options", "x-frame-options", "referrer-policy")
EXPOSURE_LINE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def test_app_units_expose_little(host, inventory, apps, report):
    for app in apps:
        unit = f"{app['name']}.service"
        out = host.check_output("systemd-analyze security --no-pager %s", unit)
        exposure = float(EXPOSURE_LINE.search(out).group(1))
        report(f"SECURITY RESULT host={inventory['inventory_hostname']} unit={unit} exposure={exposure:.1f}")
        assert exposure <= MAX_EXPOSURE, out


def test_app_units_carry_the_hardening(host, apps):
    expected = {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",  # sorted: systemd versions list them differently
        "UMask": "0027",
        "PrivateTmp": "yes",
    }
    properties = " ".join(f"-p {key}" for key in expected)
    for app in apps:
        shown = host.check_output("systemctl show %s " + properties, f"{app['name']}.service")
        values = dict(line.partition("=")[::2] for line in shown.splitlines())
        values["RestrictAddressFamilies"] = " ".join(sorted(values.get("RestrictAddressFamilies", "").split()))
        assert values == expected, app["name"]
        assert host.check_output("systemctl show -p SystemCallFilter --value %s.service", app["name"]), app["name"]


def test_gunicorn_writes_only_under_its_runtime_and_state_directories(host, apps):
    for app in apps:
        runtime, state = f"/run/flaskops-{app['name']}", f"/var/lib/flaskops/{app['name']}"
        assert host.file(f"{runtime}/gunicorn.ctl").is_socket, app["name"]
        master = host.check_output("systemctl show -p MainPID --value %s.service", app["name"])
        # In the service's mount namespace the release and the system are read-only, the state directory not.
        for path in (f"/srv/{app['name']}/current/flaskops-probe", "/var/lib/flaskops/flaskops-probe"):
            probe = host.run("nsenter -t %s -m touch %s", master, path)
            assert probe.rc != 0 and "Read-only file system" in probe.stderr, (app["name"], path)
        host.check_output("nsenter -t %s -m touch %s/flaskops-probe && rm %s/flaskops-probe", master, state, state)
        directory = host.file(state)
        assert (directory.user, directory.group, directory.mode) == (app["name"], app["name"], 0o750)


def test_socket_admits_nginx_and_refuses_others(host, apps):
    connect = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1]); print('connected')"
    for app in apps:
        path = f"/run/flaskops/{app['name']}.sock"
        assert host.check_output("runuser -u www-data -- python3 -c %s %s", connect, path) == "connected"
        denied = host.run("runuser -u nobody -- python3 -c %s %s", connect, path)
        assert denied.rc != 0 and "PermissionError: [Errno 13]" in denied.stderr, denied.stderr


def response_head(text):
    """(status, headers) from curl's -D - output."""
    head = text.replace("\r\n", "\n").strip().split("\n\n")[-1].split("\n")
    fields = (line.partition(":") for line in head[1:])
    return int(head[0].split()[1]), {name.strip().lower(): value.strip() for name, _c, value in fields}


def curl(host, target, *args):
    """(status, headers) of a request from inside the instance; ``target`` is curl's URL arguments."""
    out = host.run("curl -sS -k -o /dev/null -D - %s %s" % (" ".join(args), target))
    assert out.rc == 0, out.stderr
    return response_head(out.stdout)


def tls_app(apps):
    return next(app for app in apps if app.get("tls_certificate"))


def https(app, path):
    name = app["server_name"][0]
    return f"--resolve {name}:443:127.0.0.1 https://{name}{path}"


def assert_hardened_headers(status, headers, expected_status):
    assert status == expected_status, (status, headers)
    assert headers["server"] == "nginx", headers
    for name in SECURITY_HEADERS:
        assert name in headers, (status, name, headers)


def test_nginx_error_responses_carry_the_headers_and_no_version(host, apps):
    # The catch-all server's 404 for a name no app has.
    assert_hardened_headers(*curl(host, "http://127.0.0.1/", "-H 'Host: unknown.invalid'"), 404)
    app = tls_app(apps)
    assert_hardened_headers(*curl(host, https(app, "/healthz")), 200)
    # Plain HTTP to the TLS app: a redirect, with the headers too.
    status, headers = curl(host, "http://127.0.0.1/healthz", f"-H 'Host: {app['server_name'][0]}'")
    assert_hardened_headers(status, headers, 301)
    assert headers["location"].startswith("https://"), headers


def test_body_past_the_limit_is_refused_with_413(host, apps):
    app = tls_app(apps)
    limit = int(app["client_max_body_size"].rstrip("k")) * 1024
    for size, expected in ((limit, 200), (limit + 1, 413)):
        out = host.run(
            "head -c %d /dev/zero | curl -sS -k -o /dev/null -D - -H 'Content-Type: application/octet-stream' "
            "--data-binary @- %s" % (size, https(app, "/echo"))
        )
        assert out.rc == 0, out.stderr
        assert_hardened_headers(*response_head(out.stdout), expected)


def test_rate_limit_answers_429(host, apps):
    app = tls_app(apps)
    rate, burst = app["rate_limit"], app["rate_limit_burst"]
    time.sleep(burst / rate + 1)  # earlier tests' requests have left the bucket
    count = 3 * (rate + burst)
    loop = "for i in $(seq %d); do curl -sS -k -o /dev/null -D /tmp/rate.$i -w '%%{http_code}\\n' %s; done"
    codes = host.check_output(loop % (count, https(app, "/healthz"))).split()
    assert len(codes) == count
    # The burst and about rate x duration pass; the rest is refused with 429, never anything else.
    assert set(codes) == {"200", "429"}, codes
    assert burst + 1 <= codes.count("200") < count, codes
    refused = host.check_output("cat /tmp/rate.%s", str(codes.index("429") + 1))
    host.run("rm -f /tmp/rate.*")
    assert_hardened_headers(*response_head(refused), 429)


def s_client(address, server_name, *args):
    run = subprocess.run(
        ["openssl", "s_client", "-connect", address, "-servername", server_name, *args],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    # "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384"; "New, (NONE), Cipher is (NONE)" when refused.
    session = re.search(r"^New, (\S+), Cipher is (\S+)", run.stdout, re.M)
    protocol, cipher = session.groups() if session else (None, None)
    return run.returncode, protocol, cipher, run.stdout + run.stderr


def test_tls_offers_only_1_2_and_1_3_with_intermediate_ciphers(host, apps):
    app = tls_app(apps)
    address, name = published_address(host, 443), app["server_name"][0]
    # SECLEVEL=0 lets the client offer what its defaults forbid: the server must refuse it.
    old = "DEFAULT:@SECLEVEL=0"
    for version in ("-tls1", "-tls1_1"):
        rc, protocol, _cipher, out = s_client(address, name, version, "-cipher", old)
        assert rc != 0 and protocol in (None, "(NONE)"), (version, out[-2000:])
    rc, protocol, cipher, out = s_client(address, name, "-tls1_2")
    assert rc == 0 and protocol == "TLSv1.2", out[-2000:]
    assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher), out[-2000:]
    rc, protocol, cipher, out = s_client(address, name, "-tls1_3")
    assert rc == 0 and protocol == "TLSv1.3" and cipher.startswith("TLS_"), out[-2000:]
    # Suites outside Mozilla's intermediate list: CBC, static RSA key exchange.
    for suite in ("ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA", "AES128-GCM-SHA256"):
        rc, protocol, _cipher, out = s_client(address, name, "-tls1_2", "-cipher", f"{suite}:@SECLEVEL=0")
        assert rc != 0 and protocol in (None, "(NONE)"), (suite, out[-2000:])


def test_gixy_finds_nothing_in_the_rendered_config(host):
    dump = host.check_output("nginx -T 2>/dev/null")
    with tempfile.NamedTemporaryFile("w", suffix=".conf", encoding="utf-8") as handle:
        handle.write(dump)
        handle.flush()
        gixy = os.path.join(os.path.dirname(sys.executable), "gixy")  # requirements-dev.txt, beside pytest
        run = subprocess.run([gixy, handle.name], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0 and "No issues found" in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]
