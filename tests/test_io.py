"""Atomic writes: all or nothing, with ordinary permissions."""
import os
import stat

import pytest

from captum_smocam._io import atomic_write


def test_success_renames_with_umask_permissions(tmp_path):
    target = tmp_path / "sub" / "a.csv"
    old = os.umask(0o022)
    try:
        with atomic_write(target) as tmp:
            assert tmp.endswith(".part.csv")
            with open(tmp, "w") as fh:
                fh.write("x")
    finally:
        os.umask(old)
    assert target.read_text() == "x"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    assert os.listdir(target.parent) == ["a.csv"]


def test_failure_leaves_previous_content_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            with open(tmp, "w") as fh:
                fh.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]
