"""Atomic file writing, shared by every writer in the package."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
