"""The method-comparison benchmark: its helpers on known inputs, and its --quick run on the shipped model."""
import importlib.resources
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare_methods as cm  # noqa: E402
import sweep_smocam as sw  # noqa: E402

SHIPPED = importlib.resources.files("captum_smocam") / "data" / "vgg3d_default.pt"


def test_contralateral_swaps_sides_and_leaves_unpaired_alone():
    assert cm.contralateral("left_hippocampus") == "right_hippocampus"
    assert cm.contralateral("right_lateral_ventricle") == "left_lateral_ventricle"
    assert cm.contralateral("brainstem") is None


def test_localisation_scores_on_a_map_that_is_the_structure():
    mask = np.zeros((7, 8, 9), bool)
    mask[1:3, 2:4, 2:5] = True
    contra = np.zeros_like(mask)
    contra[4:6, 2:4, 2:5] = True
    s = cm.localisation_scores(mask.astype(float), mask, contra, margin_mm=2.0, spacing=(1.0, 1.0, 1.0))
    assert s["mass_inside"] == 1.0 and s["mass_dilated"] == 1.0 and s["auroc"] == 1.0
    assert s["side_specificity"] == 1.0
    # the contralateral structure instead: no mass inside, side specificity 0
    s = cm.localisation_scores(contra.astype(float), mask, contra, margin_mm=1.0, spacing=1.0)
    assert s["mass_inside"] == 0.0 and s["side_specificity"] == 0.0 and s["pointing"] == 0.0


def test_peak_memory_sees_a_large_allocation():
    with cm.PeakMemory() as small:
        pass
    with cm.PeakMemory() as big:
        t = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        float(t.sum())
        del t
    assert big.peak_mb > 48 and big.peak_mb > small.peak_mb


def test_summary_reports_mean_sd_and_bolds_the_best(tmp_path):
    df = pd.DataFrame({
        "target": ["t"] * 4, "method": ["smocam", "smocam", "gradcam", "gradcam"],
        "auroc": [0.9, 0.7, 0.6, 0.6], "seconds_per_map": [2.0, 2.0, 1.0, 2.0],
    })
    md = cm.summarise(df, ["smocam", "gradcam"], ["t"], ["auroc", "seconds_per_map"])
    assert "| t | SMOCAM | **0.8 ± 0.14** | 2 ± 0 |" in md
    assert "| t | Grad-CAM | 0.6 ± 0 | **1.5 ± 0.71** |" in md  # time: lower is better
    path = tmp_path / "a.csv"
    cm.write_csv_atomic(df, path)
    pd.testing.assert_frame_equal(pd.read_csv(path), df, check_dtype=False)
    assert not list(tmp_path.glob(".*tmp"))


def test_sweep_grid_and_ranking():
    cfgs = sw.one_at_a_time({"a": 1.0, "b": 2}, {"a": (0.5, 1.0), "b": (2, 4)})
    assert [c["name"] for c in cfgs] == ["base", "a=0.5", "b=4"]
    summary = pd.DataFrame({"config": ["x", "y"], "mass_dilated": [0.2, 0.3], "auroc": [0.9, 0.8],
                            "deletion_auc": [1.0, 2.0], "seconds_per_map": [1.0, 1.0]})
    ranked = sw.rank_configs(summary)
    assert list(ranked["config"]) == ["y", "x"]  # y wins two of three scores


@pytest.mark.skipif(not SHIPPED.is_file(),
                    reason="the shipped model captum_smocam/data/vgg3d_default.pt is not trained yet "
                           "(benchmarks/train.py, see docs/models.md)")
def test_quick_run_writes_scores_for_every_method(tmp_path):
    fig = tmp_path / "fig.png"
    assert cm.main(["--quick", "--out-dir", str(tmp_path), "--figure", str(fig)]) == 0
    df = pd.read_csv(tmp_path / "compare_methods_quick.csv")
    assert sorted(df["method"]) == sorted(cm.DEFAULT_METHODS)
    assert set(df["target"]) == {"right_lateral_ventricle"}
    for c in ("mass_inside", "mass_dilated", "auroc", "side_specificity"):
        assert df[c].between(0, 1).all(), c
    assert (df["mass_dilated"] >= df["mass_inside"]).all()
    assert (df["seconds_per_map"] > 0).all()
    rnd = pd.read_csv(tmp_path / "compare_randomization_quick.csv")
    assert set(rnd["step_name"]) == {"top (head)", "all layers"}
    assert fig.stat().st_size > 10_000
