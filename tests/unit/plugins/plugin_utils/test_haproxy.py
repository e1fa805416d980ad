"""The haproxy role's resolver and sizing: backends from the app hosts, errors named, limits kept."""

from __future__ import annotations

import os

import pytest
import yaml

from ansible_collections.flaskops.stack.plugins.plugin_utils import haproxy
from ansible_collections.flaskops.stack.plugins.plugin_utils.haproxy import haproxy_plan, resolve_haproxy
from ansible_collections.flaskops.stack.plugins.plugin_utils.resolver import ResolveError, stack_haproxy_apps

FACTS = {"processor_vcpus": 2, "memtotal_mb": 4096}
ROLES = os.path.join(os.path.dirname(haproxy.__file__), "..", "..", "roles")
SERVERS = [{"name": "web1", "address": "10.0.0.11"}, {"name": "web-2.example", "address": "10.0.0.12"}]


def settings(**changes):
    with open(os.path.join(ROLES, "haproxy", "defaults", "main.yml"), encoding="utf-8") as defaults:
        values = yaml.safe_load(defaults)
    result = {key: values["haproxy_" + key] for key in haproxy.HAPROXY_SETTINGS}
    result.update(changes)
    return result


def test_each_app_gets_its_names_and_every_host_is_a_server():
    resolved = resolve_haproxy(
        [
            {"name": "shop", "server_name": ["Shop.example", "shop.example"]},
            {"name": "api", "server_name": "api.example"},
        ],
        FACTS,
        settings(),
        SERVERS,
    )
    assert resolved["apps"] == [
        {"name": "shop", "server_name": ["shop.example"]},
        {"name": "api", "server_name": ["api.example"]},
    ]
    assert [s["name"] for s in resolved["servers"]] == ["web1", "web-2.example"]
    assert resolved["servers"][0] == {"name": "web1", "host": "web1", "address": "10.0.0.11"}


def test_a_host_name_that_is_no_haproxy_identifier_is_made_one():
    resolved = resolve_haproxy([], FACTS, settings(), [{"name": "web 1/a", "address": "10.0.0.1"}])
    assert resolved["servers"][0]["name"] == "web_1_a"


@pytest.mark.parametrize(
    ("apps", "servers", "changes", "message"),
    [
        ([{"name": "Shop", "server_name": "s"}], SERVERS, {}, "haproxy_apps: app 'Shop': 'name' must match"),
        ([{"name": "shop", "server_name": []}], SERVERS, {}, "'server_name' must be a host name"),
        ([{"name": "shop", "server_name": "s", "tls_certificate": "/c"}], SERVERS, {}, "'tls_certificate' is set"),
        (
            [{"name": "a", "server_name": "s"}, {"name": "b", "server_name": "s"}],
            SERVERS,
            {},
            "server_name",
        ),
        ([{"name": "shop", "server_name": "s"}], [], {}, "no app hosts for shop"),
        ([], [{"name": "web1", "address": None}], {}, "host 'web1': 'address' must be"),
        ([], SERVERS, {"health_path": "health"}, "'haproxy_health_path' must be the path"),
        ([], SERVERS, {"listen_port": 70000}, "'haproxy_listen_port' must be a port"),
        ([], SERVERS, {"memory_share": 1.5}, "'haproxy_memory_share' must be above 0"),
    ],
)
def test_bad_input_is_named(apps, servers, changes, message):
    with pytest.raises(ResolveError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_haproxy(apps, FACTS, settings(**changes), servers)


def test_threads_follow_the_effective_cpus_and_connections_the_memory():
    plan = haproxy_plan({"processor_vcpus": 8, "memtotal_mb": 8192, "flaskops_resources": {"cpus": 1.5}})
    assert plan["nbthread"] == 1
    assert plan["maxconn"] == 8192 * 1024 // 2 // haproxy.CONNECTION_KIB
    assert plan["nofile"] == 2 * plan["maxconn"] + 1024
    assert any("nbthread=1" in line for line in plan["explain"])


def test_the_open_file_limit_caps_the_connections_and_the_unit_fits_it():
    plan = haproxy_plan({"processor_vcpus": 2, "memtotal_mb": 24105}, max_nofile=20000)
    assert plan["maxconn"] == (20000 - 1024) // 2
    assert plan["nofile"] <= 20000
    assert any("file-descriptor limit (20000)" in line for line in plan["explain"])


def test_overrides_win_and_say_so():
    plan = haproxy_plan(FACTS, maxconn=5000, nbthread=3, max_nofile=2048)
    assert (plan["maxconn"], plan["nbthread"], plan["nofile"]) == (5000, 3, 11024)
    assert "maxconn=5000: set by haproxy_maxconn." in plan["explain"]


def test_the_playbooks_apps_give_the_role_only_its_keys():
    apps = [
        {"name": "shop", "wsgi": "shop:app", "source": {"path": "/src"}, "server_name": ["shop.example"]},
    ]
    assert stack_haproxy_apps(apps) == [{"name": "shop", "server_name": ["shop.example"]}]


def test_the_playbooks_apps_are_checked_first():
    with pytest.raises(ResolveError, match="unknown"):
        stack_haproxy_apps(
            [{"name": "shop", "wsgi": "shop:app", "source": {"path": "/src"}, "server_name": "s", "colour": "red"}]
        )
