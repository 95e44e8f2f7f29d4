"""Output sets: all-or-nothing publication into ``--out``, and the locks that let runs share it.

An *output set* is what one command writes for one input: a cohort scan's
folder ``<out>/<subject>/`` with its done-marker, or the files ``smocam
explain`` writes for one scan into ``--out``. Its *manifest*, a JSON file in the
same folder, names every file of the set and is always the last file moved
into place; a set without its manifest is not complete.

Publication (:meth:`OutputSet.commit`), with the set's lock held:

1. the new files are written in a private staging folder
   ``<folder>/.smocam-staging-*`` (:meth:`OutputSet.new_stage`);
2. a journal ``<folder>/.smocam-txn-<manifest>`` records the staging folder, a
   backup folder ``<folder>/.smocam-old-*`` and the new file names;
3. the old manifest, then the old files that the new set replaces or drops,
   are moved (``os.replace``, atomic on one file system) into the backup
   folder; then the new files, and last the new manifest, are moved in;
4. the journal, the backup and the staging folder are removed.

An exception in step 3 undoes it at once; a kill leaves the journal, and the
next run that takes the lock (:meth:`OutputSet.recover`) either finishes the
commit (the new manifest was in place) or undoes it: the files moved in are
removed and the backup is moved back. So a reader always sees the old complete
set or the new complete set, never a mixture. Staging and backup folders of
the set that no journal needs any more are removed at the same time.

Locks (:class:`FileLock`; a set's is :meth:`OutputSet.acquire`) are ``flock``
locks on files in ``<out>/.smocam-locks/``; the operating system releases them
when a process dies, so a killed run never leaves a stale lock, and whether a
run is alive is whether its lock is held, not how old its files are. Cleanup of
a set's temporary folders only happens with its lock held, so one run never
deletes another live run's temporary files.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Optional, Union

from ._io import child_path, write_json

try:  # pragma: no cover - always there on Linux and macOS
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks, runs must not share --out
    fcntl = None

#: Folder of ``--out`` that holds the lock files (never deleted: deleting a lock file races with its users).
LOCK_DIR = ".smocam-locks"
#: Prefixes of a set's temporary folders and journal.
STAGING_PREFIX = ".smocam-staging-"
BACKUP_PREFIX = ".smocam-old-"
JOURNAL_PREFIX = ".smocam-txn-"
#: File inside each temporary folder naming the set it belongs to.
OWNER_FILE = ".smocam-owner.json"
#: A temporary folder with no owner file (written by an older version) counts as stale after this many seconds.
LEGACY_STALE_S = 600.0


class OutputExistsError(FileExistsError):
    """The folder holds files of another input (or files smocam did not write) under the new names."""


def _read_json(path: Path) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def prepare_out(out: Union[str, os.PathLike]) -> Path:
    """Create ``out`` if needed and check that files can be written there; return it as a Path.

    Called before any expensive work, so that ``--out /proc/x`` or a read-only
    folder fails at once with a message that names the output folder.

    Raises:
        ValueError: ``out`` is empty (``""`` would mean the current folder, never what a user meant).
        OSError: ``out`` cannot be created or is not a writable folder.
    """
    if not os.fspath(out).strip():
        raise ValueError(f"the output folder is empty ({os.fspath(out)!r}); name a folder (e.g. --out results)")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the output folder {str(out)!r}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OSError(f"cannot write to the output folder {str(out)!r}: permission denied")
    return out


class FileLock:
    """An ``flock`` on one file of ``<out>/.smocam-locks/``: held by a live process, released by the kernel when
    it dies, so a killed run never leaves a stale lock (and no rule of age decides what is stale).

    Args:
        path (str or Path): the lock file (created if missing; never needs deleting).

    Examples::

        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "a.lock")
        >>> a, b = FileLock(path), FileLock(path)
        >>> a.acquire(), b.acquire(blocking=False)
        (True, False)
        >>> a.release(); b.acquire(blocking=False)
        True
    """

    def __init__(self, path: Union[str, os.PathLike]) -> None:
        self.path = Path(path)
        self._fd: Optional[int] = None

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, blocking: bool = True, shared: bool = False) -> bool:
        """Take the lock (``shared``: several holders at once); with ``blocking=False`` return False at once if
        another process holds it in a conflicting mode. Without ``fcntl`` (Windows) every call succeeds."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
        self._fd = fd
        return True

    def release(self) -> None:
        """Release the lock (closing the file releases the ``flock``)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class OutputSet:
    """One output set: the files of ``folder`` named by the manifest ``folder/manifest``.

    Args:
        out (str or Path): the ``--out`` folder (holds ``.smocam-locks/``).
        folder (str or Path): where the set's files live: ``out`` itself or a
            sub-folder of it.
        manifest (str): the manifest's file name; also names the lock.

    Examples::

        >>> import tempfile, os
        >>> out = tempfile.mkdtemp()
        >>> oset = OutputSet(out, out, "scan_manifest.json")
        >>> with oset:
        ...     stage = oset.new_stage()
        ...     _ = (stage / "scan_map.txt").write_text("new")
        ...     _ = oset.commit(stage, {"source": "scan.nii.gz"})
        >>> oset.read_manifest()["files"], sorted(f for f in os.listdir(out) if not f.startswith("."))
        (['scan_map.txt'], ['scan_manifest.json', 'scan_map.txt'])
    """

    def __init__(self, out: Union[str, os.PathLike], folder: Union[str, os.PathLike], manifest: str) -> None:
        self.out = Path(out)
        self.folder = Path(folder)
        self.manifest = manifest
        self.manifest_path = child_path(self.folder, manifest)
        self.journal_path = child_path(self.folder, JOURNAL_PREFIX + manifest)
        self.lock_path = child_path(self.out / LOCK_DIR, manifest + ".lock")
        self._lock = FileLock(self.lock_path)
        self._mine: set = set()  # staging folders of this object (live, never stale)

    # ------------------------------------------------------------------ lock
    @property
    def locked(self) -> bool:
        """Whether this object holds the set's lock."""
        return self._lock.locked

    def acquire(self, blocking: bool = True) -> bool:
        """Take the set's lock; with ``blocking=False`` return False at once if another run holds it."""
        return self._lock.acquire(blocking)

    def release(self) -> None:
        """Release the lock (closing the file releases the ``flock``)."""
        self._lock.release()

    def __enter__(self) -> "OutputSet":
        self.acquire(blocking=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _need_lock(self, what: str) -> None:
        if not self._lock.locked:
            raise RuntimeError(f"OutputSet.{what} needs the lock of {self.lock_path} (use acquire())")

    # ------------------------------------------------------------------ reading
    def read_manifest(self) -> Optional[dict]:
        """The manifest as a dict, or None if there is none (or it cannot be read)."""
        return _read_json(self.manifest_path)

    def check_source(self, source: str, overwrite: bool = False) -> None:
        """Raise :class:`OutputExistsError` if the set already holds outputs of another ``source``.

        Called before the expensive work so that a collision fails early;
        :meth:`commit` checks again with the lock held.
        """
        old = self.read_manifest()
        if old is not None and not overwrite and old.get("source") not in (None, source):
            raise OutputExistsError(
                f"refusing to overwrite the outputs of {old.get('source')} in {self.folder} "
                f"({self.manifest}): they come from another input than {source}; use another --out, "
                f"or --force to replace them"
            )

    # ------------------------------------------------------------------ writing
    def new_stage(self) -> Path:
        """A new, empty staging folder for the set's files (lock held)."""
        self._need_lock("new_stage")
        self.folder.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.folder))
        self._own(stage)
        self._mine.add(stage.name)
        return stage

    def _own(self, tmp_dir: Path) -> None:
        write_json({"manifest": self.manifest, "pid": os.getpid(), "host": socket.gethostname(),
                    "created": time.time()}, tmp_dir / OWNER_FILE)

    def commit(self, stage: Path, manifest: dict, *, merge: bool = True, overwrite: bool = False) -> dict:
        """Publish the files of ``stage`` as the set, atomically; return the manifest written.

        Args:
            stage (Path): from :meth:`new_stage`; every file in it is published.
            manifest (dict): the manifest's content; ``"files"`` (the complete
                set) and ``"txn"`` (this commit's id) are added. A ``"source"``
                names the input the set was computed from.
            merge (bool, optional): keep the old set's other files when it has
                the same ``source`` (explain: other targets of the same scan);
                otherwise the old set is replaced as a whole. Default: True
            overwrite (bool, optional): replace a set of another ``source``,
                and files of the folder that no manifest of this set lists,
                instead of raising :class:`OutputExistsError`. Default: False

        Raises:
            OutputExistsError: see ``overwrite``; nothing is changed.
        """
        self._need_lock("commit")
        self.recover()
        old = self.read_manifest()
        source = manifest.get("source")
        same_source = old is not None and old.get("source") == source
        self.check_source(source, overwrite)
        listed = set(old.get("files", [])) if old else set()
        staged = sorted(p.name for p in stage.iterdir() if p.name != OWNER_FILE)
        if self.manifest in staged:
            raise ValueError(f"{stage} holds a file named like the manifest {self.manifest!r}")
        if not overwrite:
            foreign = [f for f in staged if f not in listed and os.path.lexists(child_path(self.folder, f))]
            if foreign:
                raise OutputExistsError(
                    f"refusing to overwrite {foreign[0]} in {self.folder}: no smocam manifest of this output set "
                    f"({self.manifest}) lists it; use another --out, or --force to overwrite"
                )
        keep_old = merge and same_source
        files = sorted(set(staged) | (listed if keep_old else set()))
        retire = set(staged) | (set() if keep_old else listed)
        retire = sorted(f for f in retire if os.path.lexists(child_path(self.folder, f)))
        txn = uuid.uuid4().hex
        written = {**manifest, "files": files, "txn": txn}
        write_json(written, child_path(stage, self.manifest))
        backup = Path(tempfile.mkdtemp(prefix=BACKUP_PREFIX, dir=self.folder))
        self._own(backup)
        journal = {"txn": txn, "stage": stage.name, "backup": backup.name, "new": staged + [self.manifest]}
        write_json(journal, self.journal_path)
        committed = False
        try:
            if os.path.lexists(self.manifest_path):  # first: while files move, the set has no manifest
                os.replace(self.manifest_path, backup / self.manifest)
            for f in retire:
                os.replace(child_path(self.folder, f), backup / f)
            for f in staged:
                os.replace(stage / f, child_path(self.folder, f))
            os.replace(stage / self.manifest, self.manifest_path)  # the commit point
            committed = True
        except BaseException:
            self._rollback(journal)
            raise
        finally:
            if committed:
                self._finish(journal)
        return written

    def discard(self, stage: Path) -> None:
        """Remove a staging folder that will not be committed."""
        self._mine.discard(Path(stage).name)
        shutil.rmtree(stage, ignore_errors=True)

    # ------------------------------------------------------------------ recovery
    def _finish(self, journal: dict) -> None:
        self.journal_path.unlink(missing_ok=True)
        for name in (journal.get("backup"), journal.get("stage")):
            if name:
                self._mine.discard(name)
                shutil.rmtree(child_path(self.folder, name), ignore_errors=True)

    def _rollback(self, journal: dict) -> None:
        stage = child_path(self.folder, journal["stage"])
        backup = child_path(self.folder, journal["backup"])
        for f in journal.get("new", []):
            target = child_path(self.folder, f)
            # A new file is either still in the stage or already moved in; only a moved one is removed.
            if not os.path.lexists(stage / f) and os.path.lexists(target):
                target.unlink()
        if backup.is_dir():
            for item in backup.iterdir():
                if item.name != OWNER_FILE:
                    os.replace(item, child_path(self.folder, item.name))
        self._finish(journal)

    def recover(self) -> None:
        """Finish or undo a commit a killed run left behind, and remove the set's stale temporary folders.

        Needs the lock: no other live run is then writing this set, so every
        staging or backup folder of the set is left over from a dead one.
        """
        self._need_lock("recover")
        journal = _read_json(self.journal_path)
        if journal is not None:
            current = self.read_manifest()
            if current is not None and current.get("txn") == journal.get("txn"):
                self._finish(journal)  # killed after the commit point: only cleanup was missing
            else:
                self._rollback(journal)
        if not self.folder.is_dir():
            return
        now = time.time()
        for item in self.folder.iterdir():
            if not item.is_dir() or not item.name.startswith((STAGING_PREFIX, BACKUP_PREFIX)) or item.name in self._mine:
                continue
            owner = _read_json(item / OWNER_FILE)
            if owner is not None:
                stale = owner.get("manifest") == self.manifest
            else:  # an older version's staging folder, or one being created this instant
                stale = now - item.stat().st_mtime > LEGACY_STALE_S
            if stale:
                shutil.rmtree(item, ignore_errors=True)
