"""Tests of the SMOCAM attribution: objective, Captum conventions, side effects, errors."""
import math

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam, NoiseTunnel
from torch import nn

from captum_smocam.smocam import SMOCAM, preservation_objective, smocam_objective, upsample_mask

# --------------------------------------------------------------------------- #
# Small models with known answers.
# --------------------------------------------------------------------------- #


class BlockReader(nn.Module):
    """Output = sum of a 1x1 conv's ReLU features inside a known spatial block."""

    def __init__(self, block, dims=3):
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.feat = conv(1, 4, 1)
        self.block = block
        with torch.no_grad():
            self.feat.weight.fill_(1.0)
            self.feat.bias.zero_()

    def forward(self, x):
        f = torch.relu(self.feat(x))
        sel = f[(slice(None), slice(None)) + self.block]
        return sel.flatten(1).sum(1, keepdim=True)


class ConvNet3d(nn.Module):
    """Conv3d/BatchNorm3d/MaxPool3d regression net with three outputs."""

    def __init__(self, n_out=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(4, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
        )
        self.head = nn.Linear(8, n_out)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3, 4)))


def _convnet():
    torch.manual_seed(0)
    net = ConvNet3d()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


SHAPE = (7, 8, 9)
BLOCK = (slice(1, 3), slice(4, 7), slice(5, 8))


def _block_model_and_input():
    torch.manual_seed(1)
    net = BlockReader(BLOCK).eval()
    x = torch.rand(1, 1, *SHAPE) + 0.5
    return net, x


# --------------------------------------------------------------------------- #
# The objective and the optimisation.
# --------------------------------------------------------------------------- #


def test_objective_terms_by_hand():
    mask = torch.zeros(1, 1, 2, 3)
    mask[0, 0, 0, 1] = 0.6
    mask[0, 0, 1, 1] = 0.8  # ||M||_2 = 1
    t = smocam_objective(torch.tensor([3.0]), torch.tensor([1.0]), mask, output_std=4.0, l2_weight=2.0, smooth_weight=3.0)
    assert t["distance"].item() == pytest.approx(0.5)
    assert t["l2"].item() == pytest.approx(0.0, abs=1e-6)
    # TV: rows diff |0.8-0.6| = 0.2; columns 0.6+0.6+0.8+0.8 = 2.8 -> 0.5 * 3.0
    assert t["smooth"].item() == pytest.approx(1.5)
    assert t["total"].item() == pytest.approx(0.5 + 3.0 * 1.5)


def test_mask_finds_the_block_the_output_reads():
    net, x = _block_model_and_input()
    smocam = SMOCAM(net, net.feat)
    mask = smocam.attribute(x, objective="poster", output_std=float(net(x).detach()) / 4, n_steps=150,
                            smooth_weight=0.01)
    assert mask.shape == (1, 1, *SHAPE)
    inside = torch.zeros_like(mask, dtype=torch.bool)
    inside[(slice(None), slice(None)) + BLOCK] = True
    assert mask[inside].sum() / mask.sum() > 0.8  # block is 18 of 504 voxels
    hist = smocam.history
    assert hist["total"][-1, 0] < 0.9 * hist["total"][0, 0]
    assert set(hist) == {"total", "distance", "l2", "smooth", "stop_step"}
    assert hist["total"].shape == (150, 1)


def test_preserve_mask_keeps_the_block_the_output_reads():
    # The reference is an all-zero image (features 0): only the block's own features keep the output.
    net, x = _block_model_and_input()
    smocam = SMOCAM(net, net.feat)
    mask = smocam.attribute(x, baselines=0.0, output_std=float(net(x).detach()) / 4, n_steps=150)
    inside = torch.zeros_like(mask, dtype=torch.bool)
    inside[(slice(None), slice(None)) + BLOCK] = True
    assert mask[inside].min() > 0.5 and mask[~inside].max() < 0.1
    assert (mask >= 0).all() and (mask <= 1).all()
    hist = smocam.history
    assert set(hist) == {"total", "distance", "area", "smooth", "stop_step"}
    assert hist["distance"][-1, 0] < 0.05  # the prediction is kept


