r"""Where a call's references and its sigma come from, resolved once per call and passed on explicitly.

**References** (``"preserve"``; :math:`F_\mathrm{ref}`, the layer's features of
reference inputs), the first that exists:

1. the caller's ``baselines`` (``K x <input shape without batch>``, shared by
   every example);
2. the model's ``reference_inputs`` buffer (the shipped models carry 8
   normalised training scans; :func:`captum_smocam.models.set_reference_inputs`);
3. references made from each scan itself (:func:`captum_smocam.fallbacks.fallback_references`,
   one layer voxel as the unit), with a warning.

Their layer features are computed once (a hook pass, under the call's kernel
plan) and cached per process for the latest :data:`FEATURE_CACHE_SIZE` (model,
layer, references). ``"poster"`` uses no reference (zero features).

**Sigma** (:math:`\sigma`, the unit of the distance term and of
:attr:`SMOCAM.fidelity`): the caller's ``output_std``, else the model's
``output_std`` buffer or its description's (:func:`model_output_std`), else the
*effect*: per example, the root mean square over the references of
``y(F_ref) - y(F)`` (``|y(0) - y(F)|`` for ``"poster"``), the most a mask can
change the prediction (:func:`removal_effect`). With ``distance_unit="effect"``
the distance term is in units of the effect whatever sigma is.

:func:`resolve_references` does all of this for one call and returns a
:class:`References`.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
import weakref
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch.nn import Module

from .._cache import LRUCache
from .._model_state import module_fingerprint, state_fingerprint
from ..fallbacks import fallback_references
from ..model_card import get_output_std, get_reference_inputs
from .inputs import format_baselines, index_rows
from .runners import held_tensors

__all__ = ["References", "resolve_references", "model_output_std", "check_output_std", "std_per_output",
           "reference_features", "removal_effect", "FEATURE_CACHE_SIZE"]

#: How many (model, layer, references) the per-process cache of reference features keeps (the latest).
FEATURE_CACHE_SIZE = 2
_REFERENCE_FEATURES = LRUCache(FEATURE_CACHE_SIZE)


@dataclasses.dataclass(frozen=True)
class References:
    """A call's references and units, per example of the call (``N``).

    Attributes:
        features (Tensor or None): ``R x K x <feature shape without batch>``
            (``R`` = 1: shared by every example); None for ``"poster"``.
        source (str): where they came from (:attr:`SMOCAM.reference_source`).
        sigma (Tensor): sigma of each example (:attr:`SMOCAM.output_std_used`).
        unit (Tensor): the distance term's unit (sigma, or the effect).
    """

    features: Optional[Tensor]
    source: str
    sigma: Tensor
    unit: Tensor


def model_output_std(forward_func) -> Union[float, Tensor, None]:
    """The model's ``output_std`` buffer (the shipped models' training sigma), its description's, or None
    (:func:`captum_smocam.models.get_output_std`)."""
    return get_output_std(forward_func)


def check_output_std(output_std: Any) -> None:
    """A number given as ``output_std`` must be finite and > 0 (tensors are checked by :func:`std_per_output`)."""
    if isinstance(output_std, numbers.Real) and not (math.isfinite(output_std) and output_std > 0):
        raise ValueError(f"output_std must be finite and > 0, got {output_std!r}")


def std_per_output(output_std: Union[float, Tensor, Sequence[float]], output_shape: Tuple[int, ...]) -> Tensor:
    """sigma for every output, flattened to ``prod(output_shape[1:])`` values; validated.

    Examples::

        >>> std_per_output(2.0, (1, 3))
        tensor([2., 2., 2.])
    """
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


def resolve_references(net, runner, evaluated, baselines, output_std, obj) -> References:
    """The references (for ``"preserve"``), sigma and the distance's unit of one call.

    Args:
        net (Network): the call's network (:class:`~captum_smocam.smocam.runners.Network`).
        runner: the call's (planned) runner on the distinct examples.
        evaluated (Evaluated): the unmasked evaluation (:class:`~captum_smocam.smocam.loop.Evaluated`).
        baselines (tuple[Tensor, ...] or None): the caller's, formatted.
        output_std: the caller's or the model's sigma; None: the effect.
        obj: the objective.
    """
    e = evaluated
    removed = _check_mask_reaches_output(runner, e.output, e.rows_of, e.targets)
    features, source = None, f"none: objective {obj.name!r} uses no reference"
    if obj.needs_reference:
        features, source = reference_features(net, e.inputs, e.args, baselines, e.feature, e.n_distinct,
                                              obj.fallback)
        _warn_if_references_match(e.feature[:e.n_distinct], features[:e.n_distinct], baselines is not None
                                  or get_reference_inputs(net.forward_func) is not None)
    effect = removal_effect(runner, e.output, e.rows_of, e.targets, features, removed)
    n = e.rows_of.shape[0]
    if bool((effect == 0).any()):
        warnings.warn(
            f"for {int((effect == 0).sum())} of {n} example(s) the references give exactly the prediction of the "
            f"scan itself ({source}): the mask cannot show anything; pass other baselines (e.g. scans of other "
            "subjects)", UserWarning, stacklevel=5)
    effect = torch.where(effect > 0, effect, torch.ones_like(effect)).to(e.output.dtype)
    if output_std is None:
        std = effect
    else:
        full_shape = (n, *e.output.shape[1:])
        std = std_per_output(output_std, full_shape).to(e.output.device)[e.targets].to(e.output.dtype)
    unit = effect if obj.distance_unit == "effect" else std
    return References(features, source, std, unit)


def _check_mask_reaches_output(runner, output: Tensor, rows_of: Tensor, flat_target: Tensor) -> Tensor:
    """Fail loudly if removing the layer's features does not change the explained outputs; returns them removed.

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
            stacklevel=6,
        )
    return after


