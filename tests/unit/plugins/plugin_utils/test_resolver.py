"""The resolver: every default applied once, every bad input named by app or site, field and value."""

from __future__ import annotations

import os

import pytest
import yaml

from ansible_collections.flaskops.stack.plugins.plugin_utils import resolver
from ansible_collections.flaskops.stack.plugins.plugin_utils.resolver import (
    ResolveError,
    resolve_gunicorn_apps,
    resolve_nginx_sites,
    stack_gunicorn_apps,
    stack_metrics_apps,
    stack_nginx_sites,
)

FACTS = {"processor_vcpus": 2, "memtotal_mb": 4096}
SOURCE = os.path.dirname(__file__)
GUNICORN = {
    "base_dir": "/srv/",
    "state_dir": "/var/lib/flaskops",
    "socket_dir": "/run/flaskops",
    "health_retries": 30,
    "health_delay": 1,
    "fleet_hosts": 1,
    "measured_dir": None,
}
ROLES = os.path.join(os.path.dirname(resolver.__file__), "..", "..", "roles")


def role_defaults(role):
    with open(os.path.join(ROLES, role, "defaults", "main.yml"), encoding="utf-8") as defaults:
        return yaml.safe_load(defaults)


def nginx_settings(**changes):
    """The nginx role's defaults as resolve_nginx_sites takes them, with ``changes``."""
    defaults = role_defaults("nginx")
    settings = {key: defaults["nginx_" + key] for key in resolver.NGINX_SETTINGS}
    settings.update(changes)
    return settings


def app(**changes):
    item = {"name": "shop", "wsgi": "shop:create_app()", "source": {"path": SOURCE}, "server_name": "shop.example"}
    item.update(changes)
    return {k: v for k, v in item.items() if v is not None}


def gunicorn_app(**changes):
    item = app(**changes)
    item.pop("server_name", None)
    return item


def site(**changes):
    item = {"name": "shop", "server_name": "shop.example", "upstream_socket": "/run/flaskops/shop.sock"}
    item.update(changes)
    return item


def test_gunicorn_record_has_every_default_and_the_plan():
    (record,) = resolve_gunicorn_apps([gunicorn_app(static_dir="shop/static")], FACTS, GUNICORN)
    assert record["user"] == "shop"
    assert record["home"] == "/srv/shop"
    assert record["socket"] == "/run/flaskops/shop.sock"
    assert record["static_dir"] == "/srv/shop/current/src/shop/static"
    assert record["health_path"] == "/healthz"
    assert record["settings"] == {} and record["env"] == {} and record["service"] == {} and record["workload"] == {}
    assert record["memory_deny_write_execute"] is True
    assert record["source"] == {"path": SOURCE, "pip": None}
    assert record["plan"]["workers"] >= 1
    assert record["ready_timeout"] == record["plan"]["graceful_timeout"] + 30
    assert record["preload"] is False


