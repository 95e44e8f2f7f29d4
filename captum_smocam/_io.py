"""File names, and the one way the package writes a file: atomically.

Every file the package writes goes through :func:`atomic_write` (directly, or
through :func:`write_text`, :func:`write_json`, :func:`write_csv` and
:func:`save_figure`): it is written under a temporary name beside its
destination and renamed into place, so a reader never sees half a file and a
failed write leaves the previous file as it was.

:func:`safe_name` turns any text (a file stem, an output name from a
checkpoint) into one harmless path component, and :func:`child_path` refuses
anything else, so that no output of the ``smocam`` command can land outside
its ``--out`` folder whatever the inputs are called.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from pathlib import Path
from typing import Any, Optional, Union

#: Longest name :func:`safe_name` returns (file names get suffixes on top; most file systems allow 255 bytes).
MAX_NAME_LENGTH = 100

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
_NIFTI_SUFFIX = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


def safe_name(text: str, fallback: str = "scan") -> str:
    """``text`` as one path component that is safe to write, and distinct for distinct ``text``.

    Letters, digits and ``._+-`` are kept; every other run of characters
    becomes ``-``; leading dots are removed (no hidden files, no ``.`` or
    ``..``). When anything had to change, or the result is empty or longer
    than :data:`MAX_NAME_LENGTH`, ``-`` and the first 8 hex digits of the
    SHA-1 of ``text`` are appended, so that two different texts do not end up
    with one name (``"a b"`` and ``"a-b"`` stay apart).

    Args:
        text (str): any text.
        fallback (str, optional): stem used when nothing of ``text`` is left. Default: ``"scan"``

    Returns:
        str: a non-empty name made of ``[A-Za-z0-9._+-]``, not starting with a dot.

    Examples::

        >>> safe_name("sub-01_T1w")
        'sub-01_T1w'
        >>> safe_name("..")
        'scan-9d891e73'
        >>> safe_name("a b"), safe_name("../../etc")
        ('a-b-7dbde935', 'etc-7baf5cb6')
    """
    text = str(text)
    clean = _UNSAFE.sub("-", text).lstrip(".-")
    if clean == text and clean and len(clean) <= MAX_NAME_LENGTH:
        return clean
    digest = hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{clean[:MAX_NAME_LENGTH - 9].rstrip('.-') or fallback}-{digest}"


def nifti_stem(path: Union[str, os.PathLike]) -> str:
    """A scan file's name without ``.nii`` / ``.nii.gz``, made safe with :func:`safe_name`.

    Examples::

        >>> nifti_stem("/data/scan.v1.nii.gz"), nifti_stem("T1.NII")
        ('scan.v1', 'T1')
    """
    return safe_name(_NIFTI_SUFFIX.sub("", Path(path).name))


def child_path(folder: Union[str, os.PathLike], name: str) -> Path:
    """``folder / name``, refusing a ``name`` that is not one plain path component.

    Raises:
        ValueError: ``name`` is empty, ``.`` or ``..``, or holds a path separator or NUL.

    Examples::

        >>> child_path("out", "a.csv").as_posix()
        'out/a.csv'
        >>> child_path("out", "../a.csv")
        Traceback (most recent call last):
        ...
        ValueError: refusing to write '../a.csv' in out: not a plain file name
    """
    name = str(name)
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name or (os.altsep and os.altsep in name):
        raise ValueError(f"refusing to write {name!r} in {folder}: not a plain file name")
    return Path(folder) / name


def _create_temporary(path: Path, suffix: str) -> str:
    """Create an empty, new file ``.<name>.<random>.part<suffix>`` beside ``path``; return its path.

    It is opened with mode ``0o666``, which the process umask reduces exactly as for
    ``open(path, "w")`` (``tempfile.mkstemp`` would give owner-only ``0o600``), so the
    umask is never read or changed.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.part{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return str(tmp)
    raise FileExistsError(f"could not create a temporary file beside {path}")  # pragma: no cover


@contextlib.contextmanager
def atomic_write(path, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    An exception inside the block removes the temporary file and leaves
    ``path`` as it was (absent, or its previous content). The final file gets
    the permissions a plain ``open(path, "w")`` would give (``0666`` less the
    umask), not ``mkstemp``'s owner-only ``0600``. The parent folder is created
    if needed.

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
    tmp = _create_temporary(path, suffix or "".join(path.suffixes))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(text: str, path) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path.

    Examples::

        >>> import tempfile, os
        >>> write_text("x\\n", os.path.join(tempfile.mkdtemp(), "a.md")).read_text()
        'x\\n'
    """
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


def write_json(obj: Any, path, *, indent: int = 2) -> Path:
    """Write ``obj`` as indented JSON (values JSON does not know as ``str``) to ``path`` atomically.

    Examples::

        >>> import tempfile, os
        >>> print(write_json({"n": 1}, os.path.join(tempfile.mkdtemp(), "a.json")).read_text(), end="")
        {
          "n": 1
        }
    """
    return write_text(json.dumps(obj, indent=indent, default=str) + "\n", path)


def write_csv(table, path, *, float_format: Optional[str] = None) -> Path:
    """Write a pandas DataFrame (without its index) to ``path`` atomically; return the path.

    Args:
        table (pandas.DataFrame): the table.
        path (str or Path): destination.
        float_format (str, optional): e.g. ``"%.6g"``. Default: pandas' full precision

    Examples::

        >>> import tempfile, os, pandas as pd
        >>> write_csv(pd.DataFrame({"a": [1.0 / 3]}), os.path.join(tempfile.mkdtemp(), "t.csv"),
        ...           float_format="%.3g").read_text()
        'a\\n0.333\\n'
    """
    with atomic_write(path) as tmp:
        table.to_csv(tmp, index=False, float_format=float_format)
    return Path(path)


def save_figure(fig, path, *, close: bool = True, **savefig_kwargs) -> Path:
    """Save a matplotlib figure to ``path`` atomically, then close it (unless ``close=False``).

    The format is that of the extension of ``path`` (``.png``, ``.pdf``, ...);
    without one, matplotlib's default format (``rcParams["savefig.format"]``).

    Args:
        fig (matplotlib.figure.Figure): the figure.
        path (str or Path): destination.
        close (bool, optional): close the figure afterwards, also when saving
            fails, so that pyplot does not keep it. Default: True
        **savefig_kwargs: passed to ``fig.savefig`` (``dpi``, ``bbox_inches``, ...).

    Examples::

        >>> import tempfile, os, matplotlib.pyplot as plt
        >>> fig = plt.figure()
        >>> save_figure(fig, os.path.join(tempfile.mkdtemp(), "f.png")).suffix, plt.fignum_exists(fig.number)
        ('.png', False)
    """
    import matplotlib
    import matplotlib.pyplot as plt

    path = Path(path)
    fmt = path.suffix[1:].lower() or matplotlib.rcParams["savefig.format"]
    try:
        with atomic_write(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, **savefig_kwargs)
    finally:
        if close:
            plt.close(fig)
    return path
