"""File names and atomic file writing, shared by every writer in the package.

:func:`safe_name` turns any text (a file stem, an output name from a
checkpoint) into one harmless path component, and :func:`child_path` refuses
anything else, so that no output of the ``smocam`` command can land outside
its ``--out`` folder whatever the inputs are called.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Union

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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    An exception inside the block removes the temporary file and leaves
    ``path`` as it was (absent, or its previous content). The final file gets
    the permissions a plain ``open(path, "w")`` would give (``0666`` less the
    umask), not ``mkstemp``'s owner-only ``0600``.

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
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
