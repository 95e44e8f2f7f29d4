"""The cached-prefix fast path gives the hook path's masks, on every kind of model."""
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_smocam.kernels import STOCK, KernelPlan
from captum_smocam.smocam import SMOCAM

SHAPE = (8, 10, 12)
#: The prefix-counting tests run under a given plan (plan choice itself runs the prefix on one row):
#: PyTorch's kernels padded to 4 rows, and a per-row invariant plan without padding.
PLANS = [STOCK, KernelPlan("onednn+rowwise", "onednn", "rowwise", False, 1)]


def _block(cin, cout):
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(), nn.MaxPool3d(2))


class NestedVGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("block1", _block(1, 4))
        self.features.add_module("block2", _block(4, 8))
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x):
        return self.head(self.features(x))


class ResNetLike(nn.Module):
    """Skips around the masked layer (from before it, joining after) and across it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv3d(1, 6, 3, padding=1)
        self.mid = nn.Conv3d(6, 6, 3, padding=1)
        self.after = nn.Conv3d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        s = F.relu(self.stem(x))
        m = F.relu(self.mid(s))
        y = self.after(m) + s  # s starts before the masked layer and joins after it
        y = F.relu(y + m)  # m skips across `after`
        return self.fc(y.mean(dim=(2, 3, 4)))


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv3d(4, 4, 3, padding=1)
        self.w = nn.Parameter(torch.randn(4, 2))

    def forward(self, x):
        h = F.max_pool3d(torch.relu(self.conv1(x)), 2)
        h = torch.sigmoid(self.conv2(h)) * h
        return torch.flatten(F.adaptive_avg_pool3d(h, 1), 1) @ self.w


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv3d(4, 4, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        if h.mean() > -1:  # data-dependent control flow: torch.fx cannot trace this
            h = self.conv2(h)
        return h.mean(dim=(2, 3, 4))


def _models():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                        nn.Conv3d(4, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                        nn.Flatten(), nn.Linear(8, 2))
    vgg, res, fun, unt = NestedVGG(), ResNetLike(), Functional(), Untraceable()
    return {
        "sequential": (seq, seq[3], "fast"),
        "nested-vgg": (vgg, vgg.features.block2[0], "fast"),
        "nested-vgg-block": (vgg, vgg.features.block1, "fast"),
        "resnet-skips": (res, res.mid, "fast"),
        "functional": (fun, fun.conv2, "fast"),
        "untraceable": (unt, unt.conv1, "hook"),
    }


@pytest.mark.parametrize("objective", ["preserve", "poster"])
@pytest.mark.parametrize("name", list(_models()))
def test_fast_path_matches_hook_path(name, objective, caplog):
    model, layer, expected_path = _models()[name]
    model = model.double().eval()
    x = torch.randn(2, 1, *SHAPE, dtype=torch.float64)
    smocam = SMOCAM(model, layer)
    kw = dict(target=1, n_steps=15, output_std=1e-5, objective=objective)
    with caplog.at_level(logging.INFO, logger="captum_smocam"):
        fast = smocam.attribute(x, **kw)
    assert smocam.path == expected_path
    if expected_path == "hook":
        assert "hook path" in caplog.text
    hook = smocam.attribute(x, fast=False, **kw)
    assert smocam.path == "hook"
    torch.testing.assert_close(fast, hook, rtol=1e-7, atol=1e-10)
    assert (fast.amax(dim=(1, 2, 3, 4)) > fast.amin(dim=(1, 2, 3, 4))).all()  # the masks moved


def _count_prefix_passes(model, layer, call):
    """Rows of each pass through the first block (the prefix) during ``call()``."""
    passes = []
    # (hooks also fire while torch.fx traces the model, with proxies: count real tensors only)
    h = model.features.block1[0].register_forward_hook(
        lambda mod, a, out: passes.append(out.shape[0]) if isinstance(out, torch.Tensor) else None
    )
    try:
        call()
    finally:
        h.remove()
    return passes


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.name)
def test_prefix_runs_once(plan):
    model, layer, _ = _models()["nested-vgg"]
    model.eval()
    calls = {"block2": 0}

    def counter(mod, args, out):
        if isinstance(out, torch.Tensor):  # not the proxies seen while tracing
            calls["block2"] += 1

    h2 = model.features.block2.register_forward_hook(counter)
    x = torch.randn(1, 1, *SHAPE)
    try:
        smocam = SMOCAM(model, model.features.block2)
        passes = _count_prefix_passes(model, layer, lambda: smocam.attribute(x, target=0, n_steps=20,
                                                                               objective="poster", kernel_plan=plan))
    finally:
        h2.remove()
    assert passes == [plan.min_rows]  # the prefix: one pass
    assert calls["block2"] == 1  # the masked layer's own output is cached too


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.name)
def test_references_take_one_prefix_pass_and_are_cached(plan):
    rows = plan.min_rows
    model, layer, _ = _models()["nested-vgg"]
    model.eval()
    x = torch.randn(1, 1, *SHAPE)
    refs = torch.randn(5, 1, *SHAPE)
    smocam = SMOCAM(model, model.features.block2)
    run = lambda: smocam.attribute(x, target=0, n_steps=5, baselines=refs, kernel_plan=plan)  # noqa: E731
    assert _count_prefix_passes(model, layer, run) == [rows, 5]  # the scan, then the 5 references
    assert _count_prefix_passes(model, layer, run) == [rows]  # the references' features are reused
    refs += 1.0  # changed in place: recomputed
    assert _count_prefix_passes(model, layer, run) == [rows, 5]
    with torch.no_grad():
        model.features.block1[0].weight.mul_(2.0)  # the model changed: recomputed
    assert _count_prefix_passes(model, layer, run) == [rows, 5]
    # Without baselines: copies of the scan shifted along each of the 3 axes, both ways.
    shifted = lambda: smocam.attribute(x, target=0, n_steps=5, kernel_plan=plan)  # noqa: E731
    assert _count_prefix_passes(model, layer, shifted) == [rows, 6]


def test_model_reference_inputs_are_the_default_baselines():
    model, layer, _ = _models()["nested-vgg"]
    model.eval()
    x = torch.randn(1, 1, *SHAPE)
    refs = torch.randn(3, 1, *SHAPE)
    smocam = SMOCAM(model, model.features.block2)
    given = smocam.attribute(x, target=0, n_steps=10, baselines=refs, output_std=1e-3)
    model.register_buffer("reference_inputs", refs.clone(), persistent=False)
    try:
        carried = smocam.attribute(x, target=0, n_steps=10, output_std=1e-3)
    finally:
        del model.reference_inputs
    torch.testing.assert_close(carried, given)
    assert not torch.allclose(smocam.attribute(x, target=0, n_steps=10, output_std=1e-3), given)


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.name)
def test_expanded_batch_runs_prefix_once_per_distinct_scan(plan):
    model, layer, _ = _models()["nested-vgg"]
    model.eval()
    x = torch.randn(1, 1, *SHAPE)
    smocam = SMOCAM(model, model.features.block2)
    out = {}

    def run():
        out["many"] = smocam.attribute(x.expand(3, 1, *SHAPE), target=[0, 1, 2], n_steps=10, output_std=1e-3,
                                       internal_batch_size=2, objective="poster", kernel_plan=plan)

    assert _count_prefix_passes(model, layer, run) == [plan.min_rows]  # one pass, the one distinct scan (filling it)
    assert out["many"].shape == (3, 1, 2, 2, 3)
    one = smocam.attribute(x, target=2, n_steps=10, output_std=1e-3, objective="poster", kernel_plan=plan)
    torch.testing.assert_close(out["many"][2:], one, rtol=1e-4, atol=1e-6)


def test_forward_function_that_is_not_a_module_uses_hooks():
    model, layer, _ = _models()["sequential"]
    model.eval()
    smocam = SMOCAM(lambda x: model(x) * 2, layer)
    smocam.attribute(torch.randn(1, 1, *SHAPE), target=0, n_steps=3)
    assert smocam.path == "hook"


class BakedBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 8 * 10 * 12, 1)

    def forward(self, x):
        n = x.shape[0]  # taken before the masked layer: wrong for a batch of a different size
        return self.fc(torch.relu(self.conv(x)).reshape(n, -1))


def test_batch_size_baked_before_layer_falls_back():
    model = BakedBatch().eval()
    smocam = SMOCAM(model, model.conv)
    x = torch.randn(1, 1, *SHAPE)
    smocam.attribute(x.expand(2, 1, *SHAPE), target=[0, 0], n_steps=3)
    assert smocam.path == "hook"


@pytest.mark.parametrize("arch", ["VGG3D", "AlexNet3D"])
def test_shipped_architectures_take_the_fast_path(arch, caplog):
    from captum_smocam import models

    torch.manual_seed(0)
    net = getattr(models, arch)(4).eval()
    x = torch.randn(1, 1, 40, 44, 36)
    smocam = SMOCAM(net, net.get_submodule(net.default_layer))
    with caplog.at_level(logging.INFO, logger="captum_smocam"):
        smocam.attribute(x, target=1, n_steps=2)
    assert smocam.path == "fast", caplog.text


# --------------------------------------------------------------------------- #
# Reuse across calls: trace and split once per model state, never serve a stale one.
# --------------------------------------------------------------------------- #
def _trace_counter(monkeypatch):
    from captum_smocam import fastpath

    traced = []
    original = fastpath._trace_split

    def counting(model, *args):
        traced.append(model)
        return original(model, *args)

    monkeypatch.setattr(fastpath, "_trace_split", counting)
    return traced


def test_a_model_is_traced_once_across_calls_and_instances(monkeypatch):
    traced = _trace_counter(monkeypatch)
    model, layer, _ = _models()["nested-vgg"]
    model.eval()
    x = torch.randn(1, 1, *SHAPE)
    first = SMOCAM(model, layer).attribute(x, target=0, n_steps=5)
    again = SMOCAM(model, layer).attribute(x, target=0, n_steps=5)  # a new instance, as pipeline.explain makes
    other_scan = SMOCAM(model, layer).attribute(torch.randn(1, 1, *SHAPE), target=1, n_steps=5)
    assert len(traced) == 1
    assert torch.equal(first, again) and other_scan.shape == first.shape


@pytest.mark.parametrize("change", ["replace-weight", "replace-functional-parameter", "in-place", "swap-module",
                                    "train-mode", "attribute"])
def test_a_changed_model_is_traced_again_and_gives_the_fresh_result(change, monkeypatch):
    import copy

    traced = _trace_counter(monkeypatch)
    torch.manual_seed(1)
    model = Functional().double().eval()
    model.scale = 1.0
    x = torch.randn(1, 1, *SHAPE, dtype=torch.float64)
    kw = dict(target=1, n_steps=8, output_std=1e-3)
    SMOCAM(model, model.conv2).attribute(x, **kw)
    with torch.no_grad():
        if change == "replace-weight":
            model.conv2.weight = nn.Parameter(torch.randn_like(model.conv2.weight))
        elif change == "replace-functional-parameter":  # a parameter the traced graph reads directly (get_attr)
            model.w = nn.Parameter(torch.randn_like(model.w))
        elif change == "in-place":
            model.conv1.weight.mul_(-1.0)
        elif change == "swap-module":
            model.conv2 = nn.Conv3d(4, 4, 3, padding=1).double()
        elif change == "train-mode":
            model.train()
        else:
            model.scale = 2.0  # a plain attribute: part of the fingerprint
    layer = model.conv2
    if change == "train-mode":
        with pytest.warns(UserWarning, match="training mode"):
            SMOCAM(model, layer).attribute(x, **kw)
        assert len(traced) == 2  # traced again; the masks of a training-mode model are noisy by design
        return
    cached = SMOCAM(model, layer).attribute(x, **kw)
    fresh_model = copy.deepcopy(model)
    fresh = SMOCAM(fresh_model, fresh_model.conv2).attribute(x, **kw)
    assert len(traced) == 3  # first call, after the change, the fresh copy
    torch.testing.assert_close(cached, fresh, rtol=0, atol=0)


def test_cache_entries_go_with_their_model():
    import gc

    from captum_smocam import fastpath

    fastpath.clear_cache()
    model, layer, _ = _models()["sequential"]
    SMOCAM(model.eval(), layer).attribute(torch.randn(1, 1, *SHAPE), target=0, n_steps=2)
    assert fastpath.cache_info()["entries"] == 1
    del model, layer
    gc.collect()
    assert fastpath.cache_info()["entries"] == 0


def test_reuse_can_be_turned_off(monkeypatch):
    from captum_smocam import _settings, fastpath

    traced = _trace_counter(monkeypatch)
    monkeypatch.setattr(_settings, "_OVERRIDES", {})
    fastpath.set_reuse_splits(False)
    model, layer, _ = _models()["sequential"]
    for _ in range(2):
        SMOCAM(model.eval(), layer).attribute(torch.randn(1, 1, *SHAPE), target=0, n_steps=2,
                                              kernel_plan="stock")  # plan choice would trace too
    assert len(traced) == 2


def test_untraceable_model_is_not_traced_at_every_call(monkeypatch, caplog):
    traced = _trace_counter(monkeypatch)
    model, layer, _ = _models()["untraceable"]
    for _ in range(2):
        with caplog.at_level(logging.INFO, logger="captum_smocam"):
            sm = SMOCAM(model.eval(), layer)
            sm.attribute(torch.randn(1, 1, *SHAPE), target=0, n_steps=2)
        assert sm.path == "hook" and "cannot be traced" in caplog.text  # said at every call
        caplog.clear()
    assert len(traced) == 1


def test_poster_float64_copy_is_reused_until_the_model_changes():
    from captum_smocam.smocam.runners import model_in_dtype

    model, layer, _ = _models()["nested-vgg"]
    model.eval()
    copy1, layer1 = model_in_dtype(model, layer, torch.float64)
    copy2, _ = model_in_dtype(model, layer, torch.float64)
    assert copy1 is copy2 and layer1.weight.dtype == torch.float64
    with torch.no_grad():
        layer.weight.add_(1.0)
    copy3, layer3 = model_in_dtype(model, layer, torch.float64)
    assert copy3 is not copy1
    torch.testing.assert_close(layer3.weight, layer.weight.double())


def test_references_are_cached_across_instances():
    model, layer, _ = _models()["nested-vgg"]
    model.eval()
    x = torch.randn(1, 1, *SHAPE)
    refs = torch.randn(5, 1, *SHAPE)
    run = lambda: SMOCAM(model, model.features.block2).attribute(x, target=0, n_steps=5, baselines=refs)  # noqa: E731
    assert _count_prefix_passes(model, layer, run)[-1] == 5
    assert len(_count_prefix_passes(model, layer, run)) == 1  # a new instance reuses the references' features


def test_reuse_environment_variable_is_read():
    import subprocess
    import sys

    code = "from captum_smocam import fastpath; print(fastpath.reuse_splits())"
    env = {**__import__("os").environ, "SMOCAM_REUSE_SPLITS": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
