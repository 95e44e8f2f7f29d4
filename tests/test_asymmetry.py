"""Tests of benchmarks/asymmetry.py: its helpers, and the --quick run on the shipped models."""
import importlib.resources
import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("asymmetry_benchmark", REPO / "benchmarks" / "asymmetry.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


asym = _load_script()

SPLITS = {"train": [0, 480], "val": [10000, 10060], "test": [20000, 20100]}


def test_override_factors_give_the_requested_asymmetry():
    f = asym.override_factors(40)
    assert f == {"left_hippocampus": 0.8, "right_hippocampus": 1.2}
    r, l_ = f["right_hippocampus"], f["left_hippocampus"]
    assert (r - l_) / ((r + l_) / 2) == pytest.approx(0.4)
    g = asym.override_factors(-30)
    assert g["left_hippocampus"] > g["right_hippocampus"]
    with pytest.raises(ValueError, match="150"):
        asym.override_factors(150)


def test_fit_line_slope_and_degenerate_cases():
    f = asym.fit_line([-1.0, 0.0, 1.0, 2.0], [0.1 * v + 0.3 for v in (-1.0, 0.0, 1.0, 2.0)])
    assert f["slope"] == pytest.approx(0.1)
    assert f["intercept"] == pytest.approx(0.3)
    assert f["pearson_r"] == pytest.approx(1.0)
    flat = asym.fit_line([1.0, 1.0], [0.0, 2.0])  # no spread in x: no slope
    assert math.isnan(flat["slope"]) and flat["mae_cm3"] == pytest.approx(1.0)
    # an exact line: every bootstrap resample has the same slope
    assert f["slope_lo95"] == pytest.approx(0.1) and f["slope_hi95"] == pytest.approx(0.1)


def test_fit_line_bootstrap_interval_covers_the_noise():
    rng = np.random.default_rng(1)
    t = np.linspace(-1.5, 1.5, 9)
    noisy = asym.fit_line(t, 0.5 * t + rng.normal(0, 0.3, t.size))
    assert noisy["slope_lo95"] < noisy["slope"] < noisy["slope_hi95"]
    assert 0.05 < noisy["slope_hi95"] - noisy["slope_lo95"] < 1.0
    assert asym.fit_line(t, 0.5 * t + rng.normal(0, 0.3, t.size), seed=3)["slope_lo95"] != noisy["slope_lo95"]


def test_subject_specs_stay_in_the_test_split_and_cover_both_cohorts():
    metas = {"a": {"lr_correlation": 0.95, "cohort_seed": 0, "splits": SPLITS},
             "b": {"lr_correlation": 0.0, "cohort_seed": 0, "splits": SPLITS}}
    specs = asym.build_subject_specs(metas, 3, [-40, 0, 40])
    natural = [s for s in specs if s["kind"] == "natural"]
    tail = [s for s in specs if s["kind"] == "override"]
    assert sorted({s["lr_correlation"] for s in natural}) == [0.0, 0.95]
    assert len(natural) == 6 and len({s["index"] for s in natural}) == 6
    assert [s["level_pct"] for s in tail] == [-40.0, 0.0, 40.0]
    assert all(20000 <= s["index"] < 20100 for s in specs)
    bad = {"a": {"lr_correlation": 0.95, "splits": {**SPLITS, "train": [0, 20060]}}}
    with pytest.raises(ValueError, match="train split"):
        asym.build_subject_specs(bad, 1, [40])


def test_criteria_verdicts_follow_the_numbers():
    fit = pd.DataFrame([dict(model="c", subset="override", slope=0.1), dict(model="i", subset="override", slope=0.9)])
    rows = []
    for model, ss_tail, ss_ctrl in (("c", 0.5, 0.5), ("i", 0.9, 0.9)):
        for level, v in ((-40, ss_tail), (40, ss_tail), (0, ss_ctrl)):
            rows.append(dict(model=model, method="smocam", level_pct=level, side_specificity_density=v))
    verdicts = [r[2] for r in asym.evaluate_criteria(fit, pd.DataFrame(rows), "c", "i")]
    assert verdicts == ["yes", "yes", "yes", "no"]  # the correlated model is unspecific on the control too
    fit.loc[1, "slope"] = 0.3  # the independent model fails as well
    assert [r[2] for r in asym.evaluate_criteria(fit, pd.DataFrame(rows), "c", "i")][1] == "no"
    assert [r[2] for r in asym.evaluate_criteria(fit.iloc[:0], None, "c", None)] == ["n/a", "n/a"]


def test_cohort_volumes_equal_generate_subject_volumes():
    from captum_smocam import synth

    for index, r in ((3, 0.95), (5, 0.0)):
        full = synth.generate_subject(index, lr_correlation=r).volumes
        fast = asym.cohort_volumes(index, r, 0)
        assert set(fast) == set(synth.STRUCTURE_NAMES)
        assert max(abs(full[k] - fast[k]) for k in full) < 1e-9
    # the cohort correlation is passed on: it changes the right side's draw
    a, b = asym.cohort_volumes(3, 0.95, 0), asym.cohort_volumes(3, 0.0, 0)
    assert abs(a["right_hippocampus"] - b["right_hippocampus"]) > 1e-3


def _shipped(name):
    from captum_smocam.models import DEFAULT_MODELS

    return (importlib.resources.files("captum_smocam") / "data" / DEFAULT_MODELS[name]).is_file()


@pytest.mark.skipif(not _shipped("vgg"), reason="shipped model captum_smocam/data/vgg3d_default.pt is absent "
                    "(train it with benchmarks/train.py, see docs/models.md)")
def test_quick_run_writes_consistent_tables_and_figures(tmp_path):
    models = ["vgg"] + (["vgg_independent"] if _shipped("vgg_independent") else [])
    # An empty cache dir forces the reference volumes through cohort_volumes, whose
    # exactness against synth.generate_subject the script checks (RuntimeError otherwise).
    rc = asym.main(["--quick", "--models", *models, "--out-dir", str(tmp_path), "--figures-dir", str(tmp_path),
                    "--cache-dir", str(tmp_path / "no-cache")])
    assert rc == 0
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


def test_reference_volumes_read_the_chunked_training_cache(tmp_path):
    """train.py caches 1000 training subjects as chunks [0,400), [400,800), [800,1000);
    the reference distribution must be all of them, in order, and only from the model's synth.py."""
    names = list(asym.synth.STRUCTURE_NAMES)
    meta = {"splits": {"train": [0, 1000]}, "lr_correlation": 0.0, "cohort_seed": 0,
            "spacing_mm": asym.synth.DEFAULT_SPACING, "synth_sha1": "abc"}
    paths = asym._train_cache_paths(meta, tmp_path)
    assert [p.name.split("_")[2] for p in paths] == ["0-400", "400-800", "800-1000"]
    y = np.arange(1000 * len(names), dtype=float).reshape(1000, len(names))
    for path, (a, b) in zip(paths, [(0, 400), (400, 800), (800, 1000)]):
        np.save(path, y[a:b])
        Path(str(path).replace("_y.npy", "_synth.txt")).write_text("abc\n")
    left, right, source = asym.reference_volumes(meta, 10, tmp_path, set())
    np.testing.assert_array_equal(left, y[:, names.index("left_hippocampus")])
    np.testing.assert_array_equal(right, y[:, names.index("right_hippocampus")])
    assert "1000 training subjects" in source
    # a chunk made by another synth.py: the cache is not used at all
    Path(str(paths[1]).replace("_y.npy", "_synth.txt")).write_text("other\n")
    assert asym._read_train_cache(meta, tmp_path) is None
