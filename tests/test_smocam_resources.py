"""What a SMOCAM call costs in memory and threads (issue 23).

Memory is bounded by ``internal_batch_size``, not by the number of outputs explained, and a call never
raises the process's thread count.

Memory is followed tensor by tensor: a :class:`~torch.utils._python_dispatch.TorchDispatchMode` records the
bytes of every new storage an operation returns (views excluded), so the tests do not depend on the
allocator or on the machine's load.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from captum_smocam.fastpath import _FastRunner, build_fast_runner
from captum_smocam.models import VGG3D
from captum_smocam.smocam import SMOCAM
from captum_smocam.smocam.inputs import distinct_rows

SHAPE = (14, 16, 12)


class _LargestAllocation(TorchDispatchMode):
    """The largest new storage (bytes) any operation returned while active, views not counted."""

    def __init__(self):
        super().__init__()
        self.largest, self.what = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        before = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in before:
                if t.untyped_storage().nbytes() > self.largest:
                    self.largest, self.what = t.untyped_storage().nbytes(), (str(func), tuple(t.shape))
        return out


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return VGG3D(6, channels=(2, 2, 2)).eval()


@pytest.mark.parametrize("objective", ["preserve", "poster"])
@pytest.mark.parametrize("fast", [True, False])
def test_largest_tensor_does_not_grow_with_the_outputs_explained(net, objective, fast):
    # K outputs of one scan (x.expand, as the docs and `smocam cohort` do), 2 masks at a time: nothing but the
    # K returned masks may grow with K (before issue 23: the input checks and the fingerprint of distinct rows
    # made K copies of the scan, the poster's float64 cast another K).
    torch.set_num_threads(1)
    x = torch.randn(1, 1, *SHAPE)
    sm = SMOCAM(net, net.features.block2)
    sm.attribute(x, target=0, n_steps=2, objective=objective, fast=fast)  # set-up: trace, plan, references
    largest, masks = {}, {}
    for k in (8, 64):
        with _LargestAllocation() as seen:
            masks[k] = sm.attribute(x.expand(k, *x.shape[1:]), target=[i % 6 for i in range(k)], n_steps=2,
                                    objective=objective, fast=fast, internal_batch_size=2)
        largest[k] = seen.largest
    work_bytes = 8 if objective == "poster" else 4  # the poster's objective works in float64
    returned = masks[64].numel() * work_bytes
    assert largest[64] <= max(largest[8], returned), (largest, seen.what)
    assert largest[64] < 64 * x.numel() * x.element_size()  # not the size of 64 scans
    torch.testing.assert_close(masks[64][:8], masks[8], rtol=0, atol=0)


def test_distinct_rows_of_an_expanded_batch_and_of_a_mixed_one():
    x = torch.randn(2, 1, *SHAPE)
    distinct, rows_of = distinct_rows((x[:1].expand(5, *x.shape[1:]),), (), 5)
    assert distinct.tolist() == [0] and rows_of.tolist() == [0] * 5
    mixed = torch.cat([x[:1], x[1:], x[:1].clone(), x[1:].clone(), -x[:1]])
    distinct, rows_of = distinct_rows((mixed,), (), 5)
    assert distinct.tolist() == [0, 1, 4] and rows_of.tolist() == [0, 1, 0, 1, 2]
    # A per-example forward argument splits rows whose inputs are equal.
    distinct, rows_of = distinct_rows((x[:1].expand(3, *x.shape[1:]),), (torch.tensor([1.0, 2.0, 1.0]),), 3)
    assert distinct.tolist() == [0, 1] and rows_of.tolist() == [0, 1, 0]


def test_expanded_input_with_a_nan_is_refused_with_the_count_of_every_row(net):
    x = torch.randn(1, 1, *SHAPE)
    x[0, 0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="contains 4 NaN"):
        SMOCAM(net, net.features.block2).attribute(x.expand(4, *x.shape[1:]), target=[0, 1, 2, 3], n_steps=1)


def test_fast_path_keeps_only_what_the_masked_suffix_reads(net):
    # The layer's output is masked: its stored output stands in for it, so its input (the block before,
    # at twice the resolution) is neither stored nor copied into every chunk.
    x = torch.randn(3, 1, *SHAPE)
    def modules_kept(to_input):
        runner = build_fast_runner(net, net.features.block2, (x,), (), to_input)
        return sorted(nd.target for nd in runner.boundary if nd.op == "call_module")

    assert modules_kept(False) == ["features.block2"]
    assert modules_kept(True) == ["features.block1.2"]  # its input (block1's last module) is masked: kept


@pytest.mark.parametrize("fast", [True, False])
def test_a_call_leaves_the_thread_count_as_the_caller_set_it(net, fast):
    # The kernel plans are keyed on the thread count and the benchmarks set it: SMOCAM itself never does.
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        x = torch.randn(2, 1, *SHAPE)
        SMOCAM(net, net.features.block2).attribute(x, target=[0, 1], n_steps=2, fast=fast, kernel_plan="fastest")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_prefix_pass_drops_each_activation_once_it_is_read():
    # The full pass of the fast path keeps the values the suffix reads, not every activation before the layer
    # (before issue 23 all of them were alive at once: at 256^3 the early layers alone took about 1 GiB).
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(3, 3, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.Conv3d(3, 3, 3, padding=1), torch.nn.AdaptiveAvgPool3d(1),
                              torch.nn.Flatten(), torch.nn.Linear(3, 2)).eval()
    import weakref

    seen, alive_at_last_conv = {}, {}
    net[0].register_forward_hook(lambda m, a, out: seen.__setitem__("conv0", weakref.ref(out)))
    net[4].register_forward_pre_hook(lambda m, a: alive_at_last_conv.update(conv0=seen["conv0"]() is not None))
    x = torch.randn(2, 1, *SHAPE)
    split = build_fast_runner(net, net[4], (x,), (), False).split  # traced, split and checked
    seen.clear()
    alive_at_last_conv.clear()
    with torch.no_grad():
        _FastRunner(split, (x,), (), False).reference()  # a fresh runner: one full pass
    assert alive_at_last_conv == {"conv0": False}
