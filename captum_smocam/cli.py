"""The ``smocam`` command line.

Each sub-command is a pair of functions: ``_add_<name>(subparsers)`` declares
its arguments and ``_run_<name>(args)`` does the work. Errors a user can fix
(missing file, unknown target, bad value) are raised as :class:`CLIError`,
``ValueError``, ``FileNotFoundError`` or ``OSError`` and printed by
:func:`main` as one line, ``smocam: error: ...``, with exit status 2. Running
out of memory (``MemoryError``, or the ``RuntimeError`` torch raises when an
allocation fails) and other ``RuntimeError``s are printed as one line too, with
exit status 1. ``TypeError`` and ``KeyError`` are *not* caught: inside the
package they mean a bug, and their traceback is what a bug report needs.
Outputs are written to a temporary name and renamed (see
:func:`atomic_write`), so an interrupted or failed run leaves nothing
half-written.
"""
from __future__ import annotations

import argparse
import sys
import warnings

from . import __version__
from ._io import atomic_write  # noqa: F401  (re-exported for writers that import it from here)
from .cohort import _add_cohort, _run_cohort  # noqa: F401


class CLIError(Exception):
    """An error the user can fix; printed as one line."""


# Sub-commands defined in their own modules (discovered by build_parser through globals()).
from .commands import _add_compare, _add_demo, _add_explain  # noqa: E402,F401


def _add_synth(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic T1 cohort with exact structure volumes",
        description="Write sub-XXXX_T1w.nii.gz and sub-XXXX_labels.nii.gz per subject, "
        "labels.txt (FreeSurferColorLUT format) and volumes.csv (cm3).",
    )
    p.add_argument("--n", type=int, required=True, help="number of subjects (>= 1)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (>= 0). Default: 0")
    p.add_argument(
        "--lr-correlation",
        type=float,
        default=None,
        help="correlation of left/right volume changes in [-1, 1]. Default: 0.95",
    )
    p.add_argument("--spacing", type=float, default=None, help="voxel size in mm. Default: 3.0")
    p.set_defaults(func=_run_synth)


def _run_synth(args) -> int:
    from . import synth

    r = synth.DEFAULT_LR_CORRELATION if args.lr_correlation is None else args.lr_correlation
    spacing = synth.DEFAULT_SPACING if args.spacing is None else args.spacing
    # Check every value before anything is written.
    if args.n < 1:
        raise CLIError(f"--n must be >= 1, got {args.n}")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    if not -1.0 <= r <= 1.0:
        raise CLIError(f"--lr-correlation must be in [-1, 1], got {r}")
    synth.default_grid(spacing)  # raises ValueError on a bad spacing
    table = synth.write_cohort(args.out, args.n, seed=args.seed, lr_correlation=r, spacing=spacing)
    print(f"wrote {len(table)} subjects, labels.txt and volumes.csv to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smocam",
        description="SMOCAM attention masks for 3-D regression models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, obj in sorted(globals().items()):
        if name.startswith("_add_") and callable(obj):
            obj(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings about the user's data as one ``smocam: warning:`` line; others as Python prints them."""
    from .nifti import DataWarning

    if issubclass(category, DataWarning):
        print(f"smocam: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