def test_given_values_win():
    (record,) = resolve_gunicorn_apps(
        [
            gunicorn_app(
                user="web",
                socket="/run/shop.sock",
                static_dir="/var/www/static",
                health_path="",
                settings={"preload_app": True},
            )
        ],
        FACTS,
        GUNICORN,
    )
    assert (record["user"], record["socket"], record["static_dir"]) == ("web", "/run/shop.sock", "/var/www/static")
    assert record["health_path"] == "/healthz"
    assert record["preload"] is True


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, "gthread"),
        ({"workload": {"worker_class": "gevent"}}, "gevent"),
        ({"settings": {"worker_class": "gevent"}}, "gevent"),
        ({"workload": {"worker_class": "gevent"}, "settings": {"worker_class": "sync"}}, "sync"),
    ],
)
def test_worker_class_is_the_settings_one_else_the_plans(changes, expected):
    (record,) = resolve_gunicorn_apps([gunicorn_app(**changes)], FACTS, GUNICORN)
    assert record["worker_class"] == expected


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"name": "Shop"}, ["'Shop'", "'name'", "[a-z][a-z0-9_]*"]),
        ({"wsgi": "shop"}, ["'shop'", "'wsgi'", "module:callable"]),
        ({"source": {"path": SOURCE, "pip": "shop==1"}}, ["'shop'", "'source'", "exactly one", "shop==1"]),
        ({"source": {}}, ["'shop'", "'source'", "exactly one"]),
        ({"source": {"path": "/nonexistent/shop"}}, ["'shop'", "'source.path'", "/nonexistent/shop"]),
        ({"release": "v1 final"}, ["'shop'", "'release'", "v1 final"]),
        ({"health_path": "healthz"}, ["'shop'", "'health_path'", "'healthz'"]),
        ({"settings": {"chdir": "/srv"}}, ["'shop'", "'settings.chdir'"]),
        ({"settings": {"bind": "0.0.0.0:80"}}, ["'shop'", "'settings.bind'", "socket"]),
        ({"workload": {"profile": "webscale"}}, ["'shop'", "workload", "'profile'", "webscale"]),
        ({"workload": {"max_workers": "four"}}, ["'shop'", "workload", "'max_workers'", "four"]),
        ({"instance": "shop-app"}, ["'shop'", "'instance'", "'shop-app'", "import name"]),
        ({"linked_dirs": ["../uploads"]}, ["'shop'", "'linked_dirs[0]'", "'../uploads'", "no '..'"]),
        ({"linked_dirs": ["/var/uploads"]}, ["'shop'", "'linked_dirs[0]'", "'/var/uploads'"]),
        ({"linked_dirs": ["venv/var"]}, ["'shop'", "'linked_dirs[0]'", "'venv/var'", "part of every release"]),
        (
            {"linked_dirs": ["data", "data/uploads/"]},
            ["'shop'", "'linked_dirs'", "'data'", "'data/uploads'", "overlap"],
        ),
        ({"files": [{"dest": "instance/config.py"}]}, ["'shop'", "'files[0]'", "'instance/config.py'", "exactly one"]),
        ({"files": [{"dest": "a", "content": "x", "src": "a.j2"}]}, ["'shop'", "'files[0]'", "exactly one"]),
        ({"files": [{"dest": "../etc/passwd", "content": "x"}]}, ["'shop'", "'files[0].dest'", "'../etc/passwd'"]),
        ({"files": [{"dest": "a", "content": "x", "mode": "rw"}]}, ["'shop'", "'files[0].mode'", "'rw'"]),
        (
            {"files": [{"dest": "a", "content": "x"}, {"dest": "./a", "content": "y"}]},
            ["'shop'", "'files'", "'a' twice"],
        ),
        ({"release_commands": ["flask 'db upgrade"]}, ["'shop'", "'release_commands[0]'", "cannot be split"]),
        ({"release_commands": ["  "]}, ["'shop'", "'release_commands[0]'", "non-empty"]),
    ],
)
def test_bad_app_is_named_with_its_field_and_value(changes, words):
    with pytest.raises(ResolveError) as error:
        resolve_gunicorn_apps([gunicorn_app(**changes)], FACTS, GUNICORN)
    message = str(error.value)
    assert message.startswith("gunicorn_apps: app ")
    for word in words:
        assert word in message, (word, message)


def test_state_of_an_app_is_checked_and_normalised():
    secret = "SECRET_KEY = 'do not show me'"
    (record,) = resolve_gunicorn_apps(
        [
            gunicorn_app(
                instance="shop",
                linked_dirs=["uploads/", "media/./images"],
                files=[
                    {"dest": "instance//config.py", "content": secret},
                    {"dest": "key.pem", "src": "key.j2", "mode": "600"},
                ],
                release_commands=["flask --app shop db upgrade", "sh -c 'test -e x || flask init-db'"],
            )
        ],
        FACTS,
        GUNICORN,
    )
    assert record["state_dir"] == "/var/lib/flaskops/shop"
    assert record["instance"] == "shop"
    assert record["linked_dirs"] == ["uploads", "media/images"]
    assert record["files"] == [
        {"dest": "instance/config.py", "content": secret, "src": None, "mode": "0640"},
        {"dest": "key.pem", "content": None, "src": "key.j2", "mode": "600"},
    ]
    assert record["release_commands"] == [
        ["flask", "--app", "shop", "db", "upgrade"],
        ["sh", "-c", "test -e x || flask init-db"],
    ]


def test_an_app_without_state_has_none():
    (record,) = resolve_gunicorn_apps([gunicorn_app()], FACTS, GUNICORN)
    assert (record["instance"], record["linked_dirs"], record["files"], record["release_commands"]) == (
        None,
        [],
        [],
        [],
    )


def test_a_file_error_never_shows_its_content():
    with pytest.raises(ResolveError) as error:
        resolve_gunicorn_apps([gunicorn_app(files=[{"dest": "a", "content": "hunter2", "src": "b"}])], FACTS, GUNICORN)
    assert "hunter2" not in str(error.value)


