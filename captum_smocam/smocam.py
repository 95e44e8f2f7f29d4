"""SMOCAM: the SMOoth Conditional Attention Mask, as a Captum layer attribution.

SMOCAM optimises a mask on one layer's feature map so that the network, with
the masked features, still makes the prediction being explained. The code
follows the three parts of TorchRay's extremal perturbation:

* **what perturbs** the layer — an objective's ``perturbation``: the poster's
  ``F * M`` (:class:`PosterObjective`) or our reference-conditioned blend
  ``F_ref + M * (F - F_ref)`` (:class:`PreserveObjective`), applied inside the
  network by a runner (the cached-prefix fast path of
  :mod:`captum_smocam._fastpath`, or forward hooks);
* **the mask** — its parametrisation (``M = u * R`` with ``R >= 0``, or
  ``M = sigmoid(theta)``);
* **the loop** — :meth:`SMOCAM._optimise`: apply the mask, evaluate,
  regularise, step, stop.

Two objectives are available (``objective=`` of :meth:`SMOCAM.attribute`):

``"poster"``
    The objective of the SMOCAM poster (Konate et al.), exactly:
    ``|y_M - y| / sigma + lambda |1 - ||M||_2| + gamma 1/2 sum_axes ||grad M||_1``
    with ``F * M`` (:func:`smocam_objective`).
``"preserve"`` (the default; ours, beyond the poster)
    A reference-conditioned preservation mask: ``M`` in ``[0, 1]`` keeps the
    subject's own features where the target needs them and puts the features
    of a *reference* input elsewhere; the objective is the distance of the
    prediction plus an area and a smoothness penalty
    (:func:`preservation_objective`). See ``docs/method.md``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import numbers
import warnings
import weakref
from collections import OrderedDict
from copy import deepcopy
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.nn import Module

from ._captum_compat import (
    GradientAttribution,
    LayerAttribution,
    TargetType,
    _format_additional_forward_args,
    log_usage,
)
from ._model_state import state_fingerprint, unwrap_model
# References made from the scan (FALLBACKS, the first the default) when neither baselines nor reference_inputs exist.
from .fallbacks import DEFAULT_FALLBACK, FALLBACKS, fallback_references, shifted_copies  # noqa: F401

logger = logging.getLogger(__name__)

#: The objectives :meth:`SMOCAM.attribute` knows; the first is the default.
OBJECTIVES = ("preserve", "poster")
#: The default objective (chosen on validation subjects by benchmarks/sweep_smocam.py; docs/method.md).
DEFAULT_OBJECTIVE = "preserve"

#: Poster objective: weight of the L2-budget term ``|1 - ||M||_2|`` (validation sweep of the
#: first round; see docs/benchmarks.md).
DEFAULT_L2_WEIGHT = 1.0
#: Poster objective: weight of the smoothness term ``1/2 sum_axes ||grad_axis M||_1``
#: (validation sweep: 0.05 returned the uniform mask for 18 of 24 maps; 0.003 ranked first).
DEFAULT_SMOOTH_WEIGHT = 0.003
#: Poster objective: number of optimisation steps.
DEFAULT_N_STEPS = 100
#: Poster objective: Adam step size, in units of the uniform unit-norm mask value
#: ``1/sqrt(#voxels)`` (validation sweep on the shipped VGG3D).
DEFAULT_LR = 1.0

# The preserve objective's settings were chosen on 10 validation subjects x 4 targets of the shipped
# VGG3D by benchmarks/sweep_smocam.py with a rule fixed before the run (docs/benchmarks.md, "Tuning").
#: Preserve objective: weight of the area term ``mean(M)``.
DEFAULT_AREA_WEIGHT = 20.0
#: Preserve objective: weight of the smoothness term (total variation divided by
#: ``#voxels^((d-1)/d)``, so the same blob costs the same on every layer).
PRESERVE_SMOOTH_WEIGHT = 0.01
#: Preserve objective: Adam step size on the mask's logits.
PRESERVE_LR = 0.2
#: Preserve objective: number of optimisation steps (the sweep ranked 150 first; 1.5 x the poster's cost).
PRESERVE_N_STEPS = 150
#: Preserve objective: initial logit of every voxel (``sigmoid(-3) = 0.047``).
PRESERVE_INIT_LOGIT = -3.0

#: Preserve objective: the prediction the mask must keep, in units of sigma. While an example's masked
#: prediction is further than this from the unmasked one, the weight of its distance term grows (dual
#: ascent on a Lagrange multiplier, floored at 1, i.e. at the plain objective); ``None`` keeps the plain
#: objective (the default of issue 12).
PRESERVE_FIDELITY_TOL: Optional[float] = None
#: Step of that dual ascent: the multiplier grows by ``rate * (|y_M - y| / sigma - tol)`` per step.
FIDELITY_RATE = 1.0
#: Largest value the multiplier may take.
FIDELITY_MAX_WEIGHT = 1000.0
#: After the optimisation, a warning is given for an example whose mask does not keep its prediction:
#: the mean over the references of ``|y_M - y| / sigma`` above this (see :attr:`SMOCAM.fidelity`).
FIDELITY_WARN = 0.25
#: ... or whose mask is empty: its largest value below this (``"preserve"``; the mask is in ``[0, 1]``).
EMPTY_MASK_WARN = 0.05

#: Preserve objective: the unit of the distance term. ``"sigma"``: ``output_std`` (the population spread,
#: as the poster); ``"effect"``: per example, the root mean square over the references of the change of
#: the prediction when every feature is the reference's (the most a mask can change it), so that the
#: same settings mean the same on any model, output scale and reference set (ours).
DISTANCE_UNITS = ("sigma", "effect")
PRESERVE_DISTANCE_UNIT = "sigma"


#: Final step size of the cosine decay, as a fraction of ``lr``.
LR_FLOOR = 0.01
#: Every network evaluation runs on at least this many rows (a smaller batch is filled with copies of
#: its last example, whose results are dropped) under PyTorch's own kernels (``kernel_plan="stock"``, and
#: the fallback of ``"auto"``). On CPU, PyTorch picks other convolution kernels for a batch of 1 or 2 than
#: for 4 or more, and their results differ in the last bits; with at least 4 rows the same kernels run
#: whatever the batch, so a mask computed alone, in any batch, on the fast or the hook path comes out the
#: same (docs/method.md gives the measured differences). A kernel plan whose kernels are per-row invariant
#: by construction and verified on the model (:mod:`captum_smocam._kernels`) needs 1 row.
MIN_ROWS = 4

#: Width of the smoothed absolute value ``sqrt(t^2 + eps^2) - eps`` used to take
#: gradients of the L1 terms, with ``t`` in each term's natural unit (sigma for
#: the distance, the mask's scale for its differences). 0 uses plain subgradients.
DEFAULT_SMOOTHING = 0.01

#: Default settings of each objective (``None`` in :meth:`SMOCAM.attribute` means these).
OBJECTIVE_DEFAULTS: Dict[str, Dict[str, float]] = {
    "preserve": {"area_weight": DEFAULT_AREA_WEIGHT, "smooth_weight": PRESERVE_SMOOTH_WEIGHT,
                 "n_steps": PRESERVE_N_STEPS, "lr": PRESERVE_LR,
                 "fidelity_tol": PRESERVE_FIDELITY_TOL,
                 "distance_unit": PRESERVE_DISTANCE_UNIT},
    "poster": {"l2_weight": DEFAULT_L2_WEIGHT, "smooth_weight": DEFAULT_SMOOTH_WEIGHT,
               "n_steps": DEFAULT_N_STEPS, "lr": DEFAULT_LR},
}

#: Floating-point type of the optimisation by objective (``None``: the model's own). The poster's
#: objective has many near-equal optima; in float32 a last-bit difference between a batched and a
#: single evaluation can send the optimisation to another one, so it runs in float64 (docs/method.md).
OBJECTIVE_DTYPE: Dict[str, Optional[torch.dtype]] = {"preserve": None, "poster": torch.float64}

#: Interpolation mode used to upsample a mask, by number of spatial dimensions (the one table is
#: :data:`captum_smocam.spatial.INTERPOLATION_MODES`; importable from here too).
from .spatial import INTERPOLATION_MODES  # noqa: E402

#: Loss terms recorded in :attr:`SMOCAM.history`, by objective.
LOSS_TERMS = {"poster": ("total", "distance", "l2", "smooth"), "preserve": ("total", "distance", "area", "smooth")}


def smooth_abs(t: Tensor, eps: float) -> Tensor:
    r"""The smoothed absolute value :math:`\sqrt{t^2 + \varepsilon^2} - \varepsilon`.

    Equal to ``|t|`` for ``eps = 0``; otherwise differentiable everywhere, within
    ``eps`` of ``|t|``, and quadratic for ``|t| << eps`` (the Charbonnier / pseudo-Huber
    penalty). Used so that the optimisation converges instead of oscillating
    around the kinks of the L1 terms.

    Examples::

        >>> import torch
        >>> smooth_abs(torch.tensor([-3.0, 0.0, 4.0]), 0.0)
        tensor([3., 0., 4.])
        >>> float(smooth_abs(torch.tensor(0.0), 0.1))
        0.0
    """
    if eps == 0:
        return t.abs()
    return torch.sqrt(t * t + eps * eps) - eps


def _total_variation(mask: Tensor, eps: float = 0.0) -> Tensor:
    """``1/2 sum_axes sum |forward difference|`` per example, for 1-3 spatial dims."""
    n = mask.shape[0]
    tv = mask.new_zeros(n)
    for dim in range(2, mask.dim()):
        tv = tv + smooth_abs(mask.diff(dim=dim), eps).reshape(n, -1).sum(dim=1)
    return 0.5 * tv


def smocam_objective(
    masked_output: Tensor,
    reference_output: Tensor,
    mask: Tensor,
    output_std: Union[float, Tensor] = 1.0,
    l2_weight: float = DEFAULT_L2_WEIGHT,
    smooth_weight: float = DEFAULT_SMOOTH_WEIGHT,
) -> Dict[str, Tensor]:
    r"""The SMOCAM poster's objective, per example.

    .. math::

        \frac{|y_M - y|}{\sigma} + \lambda\,\bigl|1 - \|M\|_2\bigr|
        + \gamma\,\tfrac12 \sum_{a} \|\nabla_a M\|_1

    where the sum runs over every spatial axis ``a`` of the mask and
    :math:`\nabla_a` is the forward difference along that axis (Konate et al.,
    SMOCAM poster).

    Args:
        masked_output (Tensor): selected output of the masked network, shape ``N``.
        reference_output (Tensor): the same output of the unmasked network, shape ``N``.
        mask (Tensor): masks, shape ``N x 1 x <spatial dims>`` (1, 2 or 3 spatial dims).
        output_std (float or Tensor, optional): :math:`\sigma`, a float or one value
            per example (shape ``N``). Default: 1.0
        l2_weight (float, optional): :math:`\lambda`. Default: ``DEFAULT_L2_WEIGHT``
        smooth_weight (float, optional): :math:`\gamma`. Default: ``DEFAULT_SMOOTH_WEIGHT``

    Returns:
        dict[str, Tensor]: ``"distance"``, ``"l2"`` and ``"smooth"`` (unweighted
        terms) and ``"total"`` (the weighted sum), each of shape ``N``.

    Examples::

        >>> import torch
        >>> m = torch.full((1, 1, 2, 2, 2), 8 ** -0.5)  # uniform, unit norm
        >>> t = smocam_objective(torch.tensor([1.5]), torch.tensor([1.0]), m)
        >>> [round(float(t[k]), 4) for k in ("distance", "l2", "smooth")]
        [0.5, 0.0, 0.0]
    """
    n = mask.shape[0]
    distance = (masked_output - reference_output).abs() / output_std
    l2 = (1.0 - mask.reshape(n, -1).norm(dim=1)).abs()
    smooth = _total_variation(mask)
    total = distance + l2_weight * l2 + smooth_weight * smooth
    return {"total": total, "distance": distance, "l2": l2, "smooth": smooth}


def preservation_objective(
    masked_output: Tensor,
    reference_output: Tensor,
    mask: Tensor,
    output_std: Union[float, Tensor] = 1.0,
    area_weight: float = DEFAULT_AREA_WEIGHT,
    smooth_weight: float = PRESERVE_SMOOTH_WEIGHT,
    smoothing: float = DEFAULT_SMOOTHING,
) -> Dict[str, Tensor]:
    r"""The objective of ``objective="preserve"`` (ours, beyond the poster), per example.

    .. math::

        \rho_\varepsilon\!\Bigl(\frac{y_M - y}{\sigma}\Bigr)
        + \alpha\,\overline{M}
        + \beta\,\frac{\tfrac12 \sum_a \sum \rho_\varepsilon(\nabla_a M)}{n^{(d-1)/d}}

    with :math:`y_M` the output when the layer sees ``F_ref + M * (F - F_ref)``,
    :math:`\rho_\varepsilon` the smoothed absolute value (:func:`smooth_abs`),
    :math:`\overline{M}` the mean of the mask (its area, in ``[0, 1]``), and the
    total variation divided by :math:`n^{(d-1)/d}` for a mask of :math:`n`
    voxels in :math:`d` spatial dims, so that a blob of a given physical size
    costs the same on a coarse and a fine layer.

    Args:
        masked_output (Tensor): selected output with the blended features, shape ``N``.
        reference_output (Tensor): the same output of the unmasked network, shape ``N``.
        mask (Tensor): masks in ``[0, 1]``, shape ``N x 1 x <spatial dims>``.
        output_std (float or Tensor, optional): :math:`\sigma`, a float or one
            value per example. Default: 1.0
        area_weight (float, optional): :math:`\alpha`. Default: ``DEFAULT_AREA_WEIGHT``
        smooth_weight (float, optional): :math:`\beta`. Default: ``PRESERVE_SMOOTH_WEIGHT``
        smoothing (float, optional): :math:`\varepsilon`. Default: ``DEFAULT_SMOOTHING``

    Returns:
        dict[str, Tensor]: ``"distance"``, ``"area"``, ``"smooth"`` and
        ``"total"``, each of shape ``N``.

    Examples::

        >>> import torch
        >>> m = torch.zeros(1, 1, 4, 4, 4); m[..., 1:3, 1:3, 1:3] = 1.0
        >>> t = preservation_objective(torch.tensor([2.0]), torch.tensor([2.0]), m, smoothing=0.0)
        >>> round(float(t["area"]), 4), round(float(t["smooth"]), 4)  # 8 of 64 voxels; 24 unit steps / 2 / 16
        (0.125, 0.75)
    """
    n = mask.shape[0]
    n_spatial = mask.dim() - 2
    distance = smooth_abs((masked_output - reference_output) / output_std, smoothing)
    area = mask.reshape(n, -1).mean(dim=1)
    n_vox = float(np.prod(mask.shape[2:]))
    smooth = _total_variation(mask, smoothing) / n_vox ** ((n_spatial - 1) / n_spatial)
    total = distance + area_weight * area + smooth_weight * smooth
    return {"total": total, "distance": distance, "area": area, "smooth": smooth}


def upsample_mask(mask: Tensor, size: Sequence[int]) -> Tensor:
    """Upsample a layer-resolution mask to ``size`` (linear, bilinear or trilinear).

    This is ``LayerAttribution.interpolate(mask, size, mode)`` with ``mode`` picked
    from the number of spatial dimensions (see :data:`INTERPOLATION_MODES`), i.e.
    ``align_corners=False``: each mask voxel is the centre of the block of input
    voxels it covers.

    Args:
        mask (Tensor): shape ``N x C x <spatial dims>``.
        size (sequence of int): target spatial size, e.g. ``x.shape[2:]``.

    Returns:
        Tensor: shape ``N x C x size``.
    """
    from .spatial import upsample

    return upsample(mask, size, "linear", what="mask")


# --------------------------------------------------------------------------- #
# The mask and what it perturbs: one class per objective.
# --------------------------------------------------------------------------- #
class PosterObjective:
    """The poster's objective: ``F * M``, ``M = u * R`` with ``R >= 0`` and ``u = 1/sqrt(#voxels)``.

    The mask is parametrised relative to the uniform unit-norm value ``u``, so a
    step size means the same on every layer. The terms reported in
    :attr:`SMOCAM.history` are exactly :func:`smocam_objective`; gradients are
    taken of the same objective with every absolute value smoothed by
    ``smoothing`` (:func:`smooth_abs`), so the steps shrink near the optimum.
    """

    name = "poster"
    needs_reference = False
    fidelity_tol = math.inf

    def __init__(self, l2_weight: float, smooth_weight: float, smoothing: float, nonnegative: bool) -> None:
        self.l2_weight, self.smooth_weight = l2_weight, smooth_weight
        self.smoothing, self.nonnegative = smoothing, nonnegative

    def initial(self, shape: Tuple[int, ...], init: Optional[Tensor], like: Tensor) -> Tensor:
        self.unit = 1.0 / math.sqrt(float(np.prod(shape[2:])))
        start = torch.ones(shape) if init is None else init.detach().float() / self.unit
        return start.to(device=like.device, dtype=like.dtype)

    def mask(self, param: Tensor) -> Tensor:
        return param * self.unit

    @staticmethod
    def perturbation(mask: Tensor, reference: Optional[Tensor]) -> Callable[[Tensor], Tensor]:
        return lambda feature: feature * mask

    def terms(self, masked: Tensor, reference: Tensor, mask: Tensor, std: Tensor) -> Tuple[Dict[str, Tensor], Tensor]:
        exact = smocam_objective(masked, reference, mask, std, self.l2_weight, self.smooth_weight)
        if self.smoothing == 0:
            return exact, exact["total"]
        eps, n = self.smoothing, mask.shape[0]
        loss = (
            smooth_abs((masked - reference) / std, eps)
            + self.l2_weight * smooth_abs(1.0 - mask.reshape(n, -1).norm(dim=1), eps)
            + self.smooth_weight * self.unit * _total_variation(mask / self.unit, eps)
        )
        return exact, loss

    def project(self, param: Tensor) -> None:
        if self.nonnegative:
            param.clamp_(min=0.0)


class PreserveObjective:
    """Ours: ``F_ref + M * (F - F_ref)`` with ``M = sigmoid(theta)`` in ``[0, 1]``.

    ``M = 1`` keeps the subject's feature, ``M = 0`` puts the reference's
    (:func:`preservation_objective`). With several references the loop uses
    reference ``step % K`` at each step, the same for every example, so the
    mask must keep the prediction whatever the rest of the brain looks like.
    """

    name = "preserve"
    needs_reference = True

    def __init__(self, area_weight: float, smooth_weight: float, smoothing: float,
                 fidelity_tol: float = math.inf, fallback: str = DEFAULT_FALLBACK,
                 distance_unit: str = PRESERVE_DISTANCE_UNIT) -> None:
        self.area_weight, self.smooth_weight, self.smoothing = area_weight, smooth_weight, smoothing
        self.fidelity_tol, self.fallback, self.distance_unit = fidelity_tol, fallback, distance_unit

    @staticmethod
    def initial(shape: Tuple[int, ...], init: Optional[Tensor], like: Tensor) -> Tensor:
        if init is None:
            return torch.full(shape, PRESERVE_INIT_LOGIT, device=like.device, dtype=like.dtype)
        m = init.detach().to(device=like.device, dtype=like.dtype).clamp(1e-4, 1 - 1e-4)
        return torch.log(m) - torch.log1p(-m)

    @staticmethod
    def mask(param: Tensor) -> Tensor:
        return torch.sigmoid(param)

    @staticmethod
    def perturbation(mask: Tensor, reference: Optional[Tensor]) -> Callable[[Tensor], Tensor]:
        return lambda feature: reference + mask * (feature - reference)

    def terms(self, masked: Tensor, reference: Tensor, mask: Tensor, std: Tensor) -> Tuple[Dict[str, Tensor], Tensor]:
        t = preservation_objective(masked, reference, mask, std, self.area_weight, self.smooth_weight, self.smoothing)
        return t, t["total"]

    @staticmethod
    def project(param: Tensor) -> None:
        pass


# --------------------------------------------------------------------------- #
# Runners: evaluate the network with a perturbation applied in the layer.
# --------------------------------------------------------------------------- #
def _index_rows(value: Any, rows: Tensor, n: int) -> Any:
    """Select batch rows of tensors whose first dimension is the batch."""
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
        return value[rows]
    return value


class _LayerReached(Exception):
    """Raised by a capture hook to stop a forward pass once the layer's tensor is known."""


