"""Tests of captum_smocam.benchmarking.scores: the score bundles of one map and the summary tables."""
import numpy as np
import pandas as pd
import pytest
import torch

from captum_smocam.benchmarking import scores as S


def test_localisation_scores_on_a_map_that_is_the_structure():
    mask = np.zeros((7, 8, 9), bool)
    mask[1:3, 2:4, 2:5] = True
    contra = np.zeros_like(mask)
    contra[4:6, 2:4, 2:5] = True
    s = S.localisation_scores(mask.astype(float), mask, contra, margin_mm=2.0, spacing=(1.0, 1.0, 1.0))
    hits = {k: s.pop(k) for k in ("hit_top1", "hit_top3", "region_rank")}
    assert all(np.isnan(v) for v in hits.values())  # no label map given: no hit rate
    assert s == {"mass_inside": 1.0, "mass_dilated": 1.0, "mass_within_30mm": 1.0, "auroc": 1.0, "pointing": 1.0,
                 "pointing_dilated": 1.0, "max_distance_mm": 0.0, "max_within_mm": 1.0, "n_components": 1.0,
                 "false_positive_rate": 0.0, "side_specificity": 1.0, "mass_dilated_or_contra": 1.0,
                 "max_within_mm_or_contra": 1.0}
    # the contralateral structure instead: no mass inside, side specificity 0; within 2 voxels' margin
    # (the structures are 2 voxels apart) the dilated scores see it
    s = S.localisation_scores(contra.astype(float), mask, contra, margin_mm=1.0, spacing=1.0)
    assert s["mass_inside"] == 0.0 and s["side_specificity"] == 0.0 and s["pointing"] == 0.0
    s = S.localisation_scores(contra.astype(float), mask, contra, margin_mm=2.0, spacing=1.0)
    assert s["pointing_dilated"] == 0.0 and 0.0 < s["mass_dilated"] < 1.0
    # no contralateral structure: side specificity is undefined, not 0 or 1
    assert np.isnan(S.localisation_scores(mask.astype(float), mask, None, 2.0, 1.0)["side_specificity"])


def test_localisation_scores_hit_rates_compactness_and_the_contralateral_variants():
    labels = np.zeros((7, 8, 12), int)
    labels[1:3, 2:4, 2:5] = 1  # the structure
    labels[4:6, 2:4, 2:5] = 2  # its contralateral twin, 2 voxels away along x
    labels[0:7, 6:8, 8:12] = 3  # a large third region
    mask, contra = labels == 1, labels == 2
    a = np.zeros(labels.shape)
    a[contra] = 1.0  # the map is on the other side, in one blob, its maximum on the near edge ...
    a[4, 3, 3] = 1.2
    a[0, 7, 11] = 0.8  # ... plus a second blob far away, in region 3
    s = S.localisation_scores(a, mask, contra, margin_mm=1.0, spacing=(3.0, 1.0, 1.0), labels=labels, label=1)
    assert s["hit_top1"] == 0.0 and s["hit_top3"] == 1.0 and s["region_rank"] == 3.0  # behind 2 and 3
    assert s["n_components"] == 2.0
    assert s["max_distance_mm"] == pytest.approx(6.0)  # x 4 -> 2 at 3 mm per voxel (y, z inside)
    assert s["max_within_mm"] == 0.0 == s["pointing_dilated"]  # at 1 mm margin
    assert s["max_within_mm_or_contra"] == 1.0  # the maximum is on the twin
    assert s["mass_dilated"] == 0.0 and s["mass_dilated_or_contra"] == pytest.approx(12.2 / 13.0)
    assert s["mass_within_30mm"] == pytest.approx(1.0)  # everything within 30 mm
    n_out = int((~S.metrics.dilate_mask(mask, 1.0, (3.0, 1.0, 1.0))).sum())
    assert s["false_positive_rate"] == pytest.approx(13 / n_out)  # the twin's 12 voxels and the far one
    # At a 6 mm margin the maximum (6 mm away) is within it: max_within_mm is the pointing game with a margin.
    s6 = S.localisation_scores(a, mask, contra, margin_mm=6.0, spacing=(3.0, 1.0, 1.0))
    assert s6["max_within_mm"] == 1.0 == s6["pointing_dilated"]
    # An unpaired structure: the "or contralateral" scores are the structure's own.
    s = S.localisation_scores(a, mask, None, margin_mm=1.0, spacing=1.0)
    assert s["mass_dilated_or_contra"] == s["mass_dilated"] and s["max_within_mm_or_contra"] == s["max_within_mm"]


