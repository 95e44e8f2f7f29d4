"""SMOCAM: the SMOoth Conditional Attention Mask, as a Captum layer attribution."""
from __future__ import annotations

import logging
import math
import warnings
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
    _format_tensor_into_tuples,
    log_usage,
)

logger = logging.getLogger(__name__)

#: Weight of the L2-budget term ``|1 - ||M||_2|`` (chosen on validation subjects of the shipped
#: VGG3D by benchmarks/sweep_smocam.py; see docs/benchmarks.md).
DEFAULT_L2_WEIGHT = 1.0
#: Weight of the smoothness term ``1/2 sum_axes ||grad_axis M||_1`` (validation sweep: 0.05, the
#: provisional value, returned the uniform mask for 18 of 24 maps; 0.003 ranked first).
DEFAULT_SMOOTH_WEIGHT = 0.003
#: Number of optimisation steps (validation sweep).
DEFAULT_N_STEPS = 100
#: Adam step size, in units of the uniform unit-norm mask value ``1/sqrt(#voxels)`` (validation sweep:
#: 0.5 on the 400-subject VGG; 1.0 ranked first on the shipped 1000-subject VGG).
DEFAULT_LR = 1.0

#: Interpolation mode used to upsample a mask, by number of spatial dimensions.
INTERPOLATION_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}

LOSS_TERMS = ("total", "distance", "l2", "smooth")


def smocam_objective(
    masked_output: Tensor,
    reference_output: Tensor,
    mask: Tensor,
    output_std: Union[float, Tensor] = 1.0,
    l2_weight: float = DEFAULT_L2_WEIGHT,
    smooth_weight: float = DEFAULT_SMOOTH_WEIGHT,
) -> Dict[str, Tensor]:
    r"""The SMOCAM objective, per example.

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
    smooth = mask.new_zeros(n)
    for dim in range(2, mask.dim()):
        smooth = smooth + mask.diff(dim=dim).abs().reshape(n, -1).sum(dim=1)
    smooth = 0.5 * smooth
    total = distance + l2_weight * l2 + smooth_weight * smooth
    return {"total": total, "distance": distance, "l2": l2, "smooth": smooth}


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
    n_spatial = mask.dim() - 2
    if n_spatial not in INTERPOLATION_MODES or len(size) != n_spatial:
        raise ValueError(
            f"cannot upsample a mask of shape {tuple(mask.shape)} to size {tuple(size)}: "
            "expected N x C x 1-3 spatial dims and as many target sizes"
        )
    return LayerAttribution.interpolate(mask, tuple(int(s) for s in size), INTERPOLATION_MODES[n_spatial])


# --------------------------------------------------------------------------- #
# What perturbs: runners that evaluate the network with a mask in the layer.
# --------------------------------------------------------------------------- #
def _index_rows(value: Any, rows: Tensor, n: int) -> Any:
    """Select batch rows of tensors whose first dimension is the batch."""
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
        return value[rows]
    return value


class _HookRunner:
    """Evaluates the whole forward function with the mask multiplied into the layer by a hook.

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

    def reference(self) -> Tuple[Tensor, Tensor]:
        """Unmasked output and the tensor the mask will multiply (all rows)."""
        seen: List[Tensor] = []

        def capture_out(module, args, output):
            seen.append(output)

        def capture_in(module, args):
            seen.append(args[0] if args else None)

        handle = (
            self.layer.register_forward_pre_hook(capture_in)
            if self.to_input
            else self.layer.register_forward_hook(capture_out)
        )
        try:
            output = self._forward(torch.arange(self.n, device=self.inputs[0].device))
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

    def __call__(self, mask: Tensor, rows: Tensor) -> Tensor:
        if self.to_input:

            def hook(module, args):
                return (args[0] * mask, *args[1:])

            handle = self.layer.register_forward_pre_hook(hook)
        else:

            def hook(module, args, output):
                return output * mask

            handle = self.layer.register_forward_hook(hook)
        try:
            return self._forward(rows)
        finally:
            handle.remove()


# --------------------------------------------------------------------------- #
# Targets and sigma.
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
    std = torch.as_tensor(output_std, dtype=torch.float64).detach().cpu()
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


