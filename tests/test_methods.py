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