def test_two_apps_on_one_socket_or_name():
    with pytest.raises(ResolveError, match=r"'shop' and 'api' share the socket '/run/x.sock'"):
        resolve_gunicorn_apps(
            [gunicorn_app(socket="/run/x.sock"), gunicorn_app(name="api", socket="/run/x.sock")], FACTS, GUNICORN
        )
    with pytest.raises(ResolveError, match=r"'shop' and 'shop' share the name 'shop'"):
        resolve_gunicorn_apps([gunicorn_app(), gunicorn_app(socket="/run/y.sock")], FACTS, GUNICORN)


def test_stack_keys_are_the_argument_specs():
    gunicorn, nginx = resolver.role_options("gunicorn", "gunicorn_apps"), resolver.role_options("nginx", "nginx_sites")
    everything = {key: key for key in list(gunicorn) + list(nginx) if key not in ("upstream_socket", "plan")}
    everything.update(name="shop", wsgi="shop:app", source={"path": SOURCE}, server_name="shop.example")
    (part,) = stack_gunicorn_apps([everything])
    assert set(part) == set(gunicorn)
    (record,) = resolve_gunicorn_apps([gunicorn_app(static_dir="s")], FACTS, GUNICORN)
    (nginx_part,) = stack_nginx_sites([dict(everything, static_dir="s")], [record])
    # static_url (and every other nginx key) passes through; the stack sets name, socket, plan, static_dir.
    assert nginx_part["static_url"] == "static_url"
    assert set(nginx_part) == set(nginx)
    assert nginx_part["upstream_socket"] == record["socket"] and nginx_part["plan"] is record["plan"]
    assert nginx_part["static_dir"] == "/srv/shop/current/src/s"


@pytest.mark.parametrize(
    ("apps", "words"),
    [
        ([app(wsgi=None)], ["flask_stack_apps: app 'shop'", "missing wsgi"]),
        ([app(server_name=None)], ["flask_stack_apps: app 'shop'", "missing server_name"]),
        ([app(colour="blue")], ["flask_stack_apps: app 'shop'", "unknown keys colour", "known:", "static_url"]),
        ([app(upstream_socket="/run/x")], ["unknown keys upstream_socket"]),
        (["shop"], ["flask_stack_apps: item #0 must be a dict"]),
        ("shop", ["flask_stack_apps: must be a list"]),
    ],
)
def test_bad_stack_app(apps, words):
    with pytest.raises(ResolveError) as error:
        stack_gunicorn_apps(apps)
    for word in words:
        assert word in str(error.value), (word, str(error.value))


def test_site_defaults_come_from_the_role_wide_settings():
    resolved = resolve_nginx_sites([site()], FACTS, nginx_settings())
    (record,) = resolved["sites"]
    assert record["server_name"] == ["shop.example"]
    assert (record["listen_port"], record["tls"], record["static_url"], record["static_dir"]) == (
        80,
        False,
        "/static/",
        None,
    )
    assert (record["client_max_body_size"], record["static_expires"]) == ("10m", "7d")
    assert (record["rate_limit"], record["rate_limit_burst"]) == (0, 0)
    assert record["upstream"] == role_defaults("nginx")["nginx_upstream_defaults"]
    assert [h["key"] for h in record["headers"]] == ["X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"]
    assert record["extra_directives"] == []
    assert resolved["default_server_ports"] == [80] and resolved["default_server_tls_ports"] == []
    assert resolved["tuning"]["worker_processes"] == 2


def test_site_values_win_and_tls_adds_hsts():
    plan = resolve_gunicorn_apps([gunicorn_app()], FACTS, GUNICORN)[0]["plan"]
    settings = nginx_settings(rate_limit=5, hsts_max_age=600, content_security_policy="default-src 'self'")
    resolved = resolve_nginx_sites(
        [
            site(
                server_name=["a.example", "a.example", "b.example"],
                listen_port=8080,
                listen_tls_port=8443,
                tls_certificate="/c.pem",
                tls_certificate_key="/k.pem",
                static_dir="/var/www/",
                static_url="/assets/",
                rate_limit_burst=3,
                content_security_policy="",
                plan=plan,
            )
        ],
        FACTS,
        settings,
    )
    (record,) = resolved["sites"]
    assert record["server_name"] == ["a.example", "b.example"]
    assert (record["listen_port"], record["listen_tls_port"], record["tls"]) == (8080, 8443, True)
    assert (record["static_dir"], record["static_url"]) == ("/var/www", "/assets/")
    assert (record["rate_limit"], record["rate_limit_burst"]) == (5, 3)
    assert record["upstream"] == plan["nginx"]
    keys = [h["key"] for h in record["headers"]]
    assert "Strict-Transport-Security" in keys and "Content-Security-Policy" not in keys
    assert "Strict-Transport-Security" not in [h["key"] for h in record["redirect_headers"]]
    assert "Content-Security-Policy" in [h["key"] for h in resolved["default_server_headers"]]
    assert resolved["default_server_ports"] == [8080] and resolved["default_server_tls_ports"] == [8443]
    assert resolved["tuning"]["upstream_slots"] == plan["concurrency"]


