"""The ``smocam`` command line.

The sub-commands are listed in :data:`SUBCOMMANDS`, in the order ``smocam
--help`` shows them; each is a pair of functions in a module of
:mod:`captum_smocam.commands`: ``add_<name>(subparsers)`` declares its
arguments and ``run_<name>(args)`` does the work. Errors a user can fix
(missing file, unknown target, bad value) are raised as
:class:`~captum_smocam.commands.CLIError`, ``ValueError``,
``FileNotFoundError`` or ``OSError`` and printed by :func:`main` as one line,
``smocam: error: ...``, with exit status 2. Running out of memory
(``MemoryError``, or the ``RuntimeError`` torch raises when an allocation
fails) and other ``RuntimeError``s are printed as one line too, with exit
status 1. ``TypeError`` and ``KeyError`` are *not* caught: inside the package
they mean a bug, and their traceback is what a bug report needs. Outputs are
written to a temporary name and renamed (:func:`captum_smocam._io.atomic_write`),
so an interrupted or failed run leaves nothing half-written.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from . import __version__
from ._cli_checks import check_args
from .commands import CLIError
from .commands.cohort import add_cohort, add_report
from .commands.compare import add_compare, add_demo
from .commands.data import add_references, add_synth
from .commands.explain import add_explain

__all__ = ["SUBCOMMANDS", "CLIError", "build_parser", "main"]

#: The sub-commands: name -> the function that declares its arguments (and sets ``func``, the one that runs it).
SUBCOMMANDS = {
    "demo": add_demo,
    "explain": add_explain,
    "compare": add_compare,
    "cohort": add_cohort,
    "synth": add_synth,
    "references": add_references,
    "report": add_report,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``smocam`` argument parser, with one sub-parser per entry of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="smocam",
        description="SMOCAM attention masks for 3-D regression models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in SUBCOMMANDS.values():
        add(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings about the user's data as one ``smocam: warning:`` line; others as Python prints them."""
    from .nifti import DataWarning

    if issubclass(category, DataWarning):
        print(f"smocam: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _first_line(exc: BaseException) -> str:
    """The error's first line, shortened (:func:`captum_smocam._text.shorten_message`): never a whole network."""
    from ._text import first_line, shorten_message

    return shorten_message(first_line(exc), max_lines=1)


def main(argv=None) -> int:
    """Entry point of the ``smocam`` console script; returns the exit status.

    0: success; 1: the command ran but failed (out of memory, a torch
    ``RuntimeError``, or, for ``cohort``, some scans failed); 2: a user error
    (bad argument, missing or unreadable file), reported before any output is
    written. Other exceptions (``TypeError``, ``KeyError``, ...) are bugs and
    keep their traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_args(args)  # numbers in range, no empty path: one line, before anything runs
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, OSError) as exc:
        print(f"smocam: error: {_first_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        print(f"smocam: error: out of memory ({_first_line(exc)})", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # torch reports failed allocations (CPU and CUDA) as RuntimeError
        print(f"smocam: error: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
