"""captum_smocam.model_card: describing any network, and what reads the description (issue 20)."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from captum_smocam import SMOCAM, describe_model
from captum_smocam._text import shorten_list, shorten_message
from captum_smocam.model_card import (
    check_description,
    load_model_description,
    model_description,
    model_fingerprint,
    save_model_description,
    target_indices,
)

SHAPE = (7, 8, 9)
LAS_2MM = [[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]]


class TinyNet(nn.Module):
    """Not one of the package's architectures: no n_outputs, no output_std buffer, no default_layer."""

    def __init__(self, n_outputs=2):
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, n_outputs))

    def forward(self, x):
        return self.head(self.body(x))


def describe(net, **overrides):
    kwargs = dict(input_shape=SHAPE, affine=LAS_2MM, output_names=["left", "right"], output_units="cm3",
                  output_std=[0.5, 0.7], normalization="monai_nonzero", default_layer="body")
    kwargs.update(overrides)
    return describe_model(net, **kwargs)


def test_describe_model_validates_and_is_carried():
    net = TinyNet()
    meta = describe(net)
    assert meta["spacing_mm"] == [2.0, 2.0, 2.0] and meta["input_shape"] == list(SHAPE)
    assert meta["intensity_normalization"] == "monai_nonzero" and meta["output_std"] == [0.5, 0.7]
    assert model_description(net) == meta  # carried by the module


@pytest.mark.parametrize("overrides, message", [
    (dict(input_shape=(7, 8)), r"input_shape must be 3 positive ints"),
    (dict(affine=np.zeros((4, 4))), r"affine must be an invertible 4 x 4"),
    (dict(output_names=["a", "a"]), r"repeats 'a'"),
    (dict(output_names=["a", "b", "c"], output_std=None), r"returns \(1, 2\) for one scan, expected \(1, 3\)"),
    (dict(output_std=[1.0, -1.0]), r"output_std must be finite numbers > 0"),
    (dict(output_std=[1.0]), r"output_std has 1 values but there are 2 output names"),
    (dict(normalization="zscore"), r"unknown normalisation method 'zscore'"),
    (dict(default_layer="features.block3"), r"default_layer 'features.block3' is not a layer of the model"),
    (dict(output_units=["cm3"]), r"output_units must be one str or 2 str"),
    (dict(affine=None), r"needs the model grid's affine"),
])
def test_describe_model_errors_are_one_line(overrides, message):
    with pytest.raises(ValueError, match=message) as err:
        describe(TinyNet(), **overrides)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_describe_model_keeps_training_mode_and_spacing_builds_an_ras_grid():
    net = TinyNet().train()
    meta = describe(net, affine=None, spacing=2.0)
    assert net.training
    assert np.allclose(np.asarray(meta["affine"])[:3, 3], -(np.asarray(SHAPE) - 1) / 2 * 2.0)


def test_deprecated_normalisation_name_warns_and_points_to_the_clear_name():
    with pytest.warns(DeprecationWarning, match="zscore_by_foreground"):
        meta = describe(TinyNet(), normalization="zscore_nonzero")
    assert meta["intensity_normalization"] == "zscore_nonzero"  # as given; read as zscore_by_foreground


def test_reference_inputs_must_match_the_grid():
    net = TinyNet()
    meta = describe(net, reference_inputs=torch.zeros(3, 1, *SHAPE))
    assert meta["n_reference_inputs"] == 3 and net.reference_inputs.shape == (3, 1, *SHAPE)
    with pytest.raises(ValueError, match=r"reference_inputs must be K x 1 x 7 x 8 x 9"):
        describe(TinyNet(), reference_inputs=torch.zeros(3, 1, 8, 8, 9))


def test_json_description_round_trip_and_errors(tmp_path):
    meta = describe(TinyNet())
    path = save_model_description(meta, tmp_path / "model.json")
    assert load_model_description(path) == check_description(meta)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(open(path).read()), "input_shape": [7, 8]}))
    with pytest.raises(ValueError, match=r"bad.json: input_shape must be 3 positive ints"):
        load_model_description(bad)
    (tmp_path / "not.json").write_text("{")
    with pytest.raises(ValueError, match="is not JSON"):
        load_model_description(tmp_path / "not.json")
    with pytest.raises(FileNotFoundError):
        load_model_description(tmp_path / "missing.json")


def test_targets_by_name_and_relu_attributions():
    """On today's main both raise: a str target is refused, relu_attributions is an unknown argument."""
    torch.manual_seed(0)
    net = TinyNet().eval()
    describe(net)
    x = torch.randn(2, 1, *SHAPE)
    smocam = SMOCAM(net, net.body)
    by_index = smocam.attribute(x, target=[1, 0], n_steps=3)
    by_name = smocam.attribute(x, target=["right", "left"], n_steps=3)
    torch.testing.assert_close(by_name, by_index)
    torch.testing.assert_close(smocam.attribute(x, target="right", n_steps=3),
                               smocam.attribute(x, target=1, n_steps=3))
    relu = smocam.attribute(x, target=1, n_steps=3, relu_attributions=True)
    torch.testing.assert_close(relu, smocam.attribute(x, target=1, n_steps=3))  # a mask is already >= 0
    assert bool((relu >= 0).all())
    with pytest.raises(ValueError, match=r"unknown target 'middle'; the model's outputs are left, right"):
        smocam.attribute(x, target="middle", n_steps=1)
    bare = TinyNet().eval()
    with pytest.raises(ValueError, match=r"carries no output names: pass an index .*describe_model"):
        SMOCAM(bare, bare.body).attribute(x, target="left", n_steps=1)


def test_target_indices_passes_other_targets_through():
    net = TinyNet()
    describe(net)
    assert target_indices(None, net) is None and target_indices([0, 1], net) == [0, 1]
    t = torch.tensor([0, 1])
    assert target_indices(t, net) is t


def test_fingerprint_changes_with_weights_and_description():
    net = TinyNet()
    meta = describe(net)
    before = model_fingerprint(net, meta)
    assert before == model_fingerprint(net, meta)
    assert before != model_fingerprint(net, {**meta, "output_std": [1.0, 1.0]})
    with torch.no_grad():
        net.head[2].bias += 1
    assert before != model_fingerprint(net, meta)


def test_shortening_helpers():
    names = [f"features.block{i}.weight" for i in range(420)]
    text = shorten_list(names)
    assert text.endswith("… and 412 more") and len(text) < 300
    assert len(shorten_message(repr(nn.Sequential(*[nn.Conv3d(1, 1, 3) for _ in range(500)])))) < 700