def test_no_sites_leaves_the_catch_all_on_the_default_port():
    resolved = resolve_nginx_sites([], FACTS, nginx_settings(listen_port=8000))
    assert resolved["default_server_ports"] == [8000] and resolved["sites"] == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"name": "Shop"}, ["nginx_sites: site 'Shop'", "'name'"]),
        ({"server_name": []}, ["site 'shop'", "'server_name'", "[]"]),
        ({"server_name": ["a", ""]}, ["site 'shop'", "'server_name'"]),
        ({"upstream_socket": "shop.sock"}, ["site 'shop'", "'upstream_socket'", "shop.sock"]),
        ({"tls_certificate": "/c.pem"}, ["site 'shop'", "'tls_certificate' and 'tls_certificate_key' together"]),
        ({"static_dir": "static"}, ["site 'shop'", "'static_dir'", "'static'"]),
        ({"static_url": "/static"}, ["site 'shop'", "'static_url'", "'/static'"]),
        ({"rate_limit": -1}, ["site 'shop'", "'rate_limit'", "-1"]),
        ({"rate_limit_burst": "many"}, ["site 'shop'", "'rate_limit_burst'", "many"]),
        ({"content_security_policy": 'a"b'}, ["site 'shop'", "'content_security_policy'"]),
        ({"plan": {"workers": 2}}, ["site 'shop'", "'plan'", "'nginx'"]),
        ({"server_name": None}, ["site 'shop'", "missing server_name"]),
    ],
)
def test_bad_site_is_named_with_its_field_and_value(changes, words):
    with pytest.raises(ResolveError) as error:
        resolve_nginx_sites([site(**changes)], FACTS, nginx_settings())
    for word in words:
        assert word in str(error.value), (word, str(error.value))


def test_two_sites_on_one_name_and_port():
    with pytest.raises(ResolveError) as error:
        resolve_nginx_sites(
            [site(server_name="Shop.example"), site(name="api", upstream_socket="/run/a.sock")], FACTS, nginx_settings()
        )
    assert "shop.example:80 is claimed by sites shop and api" in str(error.value)
    # Another port is another pair.
    resolve_nginx_sites(
        [site(), site(name="api", upstream_socket="/run/a.sock", listen_port=8080)], FACTS, nginx_settings()
    )


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"rate_limit": "fast"}, ["'nginx_rate_limit'", "fast"]),
        ({"rate_limit_burst": -2}, ["'nginx_rate_limit_burst'", "-2"]),
        ({"security_headers": {"X Bad": "1"}}, ["nginx_security_headers", "'X Bad'"]),
        ({"security_headers": {"X-Ok": "a\nb"}}, ["nginx_security_headers", "'X-Ok'"]),
        ({"content_security_policy": "a\\b"}, ["'nginx_content_security_policy'"]),
        ({"worker_connections": 0}, ["nginx sizing", "'worker_connections'", "0"]),
    ],
)
def test_bad_role_wide_setting(changes, words):
    with pytest.raises(ResolveError) as error:
        resolve_nginx_sites([site()], FACTS, nginx_settings(**changes))
    for word in words:
        assert word in str(error.value), (word, str(error.value))


def test_the_fleet_shares_an_apps_database_budget():
    workload = {"profile": "io", "db_max_connections": 24}
    alone = resolve_gunicorn_apps([gunicorn_app(workload=workload)], FACTS, GUNICORN)[0]["plan"]
    fleet = resolve_gunicorn_apps([gunicorn_app(workload=workload)], FACTS, dict(GUNICORN, fleet_hosts=3))[0]["plan"]
    assert (alone["db_connections_per_host"], fleet["db_connections_per_host"]) == (12, 4)
    assert fleet["workers"] * fleet["threads"] <= 4
    # The app's own fleet_hosts wins.
    own = dict(workload, fleet_hosts=2)
    mine = resolve_gunicorn_apps([gunicorn_app(workload=own)], FACTS, dict(GUNICORN, fleet_hosts=3))[0]["plan"]
    assert mine["db_connections_per_host"] == 6


