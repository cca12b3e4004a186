"""``napari-sam`` command line.

Each sub-command lives in its own module of this package, exposing ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when their
command runs, so ``napari-sam --help`` is fast. Errors the user can fix (bad input,
missing file) are printed as one line and exit with status 2; no tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command name → module (relative to this package)
COMMANDS: dict[str, str] = {
    "models": ".models",
    "segment": ".segment",
    "train": ".train",
    "embed": ".embed",
    "info": ".info",
    "propagate": ".propagate",
    "amg": ".amg",
    "replay": ".replay",
    "export": ".export",
}


class UserError(Exception):
    """A problem with the user's input; printed as one line, exit status 2."""


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="napari-sam", description="Segment Anything for microscopy (napari-sam)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules: dict[str, object] = {}
    for name, modname in COMMANDS.items():
        mod = importlib.import_module(modname, __name__)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        modules[name] = mod
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(modules[args.command].run(args) or 0)
    except KeyboardInterrupt:
        print("napari-sam: cancelled", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError) as err:
        print(f"napari-sam {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
