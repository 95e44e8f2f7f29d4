"""Kernel plans: batch-invariant kernels, the plan choice, its caches and its switch."""
import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_smocam import _model_state, kernel_choice, kernels
from captum_smocam.kernel_choice import choose_plan, plan_for
from captum_smocam.kernels import STOCK, KernelPlan, OneDNNConvolution, onednn_conv, rowwise_linear
from captum_smocam.smocam import SMOCAM

ONEDNN = KernelPlan("onednn+rowwise", "onednn", "rowwise", False, 1)
ONEDNN_CL = KernelPlan("onednn+rowwise+cl", "onednn", "rowwise", True, 1)
ONEDNN_POOL = KernelPlan("onednn+rowwise+pool", "onednn", "rowwise", False, 1, pool="channels_last")
needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")


# --------------------------------------------------------------------------- #
# Kernels.
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode", [
    (2, None, 0, 1, False), (2, [], 0, 1, False), (3, 2, 1, 1, False), ((2, 3, 2), (1, 2, 2), (1, 1, 0), 1, True), (3, 1, 1, 2, False),
])
def test_channels_last_max_pool_gives_the_stock_values_and_gradients_bitwise(kernel, stride, padding, dilation,
                                                                             ceil_mode):
    """Same bits as F.max_pool3d forward and backward, also where ReLU zeros tie inside a window."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 9, 8, 7).relu()  # about half the values are tied at 0
    x[0, 0, :3] = 1.0                      # whole windows of equal non-zero values
    w = torch.randn_like(F.max_pool3d(x, kernel, stride, padding, dilation, ceil_mode))
    grads = []
    for pool in (F.max_pool3d, kernels.channels_last_max_pool3d):
        xx = x.clone().requires_grad_()
        y = pool(xx, kernel, stride, padding, dilation, ceil_mode)
        (y * w).sum().backward()
        grads.append((y.detach(), xx.grad, y.is_contiguous()))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    assert grads[1][2]


def test_a_plan_with_channels_last_pooling_runs_it_and_others_do_not():
    x = torch.randn(2, 3, 6, 6, 6, requires_grad=True)
    with ONEDNN_POOL.activate():
        y = nn.MaxPool3d(2)(x)
        y_indices, _ = F.max_pool3d(x, 2, return_indices=True)  # indices asked for: the stock kernel
    assert "ChannelsLastMaxPool3d" in type(y.grad_fn).__name__
    assert "ChannelsLastMaxPool3d" not in type(y_indices.grad_fn).__name__
    with ONEDNN.activate():
        assert "ChannelsLastMaxPool3d" not in type(nn.MaxPool3d(2)(x).grad_fn).__name__
    assert "max pooling channels_last" in ONEDNN_POOL.describe() and not ONEDNN_POOL.stock


GEOMETRIES = [  # (dims, kernel, stride, padding, dilation)
    (3, 3, 1, 1, 1), (3, 3, 2, 1, 1), (3, 5, 2, 0, 1), (3, 3, 1, 2, 2), (3, 3, (1, 2, 3), (1, 0, 1), 1),
    (2, 3, 2, 1, 1), (1, 3, 1, 1, 1),
]


@needs_onednn
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_onednn_convolution_matches_pytorch_and_is_batch_invariant(geometry, channels_last):
    d, k, stride, padding, dilation = geometry
    torch.manual_seed(0)
    x = torch.randn(5, 3, *[9 + i for i in range(d)], requires_grad=True)
    w, b = torch.randn(4, 3, *[k] * d), torch.randn(4)
    ref = kernels._STOCK_CONV[d](x, w, b, stride, padding, dilation)
    out = OneDNNConvolution.apply(x, w, b, stride, padding, dilation, channels_last)
    g = torch.randn_like(ref)
    (grad_ref,) = torch.autograd.grad(ref, x, g)
    (grad,) = torch.autograd.grad(out, x, g)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-4)
    for n in (1, 2, 3):  # the first rows of a smaller batch: bitwise the same, forward and gradient
        out_n = OneDNNConvolution.apply(x[:n], w, b, stride, padding, dilation, channels_last)
        (grad_n,) = torch.autograd.grad(out_n, x, g[:n])
        assert torch.equal(out_n, out[:n]) and torch.equal(grad_n[:n], grad[:n])


def test_onednn_conv_leaves_what_it_cannot_run_to_pytorch():
    x, w = torch.randn(2, 2, 5, 6, 7, dtype=torch.float64), torch.randn(3, 2, 3, 3, 3, dtype=torch.float64)
    assert torch.equal(onednn_conv(x, w, padding=1), F.conv3d(x, w, padding=1))  # float64: stock
    x32, w32 = x.float(), w.float()
    assert torch.equal(onednn_conv(x32, w32, padding="same"), F.conv3d(x32, w32, padding="same"))
    assert torch.equal(onednn_conv(x32, w32, padding=3), F.conv3d(x32, w32, padding=3))  # beyond the reach


def test_rowwise_linear_is_batch_invariant():
    torch.manual_seed(0)
    x, w, b = torch.randn(7, 33), torch.randn(5, 33), torch.randn(5)
    full = rowwise_linear(x, w, b)
    torch.testing.assert_close(full, F.linear(x, w, b))
    for n in range(1, 7):
        assert torch.equal(rowwise_linear(x[:n], w, b), full[:n])


@needs_onednn
def test_a_plan_redirects_modules_and_functions():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 5 * 6, 4))
    x = torch.randn(3, 2, 4, 5, 6)
    with ONEDNN.activate():
        planned = net(x)
        single = net(x[:1])
        mm = torch.randn(2, 5) @ torch.eye(5)
    torch.testing.assert_close(planned, net(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(single, planned[:1]) and mm.shape == (2, 5)


# --------------------------------------------------------------------------- #
# The choice.
# --------------------------------------------------------------------------- #
def _fake_probe(batch_dependent=(), failing=()):
    """A probe whose result of row i depends on the batch size for the plans named in ``batch_dependent``."""
    def probe(plan, m):
        if plan.name in failing:
            raise RuntimeError("cannot run")
        out = m.flatten(1).sum(1, keepdim=True)
        if plan.name in batch_dependent:
            out = out + 1e-6 * m.shape[0]
        return out, torch.ones_like(m)
    return probe


def test_the_rule_takes_the_first_invariant_candidate_without_timing(monkeypatch):
    monkeypatch.setattr(kernel_choice, "time_plans", lambda *a, **k: pytest.fail("timed"))
    masks = torch.rand(5, 1, 3, 3, 3)
    plan = choose_plan(_fake_probe(), masks, [ONEDNN, ONEDNN_CL, STOCK])
    assert plan.name == ONEDNN.name and plan.verified and plan.min_rows == 1 and "untimed" in plan.reason
    plan = choose_plan(_fake_probe(batch_dependent={ONEDNN.name}), masks, [ONEDNN, ONEDNN_CL, STOCK])
    assert plan.name == ONEDNN_CL.name and "onednn+rowwise not per-row invariant" in plan.reason


def test_fastest_takes_the_first_invariant_candidate_unless_another_is_clearly_faster():
    masks = torch.rand(5, 1, 3, 3, 3)
    plan = choose_plan(_fake_probe(), masks, [ONEDNN, ONEDNN_CL, STOCK], fastest=True)
    assert plan.name == ONEDNN.name and plan.verified and plan.min_rows == 1
    assert set(plan.seconds) == {ONEDNN.name, ONEDNN_CL.name, "stock"} and "1 mask / 5 masks" in plan.reason


@pytest.mark.parametrize("fastest", [False, True])
def test_choose_plan_rejects_a_plan_that_is_not_per_row_invariant_or_fails(fastest):
    masks = torch.rand(5, 1, 3, 3, 3)
    plan = choose_plan(_fake_probe(batch_dependent={ONEDNN.name}, failing={ONEDNN_CL.name}), masks,
                       [ONEDNN, ONEDNN_CL, STOCK], fastest=fastest)
    assert plan.name == "stock" and plan.min_rows == 4
    assert "onednn+rowwise not per-row invariant" in plan.reason and "onednn+rowwise+cl failed" in plan.reason


def test_candidates_by_device_and_dtype():
    assert kernel_choice.candidates(torch.device("cuda"), torch.float32) == [STOCK]
    if torch.backends.mkldnn.is_available():
        assert kernel_choice.candidates(torch.device("cpu"), torch.float32) == [ONEDNN_POOL, STOCK]
        assert ONEDNN_CL in kernel_choice.candidates(torch.device("cpu"), torch.float32, fastest=True)
    assert kernel_choice.candidates(torch.device("cpu"), torch.float64)[-1] == STOCK
    assert all(p.conv == "stock" for p in kernel_choice.candidates(torch.device("cpu"), torch.float64))


def test_plans_are_cached_per_process_and_on_disk(tmp_path, monkeypatch):
    path = tmp_path / "plans.json"
    monkeypatch.setenv(kernel_choice.PLAN_CACHE_ENV, str(path))
    chosen = []

    def choose():
        chosen.append(1)
        return ONEDNN

    assert plan_for("k1", choose) == (ONEDNN, "chosen")
    assert plan_for("k1", choose) == (ONEDNN, "process")
    kernel_choice._PLANS.clear()
    assert plan_for("k1", choose) == (ONEDNN, "disk")
    assert len(chosen) == 1 and "k1" in json.loads(path.read_text())
    monkeypatch.setenv(kernel_choice.PLAN_CACHE_ENV, "off")
    kernel_choice._PLANS.clear()
    assert plan_for("k1", choose)[1] == "chosen" and len(chosen) == 2
    kernel_choice.clear_plan_cache()


def test_no_plan_cache_on_disk_unless_asked(monkeypatch):
    monkeypatch.delenv(kernel_choice.PLAN_CACHE_ENV, raising=False)
    assert kernel_choice._disk_path() is None
    monkeypatch.setenv(kernel_choice.PLAN_CACHE_ENV, "off")
    assert kernel_choice._disk_path() is None
    monkeypatch.setenv(kernel_choice.PLAN_CACHE_ENV, "/tmp/x/plans.json")
    assert kernel_choice._disk_path() == "/tmp/x/plans.json"


def test_plan_key_ignores_weights_and_batch_but_not_shape_or_threads():
    a, b = nn.Conv3d(1, 2, 3), nn.Conv3d(1, 2, 3)
    key = kernel_choice.plan_key(a, "", [(1, 8, 8, 8)], torch.float32, torch.device("cpu"), False)
    assert key == kernel_choice.plan_key(b, "", [(1, 8, 8, 8)], torch.float32, torch.device("cpu"), False)
    assert key != kernel_choice.plan_key(a, "", [(1, 8, 8, 9)], torch.float32, torch.device("cpu"), False)
    assert key != kernel_choice.plan_key(nn.Conv3d(1, 3, 3), "", [(1, 8, 8, 8)], torch.float32, torch.device("cpu"),
                                    False)
    mixing, plain = Net(mix_rows=True), Net()  # a plain attribute the forward reads
    assert _model_state.architecture_key(mixing) != _model_state.architecture_key(plain)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert key != kernel_choice.plan_key(a, "", [(1, 8, 8, 8)], torch.float32, torch.device("cpu"), False)
    finally:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- #
# SMOCAM with plans.
# --------------------------------------------------------------------------- #
class Net(nn.Module):
    def __init__(self, mix_rows=False):
        super().__init__()
        self.stem = nn.Conv3d(1, 4, 3, padding=1)
        self.mid = nn.Conv3d(4, 4, 3, padding=1)
        self.after = nn.Conv3d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 3 * 4 * 5, 3)
        self.mix_rows = mix_rows

    def forward(self, x):
        h = F.relu(self.after(F.relu(self.mid(F.relu(self.stem(x))))))
        if self.mix_rows:  # every row depends on the others: no plan can be per-row invariant
            h = h + 1e-3 * h.mean(dim=0, keepdim=True)
        return self.fc(F.max_pool3d(h, 2).flatten(1))


@pytest.fixture
def fresh_plans():
    kernel_choice.clear_plan_cache(disk=True)
    yield
    kernel_choice.clear_plan_cache(disk=True)
    kernel_choice.set_kernel_tuning(None)


@needs_onednn
def test_smocam_chooses_a_verified_plan_and_skips_padding(fresh_plans):
    torch.manual_seed(0)
    net = Net().eval()
    sm = SMOCAM(net, net.mid)
    x = torch.randn(1, 1, 6, 8, 10)
    sm.attribute(x, target=0, n_steps=3)
    assert sm.plan.name == ONEDNN_POOL.name and sm.plan.verified and sm.plan_source == "chosen"
    rows = []
    h = net.stem.register_forward_hook(lambda m, a, o: rows.append(o.shape[0]))
    sm.attribute(x, target=0, n_steps=3)
    h.remove()
    assert sm.plan_source == "process" and rows == [1, 6]  # no padding to 4 rows (then the 6 shifted copies)


def test_a_model_that_mixes_rows_gets_the_padded_stock_plan(fresh_plans):
    torch.manual_seed(0)
    net = Net(mix_rows=True).eval()
    sm = SMOCAM(net, net.mid)
    sm.attribute(torch.randn(1, 1, 6, 8, 10), target=0, n_steps=3)
    assert sm.plan.stock and sm.plan.min_rows == 4 and "not per-row invariant" in sm.plan.reason


@needs_onednn
@pytest.mark.parametrize("how", ["argument", "environment"])
def test_fastest_is_chosen_on_request_and_cached_apart(how, fresh_plans, monkeypatch):
    torch.manual_seed(0)
    net = Net().eval()
    sm = SMOCAM(net, net.mid)
    x = torch.randn(1, 1, 6, 8, 10)
    if how == "argument":
        sm.attribute(x, target=0, n_steps=2, kernel_plan="fastest")
    else:
        monkeypatch.setenv(kernel_choice.TUNING_ENV, "fastest")
        sm.attribute(x, target=0, n_steps=2)
    assert sm.plan_source == "chosen" and set(sm.plan.seconds) >= {ONEDNN_POOL.name, ONEDNN_CL.name, "stock"}
    monkeypatch.delenv(kernel_choice.TUNING_ENV, raising=False)
    sm.attribute(x, target=0, n_steps=2)  # the rule: a plan of its own, not the timed one
    assert sm.plan_source == "chosen" and sm.plan.name == ONEDNN_POOL.name and not sm.plan.seconds


def test_set_kernel_tuning_takes_the_modes():
    try:
        kernel_choice.set_kernel_tuning("fastest")
        assert kernel_choice.kernel_tuning_mode() == "fastest"
        kernel_choice.set_kernel_tuning(False)
        assert kernel_choice.kernel_tuning_mode() == "off" and not kernel_choice.kernel_tuning_enabled()
        with pytest.raises(ValueError):
            kernel_choice.set_kernel_tuning("sometimes")
    finally:
        kernel_choice.set_kernel_tuning(None)


@pytest.mark.parametrize("how", ["argument", "function", "environment"])
def test_plans_can_be_turned_off(how, fresh_plans, monkeypatch):
    net = Net().eval()
    sm = SMOCAM(net, net.mid)
    kw = {}
    if how == "argument":
        kw["kernel_plan"] = "stock"
    elif how == "function":
        kernel_choice.set_kernel_tuning(False)
    else:
        monkeypatch.setenv(kernel_choice.TUNING_ENV, "0")
    sm.attribute(torch.randn(1, 1, 6, 8, 10), target=0, n_steps=2, **kw)
    assert sm.plan == STOCK and sm.plan_source.startswith("stock")
    assert not kernel_choice._PLANS  # nothing was chosen


def test_bad_kernel_plan_and_autocast_arguments_are_refused():
    net = Net().eval()
    with pytest.raises(ValueError, match="kernel_plan"):
        SMOCAM(net, net.mid).attribute(torch.randn(1, 1, 6, 8, 10), target=0, kernel_plan="quickest")
    with pytest.raises(ValueError, match="autocast"):
        SMOCAM(net, net.mid).attribute(torch.randn(1, 1, 6, 8, 10), target=0, autocast=torch.float64)


def test_bf16_autocast_keeps_mask_and_objective_in_float32():
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(2, 1, 6, 8, 10)
    sm = SMOCAM(net, net.mid)
    full = sm.attribute(x, target=[0, 1], n_steps=10, output_std=0.1)
    mixed = sm.attribute(x, target=[0, 1], n_steps=10, output_std=0.1, autocast=torch.bfloat16)
    assert mixed.dtype == torch.float32 and sm.plan.stock and "autocast" in sm.plan_source
    assert sm.history["total"].dtype == torch.float32
    assert float((mixed - full).abs().max()) < 0.2  # close, not equal: bf16 keeps 8 bits of mantissa


def test_other_devices_get_the_stock_plan_without_probing(fresh_plans, monkeypatch):
    import captum_smocam.smocam as smocam_module

    # Pretend the CPU were a device with no plan but STOCK: nothing is probed or cached.
    monkeypatch.setattr(kernel_choice, "candidates", lambda device, dtype, fastest=False: [STOCK])
    monkeypatch.setattr(kernel_choice, "choose_plan", lambda *a, **k: pytest.fail("probed"))
    net = Net().eval()
    sm = smocam_module.SMOCAM(net, net.mid)
    sm.attribute(torch.randn(1, 1, 6, 8, 10), target=0, n_steps=2)
    assert sm.plan == STOCK and sm.plan_source == "stock: no other plan on cpu" and not kernel_choice._PLANS


def test_a_model_traced_under_a_plan_still_takes_the_fast_path(fresh_plans):
    """The fast path's first trace may run under the plan: functional linear layers and products see proxies."""
    from captum_smocam import fastpath

    class FunctionalHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 4, 3, padding=1)
            self.w, self.v = nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.randn(3, 2))

        def forward(self, x):
            h = F.relu(self.conv(x)).mean(dim=(2, 3, 4))
            return F.linear(h, self.w) @ self.v

    fastpath.clear_cache()
    net = FunctionalHead().eval()
    sm = SMOCAM(net, net.conv)
    sm.attribute(torch.randn(1, 1, 4, 5, 6), target=0, n_steps=2, kernel_plan=ONEDNN)
    assert sm.path == "fast"
