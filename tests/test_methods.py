"""Every compared method runs through one entry point and returns an input-grid map."""
import pytest
import torch

from captum_smocam.methods import METHODS, attribute_map, background_baseline, occlusion_evaluations
from captum_smocam.models import VGG3D


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return VGG3D(3, channels=(4, 8)).eval()


@pytest.mark.parametrize("method", METHODS)
def test_each_method_returns_a_nonnegative_input_grid_map(net, method):
    x = torch.randn(2, 1, 12, 14, 10)
    out = attribute_map(method, net, x, [0, 2], layer=net.features.block2,
                        smocam_kwargs={"n_steps": 3}, occlusion_window=4, occlusion_stride=4)
    assert out.shape == (2, 1, 12, 14, 10)
    assert (out >= 0).all() and torch.isfinite(out).all()
    assert not out.requires_grad


def test_occlusion_reacts_to_a_single_informative_region():
    # A model that reads one corner: occlusion must light up that corner only.
    class Corner(torch.nn.Module):
        def forward(self, x):
            return x[:, :, :4, :4, :4].sum(dim=(1, 2, 3, 4)).unsqueeze(1)

    x = torch.rand(1, 1, 12, 12, 12) + 1.0
    out = attribute_map("occlusion", Corner(), x, 0, occlusion_window=4, occlusion_stride=4)
    assert out[..., :4, :4, :4].min() > 0
    assert out[..., 4:, 4:, 4:].max() == 0


def test_unknown_method_and_missing_layer(net):
    x = torch.randn(1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="'lime'"):
        attribute_map("lime", net, x, 0)
    with pytest.raises(ValueError, match="needs a layer"):
        attribute_map("gradcam", net, x, 0)


def test_background_baseline_is_each_examples_minimum():
    x = torch.arange(2 * 1 * 2 * 3 * 4, dtype=torch.float32).reshape(2, 1, 2, 3, 4)
    b = background_baseline(x)
    assert b.shape == x.shape
    assert b[0].unique().tolist() == [0.0] and b[1].unique().tolist() == [24.0]


def test_occlusion_cost_model():
    assert occlusion_evaluations((12, 12, 12), 4, 4) == 27
    assert occlusion_evaluations((13, 12, 12), 4, 4) == 27


def test_smoothgrad_adds_noise_scaled_to_the_scans_range_and_is_seeded():
    # f = sum(relu(x)): the gradient at a voxel is 1 where x + noise > 0. On voxels at exactly 0,
    # Saliency gives 0; SmoothGrad averages indicators of positive noise, about 0.5 (50 samples).
    class Relu(torch.nn.Module):
        def forward(self, x):
            return torch.relu(x).flatten(1).sum(1, keepdim=True)

    x = torch.zeros(1, 1, 7, 8, 9)
    x[0, 0, 0, 0, 0] = 2.0  # range 2: noise sd 0.3 by default
    sal = attribute_map("saliency", Relu(), x, 0)
    assert sal[0, 0, 1:].abs().max() == 0
    state = torch.random.get_rng_state()
    sg = attribute_map("smoothgrad", Relu(), x, 0)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left alone
    inner = sg[0, 0, 1:]
    assert 0.35 < float(inner.mean()) < 0.65 and float(inner.min()) > 0.1
    assert torch.equal(sg, attribute_map("smoothgrad", Relu(), x, 0))  # seeded: the same map twice
    # no noise: SmoothGrad is Saliency
    assert torch.equal(attribute_map("smoothgrad", Relu(), x, 0, smoothgrad_noise=0.0), sal)


def test_smoothgrad_of_a_linear_model_is_the_absolute_weight_per_example():
    w = torch.randn(1, 1, 7, 8, 9)

    class Linear(torch.nn.Module):
        def forward(self, x):
            return (x * w).flatten(1).sum(1, keepdim=True)

    x = torch.randn(2, 1, 7, 8, 9)
    x[1] *= 100.0  # a second example with another range: its noise is 100 times larger
    sg = attribute_map("smoothgrad", Linear(), x, 0, smoothgrad_samples=5)
    assert torch.allclose(sg, w.abs().expand(2, -1, -1, -1, -1), atol=1e-6)


def test_smoothgrad_refuses_bad_settings(net):
    x = torch.randn(1, 1, 7, 8, 9)
    with pytest.raises(ValueError, match="smoothgrad_samples.*0"):
        attribute_map("smoothgrad", net, x, 0, smoothgrad_samples=0)
    with pytest.raises(ValueError, match="smoothgrad_noise.*-0.1"):
        attribute_map("smoothgrad", net, x, 0, smoothgrad_noise=-0.1)


def test_integrated_gradients_completeness_with_the_default_steps():
    # IG's attributions sum to f(x) - f(baseline) (Sundararajan et al. 2017); with the default steps the
    # Gauss-Legendre rule is exact for this quadratic model, so the signed sum must match closely.
    from captum.attr import IntegratedGradients

    from captum_smocam.methods import DEFAULT_IG_STEPS

    class Quad(torch.nn.Module):
        def forward(self, x):
            return (x ** 2).flatten(1).sum(1, keepdim=True)

    x = torch.rand(1, 1, 7, 8, 9) + 0.5
    base = background_baseline(x)
    signed = IntegratedGradients(Quad()).attribute(x, baselines=base, target=0, n_steps=DEFAULT_IG_STEPS)
    assert torch.allclose(signed.sum(), Quad()(x).sum() - Quad()(base).sum(), rtol=1e-4)
    ours = attribute_map("integrated_gradients", Quad(), x, 0)
    assert torch.allclose(ours, signed.abs(), atol=1e-6)


def test_record_says_what_each_call_used(net):
    from captum_smocam.models import set_reference_inputs

    x = torch.randn(1, 1, 12, 14, 10)
    rec = {}
    attribute_map("smoothgrad", net, x, 0, smoothgrad_samples=3, record=rec)
    assert rec["method"] == "smoothgrad" and rec["settings"]["samples"] == 3
    assert "0.15" in rec["settings"]["noise_sd"]
    rec = {}
    attribute_map("integrated_gradients", net, x, 0, record=rec)
    assert rec["settings"]["steps"] == 50 and "minimum" in rec["settings"]["baseline"]
    try:
        rec = {}
        attribute_map("smocam", net, x, 0, layer=net.features.block2, smocam_kwargs={"n_steps": 2}, record=rec)
        assert rec["reference_source"].startswith("fallback:") and rec["settings"]["n_steps"] == 2
        set_reference_inputs(net, torch.randn(3, 1, 12, 14, 10))
        attribute_map("smocam", net, x, 0, layer=net.features.block2, smocam_kwargs={"n_steps": 2}, record=rec)
        assert rec["reference_source"] == "model: 3 reference_inputs"
        attribute_map("smocam", net, x, 0, layer=net.features.block2,
                      smocam_kwargs={"n_steps": 2, "baselines": torch.zeros(2, 1, 12, 14, 10)}, record=rec)
        assert rec["reference_source"] == "baselines: 2 given"
        attribute_map("smocam_poster", net, x, 0, layer=net.features.block2, smocam_kwargs={"n_steps": 2},
                      record=rec)
        assert rec["reference_source"].startswith("none:")
    finally:
        set_reference_inputs(net, None)
