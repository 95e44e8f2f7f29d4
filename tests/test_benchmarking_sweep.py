"""Tests of captum_smocam.benchmarking.sweep: configurations, the selection rule, command-line overrides."""
import pandas as pd
import pytest

from captum_smocam.benchmarking import sweep


def test_one_at_a_time_moves_each_parameter_alone():
    cfgs = sweep.one_at_a_time({"a": 1.0, "b": 2}, {"a": (0.5, 1.0), "b": (2, 4)})
    assert [c["name"] for c in cfgs] == ["base", "a=0.5", "b=4"]
    assert cfgs[1] == {"a": 0.5, "b": 2, "name": "a=0.5"} and cfgs[2] == {"a": 1.0, "b": 4, "name": "b=4"}


def test_rank_configs_by_mean_rank_then_time_and_direction():
    summary = pd.DataFrame({"config": ["x", "y", "z"], "mass_dilated": [0.2, 0.3, 0.3], "auroc": [0.9, 0.8, 0.8],
                            "deletion_auc": [1.0, 2.0, 2.0], "seconds_per_map": [1.0, 3.0, 2.0]})
    ranked = sweep.rank_configs(summary)
    assert list(ranked["config"]) == ["z", "y", "x"]  # y and z win two of three scores; z is faster
    # a lower-is-better score ranks the other way
    ranked = sweep.rank_configs(summary.assign(insertion_auc=[0.1, 0.5, 0.5]), scores=["insertion_auc"])
    assert ranked["config"].iloc[0] == "x" and ranked["rank_insertion_auc"].iloc[0] == 1.0


def test_parse_overrides_types_values_like_the_grid():
    grid = {"smooth_weight": (0.01, 0.05), "n_steps": (50, 100), "layer": ("features.block2",)}
    assert sweep.parse_overrides(["n_steps=20", "layer=features.block3"], grid, multi=False) == \
        {"n_steps": 20, "layer": "features.block3"}
    assert sweep.parse_overrides(["smooth_weight=0.1,1"], grid, multi=True) == {"smooth_weight": (0.1, 1.0)}
    assert sweep.parse_overrides(None, grid, multi=False) == {}
    for bad in ("lr=0.5", "n_steps", "n_steps="):
        with pytest.raises(ValueError, match=repr(bad)):
            sweep.parse_overrides([bad], grid, multi=False)
