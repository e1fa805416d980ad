"""Flask's own tutorial app, flaskr, deployed with no change to its code.

The app comes from the Flask sdist on PyPI (``examples/tutorial``, the version constraints.txt pins): an app
factory with ``Flask(__name__, instance_relative_config=True)``, its SQLite file and ``config.py`` in the
instance folder, and ``flask --app flaskr init-db``, which drops its tables, so the release command guards
it. A user registers, logs in and writes a post through nginx; the post and the login survive a new
release, a rollback and a restart. Prints ``STATE RESULT case=real_flask_app rows_before=<n> rows_after=<n>``
(rows: posts on the index page).
"""

from __future__ import annotations

import copy
import http.cookiejar
import re
import secrets
import subprocess
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request

import pytest
from conftest import PROJECT, live_release, run_with_apps, succeeded, why_failed

JOURNAL_UNITS = ["flaskr.service", "flaskr.socket", "nginx.service"]
CONSTRAINTS = PROJECT / "constraints.txt"
SERVER = "flaskr.localhost"
# init-db drops the tables: run it only while there is no database yet.
INIT_ONCE = "sh -c 'test -e \"$FLASKOPS_STATE_DIR/instance/flaskr.sqlite\" || flask --app flaskr init-db'"


def flask_pin():
    """``Flask==<version>`` as constraints.txt pins it."""
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if line.lower().startswith("flask=="):
            return line.strip()
    raise AssertionError(f"no Flask pin in {CONSTRAINTS}")


@pytest.fixture(scope="module")
def flaskr_source(tmp_path_factory):
    """examples/tutorial of the Flask sdist, unpacked: the app's source as its authors publish it."""
    directory = tmp_path_factory.mktemp("flask-sdist")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", "--dest",
         str(directory), flask_pin()],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (sdist,) = directory.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if "/examples/tutorial/" in m.name]
        archive.extractall(directory, members=members, filter="data")
    (source,) = directory.glob("*/examples/tutorial")
    assert (source / "flaskr" / "__init__.py").exists()
    return source


class Browser:
    """A client with a cookie jar, through nginx with the app's Host header; redirects are not followed."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, url):
        self.url = url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), self._NoRedirect
        )

    def request(self, path, form=None):
        """``(status, body)``; ``form`` makes it a POST."""
        data = None if form is None else urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, headers={"Host": SERVER})
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


def posts(browser):
    status, page = browser.request("/")
    assert status == 200, page[:2000]
    return len(re.findall(r'<article class="post">', page))


def logged_in(browser, user):
    status, page = browser.request("/")
    return status == 200 and f"<span>{user}</span>" in page


def converge(apps, tmp_path, name, *args):
    run = run_with_apps("flaskops.stack.site", apps, tmp_path, name, *args)
    assert succeeded(run), why_failed(run)
    return run


def test_flasks_tutorial_app_deploys_unchanged_and_keeps_its_data(
    host, app, nginx_url, tmp_path, flaskr_source, report
):
    demo = copy.deepcopy(app)
    demo.setdefault("workload", {})["memory_share"] = 0.75
    flaskr = {
        "name": "flaskr",
        "wsgi": "flaskr:create_app()",
        "source": {"path": str(flaskr_source)},
        "server_name": [SERVER],
        "health_path": "/hello",
        "workload": {"profile": "io", "memory_share": 0.25},
        "instance": "flaskr",
        "files": [{"dest": "instance/config.py", "content": f"SECRET_KEY = {secrets.token_hex(16)!r}\n"}],
        "release_commands": [INIT_ONCE],
    }
    converge([demo, flaskr], tmp_path, "flaskr")
    first = live_release(host, "flaskr")
    browser = Browser(nginx_url)
    assert browser.request("/auth/register", {"username": "ada", "password": "lovelace"})[0] == 302
    assert browser.request("/auth/login", {"username": "ada", "password": "lovelace"})[0] == 302
    for number in range(3):
        status, page = browser.request("/create", {"title": f"post {number}", "body": "kept"})
        assert status == 302, page[:2000]
    before = posts(browser)

    # A new release of the same code (another environment): the guarded init-db leaves the data alone.
    flaskr["env"] = {"FLASKR_RELEASE": "2"}
    converge([demo, flaskr], tmp_path, "flaskr-2")
    second = live_release(host, "flaskr")
    after_release = posts(browser)
    # Back to the first release, and a restart.
    only_flaskr = '{"flask_stack_rollback_apps": ["flaskr"]}'
    rollback = run_with_apps("flaskops.stack.rollback", [demo, flaskr], tmp_path, "rollback", "-e", only_flaskr)
    assert rollback.returncode == 0, rollback.stdout[-4000:]
    rolled_back = live_release(host, "flaskr")
    after_rollback = posts(browser)
    host.check_output("systemctl restart flaskr.service")
    after = posts(browser)
    report(f"STATE RESULT case=real_flask_app rows_before={before} rows_after={after}")

    assert before == 3 and after_release == before and after_rollback == before and after == before
    assert second != first and rolled_back == first
    # The session cookie, signed with the SECRET_KEY from config.py, still logs ada in.
    assert logged_in(browser, "ada")
    state = "/var/lib/flaskops/flaskr/instance"
    assert host.file(f"{state}/flaskr.sqlite").user == "flaskr"
    config = host.file(f"{state}/config.py")
    assert (config.user, config.group, config.mode) == ("root", "flaskr", 0o640)
    # Flask's instance folder in the build is the state directory's: nothing root-owned made inside a release.
    build_instance = host.file("/srv/flaskr/current/venv/var/flaskr-instance")
    assert build_instance.is_symlink and build_instance.linked_to == state