def test_ranks_table_ranks_by_direction_and_compares_paired_with_the_reference():
    rng = np.random.default_rng(0)
    subjects = np.arange(12)
    base = rng.normal(0.5, 0.1, subjects.size)
    rows = []
    for m, shift in (("smocam", 0.0), ("gradcam", -0.2), ("saliency", 0.0005)):
        for sub, b in zip(subjects, base):
            noise = rng.normal(0, 0.01) if m == "saliency" else 0.0
            rows.append({"subject": sub, "target": "t", "method": m, "auroc": b + shift + noise,
                         "n_components": {"smocam": 1, "gradcam": 5, "saliency": 9}[m]})
    df = pd.DataFrame(rows)
    r = S.ranks_table(df, ["smocam", "gradcam", "saliency", "absent"], ["t"], ["auroc", "n_components"],
                      n_boot=2000)
    auc = r[r["score"] == "auroc"].set_index("method")
    assert list(auc.index) == ["smocam", "gradcam", "saliency"]  # a method without rows is left out
    assert auc.loc["gradcam", "rank"] == 3.0 and auc.loc["gradcam", "vs_reference"] == "worse"
    assert auc.loc["gradcam", "difference"] == pytest.approx(-0.2)
    assert auc.loc["saliency", "vs_reference"] == "tied"  # 0.0005 apart with noise 0.01: not resolved
    assert auc.loc["smocam", "lower"] < auc.loc["smocam", "mean"] < auc.loc["smocam", "upper"]
    comp = r[r["score"] == "n_components"].set_index("method")
    assert comp["rank"].tolist() == [1.0, 2.0, 3.0]  # fewer blobs rank first
    assert comp.loc["saliency", "vs_reference"] == "worse"
    md = S.ranks_markdown(r)
    assert "**n_components** (lower is better)" in md
    assert "| Grad-CAM | 5 [5, 5] #2; Δ +4 [+4, +4] |" in md


def test_compactness_table_pools_maps_per_method():
    df = pd.DataFrame({"method": ["smocam"] * 3 + ["gradcam"], "max_within_mm": [1.0, 1.0, 0.0, 0.0],
                       "max_distance_mm": [0.0, 3.0, 30.0, 12.0], "n_components": [1.0, 2.0, 7.0, 9.0],
                       "hit_top1": [1.0, 0.0, 0.0, np.nan]})
    t = S.compactness_table(df, ["smocam", "gradcam"]).set_index("method")
    assert t.loc["smocam", "max_within_mm"] == pytest.approx(2 / 3)
    assert t.loc["smocam", "median_n_components"] == 2.0 and t.loc["smocam", "mean_max_distance_mm"] == 11.0
    assert t.loc["smocam", "hit_top1"] == pytest.approx(1 / 3) and np.isnan(t.loc["gradcam", "hit_top1"])


def test_faithfulness_scores_use_the_background_as_baseline_and_add_the_random_reference():
    def model(t):  # a linear regressor: the output is the sum of the voxels
        return t.flatten(1).sum(1, keepdim=True)

    x = torch.full((1, 1, 4, 4, 4), -1.0)  # background -1
    x[0, 0, :2] = 1.0
    good = (x[0, 0] + 1.0).numpy()  # the voxels above the background first
    s = S.faithfulness_scores(model, x, good, 0, sigma=2.0)
    assert s["prediction"] == pytest.approx(0.0) and s["baseline_prediction"] == pytest.approx(-64.0)
    assert set(s) == {"deletion_auc", "insertion_auc", "prediction", "baseline_prediction"}
    r = S.faithfulness_scores(model, x, good, 0, sigma=2.0, random_orderings=2, seed=3)
    assert r["deletion_auc"] > r["random_deletion_auc"]  # the right order removes the signal faster
    assert r["insertion_auc"] < r["random_insertion_auc"]


