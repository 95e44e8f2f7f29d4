"""Kernel plans: the batch-invariant convolution and matrix-product kernels SMOCAM's evaluations can run.

PyTorch picks a CPU convolution kernel from the shapes, the batch size
included: a 3 x 3 x 3 convolution of a batch of one small feature map runs
PyTorch's own ``slow_conv3d`` (forward and input gradient), a batch of two or
more runs oneDNN. MKL's matrix product (``nn.Linear``) uses other kernels for
the last ``n mod 4`` rows of a batch of fewer than 12 rows. Both give results
that differ in the last bits from those of a larger batch, and SMOCAM's
optimisation can amplify a last-bit difference into a different mask, so a
mask computed alone could differ from the same mask computed in a batch.

A :class:`KernelPlan` removes the batch size from these choices *by
construction*:

* ``conv="onednn"``: every float32 CPU convolution runs oneDNN
  (``torch.mkldnn_convolution``) whatever the batch size, and its input
  gradient is a oneDNN convolution of the output gradient with the flipped,
  transposed weights (:class:`OneDNNConvolution`) — the same kernel for a batch
  of 1 as for 100, and never the slow batch-of-one kernel;
* ``linear="rowwise"``: ``nn.Linear`` / ``F.linear`` / 2-D matrix products
  compute each row as its own vector-matrix product (:func:`rowwise_linear`),
  so a row's result does not depend on how many rows share the call;
* ``channels_last``: convolutions take and give ``channels_last_3d`` tensors
  (oneDNN's native layout, no reorders);
* ``pool="channels_last"``: 3-D max pooling of a contiguous float tensor runs
  PyTorch's ``channels_last_3d`` kernel (:func:`channels_last_max_pool3d`),
  faster on CPU than the contiguous one (``docs/performance.md`` measures it); a maximum is a
  selection, so the values are the same bits, and the gradient goes to the
  same input element (the kernels' indices are compared in
  ``tests/test_kernels.py``); it works on each row alone;
* ``min_rows``: every network evaluation still runs on at least this many rows
  (copies of the last example), the mechanism SMOCAM used before plans
  (:data:`MIN_ROWS` = 4); a plan whose per-row invariance was verified needs 1.

A plan applies to whole network evaluations through a
:class:`torch.overrides.TorchFunctionMode` (:meth:`KernelPlan.activate`), so
the fast path (prefix once, suffix per step) and the hook path (whole network
per step) run the same kernels. Which plan a call uses (candidates, the
invariance check, timing, the caches) is :mod:`captum_smocam.kernel_choice`'s
job; see ``docs/performance.md``.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ["KernelPlan", "STOCK", "MIN_ROWS", "OneDNNConvolution", "onednn_conv", "rowwise_linear",
           "channels_last_max_pool3d"]

#: Every network evaluation runs on at least this many rows (a smaller batch is filled with copies of
#: its last example, whose results are dropped) under PyTorch's own kernels (:data:`STOCK`:
#: ``kernel_plan="stock"``, and the fallback of ``"auto"``). On CPU, PyTorch picks other convolution kernels
#: for a batch of 1 or 2 than for 4 or more, and their results differ in the last bits; with at least 4 rows
#: the same kernels run whatever the batch, so a mask computed alone, in any batch, on the fast or the hook
#: path comes out the same (docs/method.md gives the measured differences). A plan whose kernels are per-row
#: invariant by construction and verified on the model (:mod:`captum_smocam.kernel_choice`) needs 1 row.
MIN_ROWS = 4

# --------------------------------------------------------------------------- #
# Batch-invariant kernels.
# --------------------------------------------------------------------------- #
def _tuple(value: Any, n: int) -> List[int]:
    if isinstance(value, (tuple, list)):
        return [int(v) for v in value] if len(value) == n else [int(value[0])] * n
    return [int(value)] * n


class OneDNNConvolution(torch.autograd.Function):
    """A convolution that runs oneDNN for every batch size, forward and input gradient.

    Forward: ``torch.mkldnn_convolution`` (what PyTorch itself runs for a batch
    of two or more). Input gradient: the transposed convolution written as a
    oneDNN forward convolution of the output gradient (zeros inserted between
    its voxels for a strided convolution) with the weights flipped along every
    spatial axis and input/output channels swapped. No gradient flows to the
    weights and bias (SMOCAM differentiates with respect to the mask only).

    Shapes: ``x`` ``N x C_in x <1-3 spatial dims>``, ``weight``
    ``C_out x C_in x <kernel>``; returns ``N x C_out x <output spatial dims>``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation,
                channels_last: bool) -> Tensor:
        d = x.dim() - 2
        stride, padding, dilation = _tuple(stride, d), _tuple(padding, d), _tuple(dilation, d)
        if channels_last and d == 3:
            x = x.contiguous(memory_format=torch.channels_last_3d)
            weight = weight.contiguous(memory_format=torch.channels_last_3d)
        else:
            x = x.contiguous()
        ctx.save_for_backward(weight)
        ctx.geometry = (stride, padding, dilation, tuple(x.shape[2:]), channels_last)
        return torch.mkldnn_convolution(x, weight, bias, padding, stride, dilation, 1)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (weight,) = ctx.saved_tensors
        stride, padding, dilation, in_size, channels_last = ctx.geometry
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = _conv_input_grad(grad_out, weight, stride, padding, dilation, in_size, channels_last)
        return grad_x, None, None, None, None, None, None


