"""The optimisation loop: apply the mask, evaluate, regularise, step, stop — one chunk of examples at a time.

For each chunk of at most ``internal_batch_size`` examples, :func:`optimise`
runs Adam on the mask's parameters (:mod:`captum_smocam.smocam.mask`) with a
cosine-decayed step size (to :data:`~captum_smocam.smocam.defaults.LR_FLOOR`
of ``lr``), for ``n_steps`` steps or until every example stops improving
(``tol``, ``patience``). Each step:

1. **Apply the mask** — ``M = mask(theta)``; for ``"preserve"`` reference
   ``step % K`` is used at this step, the same for every example;
2. **Evaluate** — the runner (:mod:`captum_smocam.smocam.runners`) puts the
   perturbed features (:mod:`captum_smocam.smocam.perturbation`) through the
   rest of the network;
3. **Regularise** — the objective's terms (:mod:`captum_smocam.smocam.objective`);
   with ``fidelity_tol`` the distance term's weight is a Lagrange multiplier
   that grows by ``FIDELITY_RATE * (|y_M - y| / sigma - tol)`` per step
   (dual ascent, floored at 1, at most ``FIDELITY_MAX_WEIGHT``);
4. **Step** — gradient of the smoothed loss, Adam, projection.

The mask of the **last** step is returned (no best-iterate rule): the same
scan and target give the same mask alone, in any batch, on the fast or the
hook path. A chunk smaller than the plan's ``min_rows`` is padded with copies
of its last example (see :data:`~captum_smocam.kernels.MIN_ROWS`). After the
loop, the fidelity of the returned mask (the mean over the references of
``|y_M - y| / sigma``) is measured, and a warning is given for an empty mask or
one that does not keep its prediction (:func:`warn_if_empty`).
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from .defaults import EMPTY_MASK_WARN, FIDELITY_MAX_WEIGHT, FIDELITY_RATE, FIDELITY_WARN, LOSS_TERMS, LR_FLOOR

__all__ = ["Evaluated", "Chunk", "optimise", "optimise_chunks", "merge_histories", "warn_if_empty"]


@dataclasses.dataclass(frozen=True)
class Evaluated:
    """The distinct examples of a call and the unmasked network's results on them.

    Attributes:
        inputs (tuple[Tensor, ...]): the distinct rows of the inputs (padded to the plan's ``min_rows``).
        args (tuple): the forward arguments of those rows.
        n_distinct (int): how many rows are distinct examples (the rest is padding).
        rows_of (Tensor): for each example of the call (``N``), its row.
        targets (Tensor): for each example, the flat index of its explained output.
        output (Tensor): the unmasked output of every row.
        feature (Tensor): the layer's tensor of every row (``rows x C x <spatial dims>``).
        reference (Tensor): for each example, its explained output ``y`` (``N``).
    """

    inputs: Tuple[Tensor, ...]
    args: tuple
    n_distinct: int
    rows_of: Tensor
    targets: Tensor
    output: Tensor
    feature: Tensor
    reference: Tensor


@dataclasses.dataclass(frozen=True)
class Chunk:
    """The examples one :func:`optimise` call works on: their rows, targets, ``y``, units and initial masks."""

    rows: Tensor
    targets: Tensor
    reference: Tensor
    unit: Tensor  # the distance term's unit
    sigma: Tensor  # the unit fidelity is reported in
    init: Optional[Tensor]

    def padded(self, min_rows: int) -> "Chunk":
        """The chunk with copies of its last example up to ``min_rows`` examples."""
        pad = min_rows - self.rows.shape[0]
        if pad <= 0:
            return self

        def grow(t: Optional[Tensor]) -> Optional[Tensor]:
            return None if t is None else torch.cat([t, t[-1:].expand(pad, *t.shape[1:])])

        return Chunk(*(grow(t) for t in (self.rows, self.targets, self.reference, self.unit, self.sigma,
                                          self.init)))


def optimise_chunks(settings, runner, evaluated: Evaluated, refs, min_rows: int
                    ) -> Tuple[Tensor, Dict[str, Tensor], Tensor]:
    """Masks, histories and fidelities of every example, optimised ``internal_batch_size`` examples at a time.

    ``refs`` is the call's :class:`~captum_smocam.smocam.references.References`.
    """
    e, n = evaluated, evaluated.rows_of.shape[0]
    init = settings.init if isinstance(settings.init, Tensor) else None
    chunk = settings.internal_batch_size or n
    masks, histories, kept = [], [], []
    for start in range(0, n, chunk):
        sel = slice(start, min(n, start + chunk))
        part = Chunk(e.rows_of[sel], e.targets[sel], e.reference[sel], refs.unit[sel], refs.sigma[sel],
                     None if init is None else init[sel])
        mask, hist = optimise(settings, runner, part, e.feature, refs.features, min_rows)
        masks.append(mask)
        histories.append(hist)
        kept.append(hist.pop("fidelity"))
    return torch.cat(masks), merge_histories(histories), torch.cat(kept)


def optimise(settings, runner, chunk: Chunk, feature: Tensor, ref_features: Optional[Tensor], min_rows: int
             ) -> Tuple[Tensor, Dict[str, Tensor]]:
    """The masks of one chunk (``n x 1 x <spatial dims>``) and its history (terms per step, stop step, fidelity)."""
    obj, n_steps, lr, tol, patience = settings.objective, settings.n_steps, settings.lr, settings.tol, settings.patience
    n_real = chunk.rows.shape[0]
    chunk = chunk.padded(min_rows)
    rows, targets, reference, std, report_std = chunk.rows, chunk.targets, chunk.reference, chunk.unit, chunk.sigma
    b = rows.shape[0]
    device = feature.device
    index = torch.arange(b, device=device)
    param = obj.parametrisation.initial((b, 1, *feature.shape[2:]), chunk.init, feature).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([param], lr=lr)
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=n_steps, eta_min=LR_FLOOR * lr)
        if settings.lr_decay == "cosine"
        else None
    )
    n_refs = 0 if ref_features is None else ref_features.shape[1]
    shared_refs = ref_features is not None and ref_features.shape[0] == 1
    active = torch.ones(b, dtype=torch.bool, device=device)
    best = torch.full((b,), math.inf, device=device)
    since_improved = torch.zeros(b, dtype=torch.long, device=device)
    stop_step = torch.full((b,), n_steps - 1, dtype=torch.long)
    # Lagrange multiplier of the fidelity constraint |y_M - y| / sigma <= tol (1: the plain objective).
    tol_fid = float(obj.fidelity_tol)
    weight = torch.ones(b, device=device, dtype=reference.dtype)
    history: Dict[str, List[Tensor]] = {k: [] for k in LOSS_TERMS[obj.name]}
    steps = range(n_steps)
    if settings.show_progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"SMOCAM ({obj.name})", unit="step", leave=False)
    with torch.enable_grad():
        for step in steps:
            # Apply the mask (reference step % K for "preserve").
            mask = obj.parametrisation.mask(param)
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
                obj.parametrisation.project(param)
                if frozen is not None:
                    param[~active] = frozen
    hist = {k: torch.stack(v)[:, :n_real].cpu() for k, v in history.items()}
    hist["stop_step"] = stop_step[:n_real]
    final = obj.parametrisation.mask(param).detach()
    hist["fidelity"] = _fidelity(obj, runner, chunk, final, ref_features, n_real).cpu()
    return final[:n_real], hist


def _fidelity(obj, runner, chunk: Chunk, final: Tensor, ref_features: Optional[Tensor], n_real: int) -> Tensor:
    """Per example (the first ``n_real``): the mean over the references of ``|y_M - y| / sigma`` for ``final``."""
    rows, b = chunk.rows, chunk.rows.shape[0]
    index = torch.arange(b, device=final.device)
    n_refs = 0 if ref_features is None else ref_features.shape[1]
    shared_refs = ref_features is not None and ref_features.shape[0] == 1
    with torch.no_grad():
        gaps = []
        for k in range(max(1, n_refs)):
            ref = None
            if n_refs:
                ref = ref_features[0, k].unsqueeze(0) if shared_refs else ref_features[rows, k]
            out = runner(obj.perturbation(final, ref), rows)
            gaps.append(((out.reshape(b, -1)[index, chunk.targets] - chunk.reference).abs() / chunk.sigma)[:n_real])
        return torch.stack(gaps).mean(dim=0)


def merge_histories(histories: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
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


def warn_if_empty(obj, mask: Tensor, fidelity: Tensor) -> None:
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
