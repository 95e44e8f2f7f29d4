"""The selection rules of benchmarks/tune_smocam.py (issue 19): round 1 gates on fidelity, round 2 on pieces."""
import pandas as pd

from captum_smocam.benchmarking.tuning import paired_table, rank_table


def _table(rows):
    cols = ["config", "model", "subject", "target", "mass_dilated", "auroc", "max_on_target", "components",
            "fidelity", "seconds_per_map"]
    return pd.DataFrame(rows, columns=cols)


def _rows(config, mass, auroc, pieces, fid, secs=1.0, model="m"):
    return [[config, model, s, "t", mass + 0.001 * s, auroc, 1.0, pieces, fid, secs] for s in range(4)]


def test_round2_gates_on_pieces_not_on_fidelity():
    df = _table(_rows("current", 0.10, 0.90, 10, 0.05) + _rows("smooth", 0.12, 0.95, 2, 0.6)
                + _rows("scattered", 0.20, 0.99, 9, 0.01))
    round1 = rank_table(df, base="current")
    round2 = rank_table(df, base="current", fidelity_bound=None, max_components=3)
    assert "winner: **scattered**" in round1
    assert "winner: **smooth**" in round2
    assert "median pieces <= 3" in round2 and "fidelity <=" not in round2


def test_round2_says_when_nothing_is_eligible():
    df = _table(_rows("current", 0.10, 0.90, 10, 0.05) + _rows("other", 0.12, 0.95, 5, 0.6))
    assert "winner: none" in rank_table(df, base="current", fidelity_bound=None, max_components=3)


def test_round2_gate_uses_the_worst_model():
    df = _table(_rows("current", 0.10, 0.90, 10, 0.05, model="a") + _rows("current", 0.10, 0.90, 10, 0.05, model="b")
                + _rows("smooth", 0.12, 0.95, 2, 0.6, model="a") + _rows("smooth", 0.12, 0.95, 4, 0.6, model="b"))
    assert "winner: none" in rank_table(df, base="current", fidelity_bound=None, max_components=3)


def test_held_on_limits_the_scores_that_must_hold():
    # 'smooth' loses max_on_target clearly but keeps mass and AUROC
    base = _rows("current", 0.10, 0.90, 10, 0.05)
    other = [[r[0].replace("current", "smooth")] + r[1:] for r in base]
    for r in other:
        r[6] = 0.0
    df = _table(base + other)
    every = paired_table(df, "current")
    two = paired_table(df, "current", held_on=("mass_dilated", "auroc"))
    assert every.strip().splitlines()[-1].endswith("| False |")
    assert two.strip().splitlines()[-1].endswith("| True |")
    assert "`scores_held` on mass_dilated, auroc" in two


def test_round3_needs_mass_and_auroc_held_against_the_base():
    # 'compact' ranks first on AUROC but loses mass on every map; 'held' keeps both
    df = _table(_rows("current", 0.10, 0.90, 10, 0.05) + _rows("compact", 0.05, 0.99, 2, 0.7)
                + _rows("held", 0.11, 0.93, 3, 0.5))
    round2 = rank_table(df, base="current", fidelity_bound=None, max_components=3)
    round3 = rank_table(df, base="current", fidelity_bound=None, max_components=3,
                        must_hold=("mass_dilated", "auroc"))
    assert "winner: **compact**" in round2 or "winner: **held**" in round2
    assert "winner: **held**" in round3
    assert "held against `current`" in round3