class _HookRunner:
    """Evaluates the whole forward function with the perturbation applied by a hook on the layer.

    Works for any forward function; every step pays for the layers before the
    masked one, which the fast path (:mod:`captum_smocam._fastpath`) avoids.
    """

    name = "hook"

    def __init__(self, forward_func, layer, inputs, additional_args, attribute_to_layer_input):
        self.forward_func = forward_func
        self.layer = layer
        self.inputs = inputs
        self.additional_args = additional_args or ()
        self.to_input = attribute_to_layer_input
        self.n = inputs[0].shape[0]

    def _forward(self, rows: Tensor) -> Tensor:
        inputs = tuple(_index_rows(x, rows, self.n) for x in self.inputs)
        args = tuple(_index_rows(a, rows, self.n) for a in self.additional_args)
        return self.forward_func(*inputs, *args)

    def _capture(self, stop: bool) -> Tuple[Any, Tensor]:
        seen: List[Any] = []

        def capture_out(module, args, output):
            seen.append(output)
            if stop:
                raise _LayerReached

        def capture_in(module, args):
            seen.append(args[0] if args else None)
            if stop:
                raise _LayerReached

        handle = (
            self.layer.register_forward_pre_hook(capture_in)
            if self.to_input
            else self.layer.register_forward_hook(capture_out)
        )
        output = None
        try:
            output = self._forward(torch.arange(self.n, device=self.inputs[0].device))
        except _LayerReached:
            pass
        finally:
            handle.remove()
        if not seen:
            raise ValueError(
                f"the layer {type(self.layer).__name__} is never reached by the forward pass; "
                "pass a module that the model calls"
            )
        if len(seen) > 1:
            raise ValueError(
                f"the layer {type(self.layer).__name__} is called {len(seen)} times in one forward "
                "pass; SMOCAM needs a layer that is used once"
            )
        if not isinstance(seen[0], Tensor):
            raise TypeError(
                f"the layer's {'input' if self.to_input else 'output'} is a "
                f"{type(seen[0]).__name__}, expected a Tensor"
            )
        return output, seen[0]

    def reference(self) -> Tuple[Tensor, Tensor]:
        """Unmasked output and the tensor the mask will act on (all rows)."""
        return self._capture(stop=False)

    def layer_tensor(self) -> Tensor:
        """The tensor the mask acts on, without running the layers after it."""
        return self._capture(stop=True)[1]

    def __call__(self, perturb: Callable[[Tensor], Tensor], rows: Tensor) -> Tensor:
        if self.to_input:

            def hook(module, args):
                return (perturb(args[0]), *args[1:])

            handle = self.layer.register_forward_pre_hook(hook)
        else:

            def hook(module, args, output):
                return perturb(output)

            handle = self.layer.register_forward_hook(hook)
        try:
            return self._forward(rows)
        finally:
            handle.remove()


