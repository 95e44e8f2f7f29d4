"""Kernel plans: which convolution and matrix-product kernels SMOCAM's network evaluations use.

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
* ``min_rows``: every network evaluation still runs on at least this many rows
  (copies of the last example), the mechanism SMOCAM used before plans
  (``smocam.MIN_ROWS = 4``); a plan whose per-row invariance was verified
  needs 1.

A plan applies to whole network evaluations through a
:class:`torch.overrides.TorchFunctionMode` (:meth:`KernelPlan.activate`), so
the fast path (prefix once, suffix per step) and the hook path (whole network
per step) run the same kernels. Plans are chosen per (model architecture,
layer, feature shape without the batch, dtype, device, threads) by
:func:`choose_plan` — never per batch size — verified and timed once, and
cached per process and on disk; see ``docs/performance.md``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import re
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from . import _settings

logger = logging.getLogger(__name__)

__all__ = [
    "KernelPlan",
    "STOCK",
    "OneDNNConvolution",
    "onednn_conv",
    "rowwise_linear",
    "candidates",
    "verify",
    "time_plans",
    "choose_plan",
    "plan_key",
    "architecture_key",
    "plan_for",
    "set_kernel_tuning",
    "kernel_tuning_mode",
    "kernel_tuning_enabled",
    "clear_plan_cache",
    "PLAN_CACHE_ENV",
    "TUNING_ENV",
]

#: Environment variable of the plan choice: unset or ``1``/``on``: the first per-row invariant candidate
#: (a fixed rule: every process on every machine with the same torch build chooses the same plan);
#: ``fastest``: the fastest invariant candidate, timed on this machine (see :func:`choose_plan`); ``0``,
#: ``off``, ``false``, ``no``: no plans, every call uses :data:`STOCK` (PyTorch's own kernels with
#: ``min_rows = 4``, SMOCAM before plans).
TUNING_ENV = _settings.KERNEL_TUNING
#: Environment variable naming an on-disk plan cache (a JSON file). Unset (the default) or ``off``: plans
#: are cached per process only, so SMOCAM writes nothing outside the folders a user names; a cohort can set
#: it to share the choices (and skip the checks) between processes.
PLAN_CACHE_ENV = _settings.PLAN_CACHE

_tuning: Optional[str] = None  # None: read TUNING_ENV
#: The modes of plan choice (:func:`kernel_tuning_mode`).
TUNING_MODES = ("off", "first", "fastest")


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
    min_rows: int = 4
    verified: Optional[bool] = None
    seconds: Dict[str, List[float]] = dataclasses.field(default_factory=dict, compare=False)
    reason: str = ""

    @property
    def stock(self) -> bool:
        return self.conv == "stock" and self.linear == "stock" and not self.channels_last

    def activate(self):
        """A context in which ``F.conv*d``, ``F.linear`` and 2-D matrix products follow the plan."""
        if self.stock:
            return contextlib.nullcontext()
        return _PlanMode(self)

    def describe(self) -> str:
        text = f"{self.name} (conv {self.conv}, linear {self.linear}, "
        text += f"{'channels_last_3d' if self.channels_last else 'contiguous'}, min_rows {self.min_rows}"
        if self.verified is not None:
            text += f", per-row invariance {'verified' if self.verified else 'NOT verified'}"
        return text + (f"; {self.reason}" if self.reason else "") + ")"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "KernelPlan":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


#: PyTorch's own kernel choice, padded to 4 rows (SMOCAM before kernel plans; ``smocam.MIN_ROWS``).
STOCK = KernelPlan("stock", min_rows=4, reason="PyTorch's own kernels, every evaluation padded to 4 rows")

_CONV_FUNCS = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3, torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
_LINEAR_FUNCS = {F.linear, torch._C._nn.linear}
_MATMUL_FUNCS = {torch.matmul, torch.mm, Tensor.matmul, Tensor.mm, Tensor.__matmul__}


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
        elif plan.linear == "rowwise" and func in _MATMUL_FUNCS and not kwargs:
            a, b = args[0], args[1]
            if isinstance(a, Tensor) and isinstance(b, Tensor) and a.dim() == 2 and b.dim() == 2:
                return _rowwise_mm(a, b)
        return func(*args, **kwargs)


# --------------------------------------------------------------------------- #
# The switch.
# --------------------------------------------------------------------------- #
def set_kernel_tuning(enabled) -> None:
    """Kernel plans for this process: True (the rule, ``"first"``), ``"fastest"``, False (``"off"``), or None
    (follow ``SMOCAM_KERNEL_TUNING``).

    Off, every SMOCAM call runs :data:`STOCK` (PyTorch's kernels, 4 rows at
    least), as before kernel plans existed.
    """
    global _tuning
    if enabled is None or enabled in TUNING_MODES:
        _tuning = enabled
    elif isinstance(enabled, bool):
        _tuning = "first" if enabled else "off"
    else:
        raise ValueError(f"expected True, False, None or one of {TUNING_MODES}, got {enabled!r}")


def kernel_tuning_mode() -> str:
    """``"first"`` (default), ``"fastest"`` or ``"off"``: :func:`set_kernel_tuning`, else ``SMOCAM_KERNEL_TUNING``."""
    if _tuning is not None:
        return _tuning
    return _settings.kernel_tuning()


def kernel_tuning_enabled() -> bool:
    """Whether SMOCAM uses kernel plans (:func:`kernel_tuning_mode` is not ``"off"``)."""
    return kernel_tuning_mode() != "off"


# --------------------------------------------------------------------------- #
# Choosing a plan.
# --------------------------------------------------------------------------- #
#: Batch sizes whose rows must equal the rows computed alone for a plan to count as per-row invariant.
VERIFY_BATCHES = (2, 3, 5)
#: A plan replaces an earlier candidate only if it is this much faster (timings are noisy, and the earlier
#: candidates are the more trusted: per-row invariant without padding).
MARGIN = 1.25

Probe = Callable[[KernelPlan, Tensor], Tuple[Tensor, Tensor]]


def candidates(device: torch.device, dtype: torch.dtype, fastest: bool = False) -> List[KernelPlan]:
    """The plans worth trying on ``device`` for ``dtype``, most trusted first; :data:`STOCK` is always last.

    On CPU: oneDNN convolutions with row-wise products (float32 only: oneDNN
    does not run float64, where the stock 3-D convolution is one kernel for
    every batch size already, so only the row-wise products are added), and
    with ``fastest`` also in ``channels_last_3d``. Elsewhere (CUDA):
    :data:`STOCK` only.
    """
    if torch.device(device).type != "cpu":
        return [STOCK]
    if dtype == torch.float32 and torch.backends.mkldnn.is_available():
        plans = [KernelPlan("onednn+rowwise", "onednn", "rowwise", False, 1)]
        if fastest:
            plans.append(KernelPlan("onednn+rowwise+cl", "onednn", "rowwise", True, 1))
        return plans + [STOCK]
    return [KernelPlan("rowwise", "stock", "rowwise", False, 1), STOCK]


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], Any], device) -> Tuple[float, Any]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def verify(probe: Probe, plan: KernelPlan, masks: Tensor) -> bool:
    """Per-row invariance of ``plan`` on ``probe``.

    ``probe(plan, m)`` evaluates the network on ``len(m)`` copies of one
    example with the masks ``m`` (``B x 1 x <spatial>``) and returns the
    outputs and the gradients with respect to ``m``. The plan is invariant if
    every row computed alone equals (bitwise, outputs and gradients) the same
    row computed in batches of :data:`VERIFY_BATCHES`.
    """
    singles = [probe(plan, masks[i:i + 1]) for i in range(len(masks))]
    for b in VERIFY_BATCHES:
        out, grad = probe(plan, masks[:b])
        for i in range(b):
            if not (torch.equal(out[i:i + 1], singles[i][0]) and torch.equal(grad[i:i + 1], singles[i][1])):
                return False
    return True


#: Rounds of timing; each round times every eligible plan once (one mask, five masks), and each plan
#: keeps its least time: interleaved rounds spread a passing load over all plans.
ROUNDS = 3


def time_plans(probe: Probe, plans: Sequence[KernelPlan], masks: Tensor,
               rounds: int = ROUNDS) -> Dict[str, List[float]]:
    """``{plan name: [seconds for one mask, for five masks]}`` per evaluation (least over ``rounds`` rounds).

    One mask under a padded plan runs ``min_rows`` rows.
    """
    device = masks.device
    for plan in plans:  # warm-up
        probe(plan, masks[:plan.min_rows])
    best = {plan.name: [float("inf"), float("inf")] for plan in plans}
    for _ in range(rounds):
        for plan in plans:
            t1, _ = _timed(lambda: probe(plan, masks[:max(1, plan.min_rows)]), device)
            t5, _ = _timed(lambda: probe(plan, masks[:5]), device)
            best[plan.name] = [min(best[plan.name][0], t1), min(best[plan.name][1], t5)]
    return best


def choose_plan(probe: Probe, masks: Tensor, plans: Optional[Sequence[KernelPlan]] = None,
                fastest: bool = False) -> KernelPlan:
    """The first per-row-invariant plan for ``probe`` (see :func:`verify`), or the fastest; else :data:`STOCK`.

    By default (the rule) the first candidate that proves per-row invariance
    wins, untimed: the choice depends only on the model, the shape and the
    torch build, never on the machine's load, so every process computes the
    same masks (different plans round differently in the last bits, and the
    poster's objective can amplify that to a few percent of a mask).

    With ``fastest``, each eligible candidate's cost is the time of one mask
    alone plus that of five masks together (a plan is chosen per model and
    shape, never per batch size, so both must be good), timed in
    interleaved rounds (:func:`time_plans`); a candidate replaces an earlier
    one only when it is :data:`MARGIN` times cheaper. :data:`STOCK` needs no
    check (its padding to 4 rows is what makes it invariant). The returned
    plan records the timings (``seconds``) and why it won (``reason``).

    Args:
        probe: see :func:`verify`.
        masks (Tensor): ``5 x 1 x <spatial>`` test masks on the probe's device.
        plans (sequence of KernelPlan, optional): candidates, most trusted
            first. Default: :func:`candidates` for the masks' device and dtype.
        fastest (bool, optional): time the candidates. Default: False
    """
    plans = list(plans) if plans is not None else candidates(masks.device, masks.dtype, fastest)
    eligible, rejected = [], []
    for plan in plans:
        if not fastest and any(not p.stock for p in eligible):
            break  # the rule: the first invariant candidate
        if plan.stock:
            eligible.append(plan)
            continue
        try:
            ok = verify(probe, plan, masks)
        except Exception as exc:  # a kernel that cannot run this model: not a candidate
            logger.info("SMOCAM: kernel plan %s failed on this model (%s: %s)", plan.name, type(exc).__name__, exc)
            rejected.append(f"{plan.name} failed ({type(exc).__name__})")
            continue
        if ok:
            eligible.append(plan)
        else:
            rejected.append(f"{plan.name} not per-row invariant")
    if not fastest:
        best = eligible[0] if eligible else STOCK
        reason = ("the first per-row invariant candidate (untimed)" if not best.stock
                  else "no candidate proved per-row invariant")
        reason += f"; {'; '.join(rejected)}" if rejected else ""
        return dataclasses.replace(best, verified=None if best.stock else True, seconds={}, reason=reason)
    if not any(p.stock for p in eligible):
        eligible.append(STOCK)
    seconds = time_plans(probe, eligible, masks) if len(eligible) > 1 else {}
    best, best_cost = eligible[0], sum(seconds.get(eligible[0].name, [0.0]))
    for plan in eligible[1:]:
        cost = sum(seconds[plan.name])
        if cost * MARGIN < best_cost:
            best, best_cost = plan, cost
    ranking = ", ".join(f"{k} {1e3 * v[0]:.1f}/{1e3 * v[1]:.1f} ms" for k, v in seconds.items())
    reason = f"1 mask / 5 masks per evaluation: {ranking}" if ranking else "the only candidate"
    reason += f"; {'; '.join(rejected)}" if rejected else ""
    return dataclasses.replace(best, verified=None if best.stock else True, seconds=seconds, reason=reason)


# --------------------------------------------------------------------------- #
# Caches.
# --------------------------------------------------------------------------- #
_PLANS: Dict[str, KernelPlan] = {}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _code_digest(cls: type) -> str:
    """A digest of the bytecode of ``cls.forward`` (changes when the forward's code does)."""
    code = getattr(getattr(cls, "forward", None), "__code__", None)
    if code is None:
        return ""
    return hashlib.sha1(code.co_code + repr(code.co_consts).encode() + repr(code.co_names).encode()).hexdigest()[:12]


_PLAIN = (bool, int, float, str, type(None))


def architecture_key(model: Any) -> str:
    """What a plan depends on in a model: its modules' types, code and settings, its tensors' shapes — not values.

    Per submodule: the class, a digest of its ``forward``'s bytecode, its
    ``repr`` and its plain attributes (numbers, strings, tuples of them); per
    parameter and buffer: name, shape and dtype.
    """
    if isinstance(model, torch.nn.Module):
        parts = [repr(model)]
        for name, m in model.named_modules():
            attrs = sorted((k, v) for k, v in vars(m).items() if not k.startswith("_") and k != "training"
                           and (isinstance(v, _PLAIN)
                                or (isinstance(v, tuple) and all(isinstance(x, _PLAIN) for x in v))))
            parts.append(f"{name}:{type(m).__module__}.{type(m).__qualname__}:{_code_digest(type(m))}:{attrs!r}")
        parts += [f"{n}:{tuple(t.shape)}:{t.dtype}" for n, t in (*model.named_parameters(), *model.named_buffers())]
        return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]
    return f"{type(model).__module__}.{getattr(model, '__qualname__', type(model).__qualname__)}"


def plan_key(model: Any, layer_name: str, input_shapes: Sequence[Sequence[int]], dtype: torch.dtype,
             device: torch.device, to_input: bool) -> str:
    """The cache key of a plan: model architecture, layer, input shapes without the batch, dtype, device,
    threads, CPU model and torch version."""
    device = torch.device(device)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model())
    parts = [architecture_key(model), layer_name, str(bool(to_input)), repr([list(s) for s in input_shapes]),
             str(dtype), device.type, where, f"threads={torch.get_num_threads()}", torch.__version__]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


