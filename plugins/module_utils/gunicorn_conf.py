# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a running gunicorn master was configured with: the settings its release's ``gunicorn.conf.py`` assigns.

Plain Python, standard library only, no Ansible imports: the modules ``flaskops.stack.measure`` (an app's
capacity) and ``flaskops.stack.doctor`` (the running configuration against the plan) share it.
"""

from __future__ import annotations

import ast
import posixpath
import re

from ansible_collections.flaskops.stack.plugins.module_utils import cgroups, readiness

#: gunicorn's defaults for the settings the collection plans.
GUNICORN_DEFAULTS = {
    "worker_class": "sync",
    "workers": 1,
    "threads": 1,
    "worker_connections": 1000,
    "timeout": 30,
    "graceful_timeout": 30,
    "keepalive": 2,
    "backlog": 2048,
    "max_requests": 0,
    "max_requests_jitter": 0,
}


def parse_settings(text, names):
    """The settings ``names`` that ``text`` (a gunicorn.conf.py) assigns as literals, over gunicorn's defaults:
    the last assignment wins, as in Python. None when one of them is computed, not a literal (unknown)."""
    pattern = re.compile(r"^(%s)\s*=\s*(.+?)\s*$" % "|".join(map(re.escape, names)), re.MULTILINE)
    settings = {name: GUNICORN_DEFAULTS[name] for name in names}
    for name, value in pattern.findall(text):
        try:
            settings[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None
    return settings


def live_settings(root, master, names):
    """(settings, path) of the gunicorn.conf.py in the master's working directory (the release it loaded
    last), as :func:`parse_settings` reads it. (None, None) when unreadable."""
    cwd = readiness.working_directory(master, cgroups.rebase(root, "/proc"))
    if cwd is None:
        return None, None
    path = posixpath.join(cwd, "gunicorn.conf.py")
    text = cgroups.read_text(cgroups.rebase(root, path))
    if text is None:
        return None, None
    settings = parse_settings(text, names)
    return (settings, path) if settings is not None else (None, None)