class _PlannedRunner:
    """A runner whose network evaluations run under a kernel plan (and ``torch.autocast`` if asked).

    Under autocast the outputs and the layer's tensor come back in ``dtype``
    (the mask's and the objective's), whatever precision the network ran in.
    """

    def __init__(self, runner, plan, autocast: Optional[torch.dtype], dtype: torch.dtype) -> None:
        self.runner, self.plan, self.autocast, self.dtype = runner, plan, autocast, dtype
        self.name, self.to_input = getattr(runner, "name", None), getattr(runner, "to_input", None)

    def context(self, device: torch.device):
        """The plan's kernels, and autocast if asked, on ``device``."""
        if self.autocast is None:
            return self.plan.activate()
        stack = contextlib.ExitStack()
        stack.enter_context(self.plan.activate())
        stack.enter_context(torch.autocast(device_type=device.type, dtype=self.autocast))
        return stack

    def _cast(self, value: Any) -> Any:
        if self.autocast is not None and isinstance(value, Tensor) and value.is_floating_point():
            return value.to(self.dtype)
        return value

    def _device(self) -> torch.device:
        args = getattr(self.runner, "inputs", None) or getattr(self.runner, "args", None) or ()
        return next((a.device for a in args if isinstance(a, Tensor)), torch.device("cpu"))

    def reference(self):
        with self.context(self._device()):
            output, feature = self.runner.reference()
        return self._cast(output), self._cast(feature)

    def layer_tensor(self) -> Tensor:
        with self.context(self._device()):
            return self._cast(self.runner.layer_tensor())

    def __call__(self, perturb: Callable[[Tensor], Tensor], rows: Tensor) -> Tensor:
        with self.context(rows.device):
            out = self.runner(perturb, rows)
        return self._cast(out)


# --------------------------------------------------------------------------- #
# Targets, sigma, references.
# --------------------------------------------------------------------------- #
def _target_flat_indices(target: TargetType, output_shape: Tuple[int, ...]) -> Tensor:
    """One flat index into ``output[i].reshape(-1)`` per example; validates ``target``."""
    n, per_example = output_shape[0], tuple(output_shape[1:])
    n_out = int(np.prod(per_example)) if per_example else 1

    def one(t) -> int:
        if isinstance(t, Tensor):
            if t.numel() != 1:
                raise TypeError(f"a per-example target must be a scalar, got a tensor of shape {tuple(t.shape)}")
            t = int(t.item())
        if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
            idx: Tuple[int, ...] = (int(t),)
        elif isinstance(t, tuple) and all(isinstance(v, (int, np.integer)) for v in t):
            idx = tuple(int(v) for v in t)
        else:
            raise TypeError(f"target {t!r} is not an int or a tuple of ints")
        if not per_example:
            raise ValueError(f"target {t!r} given, but the model output has shape {tuple(output_shape)} (no output axis)")
        if len(idx) != len(per_example):
            raise ValueError(
                f"target {t!r} has {len(idx)} index(es) but each example's output has shape {per_example}"
            )
        norm = []
        for v, size in zip(idx, per_example):
            if not -size <= v < size:
                raise ValueError(f"target {t!r} is out of range for outputs of shape {per_example}")
            norm.append(v % size)
        return int(np.ravel_multi_index(tuple(norm), per_example))

    if target is None:
        if n_out != 1:
            raise ValueError(
                f"target=None, but the model has {n_out} outputs per example (output shape "
                f"{tuple(output_shape)}); pass target=<output index>"
            )
        flat = [0] * n
    elif isinstance(target, list):
        if len(target) != n:
            raise ValueError(f"a list target must have one entry per example: got {len(target)} for a batch of {n}")
        flat = [one(t) for t in target]
    elif isinstance(target, Tensor) and target.numel() > 1:
        if target.dim() != 1 or target.shape[0] != n:
            raise ValueError(
                f"a tensor target must have shape ({n},) (one per example), got {tuple(target.shape)}"
            )
        flat = [one(t) for t in target]
    else:
        flat = [one(target)] * n
    return torch.tensor(flat, dtype=torch.long)


def _std_per_output(output_std: Union[float, Tensor, Sequence[float]], output_shape: Tuple[int, ...]) -> Tensor:
    """sigma for every output, flattened to ``prod(output_shape[1:])`` values; validated."""
    per_example = tuple(output_shape[1:])
    n_out = int(np.prod(per_example)) if per_example else 1
    try:
        std = torch.as_tensor(output_std, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"output_std must be a float or one value per output, got {output_std!r}") from None
    if std.numel() == 1:
        std = std.reshape(1).expand(n_out)
    else:
        try:
            std = std.expand(per_example).reshape(-1)
        except RuntimeError:
            raise ValueError(
                f"output_std has shape {tuple(std.shape)}, expected a float or one value per output "
                f"(shape {per_example})"
            ) from None
    if not torch.isfinite(std).all() or (std <= 0).any():
        raise ValueError(f"output_std must be finite and > 0, got {output_std!r}")
    return std.float()


def _state_key(module: Optional[Module]) -> Tuple:
    """Changes whenever a parameter or buffer of ``module`` is replaced or modified (``.data`` edits included)."""
    return state_fingerprint(module)


def _unwrap_compiled(forward_func: Any) -> Any:
    """The module inside ``torch.compile`` / ``DataParallel`` / ``DistributedDataParallel`` wrappers (hooks on a
    compiled graph have no effect; the wrapped module holds ``reference_inputs``): :func:`unwrap_model`."""
    inner = unwrap_model(forward_func)
    if inner is not forward_func:
        logger.info("SMOCAM: the model is wrapped (%s); using the module inside (%s)", type(forward_func).__name__,
                    type(inner).__name__)
    return inner


def _training_module(model: Optional[Module]) -> Optional[Module]:
    """The module whose train/eval mode matters (the one inside any wrapper)."""
    return unwrap_model(model)


#: Copies of models in another dtype, per process (``dtype=``, the poster's float64): the latest few,
#: keyed on the model's identity and :func:`~captum_smocam._fastpath.module_fingerprint`.
_DTYPE_COPIES: "OrderedDict[Tuple, Tuple[Any, Module, Tuple[Tensor, ...]]]" = OrderedDict()
#: Layer features of reference inputs, per process: the latest few (model, layer, references).
_REFERENCE_FEATURES: "OrderedDict[Tuple, Tuple[Any, Tuple[Tensor, ...], Tensor, Tuple[Tensor, ...]]]" = OrderedDict()
#: How many entries each of the two caches above keeps.
CACHE_SIZE = 2


def _remember(cache: "OrderedDict", key: Tuple, value: Tuple) -> None:
    cache[key] = value
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)


def _model_in_dtype(model: Module, layer: Module, dtype: torch.dtype) -> Tuple[Module, Module]:
    """A copy of ``model`` in ``dtype`` and the copy of ``layer`` inside it (the user's model is untouched).

    The copy is made once and reused while the model's state is unchanged
    (:func:`~captum_smocam._fastpath.module_fingerprint`), so its traced
    split is reused too.
    """
    from ._fastpath import module_fingerprint, reuse_splits

    name = next((n for n, m in model.named_modules() if m is layer), None)
    if name is None:
        logger.info("SMOCAM: the layer is not a submodule of the model; the optimisation stays in the model's dtype")
        return model, layer
    key = (id(model), name, dtype, module_fingerprint(model))
    hit = _DTYPE_COPIES.get(key) if reuse_splits() else None
    if hit is not None and hit[0]() is model:
        _DTYPE_COPIES.move_to_end(key)
        copy = hit[1]
    else:
        copy = deepcopy(model).to(dtype)
        # The entry holds the original tensors, so that no other tensor can take their identity.
        _remember(_DTYPE_COPIES, key, (weakref.ref(model), copy, _held_tensors(model)))
    return copy, copy.get_submodule(name)


def _held_tensors(module: Optional[Module]) -> Tuple[Tensor, ...]:
    return () if module is None else (*module.parameters(), *module.buffers())


def _cast_floating(args: Any, dtype: torch.dtype) -> Any:
    if not args:
        return args
    return tuple(a.to(dtype) if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)


def _check_number(name: str, value: Any, *, positive: bool = False, integer: bool = False) -> None:
    """A finite real number (``>= 0``, or ``> 0`` with ``positive``); an int with ``integer``."""
    ok_type = isinstance(value, numbers.Integral) if integer else isinstance(value, numbers.Real)
    if isinstance(value, bool) or not ok_type or not math.isfinite(float(value)):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind} {'> 0' if positive else '>= 0'}, got {value!r}")
    if (positive and value <= 0) or value < 0:
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")


def _first_float_dtype(model: Optional[Module]) -> Optional[torch.dtype]:
    if model is None:
        return None
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def _format_inputs(inputs: Any) -> Tuple[Tensor, ...]:
    if isinstance(inputs, Tensor):
        return (inputs,)
    if isinstance(inputs, tuple) and inputs and all(isinstance(x, Tensor) for x in inputs):
        return inputs
    got = type(inputs).__name__ if not isinstance(inputs, tuple) else "a tuple of " + ", ".join(
        type(x).__name__ for x in inputs
    )
    raise TypeError(f"inputs must be a torch.Tensor or a tuple of Tensors, got {got}")