# --------------------------------------------------------------------------- #
# The attribution class.
# --------------------------------------------------------------------------- #
class SMOCAM(LayerAttribution, GradientAttribution):
    r"""SMOCAM (SMOoth Conditional Attention Mask) for regression models.

    For a chosen layer with feature map ``F`` (``N x L x <spatial dims>``) and a
    chosen model output ``y = f(x)_i``, SMOCAM optimises a non-negative mask
    ``M`` (``N x 1 x <spatial dims>``, broadcast over the ``L`` channels),
    multiplies it into ``F``, passes ``F * M`` through the rest of the network
    to get ``y_M``, and minimises, independently for each example,

    .. math::

        \frac{|y_M - y|}{\sigma_i} + \lambda\,\bigl|1 - \|M\|_2\bigr|
        + \gamma\,\tfrac12 \sum_{a} \|\nabla_a M\|_1

    (see :func:`smocam_objective`): the mask that keeps the prediction while
    spending a unit L2 budget on a spatially smooth region. Under the unit
    budget a uniform mask has the value ``1/sqrt(#voxels)``; the mask is
    therefore parametrised relative to that value, so the step size ``lr`` means
    the same on every layer. The optimiser is Adam with a cosine-decayed step
    (the L1 terms are not smooth and a constant step oscillates), followed by a
    projection onto ``M >= 0``; the best iterate seen is returned, so the result
    never scores worse than the initial uniform mask.

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
            returns ``N x <outputs>``.
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
        >>> smocam.attribute(x, target=1, n_steps=5, upsample_to_input=True).shape
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
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)
        self.history: Optional[Dict[str, Tensor]] = None
        self.path: Optional[str] = None

    @log_usage()
    def attribute(
        self,
        inputs: Union[Tensor, Tuple[Tensor, ...]],
        target: TargetType = None,
        additional_forward_args: Any = None,
        *,
        output_std: Union[float, Tensor, Sequence[float]] = 1.0,
        l2_weight: float = DEFAULT_L2_WEIGHT,
        smooth_weight: float = DEFAULT_SMOOTH_WEIGHT,
        n_steps: int = DEFAULT_N_STEPS,
        lr: float = DEFAULT_LR,
        attribute_to_layer_input: bool = False,
        show_progress: bool = False,
        init: Union[str, Tensor] = "uniform",
        nonnegative: bool = True,
        lr_decay: str = "cosine",
        tol: Optional[float] = None,
        patience: int = 10,
        internal_batch_size: Optional[int] = None,
        upsample_to_input: bool = False,
        fast: bool = True,
    ) -> Tensor:
        r"""Optimise one SMOCAM mask per example.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): model input(s), first
                dimension the batch ``N``, e.g. ``N x 1 x H x W x D`` scans.
            target (int, tuple, list, Tensor, optional): which output to explain,
                as in Captum: an int (or tuple of ints for multi-dimensional
                outputs) for every example, or a list / 1-D tensor with one per
                example. May be None only for a model with a single output.
                To explain K outputs of one scan, pass the scan repeated K times
                (``x.expand(K, *x.shape[1:])``) with ``target=list(range(K))``:
                identical rows are detected and the network before the layer
                runs once for all of them. Default: None
            additional_forward_args (Any, optional): extra arguments of
                ``forward_func`` after the inputs; tensors whose first dimension
                is ``N`` are treated as per-example. Default: None
            output_std (float, sequence or Tensor, optional): :math:`\sigma`,
                the training-set standard deviation of the output, so that the
                distance term is in units of population spread: a float, or one
                value per model output (``target`` picks it). Default: 1.0
            l2_weight (float, optional): :math:`\lambda`, weight of
                ``|1 - ||M||_2|``. Default: ``DEFAULT_L2_WEIGHT``
            smooth_weight (float, optional): :math:`\gamma`, weight of the total
                variation ``1/2 sum_axes ||grad M||_1``. Default: ``DEFAULT_SMOOTH_WEIGHT``
            n_steps (int, optional): optimisation steps. Default: ``DEFAULT_N_STEPS``
            lr (float, optional): Adam step size relative to the uniform
                unit-norm mask value ``1/sqrt(#voxels)``. Default: ``DEFAULT_LR``
            attribute_to_layer_input (bool, optional): mask the layer's input
                instead of its output. Default: False
            show_progress (bool, optional): show a progress bar over steps.
                Default: False
            init (str or Tensor, optional): ``"uniform"`` (every voxel
                ``1/sqrt(#voxels)``, unit norm) or a non-negative tensor of shape
                ``N x 1 x <layer spatial dims>``. Default: ``"uniform"``
            nonnegative (bool, optional): project the mask onto ``M >= 0`` after
                each step. Default: True
            lr_decay (str, optional): ``"cosine"`` (step size decays to 1 % of
                ``lr``) or ``"none"``. Default: ``"cosine"``
            tol (float, optional): early stopping: an example stops changing
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

        Returns:
            Tensor: the masks, shape ``N x 1 x <spatial dims of the layer output>``
            (of its input with ``attribute_to_layer_input=True``), or
            ``N x 1 x <input spatial dims>`` with ``upsample_to_input=True``.
            Detached, on the device of the layer.

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
            >>> # K outputs of one scan: repeat it, one target per row (one prefix pass)
            >>> smocam.attribute(x[:1].expand(4, 1, 24, 28, 20), target=[0, 1, 2, 3], n_steps=10).shape
            torch.Size([4, 1, 12, 14, 10])
        """
        # -- Validate everything before any work. --------------------------
        inputs = _format_tensor_into_tuples(inputs)
        if not inputs or not all(isinstance(x, Tensor) for x in inputs):
            raise TypeError("inputs must be a Tensor or a tuple of Tensors")
        for i, x in enumerate(inputs):
            if x.dim() == 0:
                raise ValueError(f"input {i} is a scalar; expected a batch N x ...")
            if x.is_floating_point() and not torch.isfinite(x).all():
                n_bad = int((~torch.isfinite(x)).sum())
                raise ValueError(f"input {i} contains {n_bad} NaN or Inf value(s)")
        n = inputs[0].shape[0]
        if any(x.shape[0] != n for x in inputs):
            raise ValueError(f"all inputs must share the batch size; got {[tuple(x.shape) for x in inputs]}")
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
            raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
        for name, value in (("l2_weight", l2_weight), ("smooth_weight", smooth_weight)):
            if not math.isfinite(float(value)) or float(value) < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if not math.isfinite(float(lr)) or float(lr) <= 0:
            raise ValueError(f"lr must be finite and > 0, got {lr!r}")
        if lr_decay not in ("cosine", "none"):
            raise ValueError(f"lr_decay must be 'cosine' or 'none', got {lr_decay!r}")
        if tol is not None and (tol < 0 or patience < 1):
            raise ValueError(f"tol must be >= 0 and patience >= 1, got tol={tol!r}, patience={patience!r}")
        if internal_batch_size is not None and internal_batch_size < 1:
            raise ValueError(f"internal_batch_size must be >= 1, got {internal_batch_size!r}")
        if isinstance(init, str) and init != "uniform":
            raise ValueError(f"init must be 'uniform' or a tensor, got {init!r}")
        if isinstance(output_std, (int, float)) and not (math.isfinite(output_std) and output_std > 0):
            raise ValueError(f"output_std must be finite and > 0, got {output_std!r}")
        additional_args = _format_additional_forward_args(additional_forward_args)

        model = self.forward_func if isinstance(self.forward_func, Module) else None
        training = model.training if model is not None else self.layer.training
        if training:
            warnings.warn(
                "the model is in training mode: BatchNorm and Dropout make the SMOCAM objective "
                "noisy and BatchNorm statistics would change; call model.eval() first "
                "(the statistics are restored after the call)",
                UserWarning,
                stacklevel=3,
            )
        # Forwards in training mode update BatchNorm statistics: snapshot every buffer.
        saved_buffers = (
            {k: b.detach().clone() for k, b in model.named_buffers()} if (training and model is not None) else None
        )
        try:
            return self._attribute(
                inputs, target, additional_args, n, output_std, l2_weight, smooth_weight,
                int(n_steps), float(lr), attribute_to_layer_input, show_progress, init, nonnegative,
                lr_decay, tol, patience, internal_batch_size, upsample_to_input, fast,
            )
        finally:
            if saved_buffers:
                with torch.no_grad():
                    buffers = dict(model.named_buffers())
                    for k, v in saved_buffers.items():
                        buffers[k].copy_(v)

    def _attribute(
        self, inputs, target, additional_args, n, output_std, l2_weight, smooth_weight, n_steps, lr,
        to_input, show_progress, init, nonnegative, lr_decay, tol, patience, internal_batch_size,
        upsample_to_input, fast,
    ) -> Tensor:
        # Run the network before the layer once per distinct example.
        distinct, rows_of = _distinct_rows(inputs, additional_args, n)
        sub_inputs = tuple(x[distinct] for x in inputs)
        sub_args = tuple(_index_rows(a, distinct, n) for a in (additional_args or ()))
        runner = None
        if fast:
            from ._fastpath import build_fast_runner

            runner = build_fast_runner(self.forward_func, self.layer, sub_inputs, sub_args, to_input)
        if runner is None:
            runner = _HookRunner(self.forward_func, self.layer, sub_inputs, sub_args, to_input)
        self.path = runner.name
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
        std = _std_per_output(output_std, full_shape).to(output.device)[flat_target]
        reference = output.reshape(output.shape[0], -1).detach()[rows_of, flat_target]
        spatial = tuple(feature.shape[2:])
        if isinstance(init, Tensor):
            expected = (n, 1, *spatial)
            if tuple(init.shape) != expected:
                raise ValueError(f"init has shape {tuple(init.shape)}, expected {expected}")
            if (init < 0).any() and nonnegative:
                raise ValueError("init has negative values but nonnegative=True")

        chunk = internal_batch_size or n
        masks, histories = [], []
        for start in range(0, n, chunk):
            sel = slice(start, min(n, start + chunk))
            mask, hist = self._optimise(
                runner, rows_of[sel], flat_target[sel], reference[sel], std[sel], spatial, feature,
                init[sel] if isinstance(init, Tensor) else None,
                l2_weight, smooth_weight, n_steps, lr, nonnegative, lr_decay, tol, patience,
                show_progress,
            )
            masks.append(mask)
            histories.append(hist)
        mask = torch.cat(masks)
        self.history = _merge_histories(histories)
        if upsample_to_input:
            mask = upsample_mask(mask, inputs[0].shape[2:])
        return mask

    def _optimise(
        self, runner, rows, targets, reference, std, spatial, feature, init, l2_weight, smooth_weight,
        n_steps, lr, nonnegative, lr_decay, tol, patience, show_progress,
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        b = rows.shape[0]
        index = torch.arange(b, device=rows.device)
        unit = 1.0 / math.sqrt(float(np.prod(spatial)))
        shape = (b, 1, *spatial)
        # Parametrise the mask relative to the uniform unit-norm value.
        start = torch.ones(shape) if init is None else init.detach().float() / unit
        rel = start.to(device=feature.device, dtype=feature.dtype).clone().requires_grad_(True)
        optimiser = torch.optim.Adam([rel], lr=lr)
        schedule = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=n_steps, eta_min=0.01 * lr)
            if lr_decay == "cosine"
            else None
        )
        best = torch.full((b,), math.inf, device=feature.device)
        best_rel = rel.detach().clone()
        best_step = torch.zeros(b, dtype=torch.long)
        active = torch.ones(b, dtype=torch.bool, device=feature.device)
        since_improved = torch.zeros(b, dtype=torch.long, device=feature.device)
        history: Dict[str, List[Tensor]] = {k: [] for k in LOSS_TERMS}
        steps = range(n_steps)
        if show_progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="SMOCAM", unit="step", leave=False)
        with torch.enable_grad():
            for step in steps:
                # Apply the mask.
                mask = rel * unit
                # Evaluate.
                out = runner(mask, rows)
                masked = out.reshape(b, -1)[index, targets]
                # Regularise.
                terms = smocam_objective(masked, reference, mask, std, l2_weight, smooth_weight)
                total = terms["total"]
                for k in LOSS_TERMS:
                    history[k].append(terms[k].detach())
                # Keep the best iterate.
                with torch.no_grad():
                    gain = total.detach() < best * (1.0 - (tol or 0.0))
                    improved = total.detach() < best
                    best_rel[improved] = rel.detach()[improved]
                    best_step[improved.cpu()] = step
                    best = torch.where(improved, total.detach(), best)
                    since_improved = torch.where(gain, torch.zeros_like(since_improved), since_improved + 1)
                    if tol is not None:
                        active &= since_improved < patience
                        if not active.any():
                            break
                if step == n_steps - 1:
                    break  # the last update would never be evaluated
                # Step.
                (grad,) = torch.autograd.grad(total.sum(), rel)
                rel.grad = grad
                frozen = rel.detach()[~active].clone()
                optimiser.step()
                if schedule is not None:
                    schedule.step()
                with torch.no_grad():
                    if nonnegative:
                        rel.clamp_(min=0.0)
                    if frozen.numel():
                        rel[~active] = frozen
        hist = {k: torch.stack(v).cpu() for k, v in history.items()}
        hist["best_step"] = best_step
        return (best_rel * unit).detach(), hist

def _distinct_rows(inputs, additional_args, n) -> Tuple[Tensor, Tensor]:
    """Indices of the distinct examples, and for each example the position of its representative.

    Rows are grouped by a cheap fingerprint (per-row sums) and confirmed with
    ``torch.equal``, so a batch of distinct scans costs one pass.
    """
    device = inputs[0].device
    per_example = [a for a in (additional_args or ()) if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n]
    tensors = [t.detach() for t in list(inputs) + per_example]
    prints = torch.stack([t.reshape(n, -1).double().sum(dim=1) for t in tensors], dim=1).cpu().tolist()
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
    for k in LOSS_TERMS:
        parts = []
        for h in histories:
            v = h[k]
            if v.shape[0] < length:
                v = torch.cat([v, v[-1:].expand(length - v.shape[0], -1)])
            parts.append(v)
        merged[k] = torch.cat(parts, dim=1)
    merged["best_step"] = torch.cat([h["best_step"] for h in histories])
    return merged
