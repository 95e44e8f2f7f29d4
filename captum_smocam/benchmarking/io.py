"""Writing benchmark results: tables, text and figures, each written atomically.

These are the package's writers (:mod:`captum_smocam._io`) with the formats the
benchmark results use: an interrupted run leaves the previous file (or none),
never half a file, and :func:`save_figure` closes the figure it saved.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import _io
from .._io import save_figure, write_text

__all__ = ["write_csv", "write_text", "write_json", "write_npy", "save_figure", "markdown_table"]


def write_csv(df, path, float_format: str = "%.6g") -> Path:
    """Write a DataFrame (without its index) to ``path`` atomically; return the path.

    :func:`captum_smocam._io.write_csv` with 6 significant digits by default.

    Examples::

        >>> import os, tempfile, pandas as pd
        >>> p = write_csv(pd.DataFrame({"a": [1.0 / 3]}), os.path.join(tempfile.mkdtemp(), "t.csv"))
        >>> p.read_text()
        'a\\n0.333333\\n'
    """
    return _io.write_csv(df, path, float_format=float_format)


def write_json(obj: Any, path) -> Path:
    """Write ``obj`` as JSON indented by one space (anything else as ``str``) to ``path`` atomically."""
    return _io.write_json(obj, path, indent=1)


def write_npy(array, path) -> Path:
    """Write ``array`` with ``numpy.save`` to ``path`` (a ``.npy`` file) atomically; return the path.

    Examples::

        >>> import os, tempfile
        >>> p = write_npy(np.arange(3), os.path.join(tempfile.mkdtemp(), "y.npy"))
        >>> np.load(p).tolist()
        [0, 1, 2]
    """
    with _io.atomic_write(path, suffix=".npy") as tmp:  # numpy.save appends .npy to any other name
        np.save(tmp, np.asarray(array))
    return Path(path)


def markdown_table(df, float_format: str = "{:.3f}") -> str:
    """A DataFrame as a Markdown table (no ``tabulate`` dependency); non-finite floats read ``nan``.

    Examples::

        >>> import pandas as pd
        >>> print(markdown_table(pd.DataFrame({"model": ["vgg"], "slope": [0.0341]})))
        | model | slope |
        |---|---|
        | vgg | 0.034 |
    """
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "nan" if not np.isfinite(v) else float_format.format(v)
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)
