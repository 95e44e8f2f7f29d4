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


def test_atomic_write_never_touches_the_process_umask(tmp_path, monkeypatch):
    """Reading the umask means setting it: another thread would create files with the wrong mode meanwhile."""
    def refuse(mask):
        raise AssertionError("os.umask called")

    monkeypatch.setattr(os, "umask", refuse)
    with atomic_write(tmp_path / "a.txt") as tmp:
        with open(tmp, "w") as fh:
            fh.write("x")
    assert (tmp_path / "a.txt").read_text() == "x"


def test_writers_round_trip_without_leftovers(tmp_path):
    import json

    import pandas as pd

    from captum_smocam._io import write_csv, write_json, write_text

    write_csv(pd.DataFrame({"a": [1.0 / 3, 2.0]}), tmp_path / "t.csv", float_format="%.3g")
    assert (tmp_path / "t.csv").read_text() == "a\n0.333\n2\n"
    write_json({"path": tmp_path, "n": [1, 2]}, tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text()) == {"path": str(tmp_path), "n": [1, 2]}
    assert (tmp_path / "t.json").read_text().endswith("\n")
    write_text("é\n", tmp_path / "sub" / "t.md")
    assert (tmp_path / "sub" / "t.md").read_bytes() == "é\n".encode("utf-8")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["sub", "t.csv", "t.json", "t.md"]


def test_save_figure_format_close_and_failure(tmp_path):
    import matplotlib.pyplot as plt

    from captum_smocam._io import save_figure

    fig = plt.figure()
    save_figure(fig, tmp_path / "f.PDF", close=False)
    assert (tmp_path / "f.PDF").read_bytes()[:4] == b"%PDF" and plt.fignum_exists(fig.number)
    save_figure(fig, tmp_path / "noext")
    assert (tmp_path / "noext").read_bytes()[:4] == b"\x89PNG" and not plt.fignum_exists(fig.number)
    fig = plt.figure()
    with pytest.raises(ValueError):
        save_figure(fig, tmp_path / "f.unknown-format")
    assert not plt.fignum_exists(fig.number)  # closed even though saving failed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.PDF", "noext"]
