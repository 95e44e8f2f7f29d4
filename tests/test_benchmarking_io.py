"""Tests of captum_smocam.benchmarking.io: atomic writers of tables, text, JSON and figures."""
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from captum_smocam.benchmarking import io


def test_writers_round_trip_and_leave_no_temporary_file(tmp_path):
    df = pd.DataFrame({"method": ["smocam", "gradcam"], "auroc": [0.123456789, np.nan]})
    io.write_csv(df, tmp_path / "sub" / "a.csv")
    back = pd.read_csv(tmp_path / "sub" / "a.csv")
    assert back["auroc"].iloc[0] == 0.123457 and np.isnan(back["auroc"].iloc[1])  # 6 significant digits
    io.write_text("x\n", tmp_path / "a.md")
    io.write_json({"n": 1, "path": tmp_path}, tmp_path / "a.json")
    assert json.loads((tmp_path / "a.json").read_text()) == {"n": 1, "path": str(tmp_path)}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.csv", "a.json", "a.md", "sub"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("old\n")

    class Broken:
        def to_csv(self, tmp, **kw):
            open(tmp, "w").write("half")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.write_csv(Broken(), path)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["a.csv"]


def test_save_figure_writes_the_format_of_the_extension_and_closes_the_figure(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    io.save_figure(fig, tmp_path / "f.png", dpi=50)
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert not plt.fignum_exists(fig.number)
    fig, _ = plt.subplots()
    io.save_figure(fig, tmp_path / "f.pdf")
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"


def test_markdown_table_formats_floats_and_missing_values():
    df = pd.DataFrame({"model": ["vgg", "alexnet"], "slope": [0.03412, np.nan], "n": [9, 9]})
    assert io.markdown_table(df).splitlines() == [
        "| model | slope | n |", "|---|---|---|", "| vgg | 0.034 | 9 |", "| alexnet | nan | 9 |"]
    assert io.markdown_table(df, "{:.2f}").splitlines()[2] == "| vgg | 0.03 | 9 |"
