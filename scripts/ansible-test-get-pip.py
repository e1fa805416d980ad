# Copyright: (c) 2026, flaskops.stack contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for the get-pip bootstrap script ansible-test downloads.

`ansible-test sanity --venv` fetches get-pip.py from a host that is not a
package index and that offline or locked-down machines cannot reach. Nothing
in the ecosystem replaces it, so `make sanity` places this file in
ansible-test's cache under the name ansible-test looks for. It does what
get-pip.py does for ansible-test: put pip into the fresh virtualenv (with the
standard library's ensurepip), then install the requested pinned packages
(ansible-test passes e.g. `pip==24.2`) from the configured package index.
"""

import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args])