def _format_baselines(baselines: Any, inputs: Tuple[Tensor, ...], what: str = "baselines"
                      ) -> Optional[Tuple[Tensor, ...]]:
    """``None``, or one ``K x <input shape without batch>`` tensor per input (same ``K``).

    ``what`` names the references in errors (``"the model's reference_inputs"``
    when they come from the model, not from the caller).
    """
    if baselines is None:
        return None
    items = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(items) != len(inputs):
        raise ValueError(f"{what} must give one entry per input: got {len(items)} for {len(inputs)} input(s)")
    model_refs = what != "baselines"
    out = []
    for i, (b, x) in enumerate(zip(items, inputs)):
        if isinstance(b, numbers.Real) and not isinstance(b, bool):
            b = torch.full_like(x[:1], float(b))
        if not isinstance(b, Tensor):
            raise TypeError(f"baselines must be numbers or Tensors, got {type(b).__name__} for input {i}")
        if tuple(b.shape) == tuple(x.shape[1:]):
            b = b.unsqueeze(0)
        if b.dim() != x.dim() or tuple(b.shape[1:]) != tuple(x.shape[1:]) or b.shape[0] < 1:
            if model_refs:
                raise ValueError(
                    f"{what} have shape {tuple(b.shape)} but input {i} has shape {tuple(x.shape)}: the model "
                    f"expects inputs of size {tuple(b.shape[1:])} per example, got {tuple(x.shape[1:])} "
                    "(resample the input onto the model's grid, or pass baselines of the input's size)"
                )
            raise ValueError(
                f"baselines for input {i} have shape {tuple(b.shape)}; expected K x {tuple(x.shape[1:])} "
                "(K reference inputs, shared by every example)"
            )
        if b.device.type == "meta":
            raise ValueError(f"{what} for input {i} are on the meta device (shapes only, no values); "
                             f"give them on {x.device}")
        if not b.is_floating_point() or not torch.isfinite(b).all():
            if model_refs:
                raise ValueError(f"{what} are not finite floating-point values (dtype {b.dtype}, "
                                 f"{int((~torch.isfinite(b)).sum()) if b.is_floating_point() else 0} NaN or Inf): "
                                 "set them again with models.set_reference_inputs, or pass baselines")
            raise ValueError(f"baselines for input {i} must be finite floating-point values")
        out.append(b.detach().to(device=x.device, dtype=x.dtype))
    if len({b.shape[0] for b in out}) != 1:
        raise ValueError(f"every input needs the same number of baselines, got {[b.shape[0] for b in out]}")
    return tuple(out)


#: Dtypes in which SMOCAM's optimisation cannot run (the objective's small terms underflow: zero or NaN masks).
HALF_DTYPES = (torch.float16, torch.bfloat16)


def _check_work_dtype(work_dtype: torch.dtype, given: bool) -> None:
    """Refuse to optimise in float16 / bfloat16 (a one-line error naming the dtype and what to use)."""
    if work_dtype in HALF_DTYPES:
        where = f"dtype={work_dtype}" if given else f"a model and input in {work_dtype}"
        raise ValueError(f"SMOCAM cannot optimise a mask in {work_dtype} ({where}): the objective underflows to "
                         f"zero or NaN masks; use dtype=torch.float32 (or float64), and autocast={work_dtype} to "
                         "run the network in half precision")


def _check_finite_mask(mask: Tensor) -> None:
    """Never return a mask with NaN or Inf values."""
    if not bool(torch.isfinite(mask).all()):
        bad = int((~torch.isfinite(mask)).sum())
        raise ValueError(f"the optimised mask has {bad} NaN or Inf value(s) of {mask.numel()}: the model's "
                         "gradients are not finite here (check the model, the input, dtype and autocast)")


def _warn_if_references_match(feature: Tensor, ref_features: Tensor, given: bool) -> None:
    """Warn when every reference gives an example's own layer features: no mask can show anything then."""
    ref = ref_features.to(feature.dtype)
    if ref.shape[0] == 1:
        ref = ref.expand(feature.shape[0], *ref.shape[1:])
    diff = (ref - feature.unsqueeze(1)).abs().flatten(2).amax(dim=2)  # rows x K
    scale = feature.abs().flatten(1).amax(dim=1, keepdim=True)
    same = (diff <= 1e-6 * (1.0 + scale)).all(dim=1)
    if bool(same.any()):
        rows = [int(r) for r in torch.nonzero(same).flatten()]
        what = "the baselines (the references)" if given else "the references (shifted copies of the input)"
        warnings.warn(f"{what} give the same layer features as the input for example(s) {rows}: the mask "
                      "cannot show anything (every mask keeps the output); pass baselines that differ from the scan",
                      UserWarning, stacklevel=4)