def _conv_input_grad(grad_out, weight, stride, padding, dilation, in_size, channels_last):
    d = weight.dim() - 2
    kernel = weight.shape[2:]
    flipped = weight.transpose(0, 1).flip(list(range(2, 2 + d)))
    if any(s > 1 for s in stride):
        # Zeros between the output voxels, and after the last one up to the input's size.
        reach = [dl * (k - 1) for dl, k in zip(dilation, kernel)]
        size = [i - r + 2 * p for i, r, p in zip(in_size, reach, padding)]  # zero-spread gradient, unpadded
        spread = grad_out.new_zeros((*grad_out.shape[:2], *size))
        index = (slice(None), slice(None)) + tuple(slice(0, (o - 1) * s + 1, s)
                                                   for o, s in zip(grad_out.shape[2:], stride))
        spread[index] = grad_out
        grad_out = spread
    pad = [dl * (k - 1) - p for dl, k, p in zip(dilation, kernel, padding)]
    if channels_last and d == 3:
        grad_out = grad_out.contiguous(memory_format=torch.channels_last_3d)
        flipped = flipped.contiguous(memory_format=torch.channels_last_3d)
    else:
        grad_out, flipped = grad_out.contiguous(), flipped.contiguous()
    return torch.mkldnn_convolution(grad_out, flipped, None, pad, [1] * d, list(dilation), 1)


def _onednn_applies(x: Tensor, weight: Tensor, padding, dilation, groups: int) -> bool:
    """Whether :class:`OneDNNConvolution` can run this convolution (and stock PyTorch might not use oneDNN)."""
    d = x.dim() - 2
    if not (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and 1 <= d <= 3 and groups == 1 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and not isinstance(padding, str)):
        return False
    kernel = weight.shape[2:]
    pad, dil = _tuple(padding, d), _tuple(dilation, d)
    return all(dl * (k - 1) - p >= 0 for dl, k, p in zip(dil, kernel, pad))