def test_summary_table_reports_mean_sd_and_bolds_the_best_by_direction():
    df = pd.DataFrame({
        "target": ["t"] * 4 + ["u"], "method": ["smocam", "smocam", "gradcam", "gradcam", "gradcam"],
        "auroc": [0.9, 0.7, 0.6, 0.6, np.nan], "seconds_per_map": [2.0, 2.0, 1.0, 2.0, 3.0],
    })
    md = S.summary_table(df, ["smocam", "gradcam"], ["t", "u"], ["auroc", "seconds_per_map"])
    assert "| t | SMOCAM | **0.8 ± 0.14** | 2 ± 0 |" in md
    assert "| t | Grad-CAM | 0.6 ± 0 | **1.5 ± 0.71** |" in md  # time: lower is better
    assert "| u | Grad-CAM | n/a | **3** |" in md  # no value: n/a; one value: no sd
    assert "| u | SMOCAM" not in md


def test_randomization_table_counts_constant_maps_and_undefined_rho():
    df = pd.DataFrame({"method": ["smocam"] * 2 + ["deeplift"] * 2,
                       "step_name": ["top (head)", "all layers"] * 2,
                       "spearman": [np.nan, np.nan, 0.96, 0.95], "map_constant": [True, True, False, False]})
    lines = S.randomization_table(df).splitlines()
    assert "| SMOCAM | top (head) | n/a | 0 | 1 of 1 |" in lines
    assert "| DeepLIFT | all layers | 0.950 | 1 | 0 of 1 |" in lines
    assert S.randomization_table(df.iloc[:0]) == ""


def test_paired_bootstrap_ci_covers_a_noisy_difference_and_excludes_a_clear_one():
    import numpy as np

    from captum_smocam.benchmarking.scores import paired_bootstrap_ci

    rng = np.random.default_rng(0)
    a = rng.normal(size=40)
    d, lo, hi = paired_bootstrap_ci(a + rng.normal(scale=0.01, size=40), a)
    assert lo <= 0.0 <= hi or abs(d) < 0.01
    d, lo, hi = paired_bootstrap_ci(a + 1.0, a)
    assert lo > 0.9 and hi < 1.1
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap_ci([1.0], [2.0])


def test_best_or_tied_table_says_best_tied_or_behind():
    import pandas as pd

    from captum_smocam.benchmarking.scores import best_or_tied_table

    subjects = list(range(6))
    df = pd.DataFrame({
        "subject": subjects * 3, "target": ["t"] * 18, "method": ["a"] * 6 + ["b"] * 6 + ["c"] * 6,
        "auroc": [0.90, 0.91, 0.92, 0.90, 0.91, 0.92] + [0.91, 0.90, 0.92, 0.91, 0.90, 0.92]
        + [0.5, 0.51, 0.52, 0.5, 0.51, 0.52],
        "insertion_auc": [0.3] * 6 + [0.2] * 6 + [0.1] * 6,  # lower is better: c is best
    })
    v = best_or_tied_table(df, "a", ["a", "b", "c"], ["t"], ["auroc", "insertion_auc"]).set_index("score")
    assert v.loc["auroc", "verdict"] in ("best", "tied")
    assert v.loc["insertion_auc", "best"] == "c" and v.loc["insertion_auc", "verdict"] == "behind"
    assert best_or_tied_table(df, "c", ["a", "b", "c"], ["t"], ["auroc"])["verdict"].tolist() == ["behind"]


def test_summary_table_bolds_every_tied_best_and_none_when_all_are_equal():
    df = pd.DataFrame({"target": ["t"] * 3, "method": ["smocam", "gradcam", "saliency"],
                       "hit_top1": [0.0, 0.0, 0.0], "auroc": [0.9, 0.9, 0.5]})
    md = S.summary_table(df, ["smocam", "gradcam", "saliency"], ["t"], ["hit_top1", "auroc"])
    assert "| t | SMOCAM | 0 | **0.9** |" in md and "| t | Grad-CAM | 0 | **0.9** |" in md
    assert "| t | Saliency | 0 | 0.5 |" in md
