"""Output sets (captum_smocam._outputs): all-or-nothing publication, recovery after a kill, locks."""
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from captum_smocam import _outputs
from captum_smocam._outputs import OutputExistsError, OutputSet

MANIFEST = "scan_manifest.json"
OLD = {"scan_a.txt": "old a", "scan_b.txt": "old b", "scan_gone.txt": "old only"}
NEW = {"scan_a.txt": "new a", "scan_b.txt": "new b", "scan_c.txt": "new c"}
N_MOVES = 8  # publishing NEW over OLD: old manifest out, 3 old files out, 3 new files in, new manifest in


def _visible(folder: Path):
    """The files a reader sees: everything but smocam's hidden bookkeeping."""
    return {p.name: p.read_text() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def _publish(out, files, source="scan.nii.gz", merge=False, overwrite=False):
    oset = OutputSet(out, out, MANIFEST)
    with oset:
        stage = oset.new_stage()
        for name, text in files.items():
            (stage / name).write_text(text)
        try:
            return oset.commit(stage, {"source": source}, merge=merge, overwrite=overwrite)
        finally:
            oset.discard(stage)


def _set_of(out):
    """(files as text, manifest's files) as a reader checks them."""
    files = _visible(out)
    manifest = OutputSet(out, out, MANIFEST).read_manifest()
    files.pop(MANIFEST, None)
    return files, (sorted(manifest["files"]) if manifest else None)


@pytest.fixture
def old_set(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "user_notes.txt").write_text("mine")  # not smocam's: must survive everything
    _publish(out, OLD)
    expected = _set_of(out)
    assert expected == ({**OLD, "user_notes.txt": "mine"}, sorted(OLD))
    return out, expected


def test_commit_replaces_the_whole_set(old_set):
    out, _ = old_set
    written = _publish(out, NEW)
    assert _set_of(out) == ({**NEW, "user_notes.txt": "mine"}, sorted(NEW))  # scan_gone.txt retired with the old set
    assert written["files"] == sorted(NEW) and written["source"] == "scan.nii.gz"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [_outputs.LOCK_DIR]


def test_a_failed_move_restores_the_old_set(old_set, monkeypatch):
    """Whichever os.replace of the publication fails, the folder holds the old set, and nothing else."""
    out, expected = old_set
    real = os.replace
    for fail_at in range(N_MOVES):
        calls = []

        def flaky(src, dst, fail_at=fail_at, calls=calls):
            if not os.path.basename(src).startswith("."):  # the publication's moves, not atomic_write's renames
                calls.append(src)
                if len(calls) == fail_at + 1:
                    raise OSError(28, "No space left on device")
            return real(src, dst)

        monkeypatch.setattr(_outputs.os, "replace", flaky)
        with pytest.raises(OSError, match="No space left"):
            _publish(out, NEW)
        monkeypatch.setattr(_outputs.os, "replace", real)
        assert _set_of(out) == expected, fail_at
        assert not [p for p in out.iterdir() if p.name.startswith((".smocam-staging", ".smocam-old", ".smocam-txn"))]


def _killed_publish(out, kill_at):
    """Child process: publish NEW and die (no cleanup, no rollback) before move kill_at, or after the last."""
    real, calls = os.replace, []

    def deadly(src, dst):
        if os.path.basename(src).startswith("."):  # atomic_write's renames
            return real(src, dst)
        calls.append(src)
        if len(calls) == kill_at + 1:
            os._exit(9)
        real(src, dst)
        if kill_at == N_MOVES and len(calls) == N_MOVES:
            os._exit(9)

    _outputs.os.replace = deadly
    _publish(out, NEW)
    os._exit(0)


@pytest.mark.parametrize("kill_at", range(N_MOVES + 1))
def test_a_kill_during_the_move_leaves_old_or_new_never_a_mix(old_set, kill_at):
    out, expected_old = old_set
    child = multiprocessing.get_context("fork").Process(target=_killed_publish, args=(out, kill_at))
    child.start()
    child.join(30)
    assert child.exitcode == 9
    # The next run that takes the set's lock finishes or undoes the publication.
    with OutputSet(out, out, MANIFEST) as oset:
        oset.recover()
    state = _set_of(out)
    expected_new = ({**NEW, "user_notes.txt": "mine"}, sorted(NEW))
    assert state == (expected_new if kill_at == N_MOVES else expected_old)  # new once the manifest moved in
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [_outputs.LOCK_DIR]


def test_stale_temporary_folders_are_removed_and_live_ones_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # A staging folder of this set left by a dead run, and an older version's ownerless one (old mtime).
    stale = OutputSet(out, out, MANIFEST)
    with stale:
        dead = stale.new_stage()
    legacy = out / ".smocam-staging-k3j2x9"
    legacy.mkdir()
    (legacy / "half.nii.gz").write_text("x")
    os.utime(legacy, (time.time() - 2 * _outputs.LEGACY_STALE_S,) * 2)
    # A live run of another set, writing into its staging folder in the same --out.
    other = OutputSet(out, out, "other_manifest.json")
    other.acquire()
    live = other.new_stage()
    # A second run of the same set cannot take the lock while the first holds it.
    busy = OutputSet(out, out, "other_manifest.json")
    assert not busy.acquire(blocking=False)

    with OutputSet(out, out, MANIFEST) as oset:
        oset.recover()
    assert not dead.exists() and not legacy.exists()
    assert live.is_dir()  # another set's live run: untouched
    other.release()
    assert busy.acquire(blocking=False)
    busy.recover()
    assert not live.exists()  # now that its run is gone, the set's own next run removes it
    busy.release()


def test_outputs_of_another_input_are_never_overwritten_silently(old_set):
    out, expected = old_set
    with pytest.raises(OutputExistsError, match="another input"):
        _publish(out, NEW, source="other_scan.nii.gz", merge=True)
    assert _set_of(out) == expected
    # A file no manifest lists is not overwritten either.
    with pytest.raises(OutputExistsError, match="user_notes.txt"):
        _publish(out, {"user_notes.txt": "overwritten"}, merge=True)
    assert _set_of(out) == expected
    # Same input: the set grows (merge); --force replaces the other input's set.
    _publish(out, {"scan_c.txt": "new c"}, merge=True)
    assert _set_of(out)[1] == sorted([*OLD, "scan_c.txt"])
    _publish(out, NEW, source="other_scan.nii.gz", merge=True, overwrite=True)
    assert _set_of(out) == ({**NEW, "user_notes.txt": "mine"}, sorted(NEW))


def test_prepare_out_names_the_folder(tmp_path):
    with pytest.raises(OSError, match="cannot create the output folder '/proc/x'"):
        _outputs.prepare_out("/proc/x")
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="output folder"):
        _outputs.prepare_out(tmp_path / "file" / "sub")