def _stock_uses_onednn(x: Tensor, weight: Tensor, groups: int) -> bool:
    """PyTorch's own rule (``ConvParams::use_mkldnn``) sends this convolution to oneDNN at every batch size."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
            and (groups > 1 or (weight.shape[-1] > 3 and weight.shape[-2] > 3)))


def onednn_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride=1, padding=0, dilation=1,
                groups: int = 1, channels_last: bool = False) -> Tensor:
    """``F.conv{1,2,3}d`` that runs the same oneDNN kernels for every batch size (see :class:`OneDNNConvolution`).

    PyTorch's own ``F.conv{d}d`` runs where it picks oneDNN at every batch size
    anyway (kernels larger than 3 in the last two dims, groups > 1) and where
    oneDNN cannot run the convolution (not float32 on CPU, string padding,
    padding larger than the kernel's reach). Gradients reach ``x`` only.

    Examples::

        >>> import torch, torch.nn.functional as F
        >>> x, w = torch.randn(3, 2, 5, 6, 7), torch.randn(4, 2, 3, 3, 3)
        >>> torch.allclose(onednn_conv(x, w, padding=1), F.conv3d(x, w, padding=1), atol=1e-5)
        True
        >>> torch.equal(onednn_conv(x[:1], w, padding=1), onednn_conv(x, w, padding=1)[:1])  # batch-invariant
        True
    """
    if channels_last and x.dim() == 5:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    if _stock_uses_onednn(x, weight, groups) or not _onednn_applies(x, weight, padding, dilation, groups):
        return _STOCK_CONV[x.dim() - 2](x, weight, bias, stride, padding, dilation, groups)
    return OneDNNConvolution.apply(x, weight.detach(), None if bias is None else bias.detach(), stride, padding,
                                   dilation, channels_last)


_STOCK_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def rowwise_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear`` computed as one vector-matrix product per row, so that a row does not depend on the batch.

    ``x`` is ``N x in``, ``weight`` ``out x in``; returns ``N x out``. Other
    shapes are passed to ``F.linear``.

    Examples::

        >>> import torch, torch.nn.functional as F
        >>> x, w, b = torch.randn(5, 8), torch.randn(3, 8), torch.randn(3)
        >>> torch.allclose(rowwise_linear(x, w, b), F.linear(x, w, b), atol=1e-6)
        True
        >>> torch.equal(rowwise_linear(x[:1], w, b), rowwise_linear(x, w, b)[:1])
        True
    """
    if x.dim() != 2 or weight.dim() != 2:
        return F.linear(x, weight, bias)
    out = _rowwise_mm(x, weight.t())
    return out if bias is None else out + bias


def _rowwise_mm(x: Tensor, m: Tensor) -> Tensor:
    """``x @ m`` for ``x`` ``N x K`` and ``m`` ``K x M``, one ``1 x K`` by ``K x M`` product per row."""
    return torch.bmm(x.unsqueeze(1), m.unsqueeze(0).expand(x.shape[0], *m.shape)).squeeze(1)


class _ChannelsLastMaxPool3d(torch.autograd.Function):
    """3-D max pooling computed in ``channels_last_3d``; output and gradient contiguous, as the stock kernel's."""

    @staticmethod
    def forward(ctx, x: Tensor, kernel_size, stride, padding, dilation, ceil_mode: bool):
        args = (kernel_size, stride, padding, dilation, ceil_mode)
        y, idx = torch.ops.aten.max_pool3d_with_indices(x.contiguous(memory_format=torch.channels_last_3d), *args)
        idx = idx.contiguous()
        ctx.save_for_backward(x, idx)
        ctx.args = args
        return y.contiguous()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, idx = ctx.saved_tensors
        grad = torch.ops.aten.max_pool3d_with_indices_backward(grad_out.contiguous(), x, *ctx.args, idx)
        return grad, None, None, None, None, None


def channels_last_max_pool3d(x: Tensor, kernel_size, stride=None, padding=0, dilation=1,
                             ceil_mode: bool = False) -> Tensor:
    """``F.max_pool3d`` of a contiguous ``N x C x D x H x W`` tensor, run by the ``channels_last_3d`` kernel.

    The same values as ``F.max_pool3d`` (a maximum is a selection) and the same
    gradient; faster on CPU for contiguous inputs (``docs/performance.md``).

    Examples::

        >>> x = torch.randn(2, 3, 6, 8, 4, requires_grad=True)
        >>> torch.equal(channels_last_max_pool3d(x, 2), F.max_pool3d(x, 2))
        True
    """
    k = _tuple(kernel_size, 3)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and not stride) else _tuple(stride, 3)
    return _ChannelsLastMaxPool3d.apply(x, k, s, _tuple(padding, 3), _tuple(dilation, 3), bool(ceil_mode))


