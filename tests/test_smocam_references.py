"""SMOCAM on models that carry no references: fallbacks, the unit of the distance, and the warnings (issue 19/20)."""
import math
import warnings

import pytest
import torch
from torch import nn

from captum_smocam import SMOCAM
from captum_smocam.benchmarking.tuning import BLOCK_SHAPE as SHAPE
from captum_smocam.benchmarking.tuning import BlockReader
from captum_smocam.benchmarking.tuning import block_share as _block_share
from captum_smocam.fallbacks import FALLBACKS, fallback_references
from captum_smocam.spatial import gaussian_blur


@pytest.fixture(scope="module")
def block_reader():
    torch.manual_seed(0)
    return BlockReader().eval(), torch.rand(2, 1, *SHAPE)


def test_default_finds_the_block_without_references(block_reader):
    """The drop-in call on a model with no references and no output_std: at least half the mask on the block."""
    net, x = block_reader
    smocam = SMOCAM(net, net.conv)
    with pytest.warns(UserWarning, match="no baselines and the model carries no reference_inputs"):
        mask = smocam.attribute(x, target=0)
    assert smocam.reference_source.startswith("fallback: ")
    assert bool((_block_share(mask) >= 0.5).all()), _block_share(mask)
    assert float(mask.max()) > 0.3  # not an empty map


def test_a_population_sigma_much_larger_than_the_effect_gives_an_empty_mask_and_a_warning(block_reader):
    """What the user of issue 20 saw, now said: sigma = 1 while a reference moves the output by ~0.005."""
    net, x = block_reader
    smocam = SMOCAM(net, net.conv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        smocam.attribute(x, target=0, output_std=1.0, distance_unit="sigma")
    assert any("empty" in str(w.message) for w in caught), [str(w.message) for w in caught]


def test_effect_unit_does_not_depend_on_the_output_scale(block_reader):
    net, x = block_reader
    scaled = nn.Sequential(net, nn.Linear(1, 1)).eval()
    with torch.no_grad():
        scaled[1].weight.fill_(1000.0)
        scaled[1].bias.zero_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = SMOCAM(net, net.conv).attribute(x, target=0, output_std=1.0, distance_unit="effect", n_steps=30)
        b = SMOCAM(scaled, net.conv).attribute(x, target=0, output_std=1000.0, distance_unit="effect", n_steps=30)
    assert torch.allclose(a, b, atol=1e-3)


@pytest.mark.parametrize("scheme", FALLBACKS)
def test_fallback_references_shapes(scheme):
    x = torch.rand(2, 1, 7, 8, 9)
    refs = fallback_references(x, [1, 2, 1], scheme)
    k = {"shift": 6, "minimum+shift": 7}.get(scheme, 1)
    assert refs.shape == (2, k, 1, 7, 8, 9)
    if scheme == "minimum":
        assert torch.equal(refs[1, 0], torch.full((1, 7, 8, 9), float(x[1].min())))


def test_fallback_refused_when_unknown():
    with pytest.raises(ValueError, match="'median'"):
        fallback_references(torch.rand(1, 1, 4, 4, 4), [1, 1, 1], "median")


def test_gaussian_blur_keeps_the_sum_and_the_shape():
    x = torch.zeros(1, 1, 7, 8, 9)
    x[0, 0, 3, 4, 4] = 1.0
    y = gaussian_blur(x, [1.0, 0.0, 1.0])  # the kernel (3 sd) stays inside the grid
    assert y.shape == x.shape
    assert math.isclose(float(y.sum()), 1.0, rel_tol=1e-5)
    assert torch.equal(y[0, 0, :, 3], torch.zeros(7, 9))  # axis 1 (sigma 0) untouched: nothing spills to y=3
    with pytest.raises(ValueError, match="3 spatial dims"):
        gaussian_blur(x, [1.0])


def test_references_identical_to_the_scan_warn(block_reader):
    net, x = block_reader
    with pytest.warns(UserWarning, match="the mask cannot show anything"):
        SMOCAM(net, net.conv).attribute(x[:1], target=0, baselines=x[0], n_steps=3)


def test_fidelity_and_sigma_are_recorded(block_reader):
    net, x = block_reader
    smocam = SMOCAM(net, net.conv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smocam.attribute(x, target=0, baselines=torch.zeros(1, *SHAPE), output_std=0.5, n_steps=5)
    assert smocam.fidelity.shape == (2,) and bool((smocam.fidelity >= 0).all())
    assert torch.allclose(smocam.output_std_used, torch.full((2,), 0.5))
    assert smocam.reference_source == "baselines: 1 given"


def test_fidelity_constraint_keeps_the_prediction(block_reader):
    """Dual ascent on the distance weight: the masked prediction ends within the tolerance."""
    net, x = block_reader
    kw = dict(baselines=torch.zeros(1, *SHAPE), output_std=0.005, area_weight=2000.0, n_steps=80)
    loose, tight = SMOCAM(net, net.conv), SMOCAM(net, net.conv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loose.attribute(x, target=0, **kw)
        tight.attribute(x, target=0, fidelity_tol=0.05, **kw)
    assert float(loose.fidelity.mean()) > 0.1
    assert float(tight.fidelity.mean()) <= 0.1


def test_model_output_std_buffer_is_the_default_sigma():
    from captum_smocam.models import VGG3D

    net = VGG3D(3, channels=(4, 8), output_std=torch.tensor([2.0, 3.0, 5.0])).eval()
    smocam = SMOCAM(net, net.features.block2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smocam.attribute(torch.randn(2, 1, 8, 10, 9), target=[1, 2], baselines=torch.zeros(1, 1, 8, 10, 9),
                         n_steps=2)
    assert smocam.output_std_used.tolist() == [3.0, 5.0]


@pytest.mark.parametrize("bad", [dict(fidelity_tol=-1.0), dict(distance_unit="volts"), dict(fallback="median")])
def test_bad_settings_are_refused(block_reader, bad):
    net, x = block_reader
    with pytest.raises(ValueError, match=repr(next(iter(bad.values())))):
        SMOCAM(net, net.conv).attribute(x, target=0, **bad)


def test_a_user_checkpoint_keeps_reference_scans_exactly(tmp_path):
    """The factory route stored references as float16 whatever their values (65504 and above became Inf)."""
    from captum_smocam.models import load_checkpoint, save_checkpoint, set_reference_inputs

    net = BlockReader().eval()
    refs = torch.rand(2, 1, *SHAPE) * 1e5
    set_reference_inputs(net, refs)
    meta = {"output_names": ["y"], "input_shape": list(SHAPE), "intensity_normalization": "none",
            "affine": [[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1.0]],
            "default_layer": "conv"}
    path = tmp_path / "user.pt"
    save_checkpoint(path, net, meta, factory="captum_smocam.benchmarking.tuning:BlockReader")
    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded.reference_inputs, refs)
