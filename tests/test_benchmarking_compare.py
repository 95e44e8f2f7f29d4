"""The report of a method comparison, from per-map rows of one run or several."""
import numpy as np
import pandas as pd

from captum_smocam.benchmarking.compare import comparison_report, merge_rows


def _rows(method, auroc, subjects=(1, 2, 3, 4), **extra):
    return pd.DataFrame({"subject": list(subjects), "target": "t", "method": method, "auroc": auroc,
                         "mass_dilated": auroc, "max_within_mm": 1.0, "n_components": 2.0,
                         "reference_source": "x" if method.startswith("smocam") else "", **extra})


def test_merge_rows_keeps_the_first_order_and_the_last_value():
    a = pd.concat([_rows("smocam", [0.5] * 4), _rows("gradcam", [0.6] * 4)])
    b = _rows("smocam", [0.9] * 4)
    m = merge_rows([a, b])
    assert len(m) == 8 and list(m["method"])[:4] == ["smocam"] * 4
    assert m[m["method"] == "smocam"]["auroc"].tolist() == [0.9] * 4


def test_comparison_report_judges_every_smocam_row_against_the_baselines_only():
    rng = np.random.default_rng(0)
    df = pd.concat([_rows("smocam", 0.9 + rng.normal(0, 0.01, 4)), _rows("smocam_norefs", 0.5 + rng.normal(0, 0.01, 4)),
                    _rows("smocam_poster", [0.99] * 4), _rows("gradcam", 0.7 + rng.normal(0, 0.01, 4))])
    text, tables = comparison_report(df, ["smocam", "smocam_norefs", "smocam_poster", "gradcam"], ["t"],
                                     baselines=["gradcam", "occlusion"], n_boot=500)
    v = tables["verdicts"].set_index(["smocam", "score"])["verdict"]
    assert v[("smocam", "auroc")] == "best" and v[("smocam_norefs", "auroc")] == "behind"
    assert "smocam_poster" not in set(tables["verdicts"]["smocam"])  # the poster's objective is shown, not judged
    ranks = tables["ranks"].set_index(["score", "method"])
    assert ranks.loc[("auroc", "smocam_poster"), "rank"] == 1.0
    assert ranks.loc[("auroc", "gradcam"), "vs_reference"] == "worse"  # the reference is SMOCAM (first row)
    assert tables["compactness"].set_index("method").loc["gradcam", "median_n_components"] == 2.0
    assert "| SMOCAM (no references) | t | auroc | SMOCAM |" not in text  # verdicts compare with baselines only
    assert "- SMOCAM (no references): x" in text