def _disk_path() -> Optional[str]:
    return _settings.plan_cache_path()


#: The entry that marks a file as a kernel plan cache (written into every cache file).
CACHE_MARKER = "__smocam_kernel_plans__"
#: The format of the cache files this version writes and reads.
CACHE_FORMAT = 1
_KEY = re.compile(r"^[0-9a-f]{40}\|[a-z]+$")
#: Paths already warned about in this process (one warning each).
_WARNED: set = set()


def _warn_once(path: str, message: str) -> None:
    if (path, message) not in _WARNED:
        _WARNED.add((path, message))
        warnings.warn(message, UserWarning, stacklevel=3)


def _load_cache(path: str) -> Tuple[Optional[Dict[str, Any]], str]:
    """``(entries, "")`` of the plan cache at ``path`` (``{}`` when absent or empty), or ``(None, why)`` when
    the file is not a plan cache (then it must not be touched)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}, ""
    except IsADirectoryError:
        return None, "it is a folder"
    if not raw.strip():
        return {}, ""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None, "it is not JSON"
    if not isinstance(data, dict):
        return None, "it is not a JSON object"
    marker = data.pop(CACHE_MARKER, None)
    if marker is not None and marker != CACHE_FORMAT:
        return None, f"its format {marker!r} is not {CACHE_FORMAT}"
    if marker is None and not all(isinstance(k, str) and _KEY.match(k) and isinstance(v, dict)
                                  for k, v in data.items()):
        return None, "its entries are not kernel plans"
    return data, ""


def _entry_problem(data: Any) -> Optional[str]:
    """Why a cache entry is not a valid plan (None if it is)."""
    if not isinstance(data, dict):
        return f"the entry is a {type(data).__name__}, not an object"
    checks = [
        ("name", lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
        ("conv", lambda v: v in ("stock", "onednn"), "'stock' or 'onednn'"),
        ("linear", lambda v: v in ("stock", "rowwise"), "'stock' or 'rowwise'"),
        ("channels_last", lambda v: isinstance(v, bool), "true or false"),
        ("min_rows", lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024,
         "an integer in [1, 1024]"),
        ("verified", lambda v: v is None or isinstance(v, bool), "true, false or null"),
        ("seconds", lambda v: isinstance(v, dict) and all(
            isinstance(k, str) and isinstance(t, list)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in t) for k, t in v.items()),
         "an object of lists of numbers"),
        ("reason", lambda v: isinstance(v, str), "a string"),
    ]
    if "name" not in data:
        return "it has no name"
    for field, ok, what in checks:
        if field in data and not ok(data[field]):
            return f"{field} must be {what}, got {data[field]!r}"
    return None


@contextlib.contextmanager
def _cache_lock(path: str):
    """An exclusive ``flock`` on ``<path>.lock`` (beside the cache) while the block runs."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # as atomic_write does for the cache
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_disk() -> Dict[str, dict]:
    """The entries of the on-disk plan cache; ``{}`` when there is none or the file is not a plan cache."""
    path = _disk_path()
    if path is None:
        return {}
    try:
        entries, why = _load_cache(path)
    except OSError:
        return {}
    if entries is None:
        _warn_once(path, f"{_settings.PLAN_CACHE}={path!r} names a file that is not a kernel plan cache ({why}): "
                         "it is left untouched and kernel plans are kept per process only")
        return {}
    return entries


