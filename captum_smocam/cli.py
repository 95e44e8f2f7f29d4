"""The ``smocam`` command line.

Each sub-command is a pair of functions: ``_add_<name>(subparsers)`` declares
its arguments and ``_run_<name>(args)`` does the work. Errors a user can fix
(missing file, unknown target, bad value) are raised as :class:`CLIError`,
``ValueError``, ``FileNotFoundError`` or ``OSError`` and printed by
:func:`main` as one line, ``smocam: error: ...``, with exit status 2.
Outputs are written to a temporary name and renamed (see
:func:`atomic_write`), so an interrupted or failed run leaves nothing
half-written.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from . import __version__


class CLIError(Exception):
    """An error the user can fix; printed as one line."""


@contextlib.contextmanager
def atomic_write(path, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    Args:
        path (str or Path): final destination.
        suffix (str, optional): suffix of the temporary name, so that writers
            that pick a format from the extension (``.nii.gz``, ``.png``) work.
            Default: the suffixes of ``path``.

    Examples::

        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> with atomic_write(os.path.join(d, "a.txt")) as tmp:
        ...     _ = open(tmp, "w").write("hello")
        >>> open(os.path.join(d, "a.txt")).read()
        'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix or "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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


def main(argv=None) -> int:
    """Entry point of the ``smocam`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, TypeError, FileNotFoundError, OSError, KeyError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"smocam: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