# --------------------------------------------------------------------------- #
# Plans.
# --------------------------------------------------------------------------- #
@dataclasses.dataclass(frozen=True)
class KernelPlan:
    """How SMOCAM's network evaluations run: kernels, layout and the least number of rows.

    Attributes:
        name (str): a short label, e.g. ``"onednn+rowwise"`` or ``"stock"``.
        conv (str): ``"stock"`` (PyTorch's choice) or ``"onednn"`` (:func:`onednn_conv`).
        linear (str): ``"stock"`` or ``"rowwise"`` (:func:`rowwise_linear`).
        channels_last (bool): convolutions in ``channels_last_3d``.
        min_rows (int): every evaluation runs on at least this many rows.
        verified (bool or None): per-row bitwise invariance checked on this model
            (rows of batches of 1, 2, 3 and 5 copies all equal); None: not checked.
        seconds (dict): probe timings of the candidates, ``{name: [t_one, t_five]}``
            (seconds per network evaluation for 1 mask and for 5 masks; see :func:`time_plans`).
        reason (str): why this plan was chosen.
        pool (str): ``"stock"`` or ``"channels_last"`` (3-D max pooling by
            :func:`channels_last_max_pool3d`).

    Examples::

        >>> STOCK.min_rows, STOCK.conv
        (4, 'stock')
        >>> with KernelPlan("onednn+rowwise", "onednn", "rowwise", False, 1).activate():
        ...     pass
    """

    name: str
    conv: str = "stock"
    linear: str = "stock"
    channels_last: bool = False
    min_rows: int = MIN_ROWS
    verified: Optional[bool] = None
    seconds: Dict[str, List[float]] = dataclasses.field(default_factory=dict, compare=False)
    reason: str = ""
    pool: str = "stock"

    @property
    def stock(self) -> bool:
        return self.conv == "stock" and self.linear == "stock" and not self.channels_last and self.pool == "stock"

    def activate(self):
        """A context in which ``F.conv*d``, ``F.linear`` and 2-D matrix products follow the plan."""
        if self.stock:
            return contextlib.nullcontext()
        return _PlanMode(self)

    def describe(self) -> str:
        text = f"{self.name} (conv {self.conv}, linear {self.linear}, "
        text += f"{'channels_last_3d' if self.channels_last else 'contiguous'}, "
        text += f"{'' if self.pool == 'stock' else 'max pooling ' + self.pool + ', '}min_rows {self.min_rows}"
        if self.verified is not None:
            text += f", per-row invariance {'verified' if self.verified else 'NOT verified'}"
        return text + (f"; {self.reason}" if self.reason else "") + ")"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "KernelPlan":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


#: PyTorch's own kernel choice, padded to :data:`MIN_ROWS` rows (SMOCAM before kernel plans).
STOCK = KernelPlan("stock", min_rows=MIN_ROWS, reason="PyTorch's own kernels, every evaluation padded to 4 rows")

_CONV_FUNCS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3, torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
_LINEAR_FUNCS = {F.linear, torch._C._nn.linear}
_MATMUL_FUNCS = {torch.matmul, torch.mm, Tensor.matmul, Tensor.mm, Tensor.__matmul__}
_MAX_POOL3D = F.max_pool3d


def _arg(args, kwargs, i, name, default):
    return args[i] if len(args) > i else kwargs.get(name, default)


class _PlanMode(TorchFunctionMode):
    """Redirects convolutions, linear layers and 2-D matrix products to a plan's kernels."""

    def __init__(self, plan: KernelPlan) -> None:
        super().__init__()
        self.plan = plan

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        plan = self.plan
        if plan.conv == "onednn" and func in _CONV_FUNCS:
            x, w = args[0], args[1]
            if isinstance(x, Tensor) and x.dim() == _CONV_FUNCS[func] + 2:
                return onednn_conv(x, w, _arg(args, kwargs, 2, "bias", None), _arg(args, kwargs, 3, "stride", 1),
                                   _arg(args, kwargs, 4, "padding", 0), _arg(args, kwargs, 5, "dilation", 1),
                                   _arg(args, kwargs, 6, "groups", 1), plan.channels_last)
        elif (plan.linear == "rowwise" and func in _LINEAR_FUNCS and isinstance(args[0], Tensor)
              and isinstance(args[1], Tensor)):  # not torch.fx proxies while a model is traced
            return rowwise_linear(args[0], args[1], _arg(args, kwargs, 2, "bias", None))
        elif plan.pool == "channels_last" and func is _MAX_POOL3D and not _arg(args, kwargs, 6, "return_indices", False):
            x = args[0]
            if (isinstance(x, Tensor) and x.dim() == 5 and x.device.type == "cpu" and x.is_floating_point()
                    and x.is_contiguous()):
                return channels_last_max_pool3d(x, _arg(args, kwargs, 1, "kernel_size", None),
                                                _arg(args, kwargs, 2, "stride", None),
                                                _arg(args, kwargs, 3, "padding", 0),
                                                _arg(args, kwargs, 4, "dilation", 1),
                                                _arg(args, kwargs, 5, "ceil_mode", False))
        elif plan.linear == "rowwise" and func in _MATMUL_FUNCS and not kwargs:
            a, b = args[0], args[1]
            if isinstance(a, Tensor) and isinstance(b, Tensor) and a.dim() == 2 and b.dim() == 2:
                return _rowwise_mm(a, b)
        return func(*args, **kwargs)

