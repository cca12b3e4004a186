"""``napari-sam`` command line.

Each sub-command lives in its own module of this package, exposing ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when their
command runs, so ``napari-sam --help`` is fast.

Exit status: 0 done; 2 a problem the user can fix (bad input, missing file, a store or
output that exists, no network for a download, a full disk), printed as ONE line
``napari-sam CMD: error: ...``; 1 an internal error (a bug), printed as one line asking
for a report (``NAPARI_SAM_DEBUG=1`` adds the traceback); 130 cancelled (Ctrl-C).

Library errors are turned into :class:`UserError` where they happen (argument checks,
reading input, loading the model, opening a store, writing results), so that an
unexpected ``ValueError`` deep inside is reported as the bug it is. The few error
classes of napari-sam that always describe the user's situation (weights that cannot
be downloaded, a bad checkpoint, a store problem, an output that cannot be written) are
user errors wherever they come from (:data:`USER_FACING`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
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
    "cache": ".cache",
    "replay": ".replay",
    "export": ".export",
}

# (module, class) of napari-sam errors that are always the user's situation, not a bug.
# Checked by name (in sys.modules) so that `napari-sam --help` imports neither torch
# nor zarr: an error of a module that was never imported cannot have been raised.
USER_FACING: tuple[tuple[str, str], ...] = (
    ("napari_sam.weights", "WeightsUnavailableError"),  # offline, HTTP, hash mismatch
    ("napari_sam.model.checkpoint", "CheckpointError"),
    ("napari_sam.store", "StoreError"),  # and its subclasses (mismatch, write, stale)
    ("napari_sam.outputs", "OutputError"),
    ("napari_sam.export", "ExportError"),  # a target that cannot be written / replaced
    ("napari_sam.export", "ProvenanceError"),  # a provenance that does not fit the image
)
DEBUG_ENV = "NAPARI_SAM_DEBUG"
REPORT_AT = "the napari-sam issue tracker"
EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_CANCELLED = 0, 1, 2, 130


class UserError(Exception):
    """A problem with the user's input; printed as one line, exit status 2."""


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="napari-sam",
        description="Segment Anything for microscopy (napari-sam).",
        epilog="exit status: 0 ok, 1 internal error, 2 user error, 130 cancelled",
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
        return EXIT_CANCELLED
    except Exception as err:  # the one place that reports everything
        return report(args.command, err)


def is_user_facing(err: BaseException) -> bool:
    """UserError, or one of the :data:`USER_FACING` napari-sam error classes."""
    if isinstance(err, UserError):
        return True
    for module, name in USER_FACING:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(err, cls):
            return True
    return False


def report(command: str, err: BaseException) -> int:
    """Print ``err`` as one line on stderr; returns the exit status (2 user, 1 bug)."""
    debug = os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    text = one_line(err)
    if is_user_facing(err):
        print(f"napari-sam {command}: error: {text}", file=sys.stderr)
        return EXIT_USER
    more = "" if debug else f" ({DEBUG_ENV}=1 shows the traceback)"
    print(
        f"napari-sam {command}: internal error: {type(err).__name__}: {text} — please "
        f"report it at {REPORT_AT}, with the command line{more}",
        file=sys.stderr,
    )
    return EXIT_INTERNAL


def one_line(err: BaseException) -> str:
    """The error's message on one line (newlines and runs of spaces collapsed)."""
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