def test_a_bad_fleet_size_is_named():
    workload = {"db_max_connections": 24}
    with pytest.raises(ResolveError, match="'gunicorn_fleet_hosts' must be a whole number of at least 1"):
        resolve_gunicorn_apps([gunicorn_app(workload=workload)], FACTS, dict(GUNICORN, fleet_hosts=0))


def test_nginx_sites_get_the_apps_health_path_and_check_it():
    resolved = resolve_nginx_sites([site(health_path="/up")], FACTS, nginx_settings())
    assert resolved["sites"][0]["health_path"] == "/up"
    assert (resolved["lb_health_path"], resolved["drain_flag"]) == (
        "/flaskops/lb-health",
        "/var/lib/flaskops-nginx/drained",
    )
    with pytest.raises(ResolveError, match="'health_path' must be a path"):
        resolve_nginx_sites([site(health_path="/up;return")], FACTS, nginx_settings())
    with pytest.raises(ResolveError, match="'nginx_drain_flag' must be an absolute path"):
        resolve_nginx_sites([], FACTS, nginx_settings(drain_flag="drained"))
    assert resolve_nginx_sites([], FACTS, nginx_settings(lb_health_path=None))["lb_health_path"] is None


@pytest.mark.parametrize("listen", ["127.0.0.1:8089", "[::1]:8089", "localhost:65535"])
def test_the_stub_status_server_listens_where_it_is_told(listen):
    assert resolve_nginx_sites([site()], FACTS, nginx_settings(status_listen=listen))["status_listen"] == listen
    assert resolve_nginx_sites([site()], FACTS, nginx_settings())["status_listen"] is None
    assert resolve_nginx_sites([site()], FACTS, nginx_settings(status_listen=None))["status_listen"] is None


@pytest.mark.parametrize(
    ("listen", "sites", "words"),
    [
        ("8089", [site()], ["'nginx_status_listen' must be host:port", "'8089'"]),
        (8089, [site()], ["'nginx_status_listen' must be host:port", "8089"]),
        ("127.0.0.1:0", [site()], ["must be host:port", "'127.0.0.1:0'"]),
        ("127.0.0.1:70000", [site()], ["must be host:port", "'127.0.0.1:70000'"]),
        ("127.0.0.1:80; deny", [site()], ["must be host:port"]),
        ("127.0.0.1:80", [site()], ["'nginx_status_listen' 127.0.0.1:80: port 80 is a site's"]),
        ("127.0.0.1:8443", [site(listen_tls_port=8443, tls_certificate="/c", tls_certificate_key="/k")], ["port 8443"]),
        ("127.0.0.1:80", [], ["port 80 is a site's"]),  # no sites: the catch-all's default port
    ],
)
def test_a_bad_stub_status_address_is_named(listen, sites, words):
    with pytest.raises(ResolveError) as error:
        resolve_nginx_sites(sites, FACTS, nginx_settings(status_listen=listen))
    for word in words:
        assert word in str(error.value), (word, str(error.value))


def test_the_metrics_role_gets_where_each_app_writes_its_metrics():
    records = resolve_gunicorn_apps([gunicorn_app(), gunicorn_app(name="api", user="web")], FACTS, GUNICORN)
    assert [(r["runtime_dir"], r["metrics_dir"]) for r in records] == [
        ("/run/flaskops-shop", "/run/flaskops-shop/metrics"),
        ("/run/flaskops-api", "/run/flaskops-api/metrics"),
    ]
    assert stack_metrics_apps(records) == [
        {
            "name": "shop",
            "directory": "/run/flaskops-shop/metrics",
            "socket": "/run/flaskops/shop.sock",
            "user": "shop",
        },
        {"name": "api", "directory": "/run/flaskops-api/metrics", "socket": "/run/flaskops/api.sock", "user": "web"},
    ]


# --- Measured workloads (playbooks/measure.yml) ------------------------------------------


def measured_file(directory, app="shop", **workload):
    """A file as playbooks/measure.yml writes it, with ``workload``."""
    data = {
        "app": app,
        "host": "web1",
        "measured_at": "2026-11-24T10:31:07Z",
        "requests": 5234,
        "window_s": 60.01,
        "workload": workload,
        "sources": {"cpu": "cgroup_v2"},
    }
    path = directory / ("%s.yml" % app)
    path.write_text("# measured\n" + yaml.safe_dump(data), encoding="utf-8")
    return str(path)