def test_preservation_objective_by_hand():
    m = torch.zeros(1, 1, 4, 4, 4)
    m[..., 1:3, 1:3, 1:3] = 1.0
    t = preservation_objective(torch.tensor([3.0]), torch.tensor([1.0]), m, output_std=4.0, area_weight=2.0,
                               smooth_weight=3.0, smoothing=0.0)
    assert t["distance"].item() == pytest.approx(0.5)
    assert t["area"].item() == pytest.approx(8 / 64)
    assert t["smooth"].item() == pytest.approx(0.5 * 24 / 64 ** (2 / 3))
    assert t["total"].item() == pytest.approx(0.5 + 2.0 * 8 / 64 + 3.0 * 0.5 * 24 / 16)
    smoothed = preservation_objective(torch.tensor([1.0]), torch.tensor([1.0]), m, smoothing=0.1)
    assert smoothed["distance"].item() == 0.0  # smooth_abs(0) = 0, differentiable there


@pytest.mark.parametrize("kw", [dict(objective="poster", smooth_weight=0.01), dict(baselines=0.0)],
                         ids=["poster", "preserve"])
def test_the_optimisation_settles_instead_of_oscillating(kw):
    # Smoothed absolute values and a decaying step: the objective stops moving at the end, and the
    # returned mask is the one of the last step (no best iterate picked from an oscillation).
    net, x = _block_model_and_input()
    smocam = SMOCAM(net, net.feat)
    smocam.attribute(x, output_std=float(net(x).detach()) / 4, n_steps=100, **kw)
    total = smocam.history["total"][:, 0]
    assert total[-1] < 0.9 * total[0]
    assert (total[-10:].max() - total[-10:].min()) < 1e-3 * total[-1]


@pytest.mark.parametrize("objective", ["preserve", "poster"])
def test_batch_equals_one_at_a_time(objective):
    # In float64 the masks agree exactly: examples are optimised independently.
    net = _convnet().double()
    torch.manual_seed(2)
    x = torch.randn(3, 1, *SHAPE, dtype=torch.float64)
    smocam = SMOCAM(net, net.features[4])
    kw = dict(objective=objective, n_steps=30, output_std=1e-3)
    batch = smocam.attribute(x, target=[0, 2, 1], **kw)
    assert (batch.amax(dim=(1, 2, 3, 4)) - batch.amin(dim=(1, 2, 3, 4)) > 1e-4).all()  # the masks moved
    single = torch.cat([smocam.attribute(x[i : i + 1], target=t, **kw) for i, t in enumerate([0, 2, 1])])
    torch.testing.assert_close(batch, single, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "target",
    [1, (1,), [1, 1], torch.tensor([1, 1]), torch.tensor(1), -2],
    ids=["int", "tuple", "list", "tensor", "scalar-tensor", "negative"],
)
def test_every_target_form_gives_the_same_mask(target):
    net = _convnet()
    torch.manual_seed(3)
    x = torch.randn(2, 1, *SHAPE)
    smocam = SMOCAM(net, net.features[4])
    ref = smocam.attribute(x, target=1, n_steps=10)
    torch.testing.assert_close(smocam.attribute(x, target=target, n_steps=10), ref)


def test_per_example_targets_differ():
    net = _convnet()
    x = torch.randn(1, 1, *SHAPE).expand(3, 1, *SHAPE)
    smocam = SMOCAM(net, net.features[4])
    # A small sigma: the random net's outputs barely move, so make the distance count.
    masks = smocam.attribute(x, target=[0, 1, 2], n_steps=20, output_std=1e-3)
    assert not torch.allclose(masks[0], masks[1])
    alone = smocam.attribute(x[:1], target=2, n_steps=20, output_std=1e-3)
    torch.testing.assert_close(masks[2:], alone, rtol=1e-3, atol=1e-5)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.b = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x1, x2, scale=1.0):
        f = torch.relu(self.a(x1) + self.b(x2)) * scale
        return self.fc(f.mean(dim=(2, 3)))


