"""docs/own-model.md, run as written (fewer SMOCAM steps): a MONAI network on LAS 2 mm scans (issue 20).

The page's ```python blocks run in one namespace and its ``smocam`` lines through the CLI's ``main``, in a
temporary folder; then the results are checked against the label maps themselves.
"""
import re
import shlex
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("monai")

from captum_smocam.cli import main  # noqa: E402
from captum_smocam.plotting import plot_attribution  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "own-model.md"
FAST = [(r"n_steps=100", "n_steps=3"), (r"--n-steps 100", "--n-steps 3")]


def _blocks(text):
    """``(language, code)`` of every fenced block, in order."""
    for lang, code in re.findall(r"```(python|bash)\n(.*?)```", text, flags=re.S):
        for old, new in FAST:
            code = code.replace(old, new)
        yield lang, code


def _run_bash(code):
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("smocam "):
            assert main(shlex.split(line)[1:]) == 0, line


def _share(map_data, labels, code):
    """Share of a map's (positive) attention inside voxels labelled ``code``, both on one grid."""
    a = np.maximum(map_data, 0.0)
    return float(a[labels == code].sum() / a.sum())


def test_walkthrough_runs_and_gets_left_and_right_right(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for lang, code in _blocks(DOC.read_text()):
        if lang == "python":
            exec(compile(code, str(DOC), "exec"), namespace)
        else:
            _run_bash(code)

    # The data are what the page says: FSL's 2 mm MNI grid, LAS, aseg codes.
    t1 = nib.load("data/sub-0001_T1w.nii.gz")
    lab = nib.load("data/sub-0001_labels.nii.gz")
    assert t1.shape == (91, 109, 91) and nib.aff2axcodes(t1.affine) == ("L", "A", "S")
    labels = np.asarray(lab.dataobj)

    # Region tables: the geometry check of section 5 gives the left hippocampus all of the attention.
    check = namespace["check"]
    assert check.loc["Left-Hippocampus", "share"] == pytest.approx(1.0, abs=1e-6)
    assert check.loc["Right-Hippocampus", "share"] == pytest.approx(0.0, abs=1e-9)
    # The mask's table agrees with the saved map intersected with the label map voxel by voxel
    # (same grid here), left and right included.
    saved = np.asarray(nib.load("sub-0001_left_hippocampus.nii.gz").get_fdata())
    table = namespace["table"].set_index("name")
    for name, code in (("Left-Hippocampus", 17), ("Right-Hippocampus", 53), ("Left-Cerebral-Cortex", 3)):
        assert table.loc[name, "share"] == pytest.approx(_share(saved, labels, code), rel=1e-3, abs=1e-6)
    assert float(namespace["mask"].max()) > 0.0  # a mask, not nothing
    fidelity = namespace["smocam"].fidelity  # what the mask keeps is measured and reported (issue 20, item 4)
    assert fidelity.shape == (1,) and bool(torch.isfinite(fidelity).all())

    # Plots: a map of the left hippocampus (x < 0) is drawn on the left half of the axial cut.
    left_img = nib.Nifti1Image((labels == 17).astype(np.float32), lab.affine)
    fig = plot_attribution(left_img, bg_img=t1, display_mode="z", threshold=0.5)
    drawn = np.ma.getdata(fig.axes[0].images[-1].get_array())
    cols = np.nonzero(drawn.max(axis=0) > 0.5)[0]
    assert cols.size and cols.max() < drawn.shape[1] / 2

    # The CLI: one scan, and the cohort in one command, with region tables that match the label maps.
    assert any(Path("explained").rglob("*left_hippocampus*.nii.gz"))
    results = Path("results")
    assert (results / "cohort_regions.csv").is_file() and (results / "cohort_predictions.csv").is_file()
    for sid in ("sub-0000", "sub-0001"):
        regions = pd.read_csv(results / sid / f"{sid}_regions.csv")
        assert set(regions["target"]) == {"left_hippocampus", "right_hippocampus"}
        sub_labels = np.asarray(nib.load(f"data/{sid}_labels.nii.gz").dataobj)
        for target in ("left_hippocampus", "right_hippocampus"):
            m = np.asarray(nib.load(results / sid / f"{sid}_smocam_{target.replace('_', '-')}.nii.gz").get_fdata())
            rows = regions[regions["target"] == target].set_index("name")
            for name, code in (("Left-Hippocampus", 17), ("Right-Hippocampus", 53)):
                assert rows.loc[name, "share"] == pytest.approx(_share(m, sub_labels, code), rel=1e-3, abs=1e-6)
