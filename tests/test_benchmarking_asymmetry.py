"""Tests of captum_smocam.benchmarking.asymmetry: the asymmetry benchmark's subjects, fits and criteria."""
import math

import numpy as np
import pandas as pd
import pytest

from captum_smocam.benchmarking import asymmetry as asym

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