def removal_effect(runner, output, rows_of, flat_target, ref_features, removed) -> Tensor:
    """Per example: how far the prediction moves when every feature is replaced (``N``).

    The root mean square over the references of ``y(F_ref) - y(F)``, or
    ``|y(0) - y(F)|`` without references (``removed``: ``y(0)``): the largest
    change a mask can make.
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


def reference_features(net, inputs, args, baselines, feature, n_distinct, fallback) -> Tuple[Tensor, str]:
    """The layer's tensor for the references, ``R x K x <feature shape without batch>``, and where they came from.

    ``R`` is 1 when every example shares the references, else one entry per
    row of ``inputs`` (references made from each scan, or per-example forward
    arguments); the rows after the first ``n_distinct`` (padding) repeat the
    last one.
    """
    d = inputs[0].shape[0]
    if n_distinct < d:
        feats, source = reference_features(net, tuple(x[:n_distinct] for x in inputs),
                                           tuple(index_rows(a, torch.arange(n_distinct), d) for a in args),
                                           baselines, feature, n_distinct, fallback)
        if feats.shape[0] == 1:
            return feats, source
        return torch.cat([feats, feats[-1:].expand(d - n_distinct, *feats.shape[1:])]), source
    source = "baselines"
    if baselines is None:
        stored = get_reference_inputs(net.forward_func)
        if stored is not None:
            baselines = format_baselines(stored, inputs, what="the model's reference_inputs")
            source = "model's reference_inputs"
    if baselines is None:
        return _fallback_features(net, inputs, args, feature, fallback)
    k = baselines[0].shape[0]
    described = f"baselines: {k} given" if source == "baselines" else f"model: {k} reference_inputs"
    per_example = any(isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == d for a in args)
    if per_example:  # forward arguments differ per example: one reference pass per example
        feats = []
        for i in range(d):
            rows = torch.full((k,), i, dtype=torch.long, device=inputs[0].device)
            feats.append(net.hook(baselines, tuple(index_rows(a, rows, d) for a in args)).layer_tensor())
        return _checked_reference(torch.stack(feats), feature, source), described
    return _shared_features(net, args, baselines, feature, source), described


def _fallback_features(net, inputs, args, feature, fallback: str) -> Tuple[Tensor, str]:
    """References made from each scan itself (:func:`~captum_smocam.fallbacks.fallback_references`), one layer
    voxel as the unit, with a warning; ``R`` = the number of rows."""
    warnings.warn(
        f"SMOCAM: no baselines and the model carries no reference_inputs; using references made from the "
        f"scan itself (fallback={fallback!r}), which localise less well than scans of other subjects: "
        "build references from a few scans with captum_smocam.references or `smocam references`",
        UserWarning, stacklevel=7)
    d = inputs[0].shape[0]
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
    feats = net.hook(flat, tuple(index_rows(a, rows, d) for a in args)).layer_tensor()
    source = (f"fallback: {k} references per input ({fallback}) made from the input itself "
              "(the model has no reference_inputs)")
    return _checked_reference(feats.reshape(d, k, *feats.shape[1:]), feature, f"fallback {fallback}"), source


def _shared_features(net, args, baselines, feature, source: str) -> Tensor:
    """The features of references shared by every example (``R`` = 1), from the per-process cache if there."""
    forward_func, layer = net.forward_func, net.layer
    module = forward_func if isinstance(forward_func, Module) else None
    key = (id(forward_func), id(layer), net.to_input, module_fingerprint(module) if module is not None else (),
           state_fingerprint(layer), net.plan.name, tuple((b.shape, b.dtype, b.device) for b in baselines),
           tuple(a for a in args if not isinstance(a, Tensor)))
    hit = _REFERENCE_FEATURES.get(key)
    if hit is not None and hit[0]() is forward_func and all(torch.equal(a, b) for a, b in zip(hit[1], baselines)):
        return hit[2]
    feats = net.hook(baselines, args).layer_tensor()
    feats = _checked_reference(feats.unsqueeze(0), feature, source)
    try:
        _REFERENCE_FEATURES.put(key, (weakref.ref(forward_func), tuple(b.clone() for b in baselines), feats,
                                      held_tensors(module) + held_tensors(layer)))
    except TypeError:  # a forward function that takes no weak reference: not cached
        pass
    return feats


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
                      UserWarning, stacklevel=6)
