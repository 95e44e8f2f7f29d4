r"""The ``SMOCAM`` attribution: checks a call, builds its settings, and runs references, runners and the loop.

:class:`SMOCAM` is a Captum ``LayerAttribution``: ``SMOCAM(model, layer)``,
then ``attribute(inputs, target, ...)`` returns one mask per example at the
layer's resolution. A call goes through the parts in data-flow order:

1. :mod:`~captum_smocam.smocam.settings` — the settings, checked and frozen
   (:mod:`~captum_smocam.smocam.defaults` fills what is not given);
2. :mod:`~captum_smocam.smocam.inputs` — inputs, targets and baselines checked,
   identical examples found;
3. :mod:`~captum_smocam.smocam.runners` — the kernel plan, the fast or hook
   runner, the unmasked evaluation;
4. :mod:`~captum_smocam.smocam.references` — references and sigma, once;
5. :mod:`~captum_smocam.smocam.loop` — the optimisation of each chunk of
   examples, with the objective (:mod:`~captum_smocam.smocam.objective`), its
   mask (:mod:`~captum_smocam.smocam.mask`) and perturbation
   (:mod:`~captum_smocam.smocam.perturbation`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.nn import Module

from .._captum_compat import (
    GradientAttribution,
    LayerAttribution,
    TargetType,
    _format_additional_forward_args,
    log_usage,
)
from .._model_state import unwrap_model
from .._settings import check_environment
from ..model_card import target_indices
from .defaults import DEFAULT_OBJECTIVE, DEFAULT_SMOOTHING
from .inputs import (
    cast_floating,
    check_finite_mask,
    check_inputs,
    distinct_rows,
    first_float_dtype,
    format_baselines,
    format_inputs,
    index_rows,
    stored_rows,
    target_flat_indices,
)
from .loop import Evaluated, optimise_chunks, warn_if_empty
from .mask import upsample_mask
from .references import check_output_std, model_output_std, resolve_references
from .runners import Network, PlannedRunner, build_runner, call_plan, model_in_dtype
from .settings import CallSettings, call_settings, check_runner_settings

logger = logging.getLogger(__name__)

__all__ = ["SMOCAM"]


class SMOCAM(LayerAttribution, GradientAttribution):
    r"""SMOCAM (SMOoth Conditional Attention Mask) for regression models.

    For a chosen layer with feature map ``F`` (``N x L x <spatial dims>``) and a
    chosen output ``y = f(x)_i``, SMOCAM optimises a mask ``M``
    (``N x 1 x <spatial dims>``, broadcast over the ``L`` channels), puts the
    perturbed features through the rest of the network to get ``y_M``, and
    minimises, for each example, ``objective="preserve"`` (default; ours: the
    layer sees ``F_ref + M * (F - F_ref)``, the smallest smooth region of the
    subject's own features that keeps the prediction) or ``"poster"`` (the
    poster's objective, exactly: ``F * M``). The objectives are written out in
    :mod:`captum_smocam.smocam.objective`, the loop (Adam, cosine decay, the
    mask of the **last** step returned) in :mod:`captum_smocam.smocam.loop`,
    where references and sigma come from in :mod:`captum_smocam.smocam.references`.

    Like Grad-CAM's, the mask lives at the layer's resolution; upsample it with
    :func:`~captum_smocam.smocam.mask.upsample_mask` or ``upsample_to_input=True``.
    After each call, :attr:`history` holds the per-step loss terms,
    :attr:`path` the evaluation path (``"fast"``: the network before the layer
    runs once; ``"hook"``: all of it at every step), :attr:`plan` /
    :attr:`plan_source` the kernel plan, :attr:`reference_source` the
    references, :attr:`fidelity` and :attr:`output_std_used` per example.

    Reference: S. Konate, L. Lebrat, R. Santa Cruz, P. Bourgeat, V. Dore,
    J. Fripp, A. Bradley, C. Fookes, O. Salvado, "SMOCAM: SMOoth Conditional
    Attention Mask for 3D-Regression Models" (poster, CSIRO/QUT).

    Args:
        forward_func (Callable): the model or any function of the inputs that
            returns ``N x <outputs>``. A ``torch.compile``\ d or
            ``DataParallel`` module is unwrapped to its module; TorchScript
            modules are refused (hooks do not run in them).
        layer (torch.nn.Module): the layer whose output (or input) is masked;
            called exactly once per forward pass.
        device_ids (list[int], optional): accepted for compatibility with
            Captum's layer methods; unused. Default: None

    Examples::

        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(),
        ...                     nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
        >>> x = torch.randn(2, 1, 7, 8, 9)
        >>> smocam = SMOCAM(net, net[1])
        >>> smocam.attribute(x, target=1, n_steps=5).shape  # N x 1 x spatial dims of the layer output
        torch.Size([2, 1, 7, 8, 9])
    """

    def __init__(self, forward_func: Callable[..., Tensor], layer: Module,
                 device_ids: Union[None, List[int]] = None) -> None:
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
        #: The kernel plan of the last call (:mod:`captum_smocam.kernels`), and where it came from.
        self.plan: Optional[Any] = None
        self.plan_source: Optional[str] = None
        #: Which references the last call's masks were measured against ("model: 8 reference_inputs", ...).
        self.reference_source: Optional[str] = None
        #: Per example of the last call: the mean over the references of ``|y_M - y| / sigma`` for the
        #: returned mask (``N``); a warning is given above ``FIDELITY_WARN``.
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
        r"""Optimise one SMOCAM mask per example (the first four arguments are ``LayerGradCam.attribute``'s).

        ``None`` settings take the objective's defaults
        (:data:`~captum_smocam.smocam.defaults.OBJECTIVE_DEFAULTS`).

        Args:
            inputs (Tensor or tuple[Tensor, ...]): model input(s), batch first, e.g.
                ``N x 1 x H x W x D`` scans; floating point, of the model's dtype, finite.
            target (int, tuple, list, Tensor or str, optional): the output to explain, as in
                Captum (one for all, or a list / 1-D tensor with one per example; output names
                when the model carries them). None only for a single-output model. K outputs
                of one scan: pass ``x.expand(K, ...)`` with ``target=list(range(K))`` (the
                network before the layer then runs once). Default: None
            additional_forward_args (Any, optional): extra arguments of ``forward_func``;
                tensors with first dimension ``N`` are per example. Default: None
            attribute_to_layer_input (bool, optional): mask the layer's input. Default: False
            relu_attributions (bool, optional): clip the mask at 0 (Captum's argument; changes
                only ``"poster"`` masks with ``nonnegative=False``). Default: False
            baselines (float, Tensor or tuple, optional): ``"preserve"``'s reference inputs,
                ``K x <input shape without batch>`` per input (or a number); None: the model's
                ``reference_inputs``, else references made from the scan
                (:mod:`captum_smocam.smocam.references`). Default: None
            objective (str, optional): ``"preserve"`` or ``"poster"``
                (:mod:`captum_smocam.smocam.objective`). Default: ``DEFAULT_OBJECTIVE``
            output_std (float, sequence or Tensor, optional): sigma, the output's spread (one
                value or one per output); None: the model's ``output_std``, else the effect
                (:mod:`captum_smocam.smocam.references`); used: :attr:`output_std_used`. Default: None
            area_weight (float, optional): ``"preserve"``: weight of the mask's mean. Default: None
            l2_weight (float, optional): ``"poster"``: weight of ``|1 - ||M||_2|``. Default: None
            smooth_weight (float, optional): weight of the total variation. Default: None
            n_steps (int, optional): optimisation steps (150 ``"preserve"``, 100 ``"poster"``). Default: None
            lr (float, optional): Adam step size (on the logits for ``"preserve"``; relative to
                ``1/sqrt(#voxels)`` for ``"poster"``). Default: None
            smoothing (float, optional): width of the smoothed absolute values; 0: plain
                subgradients. Default: ``DEFAULT_SMOOTHING``
            show_progress (bool, optional): a progress bar over steps. Default: False
            init (str or Tensor, optional): ``"uniform"`` or initial mask values
                ``N x 1 x <layer spatial dims>`` (:mod:`captum_smocam.smocam.mask`). Default: ``"uniform"``
            nonnegative (bool, optional): ``"poster"``: project onto ``M >= 0``. Default: True
            lr_decay (str, optional): ``"cosine"`` (to 1 % of ``lr``) or ``"none"``. Default: ``"cosine"``
            tol (float, optional): stop an example once its objective has not improved by a
                relative ``tol`` for ``patience`` steps; None runs all steps. Default: None
            patience (int, optional): see ``tol``. Default: 10
            internal_batch_size (int, optional): most masks optimised at once. Default: None (all)
            upsample_to_input (bool, optional): return the mask on the first input's grid. Default: False
            fast (bool, optional): try the cached-prefix fast path (else, or if the model
                cannot be traced, the hook path). Default: True
            dtype (torch.dtype, optional): type of the optimisation (a copy of the model runs
                in it); None: ``OBJECTIVE_DTYPE[objective]`` (float64 for ``"poster"``). Default: None
            kernel_plan (str or KernelPlan, optional): ``"auto"`` (a per-row invariant plan,
                chosen by rule), ``"fastest"`` (timed), ``"stock"`` / ``"off"`` (PyTorch's kernels,
                ``MIN_ROWS`` rows) or a :class:`~captum_smocam.kernels.KernelPlan`
                (:mod:`captum_smocam.kernel_choice`); used: :attr:`plan`. Default: ``"auto"``
            autocast (torch.dtype, optional): run the network under ``torch.autocast`` in
                ``torch.bfloat16`` / ``torch.float16`` (masks then agree only approximately). Default: None
            fidelity_tol (float, optional): ``"preserve"``: the prediction the mask must keep, in
                sigma (dual ascent; ``math.inf``: off). Default: None (off)
            fallback (str, optional): ``"preserve"``: references made from the scan when there are
                none (:data:`~captum_smocam.fallbacks.FALLBACKS`). Default: ``DEFAULT_FALLBACK``
            distance_unit (str, optional): ``"preserve"``: ``"sigma"`` or ``"effect"``. Default: None

        Returns:
            Tensor: masks ``N x 1 x <spatial dims of the layer output>`` (or input), or
            ``N x 1 x <input spatial dims>`` with ``upsample_to_input``; detached, in the
            inputs' dtype. ``"preserve"``: in ``[0, 1]``; ``"poster"``: ``>= 0``, ``||M||_2`` near 1.

        Examples::

            >>> import torch
            >>> from captum_smocam.models import VGG3D
            >>> net = VGG3D(16, channels=(4, 8, 8)).eval()
            >>> x = torch.randn(2, 1, 24, 28, 20)
            >>> smocam = SMOCAM(net, net.features.block2)    # output at 1/2 resolution
            >>> smocam.attribute(x, target=3, output_std=0.5, n_steps=10).shape
            torch.Size([2, 1, 12, 14, 10])
            >>> smocam.attribute(x, target=3, baselines=torch.randn(3, 1, 24, 28, 20), n_steps=10,
            ...                  upsample_to_input=True).shape
            torch.Size([2, 1, 24, 28, 20])
        """
        settings = call_settings(
            objective=objective, area_weight=area_weight, l2_weight=l2_weight, smooth_weight=smooth_weight,
            n_steps=n_steps, lr=lr, fidelity_tol=fidelity_tol, distance_unit=distance_unit, fallback=fallback,
            smoothing=smoothing, nonnegative=nonnegative, lr_decay=lr_decay, tol=tol, patience=patience, init=init,
            internal_batch_size=internal_batch_size, show_progress=show_progress, upsample_to_input=upsample_to_input,
            relu_attributions=relu_attributions, to_input=attribute_to_layer_input, fast=fast,
            kernel_plan=kernel_plan, autocast=autocast, dtype=dtype)
        forward_func = _unwrap_model(self.forward_func)
        output_std = model_output_std(forward_func) if output_std is None else output_std
        check_output_std(output_std)
        check_environment()  # SMOCAM_* switches: an unknown word is an error, not "on"
        model = forward_func if isinstance(forward_func, Module) else None
        target = target_indices(target, model)  # output names -> indices (a clear error without names)
        inputs = format_inputs(inputs)
        check_inputs(inputs, first_float_dtype(model))
        check_runner_settings(settings, inputs[0].dtype)
        base = format_baselines(baselines, inputs) if settings.objective.needs_reference else None
        additional_args = _format_additional_forward_args(additional_forward_args)
        layer, out_dtype, work_dtype = self.layer, inputs[0].dtype, settings.work_dtype
        if work_dtype is not None and work_dtype != out_dtype:
            if model is None:
                logger.info("SMOCAM: forward_func is not an nn.Module and cannot be cast to %s", work_dtype)
            else:
                forward_func, layer = model_in_dtype(model, self.layer, work_dtype)
                model = forward_func
                inputs = tuple(stored_rows(x).to(work_dtype).expand(x.shape) for x in inputs)
                base = None if base is None else tuple(b.to(work_dtype) for b in base)
                additional_args = cast_floating(additional_args, work_dtype)
        outcome = Outcome()
        try:
            with _buffers_restored(model, self.layer):
                net = Network(forward_func, layer, settings.to_input, None, settings.autocast, inputs[0].dtype)
                mask = _explain(net, (inputs, additional_args, target), base, output_std, settings, outcome)
        finally:
            vars(self).update(vars(outcome))
        if relu_attributions:
            mask = mask.clamp_min(0)
        check_finite_mask(mask)
        return mask.to(out_dtype)


class Outcome:
    """What a call leaves on :class:`SMOCAM` (filled as the call goes, so a failed call leaves what it reached)."""

    def __init__(self) -> None:
        self.plan: Optional[Any] = None
        self.plan_source: Optional[str] = None
        self.path: Optional[str] = None


def _unwrap_model(forward_func: Any) -> Any:
    r""":func:`~captum_smocam._model_state.unwrap_model`, said in the log: hooks on a ``torch.compile``\ d graph
    have no effect, and the wrapped module holds ``reference_inputs``."""
    inner = unwrap_model(forward_func)
    if inner is not forward_func:
        logger.info("SMOCAM: the model is wrapped (%s); using the module inside (%s)", type(forward_func).__name__,
                    type(inner).__name__)
    return inner


@contextlib.contextmanager
def _buffers_restored(model: Optional[Module], layer: Module):
    """Warn about a model in training mode, and give its buffers (BatchNorm statistics) back after the block."""
    inner = unwrap_model(model)
    training = inner.training if inner is not None else layer.training
    if training:
        warnings.warn(
            "the model is in training mode: BatchNorm and Dropout make the SMOCAM objective "
            "noisy and BatchNorm statistics would change; call model.eval() first "
            "(the statistics are restored after the call)",
            UserWarning,
            stacklevel=5,
        )
    # Forwards in training mode update BatchNorm statistics: snapshot every buffer.
    saved = {k: b.detach().clone() for k, b in model.named_buffers()} if (training and model is not None) else None
    try:
        yield
    finally:
        if saved:
            with torch.no_grad():
                buffers = dict(model.named_buffers())
                for k, v in saved.items():
                    buffers[k].copy_(v)


def _explain(net: Network, data: Tuple[Tuple[Tensor, ...], Any, Any], baselines, output_std,
             settings: CallSettings, outcome: Outcome) -> Tensor:
    """The masks of one call (``data``: inputs, forward arguments, targets), its record in ``outcome``."""
    inputs, additional_args, target = data
    n = inputs[0].shape[0]
    # Run the network before the layer once per distinct example.
    distinct, rows_of = distinct_rows(inputs, additional_args, n)
    n_distinct = len(distinct)
    plan, outcome.plan_source = call_plan(net.forward_func, net.layer, inputs, additional_args, distinct, settings)
    net = dataclasses.replace(net, plan=plan)
    outcome.plan = plan
    if n_distinct < plan.min_rows:  # copies of the last distinct example fill the batch (see MIN_ROWS)
        distinct = torch.cat([distinct, distinct[-1:].expand(plan.min_rows - len(distinct))])
    sub_inputs = tuple(x[distinct] for x in inputs)
    sub_args = tuple(index_rows(a, distinct, n) for a in (additional_args or ()))
    # The fast path's check runs (and keeps) the prefix: under the plan, as every later evaluation.
    with PlannedRunner(None, plan, net.autocast, net.dtype).context(inputs[0].device):
        runner = build_runner(net.forward_func, net.layer, sub_inputs, sub_args, net.to_input, settings.fast)
    outcome.path = runner.name
    runner = net.planned(runner)
    evaluated = _evaluate(runner, (sub_inputs, sub_args, n_distinct), rows_of, target, settings)
    refs = resolve_references(net, runner, evaluated, baselines, output_std, settings.objective)
    outcome.reference_source = refs.source
    outcome.output_std_used = refs.sigma.detach().cpu()
    mask, outcome.history, outcome.fidelity = optimise_chunks(settings, runner, evaluated, refs, plan.min_rows)
    warn_if_empty(settings.objective, mask, outcome.fidelity)
    if settings.upsample_to_input:
        mask = upsample_mask(mask, inputs[0].shape[2:])
    return mask


def _evaluate(runner, rows: Tuple[Tuple[Tensor, ...], tuple, int], rows_of: Tensor, target,
              settings: CallSettings) -> Evaluated:
    """The unmasked evaluation of the distinct ``rows`` (inputs, arguments, how many are distinct), checked."""
    sub_inputs, sub_args, n_distinct = rows
    with torch.no_grad():
        output, feature = runner.reference()
    if not isinstance(output, Tensor) or output.dim() == 0 or output.shape[0] != sub_inputs[0].shape[0]:
        raise ValueError(
            "forward_func must return a Tensor whose first dimension is the batch, got "
            f"{type(output).__name__} of shape {tuple(getattr(output, 'shape', ()))}"
        )
    if feature.dim() < 3:
        raise ValueError(
            f"the layer's {'input' if settings.to_input else 'output'} has shape {tuple(feature.shape)}; "
            "SMOCAM needs N x C x <1-3 spatial dims>"
        )
    n = rows_of.shape[0]
    flat_target = target_flat_indices(target, (n, *output.shape[1:])).to(output.device)
    reference = output.reshape(output.shape[0], -1).detach()[rows_of, flat_target]
    if not torch.isfinite(reference).all():
        bad = sorted({int(t) for t, ok in zip(flat_target.tolist(), torch.isfinite(reference).tolist()) if not ok})
        raise ValueError(f"the model's output {bad} is not finite (NaN or Inf) for this input: "
                         "check the model's weights and the input")
    _check_init(settings, (n, 1, *feature.shape[2:]))
    return Evaluated(sub_inputs, sub_args, n_distinct, rows_of, flat_target, output, feature, reference)


def _check_init(settings: CallSettings, expected: Tuple[int, ...]) -> None:
    """An initial mask must have the masks' shape and values the objective's mask can take."""
    init, obj = settings.init, settings.objective
    if isinstance(init, Tensor):
        if tuple(init.shape) != expected:
            raise ValueError(f"init has shape {tuple(init.shape)}, expected {expected}")
        if obj.name == "poster" and (init < 0).any() and obj.nonnegative:
            raise ValueError("init has negative values but nonnegative=True")
        if obj.name == "preserve" and ((init < 0) | (init > 1)).any():
            raise ValueError("init of objective 'preserve' must be mask values in [0, 1]")