def test_a_measured_workload_wins_over_the_profile(tmp_path):
    path = measured_file(tmp_path, cpu_ms=20.0, wait_ms=0.5, worker_rss_mb=150.0)
    settings = dict(GUNICORN, measured_dir=str(tmp_path))
    (profile_only,) = resolve_gunicorn_apps([gunicorn_app(workload={"profile": "io"})], FACTS, GUNICORN)
    (record,) = resolve_gunicorn_apps([gunicorn_app(workload={"profile": "io"})], FACTS, settings)
    # io alone asks for threads; the measured app is CPU-bound.
    assert profile_only["plan"]["worker_class"] == "gthread" and profile_only["measured"] is None
    assert record["plan"]["worker_class"] == "sync"
    # 150 MiB per worker and the default 4 MiB for its one thread: 3 workers, twice over during a reload, the master.
    assert record["plan"]["memory_peak_mb"] == 30 + 2 * 3 * (150 + 4)
    assert record["measured"] == {
        "file": path,
        "requests": 5234,
        "measured_at": "2026-11-24T10:31:07Z",
        "used": ["cpu_ms", "wait_ms", "worker_rss_mb"],
    }
    assert record["plan"]["explain"][0] == (
        "Measured workload %s (5234 requests over 60.01 s, 2026-11-24T10:31:07Z): cpu_ms 20.0, wait_ms 0.5, "
        "worker_rss_mb 150.0 used; the measured cpu_ms and wait_ms win over the profile 'io'." % path
    )
    assert "measured 20 ms CPU + 0.5 ms waiting per request" in record["plan"]["explain"][1]
    # The app's input is not changed.
    assert record["workload"] == {"profile": "io"}


def test_the_apps_own_workload_keys_win_over_measured_ones(tmp_path):
    measured_file(tmp_path, cpu_ms=20.0, wait_ms=0.5, worker_rss_mb=150.0, thread_rss_mb=2.0)
    settings = dict(GUNICORN, measured_dir=str(tmp_path))
    own = {"wait_ms": 48, "cpu_ms": 2, "worker_rss_mb": 100}
    (record,) = resolve_gunicorn_apps([gunicorn_app(workload=own)], FACTS, settings)
    assert record["measured"]["used"] == ["thread_rss_mb"]
    assert record["plan"]["worker_class"] == "gthread"
    threads = record["plan"]["threads"]
    assert record["plan"]["memory_peak_mb"] == 30 + 2 * record["plan"]["workers"] * (100 + threads * 2)
    assert record["plan"]["explain"][0].endswith(
        "thread_rss_mb 2.0 used; the app's own workload sets cpu_ms, wait_ms, worker_rss_mb."
    )


def test_without_a_measured_file_nothing_changes(tmp_path):
    measured_file(tmp_path, app="other", cpu_ms=20.0, wait_ms=0.5)
    plain = resolve_gunicorn_apps([gunicorn_app()], FACTS, GUNICORN)[0]
    for directory in (str(tmp_path), str(tmp_path / "missing"), "", None):
        record = resolve_gunicorn_apps([gunicorn_app()], FACTS, dict(GUNICORN, measured_dir=directory))[0]
        assert record["measured"] is None
        assert record["plan"] == plain["plan"]


@pytest.mark.parametrize(
    "content, words",
    [
        ("workload: [1\n", ["cannot read the measured workload"]),
        ("requests: 5\n", ["has no 'workload' dict"]),
        ("app: api\nworkload: {cpu_ms: 1, wait_ms: 1}\n", ["is app 'api''s"]),
        ("workload: {cpu_ms: 1, wait_ms: 1, workers: 9}\n", ["sets workers; it may set only cpu_ms, wait_ms"]),
        ("workload: {cpu_ms: 1}\n", ["sets cpu_ms without wait_ms"]),
        ("workload: {cpu_ms: -1, wait_ms: 1}\n", ["measured workload", "'cpu_ms' must be greater than 0", "-1"]),
    ],
)
def test_a_bad_measured_file_is_named(tmp_path, content, words):
    (tmp_path / "shop.yml").write_text(content, encoding="utf-8")
    with pytest.raises(ResolveError) as error:
        resolve_gunicorn_apps([gunicorn_app()], FACTS, dict(GUNICORN, measured_dir=str(tmp_path)))
    message = str(error.value)
    assert message.startswith("gunicorn_apps: app 'shop': ")
    assert str(tmp_path / "shop.yml") in message
    for word in words:
        assert word in message, (word, message)
