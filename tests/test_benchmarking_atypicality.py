"""benchmarking.atypicality: the tail of the asymmetry cohort and how a ranking recovers it."""
import numpy as np
import pandas as pd
import pytest

from captum_smocam.benchmarking.asymmetry import build_subject_specs
from captum_smocam.benchmarking.atypicality import precision_at_k, ranking_summary, tail_subjects

SPLITS = {"train": [0, 480], "val": [10000, 10060], "test": [20000, 20100]}


def test_the_tail_is_the_override_subjects_at_30_percent_or_more():
    specs = build_subject_specs({"vgg": {"lr_correlation": 0.95, "splits": SPLITS}}, 3, [-40, -30, -20, 0, 30, 40])
    assert tail_subjects(specs) == ["sub-20050", "sub-20051", "sub-20054", "sub-20055"]
    assert tail_subjects(specs, min_level=40) == ["sub-20050", "sub-20055"]


def test_precision_at_k_and_ranking_summary():
    scores = pd.Series([9.0, 1.0, 8.0, 0.5, 7.0, np.nan], index=list("abcdef"))
    assert precision_at_k(scores, {"a", "c"}) == 1.0
    assert precision_at_k(scores, {"a", "d"}) == 0.5
    assert precision_at_k(scores, {"f", "d"}) == 0.0  # NaN ranks last
    assert precision_at_k(scores, {"a"}, k=3) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        precision_at_k(scores, set())
    s = ranking_summary(scores.dropna(), {"a", "b"}, errors=pd.Series([3.0, 0.1, 2.0, 0.0, 1.0], index=list("abcde")))
    assert s["positive_ranks"] == [1, 4] and s["k"] == 2 and s["precision_at_k"] == 0.5
    assert s["auc"] == pytest.approx(4 / 6)  # a beats c, d, e; b beats d only
    assert s["spearman_abs_error"] == pytest.approx(1.0)  # same order
