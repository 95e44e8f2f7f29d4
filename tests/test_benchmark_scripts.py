"""The scripts in benchmarks/ run end to end: their --quick modes, as subprocesses on the shipped models."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from captum_smocam.benchmarking import shipped_model_available

REPO = Path(__file__).resolve().parents[1]

needs_vgg = pytest.mark.skipif(not shipped_model_available("vgg"),
                               reason="the shipped model captum_smocam/data/vgg3d_default.pt is absent "
                                      "(train it with benchmarks/train.py, see docs/models.md)")


def run_script(name, *args):
    """Run ``benchmarks/<name>.py`` with ``args`` in the repository; fail with its output if it fails."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *args], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{name}.py {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@needs_vgg
def test_compare_methods_quick_scores_every_method(tmp_path):
    fig = tmp_path / "fig.png"
    run_script("compare_methods", "--quick", "--out-dir", str(tmp_path), "--figure", str(fig))
    df = pd.read_csv(tmp_path / "compare_methods_quick.csv")
    assert sorted(df["method"]) == sorted(["smocam", "gradcam", "occlusion", "saliency", "deeplift"])
    assert set(df["target"]) == {"right_lateral_ventricle"}
    for c in ("mass_inside", "mass_dilated", "auroc", "side_specificity"):
        assert df[c].between(0, 1).all(), c
    assert (df["mass_dilated"] >= df["mass_inside"]).all()
    assert (df["seconds_per_map"] > 0).all() and (df["peak_rss_mb"] > 0).all()
    rnd = pd.read_csv(tmp_path / "compare_randomization_quick.csv")
    assert set(rnd["step_name"]) == {"top (head)", "all layers"}
    assert set(rnd["layer"]) == {"head", "features"}
    assert fig.stat().st_size > 10_000


@needs_vgg
def test_asymmetry_quick_writes_consistent_tables_and_figures(tmp_path):
    models = ["vgg"] + (["vgg_independent"] if shipped_model_available("vgg_independent") else [])
    # An empty cache dir forces the reference volumes through cohort_volumes, which the script
    # checks against synth.generate_subject.
    run_script("asymmetry", "--quick", "--models", *models, "--out-dir", str(tmp_path), "--figures-dir",
               str(tmp_path), "--cache-dir", str(tmp_path / "no-cache"))
    preds = pd.read_csv(tmp_path / "predictions.csv")
    assert set(preds.model) == set(models)
    tail = preds[preds.kind == "override"]
    assert len(tail) == len(models)
    # +40 % case: the right hippocampus is 1.2/0.8 = 1.5 x the left one, exactly.
    assert np.allclose(tail.true_right / tail.true_left, 1.5, rtol=1e-3)
    assert np.allclose(preds.true_asym, preds.true_right - preds.true_left, atol=2e-4)  # CSV keeps 4 decimals
    assert np.allclose(preds.pred_asym, preds.pred_right - preds.pred_left, atol=2e-4)
    ref = pd.read_csv(tmp_path / "reference.csv")
    assert len(ref) == 4 * len(models)
    att = pd.read_csv(tmp_path / "attention.csv")
    assert set(att.target) == {"left_hippocampus", "right_hippocampus"}
    assert att.side_specificity.between(0, 1).all() and att.hemisphere_share.between(0, 1).all()
    regions = pd.read_csv(tmp_path / "regions.csv")
    assert regions.share.between(0, 1).all()
    for fig in ("asymmetry_distribution_quick.png", "asymmetry_scatter_quick.png", "asymmetry_masks_quick.png"):
        assert (tmp_path / fig).stat().st_size > 1000