# --------------------------------------------------------------------------- #
# The attribution class.
# --------------------------------------------------------------------------- #
class SMOCAM(LayerAttribution, GradientAttribution):
    r"""SMOCAM (SMOoth Conditional Attention Mask) for regression models.

    For a chosen layer with feature map ``F`` (``N x L x <spatial dims>``) and a
    chosen model output ``y = f(x)_i``, SMOCAM optimises a mask ``M``
    (``N x 1 x <spatial dims>``, broadcast over the ``L`` channels), puts the
    masked features through the rest of the network to get ``y_M``, and
    minimises, independently for each example, one of two objectives:

    * ``objective="preserve"`` (default; ours, beyond the poster): the layer
      sees ``F_ref + M * (F - F_ref)`` with ``M`` in ``[0, 1]`` and ``F_ref`` the
      features of a reference input, and the objective
      (:func:`preservation_objective`) is

      .. math::

          \rho\bigl((y_M - y)/\sigma_i\bigr) + \alpha\,\overline{M} + \beta\,\mathrm{TV}(M)/n^{(d-1)/d}

      — the smallest smooth region of this subject's own features that keeps
      the prediction when everything else comes from the reference
      (preservation, as in Fong & Vedaldi 2017). With ``K`` reference inputs
      the loop uses one per step in turn, so the mask must keep the prediction
      whatever the rest of the brain looks like. References (``baselines``):
      given by the caller, else the model's ``reference_inputs`` buffer (the
      shipped models carry 8 training scans), else copies of the input
      shifted by one layer voxel along each axis (:func:`shifted_copies`).
    * ``objective="poster"``: the SMOCAM poster's objective, exactly
      (:func:`smocam_objective`): the layer sees ``F * M`` and

      .. math::

          \frac{|y_M - y|}{\sigma_i} + \lambda\,\bigl|1 - \|M\|_2\bigr|
          + \gamma\,\tfrac12 \sum_{a} \|\nabla_a M\|_1 .

    Both are optimised by Adam with a cosine-decayed step; gradients are taken
    with every absolute value smoothed by ``smoothing``, so the iterates
    converge rather than oscillate, and the mask of the **last** step is
    returned: the same scan and target give the same mask alone, in any batch,
    on the fast or the hook path (docs/method.md gives the measured
    differences).

    Like Grad-CAM's, the mask lives at the layer's resolution; upsample it to
    the input grid with ``LayerAttribution.interpolate(mask, x.shape[2:],
    "trilinear")`` (what :func:`upsample_mask` does) or ``upsample_to_input=True``.

    After each call, :attr:`history` holds the per-step loss terms (for
    :func:`captum_smocam.plotting.plot_convergence`) and :attr:`path` says which
    evaluation path ran (``"fast"``: the network before the layer runs once;
    ``"hook"``: the whole network runs at every step).

    Reference: S. Konate, L. Lebrat, R. Santa Cruz, P. Bourgeat, V. Dore,
    J. Fripp, A. Bradley, C. Fookes, O. Salvado, "SMOCAM: SMOoth Conditional
    Attention Mask for 3D-Regression Models" (poster, CSIRO/QUT).

    Args:
        forward_func (Callable): the model or any function of the inputs that
            returns ``N x <outputs>``. A ``torch.compile``\ d module is unwrapped
            to its original module; TorchScript modules are refused (hooks do
            not run in them).
        layer (torch.nn.Module): the layer whose output (or input) is masked.
            It must be called exactly once per forward pass.
        device_ids (list[int], optional): accepted for compatibility with
            Captum's layer methods; unused. Default: None

    Examples::

        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(),
        ...                     nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
        >>> x = torch.randn(2, 1, 7, 8, 9)
        >>> smocam = SMOCAM(net, net[1])
        >>> mask = smocam.attribute(x, target=1, n_steps=5)
        >>> mask.shape  # N x 1 x spatial dims of the layer output
        torch.Size([2, 1, 7, 8, 9])
        >>> smocam.attribute(x, target=1, n_steps=5, objective="poster", upsample_to_input=True).shape
        torch.Size([2, 1, 7, 8, 9])
    """

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        layer: Module,
        device_ids: Union[None, List[int]] = None,
    ) -> None:
        if not isinstance(layer, Module):
            raise TypeError(f"layer must be a torch.nn.Module, got {type(layer).__name__}")
        for what, obj in (("model", forward_func), ("layer", layer)):
            if isinstance(obj, torch.jit.ScriptModule):
                raise TypeError(
                    f"the {what} is a TorchScript module ({type(obj).__name__}, from torch.jit.script or "
                    "torch.jit.trace); forward hooks do not run inside TorchScript, so SMOCAM cannot mask "
                    "its layer. Pass the original nn.Module instead."
                )
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)
        self.history: Optional[Dict[str, Tensor]] = None
        self.path: Optional[str] = None
        #: The kernel plan of the last call (:mod:`captum_smocam._kernels`), and where it came from.
        self.plan: Optional[Any] = None
        self.plan_source: Optional[str] = None
        #: Which references the last call's masks were measured against ("model: 8 reference_inputs", ...).
        self.reference_source: Optional[str] = None
        self._min_rows = MIN_ROWS
        self._run_settings: Optional[Tuple[Any, Optional[torch.dtype], torch.dtype]] = None
        #: Per example of the last call: the mean over the references of ``|y_M - y| / sigma`` for the
        #: returned mask (``N``); a warning is given above :data:`FIDELITY_WARN`.
        self.fidelity: Optional[Tensor] = None
        #: The sigma of each example of the last call (``N``), given or derived (see ``output_std``).
        self.output_std_used: Optional[Tensor] = None

    @log_usage()
    def attribute(
        self,
        inputs: Union[Tensor, Tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        *,
        relu_attributions: bool = False,
        baselines: Union[None, float, Tensor, Tuple[Union[float, Tensor], ...]] = None,
        objective: str = DEFAULT_OBJECTIVE,
        output_std: Union[None, float, Tensor, Sequence[float]] = None,
        area_weight: Optional[float] = None,
        l2_weight: Optional[float] = None,
        smooth_weight: Optional[float] = None,
        n_steps: Optional[int] = None,
        lr: Optional[float] = None,
        smoothing: float = DEFAULT_SMOOTHING,
        show_progress: bool = False,
        init: Union[str, Tensor] = "uniform",
        nonnegative: bool = True,
        lr_decay: str = "cosine",
        tol: Optional[float] = None,
        patience: int = 10,
        internal_batch_size: Optional[int] = None,
        upsample_to_input: bool = False,
        fast: bool = True,
        dtype: Optional[torch.dtype] = None,
        kernel_plan: Union[str, Any] = "auto",
        autocast: Optional[torch.dtype] = None,
        fidelity_tol: Optional[float] = None,
        fallback: Optional[str] = None,
        distance_unit: Optional[str] = None,
    ) -> Tensor:
        r"""Optimise one SMOCAM mask per example.

        The first four arguments are Captum's ``LayerGradCam.attribute`` ones, in
        the same order, so SMOCAM is a drop-in swap.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): model input(s), first
                dimension the batch ``N``, e.g. ``N x 1 x H x W x D`` scans.
                Floating point, of the model's dtype, finite.
            target (int, tuple, list, Tensor, optional): which output to explain,
                as in Captum: an int (or tuple of ints for multi-dimensional
                outputs) for every example, or a list / 1-D tensor with one per
                example. May be None only for a model with a single output.
                Output names (a str, or a list of str) are accepted when the
                model carries them (:func:`captum_smocam.describe_model`, or a
                checkpoint loaded by :func:`captum_smocam.models.load_checkpoint`).
                To explain K outputs of one scan, pass the scan repeated K times
                (``x.expand(K, *x.shape[1:])``) with ``target=list(range(K))``:
                identical rows are detected and the network before the layer
                runs once for all of them. Default: None
            additional_forward_args (Any, optional): extra arguments of
                ``forward_func`` after the inputs; tensors whose first dimension
                is ``N`` are treated as per-example. Default: None
            attribute_to_layer_input (bool, optional): mask the layer's input
                instead of its output. Default: False
            relu_attributions (bool, optional): Captum's ``LayerGradCam``
                argument, accepted for a drop-in swap: negative values are set
                to 0. A SMOCAM mask is already >= 0 (``"preserve"``, and
                ``"poster"`` with ``nonnegative=True``), so it changes nothing
                there; with ``nonnegative=False`` it clips the mask at 0.
                Default: False
            baselines (float, Tensor or tuple, optional): the reference inputs of
                ``objective="preserve"``, as in Captum's ``GradientShap``: a
                ``K x <input shape without batch>`` tensor (or one such shape
                without ``K``, or a number for a constant image), one per input,
                used for every example. ``None`` uses the model's
                ``reference_inputs`` buffer when it has one (the shipped models
                carry 8 normalised training scans), else copies of each input
                shifted by one layer voxel along every axis
                (:func:`shifted_copies`). Ignored by ``"poster"``. Default: None
            objective (str, optional): ``"preserve"`` (ours) or ``"poster"``
                (the poster's, exactly); see the class docstring. Default:
                ``DEFAULT_OBJECTIVE``
            output_std (float, sequence or Tensor, optional): :math:`\sigma`,
                the training-set standard deviation of the output, so that the
                distance term is in units of population spread: a float, or one
                value per model output (``target`` picks it). ``None``: the
                model's ``output_std`` buffer when it has one value per output
                (the shipped models do), else the size of the change that the
                mask could make at most, per example: the root mean square over
                the references of ``y(F_ref) - y(F)`` for ``"preserve"``,
                ``|y(0) - y(F)|`` for ``"poster"``. The value used is in
                :attr:`output_std_used`. Default: None
            area_weight (float, optional): ``"preserve"``: :math:`\alpha`, weight
                of the mask's mean. Default: ``DEFAULT_AREA_WEIGHT``
            fidelity_tol (float, optional): ``"preserve"``: the prediction the
                mask must keep, in units of :math:`\sigma`: while an example's
                masked prediction is further than this from the unmasked one,
                the weight of its distance term grows (dual ascent, rate
                :data:`FIDELITY_RATE`); ``math.inf`` keeps the plain objective.
                Default: ``OBJECTIVE_DEFAULTS["preserve"]["fidelity_tol"]`` (``None``: off)
            distance_unit (str, optional): ``"preserve"``: the unit of the
                distance term, ``"sigma"`` (``output_std``) or ``"effect"``
                (per example, the root mean square over the references of the
                change of the prediction when every feature is the
                reference's; see :data:`DISTANCE_UNITS`). Fidelity
                (:attr:`fidelity`) is reported in units of ``output_std``
                either way. Default: ``OBJECTIVE_DEFAULTS["preserve"]["distance_unit"]``
            fallback (str, optional): ``"preserve"``: references made from the
                scan when neither ``baselines`` nor the model's
                ``reference_inputs`` exist (:func:`fallback_references`; a
                warning says so). Default: ``DEFAULT_FALLBACK``
            l2_weight (float, optional): ``"poster"``: :math:`\lambda`, weight of
                ``|1 - ||M||_2|``. Default: ``DEFAULT_L2_WEIGHT``
            smooth_weight (float, optional): weight of the total variation
                (:math:`\beta` of ``"preserve"``, :math:`\gamma` of ``"poster"``).
                Default: ``OBJECTIVE_DEFAULTS[objective]["smooth_weight"]``
            n_steps (int, optional): optimisation steps. Default:
                ``OBJECTIVE_DEFAULTS[objective]["n_steps"]`` (150 for
                ``"preserve"``, 100 for ``"poster"``)
            lr (float, optional): Adam step size: on the logits of the mask for
                ``"preserve"``; relative to the uniform unit-norm mask value
                ``1/sqrt(#voxels)`` for ``"poster"``. Default:
                ``OBJECTIVE_DEFAULTS[objective]["lr"]``
            smoothing (float, optional): width of the smoothed absolute values
                whose gradients drive the optimisation (:func:`smooth_abs`); 0
                uses plain subgradients. Default: ``DEFAULT_SMOOTHING``
            show_progress (bool, optional): show a progress bar over steps.
                Default: False
            init (str or Tensor, optional): ``"uniform"`` (``"poster"``: every
                voxel ``1/sqrt(#voxels)``, unit norm; ``"preserve"``: every voxel
                ``sigmoid(PRESERVE_INIT_LOGIT)``) or a tensor of initial mask
                values of shape ``N x 1 x <layer spatial dims>``. Default:
                ``"uniform"``
            nonnegative (bool, optional): ``"poster"``: project the mask onto
                ``M >= 0`` after each step. Default: True
            lr_decay (str, optional): ``"cosine"`` (step size decays to 1 % of
                ``lr``) or ``"none"``. Default: ``"cosine"``
            tol (float, optional): stopping test: an example stops changing
                once its objective has not improved by a relative ``tol`` for
                ``patience`` steps; the call ends when all have stopped. None
                runs all ``n_steps``. Default: None
            patience (int, optional): see ``tol``. Default: 10
            internal_batch_size (int, optional): optimise at most this many
                masks at once (bounds memory); None means all. Default: None
            upsample_to_input (bool, optional): return the mask upsampled to the
                first input's spatial size (:func:`upsample_mask`). Default: False
            fast (bool, optional): try the cached-prefix fast path (the network
                before the layer runs once); it falls back to the hook path when
                the model cannot be traced. Default: True
            dtype (torch.dtype, optional): floating-point type of the
                optimisation: a copy of the model in this type runs the network,
                the mask and the objective; the mask is returned in the inputs'
                type. ``None`` means ``OBJECTIVE_DTYPE[objective]``: float64
                for ``"poster"`` (its optimum is otherwise not reproducible
                between a batch and single calls), the model's own for
                ``"preserve"``. Default: None
            kernel_plan (str or KernelPlan, optional): which kernels run the
                network (:mod:`captum_smocam._kernels`). ``"auto"``: on CPU, a
                plan is chosen once per model architecture, layer, input shape,
                dtype and thread count (never per batch size): oneDNN
                convolutions for every batch size with row-wise matrix
                products (row-wise products alone in float64) if that plan
                proves per-row invariance on the model (every row computed
                alone equals the same row in batches of 2, 3 and 5, bitwise),
                and then runs without padding; else PyTorch's own kernels. The
                rule does not time anything, so every process chooses alike.
                ``"fastest"`` (or ``SMOCAM_KERNEL_TUNING=fastest`` with
                ``"auto"``): the fastest invariant plan on this machine, also
                trying ``channels_last_3d`` and the padded stock kernels,
                timed. Choices are cached per process and on disk
                (``SMOCAM_PLAN_CACHE``). ``"stock"`` (or ``"off"``, or
                ``SMOCAM_KERNEL_TUNING=0`` with ``"auto"``): PyTorch's own
                kernels with every evaluation padded to :data:`MIN_ROWS` rows,
                as before plans. A :class:`~captum_smocam._kernels.KernelPlan`
                is used as given. The plan used is in :attr:`plan`. Default:
                ``"auto"``
            autocast (torch.dtype, optional): mixed precision: the network runs
                under ``torch.autocast`` in this dtype (``torch.bfloat16`` or
                ``torch.float16``) while the mask, the optimiser and the
                objective stay in the inputs' dtype; kernel plans are not used
                (:data:`MIN_ROWS` padding is). Masks agree with full precision
                only approximately (``benchmarks/speed.py`` measures by how
                much) and are not covered by the reproducibility guarantee.
                Default: None (full precision)

        Returns:
            Tensor: the masks, shape ``N x 1 x <spatial dims of the layer output>``
            (of its input with ``attribute_to_layer_input=True``), or
            ``N x 1 x <input spatial dims>`` with ``upsample_to_input=True``.
            Detached, on the device of the layer. ``"preserve"`` masks are in
            ``[0, 1]``; ``"poster"`` masks are non-negative with ``||M||_2``
            near 1.

        Examples::

            >>> import torch
            >>> from captum.attr import LayerAttribution
            >>> from captum_smocam.models import VGG3D
            >>> net = VGG3D(16, channels=(4, 8, 8)).eval()   # 16 volumes from 1-channel scans
            >>> x = torch.randn(2, 1, 24, 28, 20)
            >>> smocam = SMOCAM(net, net.features.block2)    # output at 1/2 resolution
            >>> mask = smocam.attribute(x, target=3, output_std=0.5, n_steps=10)
            >>> mask.shape
            torch.Size([2, 1, 12, 14, 10])
            >>> LayerAttribution.interpolate(mask, x.shape[2:], "trilinear").shape
            torch.Size([2, 1, 24, 28, 20])
            >>> # reference scans (e.g. a few normalised training scans): K x 1 x 24 x 28 x 20
            >>> refs = torch.randn(3, 1, 24, 28, 20)
            >>> smocam.attribute(x, target=3, baselines=refs, n_steps=10).shape
            torch.Size([2, 1, 12, 14, 10])
            >>> # K outputs of one scan: repeat it, one target per row (one prefix pass)
            >>> smocam.attribute(x[:1].expand(4, 1, 24, 28, 20), target=[0, 1, 2, 3], n_steps=10).shape
            torch.Size([4, 1, 12, 14, 10])
        """
        # -- Validate everything before any work. --------------------------
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        defaults = OBJECTIVE_DEFAULTS[objective]
        for name, value in (("area_weight", area_weight), ("l2_weight", l2_weight),
                            ("fidelity_tol", fidelity_tol), ("distance_unit", distance_unit)):
            if value is not None and name not in defaults:
                raise ValueError(f"{name} is a setting of another objective than {objective!r}; "
                                 f"{objective!r} takes {sorted(defaults)}")
        settings = dict(defaults)
        for name, value in (("area_weight", area_weight), ("l2_weight", l2_weight),
                            ("smooth_weight", smooth_weight), ("n_steps", n_steps), ("lr", lr),
                            ("fidelity_tol", fidelity_tol), ("distance_unit", distance_unit)):
            if value is not None:
                settings[name] = value
        if settings.get("distance_unit", "sigma") not in DISTANCE_UNITS:
            raise ValueError(f"distance_unit must be one of {DISTANCE_UNITS}, got {settings['distance_unit']!r}")
        if "fidelity_tol" in settings:
            tol_ = settings["fidelity_tol"]
            if tol_ is not None and (isinstance(tol_, bool) or not isinstance(tol_, numbers.Real) or math.isnan(tol_)
                                     or tol_ < 0):
                raise ValueError(f"fidelity_tol must be a number >= 0 (math.inf: off), got {tol_!r}")
        fallback = DEFAULT_FALLBACK if fallback is None else fallback
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        _check_number("n_steps", settings["n_steps"], positive=True, integer=True)
        _check_number("lr", settings["lr"], positive=True)
        for name in ("area_weight", "l2_weight", "smooth_weight"):
            if name in settings:
                _check_number(name, settings[name])
        _check_number("smoothing", smoothing)
        if lr_decay not in ("cosine", "none"):
            raise ValueError(f"lr_decay must be 'cosine' or 'none', got {lr_decay!r}")
        if tol is not None:
            _check_number("tol", tol)
        _check_number("patience", patience, positive=True, integer=True)
        if internal_batch_size is not None:
            _check_number("internal_batch_size", internal_batch_size, positive=True, integer=True)
        if isinstance(init, str) and init != "uniform":
            raise ValueError(f"init must be 'uniform' or a tensor, got {init!r}")
        if not isinstance(init, (str, Tensor)):
            raise TypeError(f"init must be 'uniform' or a tensor, got {type(init).__name__}")
        if output_std is None:
            output_std = self._model_output_std(forward_func=_unwrap_compiled(self.forward_func))
        if isinstance(output_std, numbers.Real) and not (math.isfinite(output_std) and output_std > 0):
            raise ValueError(f"output_std must be finite and > 0, got {output_std!r}")

        from ._settings import check_environment

        check_environment()  # SMOCAM_* switches: an unknown word is an error, not "on"
        forward_func = _unwrap_compiled(self.forward_func)
        model = forward_func if isinstance(forward_func, Module) else None
        from .model_card import target_indices

        target = target_indices(target, model)  # output names -> indices (a clear error without names)
        inputs = _format_inputs(inputs)
        model_dtype = _first_float_dtype(model)
        for i, x in enumerate(inputs):
            if x.dim() < 2:
                raise ValueError(f"input {i} has shape {tuple(x.shape)}; expected a batch N x C x ...")
            if x.shape[0] == 0:
                raise ValueError(f"input {i} has batch size 0 (shape {tuple(x.shape)}): nothing to explain")
            if not x.is_floating_point():
                raise TypeError(f"input {i} has dtype {x.dtype}; SMOCAM needs floating-point inputs (x.float())")
            if model_dtype is not None and x.dtype != model_dtype:
                raise TypeError(
                    f"input {i} has dtype {x.dtype} but the model's parameters are {model_dtype}; "
                    f"convert the input with x.to({model_dtype})"
                )
            if x.device.type == "meta":
                raise ValueError(f"input {i} is on the meta device (shapes only, no values); "
                                 "move it to cpu or cuda")
            if not all(bool(torch.isfinite(c).all()) for c in _row_chunks(_stored_rows(x))):
                n_bad = sum(int((~torch.isfinite(c)).sum()) for c in _row_chunks(x))
                raise ValueError(f"input {i} contains {n_bad} NaN or Inf value(s)")
        n = inputs[0].shape[0]
        if any(x.shape[0] != n for x in inputs):
            raise ValueError(f"all inputs must share the batch size; got {[tuple(x.shape) for x in inputs]}")
        for i, x in enumerate(inputs):
            if x[0].numel() > 1 and any(bool((f == f[:, :1]).all(dim=1).any())
                                        for f in (c.reshape(c.shape[0], -1) for c in _row_chunks(_stored_rows(x)))):
                warnings.warn(f"input {i} has a constant example (every value the same): its map will show "
                              "nothing about the scan", UserWarning, stacklevel=3)
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        _check_work_dtype(dtype if dtype is not None else OBJECTIVE_DTYPE[objective] or inputs[0].dtype,
                          given=dtype is not None)
        from ._kernels import KernelPlan

        if not (isinstance(kernel_plan, KernelPlan) or kernel_plan in ("auto", "fastest", "stock", "off")):
            raise ValueError(f"kernel_plan must be 'auto', 'fastest', 'stock', 'off' or a KernelPlan, "
                             f"got {kernel_plan!r}")
        if autocast is not None and autocast not in (torch.bfloat16, torch.float16):
            raise ValueError(f"autocast must be None, torch.bfloat16 or torch.float16, got {autocast!r}")
        base = _format_baselines(baselines, inputs) if objective == "preserve" else None
        additional_args = _format_additional_forward_args(additional_forward_args)
        layer = self.layer
        out_dtype = inputs[0].dtype
        work_dtype = dtype if dtype is not None else OBJECTIVE_DTYPE[objective]
        if work_dtype is not None and work_dtype != out_dtype:
            if model is None:
                logger.info("SMOCAM: forward_func is not an nn.Module and cannot be cast to %s", work_dtype)
            else:
                forward_func, layer = _model_in_dtype(model, self.layer, work_dtype)
                model = forward_func
                inputs = tuple(_stored_rows(x).to(work_dtype).expand(x.shape) for x in inputs)
                base = None if base is None else tuple(b.to(work_dtype) for b in base)
                additional_args = _cast_floating(additional_args, work_dtype)

        training_module = _training_module(model)
        training = training_module.training if training_module is not None else self.layer.training
        if training:
            warnings.warn(
                "the model is in training mode: BatchNorm and Dropout make the SMOCAM objective "
                "noisy and BatchNorm statistics would change; call model.eval() first "
                "(the statistics are restored after the call)",
                UserWarning,
                stacklevel=3,
            )
        if objective == "poster":
            obj: Any = PosterObjective(settings["l2_weight"], settings["smooth_weight"], float(smoothing),
                                       bool(nonnegative))
        else:
            obj = PreserveObjective(settings["area_weight"], settings["smooth_weight"], float(smoothing),
                                    math.inf if settings["fidelity_tol"] is None else float(settings["fidelity_tol"]),
                                    fallback, settings["distance_unit"])
        # Forwards in training mode update BatchNorm statistics: snapshot every buffer.
        saved_buffers = (
            {k: b.detach().clone() for k, b in model.named_buffers()} if (training and model is not None) else None
        )
        try:
            mask = self._attribute(
                forward_func, layer, inputs, target, additional_args, n, output_std, obj, base,
                int(settings["n_steps"]), float(settings["lr"]), attribute_to_layer_input, show_progress,
                init, lr_decay, tol, int(patience), internal_batch_size, upsample_to_input, fast, kernel_plan,
                autocast,
            )
            if relu_attributions:
                mask = mask.clamp_min(0)
            _check_finite_mask(mask)
            return mask.to(out_dtype)
        finally:
            if saved_buffers:
                with torch.no_grad():
                    buffers = dict(model.named_buffers())
                    for k, v in saved_buffers.items():
                        buffers[k].copy_(v)

    def _attribute(
        self, forward_func, layer, inputs, target, additional_args, n, output_std, obj, baselines, n_steps, lr,
        to_input, show_progress, init, lr_decay, tol, patience, internal_batch_size, upsample_to_input, fast,
        kernel_plan="stock", autocast=None,
    ) -> Tensor:
        # Run the network before the layer once per distinct example.
        distinct, rows_of = _distinct_rows(inputs, additional_args, n)
        n_distinct = len(distinct)
        plan = self._plan(forward_func, layer, inputs, additional_args, distinct, n, to_input, fast, kernel_plan,
                          autocast)
        self.plan = plan
        self._min_rows = plan.min_rows
        if n_distinct < plan.min_rows:  # copies of the last distinct example fill the batch (see MIN_ROWS)
            distinct = torch.cat([distinct, distinct[-1:].expand(plan.min_rows - len(distinct))])
        sub_inputs = tuple(x[distinct] for x in inputs)
        sub_args = tuple(_index_rows(a, distinct, n) for a in (additional_args or ()))
        self._run_settings = (plan, autocast, inputs[0].dtype)
        # The fast path's check runs (and keeps) the prefix: under the plan, as every later evaluation.
        with _PlannedRunner(None, *self._run_settings).context(inputs[0].device):
            runner = self._runner(forward_func, layer, sub_inputs, sub_args, to_input, fast)
        self.path = runner.name
        runner = self._planned(runner)
        with torch.no_grad():
            output, feature = runner.reference()
        if not isinstance(output, Tensor) or output.dim() == 0 or output.shape[0] != len(distinct):
            raise ValueError(
                "forward_func must return a Tensor whose first dimension is the batch, got "
                f"{type(output).__name__} of shape {tuple(getattr(output, 'shape', ()))}"
            )
        if feature.dim() < 3:
            raise ValueError(
                f"the layer's {'input' if to_input else 'output'} has shape {tuple(feature.shape)}; "
                "SMOCAM needs N x C x <1-3 spatial dims>"
            )
        full_shape = (n, *output.shape[1:])
        flat_target = _target_flat_indices(target, full_shape).to(output.device)
        reference = output.reshape(output.shape[0], -1).detach()[rows_of, flat_target]
        if not torch.isfinite(reference).all():
            bad = sorted({int(t) for t, ok in zip(flat_target.tolist(), torch.isfinite(reference).tolist()) if not ok})
            raise ValueError(f"the model's output {bad} is not finite (NaN or Inf) for this input: "
                             "check the model's weights and the input")
        spatial = tuple(feature.shape[2:])
        if isinstance(init, Tensor):
            expected = (n, 1, *spatial)
            if tuple(init.shape) != expected:
                raise ValueError(f"init has shape {tuple(init.shape)}, expected {expected}")
            if obj.name == "poster" and (init < 0).any() and obj.nonnegative:
                raise ValueError("init has negative values but nonnegative=True")
            if obj.name == "preserve" and ((init < 0) | (init > 1)).any():
                raise ValueError("init of objective 'preserve' must be mask values in [0, 1]")
        removed = self._check_mask_reaches_output(runner, output, rows_of, flat_target)
        ref_features = None
        self.reference_source = None if obj.needs_reference else f"none: objective {obj.name!r} uses no reference"
        if obj.needs_reference:
            ref_features = self._reference_features(forward_func, layer, sub_inputs, sub_args, baselines, feature,
                                                    to_input, n_distinct, getattr(obj, "fallback", DEFAULT_FALLBACK))
            _warn_if_references_match(feature[:n_distinct], ref_features[:n_distinct], baselines is not None
                                      or isinstance(getattr(forward_func, "reference_inputs", None), Tensor))
        effect = self._removal_effect(runner, output, rows_of, flat_target, ref_features, removed)
        if bool((effect == 0).any()):
            warnings.warn(
                f"for {int((effect == 0).sum())} of {n} example(s) the references give exactly the prediction of the "
                f"scan itself ({self.reference_source or 'zero features'}): the mask cannot show anything; pass "
                "other baselines (e.g. scans of other subjects)", UserWarning, stacklevel=4)
        effect = torch.where(effect > 0, effect, torch.ones_like(effect)).to(output.dtype)
        if output_std is None:
            std = effect
        else:
            std = _std_per_output(output_std, full_shape).to(output.device)[flat_target].to(output.dtype)
        self.output_std_used = std.detach().cpu()
        unit = effect if getattr(obj, "distance_unit", "sigma") == "effect" else std

        chunk = internal_batch_size or n
        masks, histories, kept = [], [], []
        for start in range(0, n, chunk):
            sel = slice(start, min(n, start + chunk))
            mask, hist = self._optimise(
                obj, runner, rows_of[sel], flat_target[sel], reference[sel], (unit[sel], std[sel]), spatial, feature,
                ref_features, init[sel] if isinstance(init, Tensor) else None, n_steps, lr, lr_decay, tol,
                patience, show_progress,
            )
            masks.append(mask)
            histories.append(hist)
            kept.append(hist.pop("fidelity"))
        mask = torch.cat(masks)
        self.history = _merge_histories(histories)
        self.fidelity = torch.cat(kept)
        self._warn_if_empty(obj, mask, self.fidelity)
        if upsample_to_input:
            mask = upsample_mask(mask, inputs[0].shape[2:])
        return mask

    def _planned(self, runner):
        """``runner`` evaluating under this call's kernel plan and autocast setting."""
        if self._run_settings is None:
            return runner
        return _PlannedRunner(runner, *self._run_settings)

    @staticmethod
    def _runner(forward_func, layer, inputs, args, to_input, fast):
        runner = None
        if fast:
            from ._fastpath import build_fast_runner

            runner = build_fast_runner(forward_func, layer, inputs, args, to_input)
        if runner is None:
            runner = _HookRunner(forward_func, layer, inputs, args, to_input)
        return runner

    def _plan(self, forward_func, layer, inputs, additional_args, distinct, n, to_input, fast, kernel_plan, autocast):
        """The kernel plan of this call (see ``kernel_plan`` of :meth:`attribute`); sets :attr:`plan_source`."""
        from . import _kernels

        if isinstance(kernel_plan, _kernels.KernelPlan):
            self.plan_source = "given"
            return kernel_plan
        module = forward_func if isinstance(forward_func, Module) else None
        training = module is not None and any(m.training for m in module.modules())
        mode = "fastest" if kernel_plan == "fastest" else _kernels.kernel_tuning_mode()
        why_stock = ("asked for" if kernel_plan in ("stock", "off") else
                     f"{_kernels.TUNING_ENV} is off" if mode == "off" else
                     "forward_func is not an nn.Module" if module is None else
                     "the model is in training mode" if training else
                     "autocast" if autocast is not None else None)
        layer_name = None if module is None else next((k for k, m in module.named_modules() if m is layer), None)
        if why_stock is None and layer_name is None:
            why_stock = "the layer is not a submodule of the model"
        if why_stock is None and _kernels.candidates(inputs[0].device, inputs[0].dtype) == [_kernels.STOCK]:
            why_stock = f"no other plan on {inputs[0].device.type}"
        if why_stock is not None:
            self.plan_source = f"stock: {why_stock}"
            return _kernels.STOCK
        device = inputs[0].device
        key = _kernels.plan_key(module, layer_name, [x.shape[1:] for x in inputs], inputs[0].dtype, device, to_input)
        key += f"|{mode}"

        def choose():
            one = distinct[:1]
            sub_inputs = tuple(x[one] for x in inputs)
            sub_args = tuple(_index_rows(a, one, n) for a in (additional_args or ()))
            try:
                runner = self._runner(forward_func, layer, sub_inputs, sub_args, to_input, fast)
                with torch.no_grad():
                    _, feature = runner.reference()
                g = torch.Generator().manual_seed(0)
                masks = (0.5 + torch.rand((5, 1, *feature.shape[2:]), generator=g, dtype=torch.float64))
                masks = masks.to(device=feature.device, dtype=feature.dtype)
                weights: Dict[int, Tensor] = {}

                def probe(plan, m):
                    rows = torch.zeros(m.shape[0], dtype=torch.long, device=device)
                    m = m.detach().clone().requires_grad_(True)
                    with torch.enable_grad(), plan.activate():
                        out = runner(lambda t: t * m, rows)
                    flat = out.reshape(m.shape[0], -1)
                    if flat.shape[1] not in weights:
                        weights[flat.shape[1]] = torch.linspace(-1.0, 1.0, flat.shape[1], dtype=flat.dtype,
                                                                device=flat.device)
                    (grad,) = torch.autograd.grad((flat * weights[flat.shape[1]]).sum(), m)
                    return flat.detach(), grad

                return _kernels.choose_plan(probe, masks, fastest=(mode == "fastest"))
            except Exception as exc:  # the probe could not run: PyTorch's kernels, padded
                logger.info("SMOCAM: no kernel plan could be tried (%s: %s); using PyTorch's kernels",
                            type(exc).__name__, exc)
                return dataclasses.replace(_kernels.STOCK, reason=f"probe failed ({type(exc).__name__})")

        plan, self.plan_source = _kernels.plan_for(key, choose)
        return plan

    @staticmethod
    def _check_mask_reaches_output(runner, output: Tensor, rows_of: Tensor, flat_target: Tensor) -> None:
        """Fail loudly if removing the layer's features does not change the explained outputs.

        A hook that never runs (e.g. on a ``torch.compile``\\ d graph) would
        otherwise give the initial mask back in silence.
        """
        with torch.no_grad():
            rows = torch.arange(output.shape[0], device=output.device)
            removed = runner(torch.zeros_like, rows)
        before = output.reshape(output.shape[0], -1)[rows_of, flat_target]
        after = removed.reshape(removed.shape[0], -1)[rows_of, flat_target]
        unchanged = before == after
        if bool(unchanged.all()):
            raise ValueError(
                "the masked layer has no effect on the explained output(s): zeroing its "
                f"{'input' if runner.to_input else 'output'} leaves them unchanged, so no mask can "
                "explain them (is the layer on the path to these outputs? a torch.compile'd or "
                "TorchScript submodule ignores hooks: pass the original module)"
            )
        if bool(unchanged.any()):
            warnings.warn(
                f"{int(unchanged.sum())} of {unchanged.numel()} explained outputs do not change when the "
                "layer's features are zeroed; their masks carry no information",
                UserWarning,
                stacklevel=4,
            )
        return after

    def _model_output_std(self, forward_func) -> Union[float, Tensor, None]:
        """The model's ``output_std`` buffer (the shipped models' training sigma), or None."""
        model = _training_module(forward_func) if isinstance(forward_func, Module) else None
        std = getattr(model, "output_std", None)
        if isinstance(std, Tensor) and std.is_floating_point() and std.numel() >= 1:
            return std.detach()
        card = getattr(model, "smocam_metadata", None)  # a description (captum_smocam.describe_model)
        if isinstance(card, dict) and card.get("output_std") is not None:
            return torch.as_tensor(card["output_std"], dtype=torch.float64)
        return None

    @staticmethod
    def _removal_effect(runner, output, rows_of, flat_target, ref_features, removed) -> Tensor:
        """Per example: how far the prediction moves when every feature is replaced (``N``).

        The root mean square over the references of ``y(F_ref) - y(F)``, or
        ``|y(0) - y(F)|`` without references: the largest change a mask can make.
        """
        before = output.reshape(output.shape[0], -1)[rows_of, flat_target]
        if ref_features is None:
            return (removed - before).abs().detach()
        d = output.shape[0]
        rows = torch.arange(d, device=output.device)
        shared = ref_features.shape[0] == 1
        squares = torch.zeros_like(before)
        with torch.no_grad():
            for k in range(ref_features.shape[1]):
                ref = ref_features[0, k].unsqueeze(0) if shared else ref_features[rows, k]
                out = runner(lambda feature, ref=ref: ref.expand_as(feature), rows)
                squares = squares + (out.reshape(d, -1)[rows_of, flat_target] - before) ** 2
        return (squares / ref_features.shape[1]).sqrt().detach()

    def _warn_if_empty(self, obj, mask: Tensor, fidelity: Tensor) -> None:
        """Warn when a returned mask is empty or does not keep its prediction (see :data:`FIDELITY_WARN`)."""
        n = mask.shape[0]
        peak = mask.reshape(n, -1).amax(dim=1).detach().cpu()
        empty = peak < EMPTY_MASK_WARN if obj.name == "preserve" else torch.zeros(n, dtype=torch.bool)
        loose = fidelity > FIDELITY_WARN
        if bool(empty.any()):
            warnings.warn(
                f"{int(empty.sum())} of {n} mask(s) are empty (largest value {float(peak.min()):.3g} < "
                f"{EMPTY_MASK_WARN}): the references barely change the prediction, or area_weight is too high "
                "for this model; pass output_std (the output's spread) or a lower area_weight",
                UserWarning, stacklevel=5)
        if bool(loose.any()):
            worst = float(fidelity.max())
            hint = ("lower area_weight / smooth_weight, or set fidelity_tol" if obj.name == "preserve"
                    else "lower l2_weight / smooth_weight, or use objective='preserve'")
            warnings.warn(
                f"{int(loose.sum())} of {n} mask(s) do not keep the prediction: the masked output is up to "
                f"{worst:.3g} sigma from the unmasked one (threshold {FIDELITY_WARN}); {hint}",
                UserWarning, stacklevel=5)

    def _reference_features(self, forward_func, layer, inputs, args, baselines, feature, to_input,
                            n_distinct, fallback: str = DEFAULT_FALLBACK) -> Tensor:
        """The layer's tensor for the references: ``R x K x <feature shape without batch>``.

        ``R`` is 1 when every example shares the references, else one entry per
        row of ``inputs`` (shifted copies, or per-example forward arguments);
        the rows after the first ``n_distinct`` (padding) repeat the last one.
        """
        d = inputs[0].shape[0]
        if n_distinct < d:
            feats = self._reference_features(forward_func, layer, tuple(x[:n_distinct] for x in inputs),
                                             tuple(_index_rows(a, torch.arange(n_distinct), d) for a in args),
                                             baselines, feature, to_input, n_distinct, fallback)
            if feats.shape[0] == 1:
                return feats
            return torch.cat([feats, feats[-1:].expand(d - n_distinct, *feats.shape[1:])])
        source = "baselines"
        if baselines is None:
            stored = getattr(forward_func, "reference_inputs", None)
            if isinstance(stored, Tensor):
                baselines = _format_baselines(stored, inputs, what="the model's reference_inputs")
                source = "model's reference_inputs"
        if baselines is not None:
            k_ = baselines[0].shape[0]
            self.reference_source = (f"baselines: {k_} given" if source == "baselines"
                                     else f"model: {k_} reference_inputs")
        if baselines is None:
            # References made from each scan itself (fallback_references), one layer voxel as the unit.
            warnings.warn(
                f"SMOCAM: no baselines and the model carries no reference_inputs; using references made from the "
                f"scan itself (fallback={fallback!r}), which localise less well than scans of other subjects: "
                "build references from a few scans with captum_smocam.references or `smocam references`",
                UserWarning, stacklevel=5)
            layer_spatial = feature.shape[2:]
            copies = []
            for x in inputs:
                if x.dim() - 2 == len(layer_spatial):
                    shift = [max(1, int(round(s / max(1, t)))) for s, t in zip(x.shape[2:], layer_spatial)]
                else:
                    shift = [1] * len(layer_spatial)
                copies.append(fallback_references(x, shift, fallback))
            k = copies[0].shape[1]
            flat = tuple(c.reshape(d * k, *c.shape[2:]) for c in copies)
            rows = torch.arange(d, device=inputs[0].device).repeat_interleave(k)
            ref_args = tuple(_index_rows(a, rows, d) for a in args)
            feats = self._planned(_HookRunner(forward_func, layer, flat, ref_args, to_input)).layer_tensor()
            self.reference_source = (f"fallback: {k} references per input ({fallback}) made from the input itself "
                                     "(the model has no reference_inputs)")
            return self._checked_reference(feats.reshape(d, k, *feats.shape[1:]), feature, f"fallback {fallback}")
        k = baselines[0].shape[0]
        per_example = any(isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == d for a in args)
        if per_example:  # forward arguments differ per example: one reference pass per example
            feats = []
            for i in range(d):
                rows = torch.full((k,), i, dtype=torch.long, device=inputs[0].device)
                ref_args = tuple(_index_rows(a, rows, d) for a in args)
                runner = self._planned(_HookRunner(forward_func, layer, baselines, ref_args, to_input))
                feats.append(runner.layer_tensor())
            return self._checked_reference(torch.stack(feats), feature, source)
        module = forward_func if isinstance(forward_func, Module) else None
        from ._fastpath import module_fingerprint

        key = (id(forward_func), id(layer), to_input, module_fingerprint(module) if module is not None else (),
               _state_key(layer), self.plan.name if self.plan is not None else None,
               tuple((b.shape, b.dtype, b.device) for b in baselines), tuple(a for a in args if not isinstance(a, Tensor)))
        hit = _REFERENCE_FEATURES.get(key)
        if hit is not None and hit[0]() is forward_func and all(torch.equal(a, b) for a, b in zip(hit[1], baselines)):
            _REFERENCE_FEATURES.move_to_end(key)
            return hit[2]
        feats = self._planned(_HookRunner(forward_func, layer, baselines, args, to_input)).layer_tensor()
        feats = self._checked_reference(feats.unsqueeze(0), feature, source)
        try:
            _remember(_REFERENCE_FEATURES, key, (weakref.ref(forward_func), tuple(b.clone() for b in baselines), feats,
                                                 _held_tensors(module) + _held_tensors(layer)))
        except TypeError:  # a forward function that takes no weak reference: not cached
            pass
        return feats

    @staticmethod
    def _checked_reference(feats: Tensor, feature: Tensor, source: str) -> Tensor:
        feats = feats.detach()
        if tuple(feats.shape[2:]) != tuple(feature.shape[1:]):
            raise ValueError(
                f"the layer's tensor for the {source} has shape {tuple(feats.shape[2:])}, for the inputs "
                f"{tuple(feature.shape[1:])}: references must be inputs of the same size"
            )
        if not torch.isfinite(feats).all():
            raise ValueError(f"the layer's tensor for the {source} is not finite")
        return feats

    def _optimise(
        self, obj, runner, rows, targets, reference, std, spatial, feature, ref_features, init, n_steps, lr,
        lr_decay, tol, patience, show_progress,
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        n_real = rows.shape[0]
        std, report_std = std  # the distance's unit, and sigma (the unit fidelity is reported in)
        min_rows = getattr(self, "_min_rows", MIN_ROWS)
        if n_real < min_rows:  # pad with copies of the last example (see MIN_ROWS)
            pad = min_rows - n_real
            rows, targets = torch.cat([rows, rows[-1:].expand(pad)]), torch.cat([targets, targets[-1:].expand(pad)])
            reference, std = torch.cat([reference, reference[-1:].expand(pad)]), torch.cat([std, std[-1:].expand(pad)])
            report_std = torch.cat([report_std, report_std[-1:].expand(pad)])
            if init is not None:
                init = torch.cat([init, init[-1:].expand(pad, *init.shape[1:])])
        b = rows.shape[0]
        device = feature.device
        index = torch.arange(b, device=device)
        param = obj.initial((b, 1, *spatial), init, feature).clone().requires_grad_(True)
        optimiser = torch.optim.Adam([param], lr=lr)
        schedule = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=n_steps, eta_min=LR_FLOOR * lr)
            if lr_decay == "cosine"
            else None
        )
        n_refs = 0 if ref_features is None else ref_features.shape[1]
        shared_refs = ref_features is not None and ref_features.shape[0] == 1
        active = torch.ones(b, dtype=torch.bool, device=device)
        best = torch.full((b,), math.inf, device=device)
        since_improved = torch.zeros(b, dtype=torch.long, device=device)
        stop_step = torch.full((b,), n_steps - 1, dtype=torch.long)
        # Lagrange multiplier of the fidelity constraint |y_M - y| / sigma <= tol (1: the plain objective).
        tol_fid = float(getattr(obj, "fidelity_tol", math.inf))
        weight = torch.ones(b, device=device, dtype=reference.dtype)
        history: Dict[str, List[Tensor]] = {k: [] for k in LOSS_TERMS[obj.name]}
        steps = range(n_steps)
        if show_progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=f"SMOCAM ({obj.name})", unit="step", leave=False)
        with torch.enable_grad():
            for step in steps:
                # Apply the mask (reference step % K for "preserve").
                mask = obj.mask(param)
                ref = None
                if n_refs:
                    k = step % n_refs
                    ref = ref_features[0, k].unsqueeze(0) if shared_refs else ref_features[rows, k]
                # Evaluate.
                out = runner(obj.perturbation(mask, ref), rows)
                masked = out.reshape(b, -1)[index, targets]
                # Regularise.
                terms, loss = obj.terms(masked, reference, mask, std)
                if math.isfinite(tol_fid):  # the distance term weighs `weight` times (dual ascent)
                    loss = loss + (weight - 1.0) * terms["distance"]
                    with torch.no_grad():
                        gap = (masked.detach() - reference).abs() / report_std - tol_fid
                        weight = (weight + FIDELITY_RATE * gap).clamp(1.0, FIDELITY_MAX_WEIGHT)
                for k_ in history:
                    history[k_].append(terms[k_].detach())
                # Stop.
                if tol is not None:
                    with torch.no_grad():
                        total = terms["total"].detach()
                        gain = total < best - tol * best.abs()
                        since_improved = torch.where(gain, torch.zeros_like(since_improved), since_improved + 1)
                        best = torch.minimum(best, total)
                        done = active & (since_improved >= patience)
                        stop_step[done.cpu()] = step
                        active &= ~done
                    if not active.any():
                        break
                if step == n_steps - 1:
                    break  # the mask just evaluated is the one returned
                # Step.
                (grad,) = torch.autograd.grad(loss.sum(), param)
                frozen = None
                if not active.all():
                    grad[~active] = 0
                    frozen = param.detach()[~active].clone()
                param.grad = grad
                optimiser.step()
                if schedule is not None:
                    schedule.step()
                with torch.no_grad():
                    obj.project(param)
                    if frozen is not None:
                        param[~active] = frozen
        hist = {k: torch.stack(v)[:, :n_real].cpu() for k, v in history.items()}
        hist["stop_step"] = stop_step[:n_real]
        final = obj.mask(param).detach()
        # Check: does the returned mask keep the prediction, with every reference?
        with torch.no_grad():
            gaps = []
            for k in range(max(1, n_refs)):
                ref = None
                if n_refs:
                    ref = ref_features[0, k].unsqueeze(0) if shared_refs else ref_features[rows, k]
                out = runner(obj.perturbation(final, ref), rows)
                gaps.append(((out.reshape(b, -1)[index, targets] - reference).abs() / report_std)[:n_real])
            hist["fidelity"] = torch.stack(gaps).mean(dim=0).cpu()
        return final[:n_real], hist