def _write_disk(key: str, plan: KernelPlan) -> None:
    """Add ``plan`` to the on-disk cache: merged under the cache's lock, written atomically, never over a file
    that is not a plan cache."""
    path = _disk_path()
    if path is None:
        return
    try:
        from ._io import atomic_write

        with _cache_lock(path):
            entries, why = _load_cache(path)
            if entries is None:
                _warn_once(path, f"{_settings.PLAN_CACHE}={path!r} names a file that is not a kernel plan cache "
                                 f"({why}): it is left untouched and kernel plans are kept per process only")
                return
            entries[key] = plan.to_json()
            with atomic_write(path) as tmp:
                with open(tmp, "w") as f:
                    json.dump({CACHE_MARKER: CACHE_FORMAT, **entries}, f, indent=1, sort_keys=True)
    except OSError as exc:  # a read-only home: plans are then kept per process only
        logger.info("SMOCAM: cannot write the kernel plan cache %s (%s)", path, exc)


def clear_plan_cache(disk: bool = False) -> None:
    """Forget the plans chosen in this process (and, with ``disk=True``, remove the on-disk cache file, if it is
    one: a file that is not a plan cache is left untouched)."""
    _PLANS.clear()
    path = _disk_path()
    if not disk or path is None or not os.path.isfile(path):
        return
    with _cache_lock(path):
        entries, why = _load_cache(path)
        if entries is None:
            _warn_once(path, f"{_settings.PLAN_CACHE}={path!r} names a file that is not a kernel plan cache "
                             f"({why}): it is left untouched")
            return
        os.remove(path)


def plan_for(key: str, choose: Callable[[], KernelPlan]) -> Tuple[KernelPlan, str]:
    """The plan for ``key``: from this process, from the disk cache, or ``choose()`` (then stored in both).

    Returns:
        (KernelPlan, str): the plan and where it came from (``"process"``, ``"disk"`` or ``"chosen"``).
    """
    if key in _PLANS:
        return _PLANS[key], "process"
    stored = _read_disk().get(key)
    if stored is not None:
        problem = _entry_problem(stored)
        if problem is None:
            plan = KernelPlan.from_json(stored)
            _PLANS[key] = plan
            return plan, "disk"
        _warn_once(str(_disk_path()), f"ignoring an invalid entry of the kernel plan cache {_disk_path()!r} "
                                      f"({problem}); the plan is chosen again")
    start = time.perf_counter()
    plan = choose()
    logger.info("SMOCAM: kernel plan %s chosen in %.2f s", plan.describe(), time.perf_counter() - start)
    _PLANS[key] = plan
    _write_disk(key, plan)
    return plan, "chosen"