def test_tuple_inputs_and_additional_forward_args():
    torch.manual_seed(4)
    net = TwoInputs().eval()
    x1, x2 = torch.randn(2, 1, 7, 8), torch.randn(2, 1, 7, 8)
    smocam = SMOCAM(net, net.a)
    kw = dict(target=0, n_steps=10, output_std=1e-3)
    m1 = smocam.attribute((x1, x2), **kw)
    assert m1.shape == (2, 1, 7, 8)
    m2 = smocam.attribute((x1, x2), additional_forward_args=(3.0,), **kw)
    assert not torch.allclose(m1, m2)
    m3 = smocam.attribute((x1, x2), additional_forward_args=(3.0,), fast=False, **kw)
    torch.testing.assert_close(m2, m3, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_any_number_of_spatial_dims(dims):
    shape = SHAPE[:dims]
    block = BLOCK[:dims]
    net = BlockReader(block, dims=dims).eval()
    x = torch.rand(2, 1, *shape) + 0.5
    smocam = SMOCAM(net, net.feat)
    inside = torch.zeros(2, 1, *shape, dtype=torch.bool)
    inside[(slice(None), slice(None)) + block] = True
    std = float(net(x)[0].detach())
    # (on a 7-voxel line, keeping 2 voxels costs a third of the area: let the distance count more)
    for kw in (dict(objective="poster", smooth_weight=0.01, output_std=std / 4), dict(baselines=0.0, output_std=std / 40)):
        mask = smocam.attribute(x, n_steps=100, **kw)
        assert mask.shape == (2, 1, *shape)
        share = mask[inside].sum() / mask.sum()
        assert share > inside.float().mean() * 3, kw
    up = smocam.attribute(x, n_steps=2, upsample_to_input=True)
    assert up.shape == (2, 1, *shape)


def test_attribute_to_layer_input():
    net = _convnet()
    x = torch.randn(2, 1, *SHAPE)
    layer = net.features[4]  # input is the pooled 3x4x4 map
    smocam = SMOCAM(net, layer)
    fast = smocam.attribute(x, target=0, n_steps=10, attribute_to_layer_input=True)
    assert fast.shape == (2, 1, 3, 4, 4)
    assert smocam.path == "fast"
    hook = smocam.attribute(x, target=0, n_steps=10, attribute_to_layer_input=True, fast=False)
    torch.testing.assert_close(fast, hook, rtol=1e-4, atol=1e-6)


def test_upsampling_matches_captum_interpolate():
    net = _convnet()
    x = torch.randn(1, 1, *SHAPE)
    smocam = SMOCAM(net, net.features[6])
    mask = smocam.attribute(x, target=0, n_steps=5)
    assert mask.shape == (1, 1, 3, 4, 4)
    up = upsample_mask(mask, x.shape[2:])
    torch.testing.assert_close(up, LayerAttribution.interpolate(mask, x.shape[2:], "trilinear"))
    torch.testing.assert_close(smocam.attribute(x, target=0, n_steps=5, upsample_to_input=True), up)


def test_noise_tunnel_and_no_grad():
    net = _convnet()
    x = torch.randn(2, 1, *SHAPE)
    smocam = SMOCAM(net, net.features[4])
    with torch.no_grad():
        inside = smocam.attribute(x, target=1, n_steps=10)
    torch.testing.assert_close(inside, smocam.attribute(x, target=1, n_steps=10))
    nt = NoiseTunnel(smocam)
    out = nt.attribute(x, nt_type="smoothgrad", nt_samples=3, stdevs=0.1, target=1, n_steps=5)
    assert out.shape == (2, 1, 3, 4, 4)
    assert torch.isfinite(out).all()


def test_drop_in_swap_for_layer_gradcam():
    net = _convnet()
    x = torch.randn(2, 1, *SHAPE)
    layer = net.features[6]
    gc = LayerGradCam(net, layer).attribute(x, target=2)
    sm = SMOCAM(net, layer).attribute(x, target=2, n_steps=5)
    assert gc.shape == sm.shape


def test_multi_output_convnet_end_to_end_with_sigma_per_output():
    net = _convnet()
    x = torch.randn(2, 1, *SHAPE)
    smocam = SMOCAM(net, net.features[6])
    std = torch.tensor([1.0, 5e-4, 2.0])
    a = smocam.attribute(x, target=1, output_std=std, n_steps=15)
    b = smocam.attribute(x, target=1, output_std=5e-4, n_steps=15)
    torch.testing.assert_close(a, b)
    c = smocam.attribute(x, target=1, output_std=2.0, n_steps=15)
    assert not torch.allclose(a, c)
    assert smocam.history["distance"].shape == (15, 2)


# --------------------------------------------------------------------------- #
# No side effects on the user's model.
# --------------------------------------------------------------------------- #


def _snapshot(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("fast", [True, False])
def test_no_side_effects(fast):
    net = _convnet()
    net.features[0].weight.requires_grad_(False)  # a user's frozen layer
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    x = torch.randn(2, 1, *SHAPE)
    before_out = net(x).detach().clone()
    before_state = _snapshot(net)
    smocam = SMOCAM(net, net.features[4])
    smocam.attribute(x, target=0, n_steps=5, fast=fast)
    assert all(p.grad is None for p in net.parameters())
    assert {n: p.requires_grad for n, p in net.named_parameters()} == flags
    assert not net.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert torch.equal(net(x), before_out)
    for k, v in _snapshot(net).items():
        assert torch.equal(v, before_state[k]), k


def test_training_mode_warns_and_restores_state():
    net = _convnet().train()
    x = torch.randn(2, 1, *SHAPE)
    state = _snapshot(net)
    with pytest.warns(UserWarning, match="training mode"):
        SMOCAM(net, net.features[4]).attribute(x, target=0, n_steps=3)
    assert net.training
    for k, v in _snapshot(net).items():
        assert torch.equal(v, state[k]), k


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3, padding=1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 2:
            raise RuntimeError("boom")
        return self.conv(x).mean(dim=(1, 2)).unsqueeze(1)


def test_no_hook_survives_an_exception():
    net = Exploding()
    with pytest.raises(RuntimeError, match="boom"):
        SMOCAM(net, net.conv).attribute(torch.randn(1, 1, 9), n_steps=5, fast=False)
    assert not net.conv._forward_hooks and not net.conv._forward_pre_hooks


# --------------------------------------------------------------------------- #
# Errors.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target": 3}, "out of range"),
        ({"target": -4}, "out of range"),
        ({"target": "hippocampus"}, "an output name, but the model carries no output names: pass an index"),
        ({"target": (0, 1)}, "2 index"),
        ({"target": [0, 1, 2]}, "one entry per example"),
        ({"target": torch.tensor([0, 1, 2])}, r"shape \(2,\)"),
        ({"target": None}, "3 outputs"),
        ({"target": 0, "output_std": 0.0}, "output_std"),
        ({"target": 0, "output_std": -1.0}, "output_std"),
        ({"target": 0, "output_std": torch.tensor([1.0, 0.0, 1.0])}, "output_std"),
        ({"target": 0, "output_std": torch.ones(5)}, "output_std"),
        ({"target": 0, "n_steps": 0}, "n_steps"),
        ({"target": 0, "n_steps": 2.5}, "n_steps"),
        ({"target": 0, "lr": -1.0}, "lr"),
        ({"target": 0, "smooth_weight": -1.0}, "smooth_weight"),
        ({"target": 0, "init": "random"}, "init"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    net = _convnet()
    x = torch.randn(2, 1, *SHAPE)
    with pytest.raises((ValueError, TypeError), match=match):
        SMOCAM(net, net.features[4]).attribute(x, **kwargs)


def test_nan_input_rejected_before_any_forward():
    net = Exploding()
    x = torch.randn(1, 1, 9)
    x[0, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        SMOCAM(net, net.conv).attribute(x)
    assert net.calls == 0


def test_unreached_layer_is_an_error():
    net = _convnet()
    unused = nn.Conv3d(1, 1, 1)
    with pytest.raises(ValueError, match="never reached"):
        SMOCAM(net, unused).attribute(torch.randn(1, 1, *SHAPE), target=0)
    with pytest.raises(ValueError, match="never reached"):
        SMOCAM(net, unused).attribute(torch.randn(1, 1, *SHAPE), target=0, fast=False)


def test_layer_must_be_a_module():
    with pytest.raises(TypeError, match="Module"):
        SMOCAM(_convnet(), "features.4")


def test_progress_bar(capsys):
    net, x = _block_model_and_input()
    SMOCAM(net, net.feat).attribute(x, n_steps=3, show_progress=True)
    assert "SMOCAM" in capsys.readouterr().err


def test_tol_stops_the_loop_before_n_steps():
    net, x = _block_model_and_input()
    smocam = SMOCAM(net, net.feat)
    smocam.attribute(x, n_steps=500, tol=1e-3, patience=5, smooth_weight=100.0)
    assert smocam.history["total"].shape[0] < 500


# --------------------------------------------------------------------------- #
# Inputs and models users bring.
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "make_input, error, match",
    [
        (lambda: torch.randn(0, 1, *SHAPE), ValueError, "batch size 0"),
        (lambda: torch.randn(2, 1, *SHAPE, dtype=torch.float64), TypeError, "float64"),
        (lambda: torch.randn(2, 1, *SHAPE).half(), TypeError, "float16"),
        (lambda: torch.ones(2, 1, *SHAPE, dtype=torch.int64), TypeError, "int64"),
        (lambda: torch.randn(2, 1, *SHAPE).numpy(), TypeError, "ndarray"),
        (lambda: torch.randn(2, 1, *SHAPE).tolist(), TypeError, "list"),
    ],
    ids=["empty-batch", "float64", "float16", "int", "numpy", "list"],
)
def test_unusable_inputs_are_refused_by_name(make_input, error, match):
    net = _convnet()
    with pytest.raises(error, match=match):
        SMOCAM(net, net.features[4]).attribute(make_input(), target=0, n_steps=2)


@pytest.mark.parametrize("name, value", [("lr", "fast"), ("n_steps", "10"), ("smooth_weight", float("nan")),
                                         ("area_weight", -1.0), ("smoothing", -0.1), ("objective", "best")])
def test_bad_settings_name_the_parameter_and_value(name, value):
    net = _convnet()
    with pytest.raises(ValueError, match=name) as err:
        SMOCAM(net, net.features[4]).attribute(torch.randn(1, 1, *SHAPE), target=0, **{name: value})
    assert repr(value) in str(err.value) or str(value) in str(err.value)


def test_captum_positional_order_like_layer_gradcam():
    # LayerGradCam.attribute(inputs, target, additional_forward_args, attribute_to_layer_input)
    net = _convnet()
    x = torch.randn(2, 1, *SHAPE)
    layer = net.features[4]
    gc = LayerGradCam(net, layer).attribute(x, 1, None, True)
    sm = SMOCAM(net, layer).attribute(x, 1, None, True, n_steps=3)
    assert gc.shape[2:] == sm.shape[2:] == (3, 4, 4)  # the layer's input (pooled), not its output


def test_nan_model_output_is_refused():
    net = _convnet()
    with torch.no_grad():
        net.head.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="not finite"):
        SMOCAM(net, net.features[4]).attribute(torch.randn(1, 1, *SHAPE), target=0, n_steps=2)


def test_constant_input_warns():
    net = _convnet()
    with pytest.warns(UserWarning, match="constant"):
        SMOCAM(net, net.features[4]).attribute(torch.ones(1, 1, *SHAPE), target=0, n_steps=2)


def test_torch_compiled_model_is_unwrapped_and_masks_reach_the_output():
    net = _convnet()
    x = torch.randn(1, 1, *SHAPE)
    compiled = torch.compile(net, backend="eager")
    compiled(x)  # called once, as users do
    plain = SMOCAM(net, net.features[4]).attribute(x, target=1, n_steps=10, output_std=1e-3)
    via_compiled = SMOCAM(compiled, net.features[4]).attribute(x, target=1, n_steps=10, output_std=1e-3)
    torch.testing.assert_close(via_compiled, plain)


class _IgnoresHooks(nn.Module):
    """Calls the layer's weights directly, as a compiled graph does: hooks on the layer never run."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2, 1)

    def forward(self, x):
        if isinstance(x, torch.Tensor):
            self.conv(x[:, :, :1, :1, :1])  # the layer is "reached", but its output is not used
        h = torch.nn.functional.conv3d(x, self.conv.weight, self.conv.bias, padding=1)
        return self.fc(torch.relu(h).mean(dim=(2, 3, 4)))


@pytest.mark.parametrize("fast", [True, False])
def test_a_mask_that_cannot_reach_the_output_fails_loudly(fast):
    net = _IgnoresHooks().eval()
    with pytest.raises(ValueError, match="no effect"):
        SMOCAM(net, net.conv).attribute(torch.randn(1, 1, *SHAPE), n_steps=3, fast=fast)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch deprecates torch.jit; users still have such models
@pytest.mark.parametrize("jit", ["script", "trace"])
def test_torchscript_models_are_refused_with_the_reason(jit):
    net = _convnet()
    x = torch.randn(1, 1, *SHAPE)
    scripted = torch.jit.script(net) if jit == "script" else torch.jit.trace(net, x)
    with pytest.raises(TypeError, match="TorchScript"):
        SMOCAM(scripted, getattr(scripted.features, "4"))


def test_data_parallel_around_eval_model_does_not_warn(recwarn):
    net = _convnet()  # eval mode
    wrapped = nn.DataParallel(net)  # a new wrapper is in training mode; the model inside is not
    SMOCAM(wrapped, net.features[4]).attribute(torch.randn(1, 1, *SHAPE), target=0, n_steps=2)
    assert not [w for w in recwarn if "training mode" in str(w.message)]
