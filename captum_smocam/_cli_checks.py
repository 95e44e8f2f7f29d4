"""One check of the ``smocam`` command line's numbers and paths, before any sub-command runs.

argparse turns ``--n-steps 99999999999999999999`` into a Python int, which
torch or numpy then refuse deep inside with an ``OverflowError``; and an empty
``--out ""`` means the current folder. :func:`check_args` refuses both, and
their like, as one line naming the flag, the value and what is allowed.
"""
from __future__ import annotations

import math
import numbers
from typing import Dict, Tuple

__all__ = ["INT_RANGES", "PATH_FLAGS", "check_args"]

#: Allowed range (inclusive) of every integer flag, by its argparse ``dest``.
INT_RANGES: Dict[str, Tuple[int, int]] = {
    "n_steps": (1, 1_000_000),               # SMOCAM optimisation steps
    "internal_batch_size": (1, 1_000_000),   # masks optimised at once
    "n": (1, 100_000),                       # synth: subjects
    "seed": (0, 2 ** 63 - 1),                # synth: cohort seed
}
#: Any other integer flag must fit a signed 64-bit integer.
INT64 = (-(2 ** 63), 2 ** 63 - 1)
#: Flags (argparse ``dest``) that name files or folders: an empty value is refused.
PATH_FLAGS = ("out", "image", "images", "labels", "lut", "model")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_args(args) -> None:
    """Raise ``ValueError`` (one line) for an integer flag out of its range, a non-finite float flag, or an
    empty path.

    Examples::

        >>> import argparse
        >>> check_args(argparse.Namespace(n_steps=10, out="results"))
        >>> check_args(argparse.Namespace(n_steps=10 ** 20))
        Traceback (most recent call last):
        ...
        ValueError: --n-steps must be an integer in [1, 1000000], got 100000000000000000000
    """
    for dest, value in vars(args).items():
        if isinstance(value, bool) or value is None or callable(value):
            continue
        if isinstance(value, numbers.Integral):
            lo, hi = INT_RANGES.get(dest, INT64)
            if not lo <= value <= hi:
                raise ValueError(f"{_flag(dest)} must be an integer in [{lo}, {hi}], got {value}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{_flag(dest)} must be a finite number, got {value}")
        elif dest in PATH_FLAGS:
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, str) and not v.strip() for v in values):
                raise ValueError(f"{_flag(dest)} is empty ({next(v for v in values if not v.strip())!r}); "
                                 "give a file or folder name")
