"""``python -m flaskops_demo static-dir`` prints the static directory; ``run`` starts Flask's dev server."""

from __future__ import annotations

import argparse

from flaskops_demo import STATIC_DIR, app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flaskops_demo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("static-dir", help="print the absolute path of the package's static/ directory")
    run = commands.add_parser("run", help="serve with Flask's development server (not for production)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    if args.command == "static-dir":
        print(STATIC_DIR)
    else:
        app.run(host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