#: Most elements the checks over every row of the inputs look at at once (their memory: 16 MiB of float32).
CHECK_CHUNK = 1 << 22


def _stored_rows(x: Tensor) -> Tensor:
    """The rows of ``x`` with distinct storage: ``x[:1]`` when every row is the same memory (stride 0 along
    the batch, as ``x.expand(K, ...)``), else ``x``."""
    return x[:1] if x.dim() > 0 and x.shape[0] > 1 and x.stride(0) == 0 else x


def _row_chunks(x: Tensor):
    """``x`` in slices of whole rows of at most :data:`CHECK_CHUNK` elements (one row at least), so that a
    check over every row costs the memory of one slice, not of ``len(x)`` rows."""
    step = max(1, CHECK_CHUNK // max(1, x[:1].numel()))
    for start in range(0, x.shape[0], step):
        yield x[start:start + step]


def _distinct_rows(inputs, additional_args, n) -> Tuple[Tensor, Tensor]:
    """Indices of the distinct examples, and for each example the position of its representative.

    Rows are grouped by a cheap fingerprint (per-row sums) and confirmed with
    ``torch.equal``, so a batch of distinct scans costs one pass. The sums are
    taken one row at a time (memory of one row, whatever ``n``), and a batch
    whose rows all share one storage (``x.expand(K, ...)``, the K outputs of
    one scan) is one example without looking at its values.
    """
    device = inputs[0].device
    per_example = [a for a in (additional_args or ()) if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n]
    tensors = [t.detach() for t in list(inputs) + per_example]
    if all(_stored_rows(t).shape[0] == 1 for t in tensors):
        return torch.zeros(1, dtype=torch.long, device=device), torch.zeros(n, dtype=torch.long, device=device)
    prints = torch.stack([torch.stack([t[i].double().sum() for t in tensors]) for i in range(n)]).cpu().tolist()
    groups: Dict[Tuple[float, ...], List[int]] = {}
    distinct: List[int] = []
    rows_of: List[int] = []
    for i in range(n):
        candidates = groups.setdefault(tuple(prints[i]), [])
        for pos in candidates:
            j = distinct[pos]
            if all(torch.equal(t[i], t[j]) for t in tensors):
                rows_of.append(pos)
                break
        else:
            candidates.append(len(distinct))
            rows_of.append(len(distinct))
            distinct.append(i)
    return torch.tensor(distinct, device=device), torch.tensor(rows_of, device=device)


def _merge_histories(histories: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    """Concatenate per-chunk histories along examples (padding shorter runs with their last value)."""
    if len(histories) == 1:
        return histories[0]
    length = max(h["total"].shape[0] for h in histories)
    merged = {}
    for k in histories[0]:
        if k == "stop_step":
            continue
        parts = []
        for h in histories:
            v = h[k]
            if v.shape[0] < length:
                v = torch.cat([v, v[-1:].expand(length - v.shape[0], -1)])
            parts.append(v)
        merged[k] = torch.cat(parts, dim=1)
    merged["stop_step"] = torch.cat([h["stop_step"] for h in histories])
    return merged
