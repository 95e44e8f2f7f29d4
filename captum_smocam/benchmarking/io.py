"""Writing benchmark results: tables, text and figures, each written atomically.

Every writer goes through :func:`captum_smocam._io.atomic_write`: an
interrupted run leaves the previous file (or none), never half a file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write

__all__ = ["write_csv", "write_text", "write_json", "save_figure", "markdown_table"]


def write_csv(df, path, float_format: str = "%.6g") -> Path:
    """Write a DataFrame (without its index) to ``path`` atomically; return the path.

    Examples::

        >>> import os, tempfile, pandas as pd
        >>> p = write_csv(pd.DataFrame({"a": [1.0 / 3]}), os.path.join(tempfile.mkdtemp(), "t.csv"))
        >>> p.read_text()
        'a\\n0.333333\\n'
    """
    with atomic_write(path) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format)
    return Path(path)


def write_text(text: str, path) -> Path:
    """Write ``text`` to ``path`` atomically; return the path."""
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def write_json(obj: Any, path) -> Path:
    """Write ``obj`` as indented JSON (anything else as ``str``) to ``path`` atomically; return the path."""
    return write_text(json.dumps(obj, indent=1, default=str) + "\n", path)


def save_figure(fig, path, **savefig_kwargs) -> Path:
    """Save a matplotlib figure to ``path`` atomically, then close it; return the path.

    The format follows the extension of ``path`` (``.png``, ``.pdf``, ...).
    """
    import matplotlib.pyplot as plt

    try:
        with atomic_write(path, suffix=Path(path).suffix) as tmp:
            fig.savefig(tmp, **savefig_kwargs)
    finally:
        plt.close(fig)
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
