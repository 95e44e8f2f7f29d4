"""Faithfulness of a map to a regression model: deletion and insertion curves (Petsiuk et al. 2018).

The change of prediction is measured as ``|f(x') - f(x)| / sigma``; see
:func:`deletion_insertion` and ``docs/metrics.md``.

References:
    V. Petsiuk, A. Das, K. Saenko, "RISE: Randomized input sampling for
    explanation of black-box models", BMVC 2018.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from ._inputs import ArrayLike, _as_map

__all__ = ["deletion_insertion", "DEFAULT_FRACTIONS"]

#: Fractions of voxels perturbed by :func:`deletion_insertion` by default.
DEFAULT_FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def _normalised_auc(curve: np.ndarray, fractions: np.ndarray) -> float:
    return _trapezoid(curve, fractions) / float(fractions[-1] - fractions[0])


def _check_fractions(fractions) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or f.size < 2:
        raise ValueError(
            f"fractions must be a 1-D sequence of at least 2 values, got {fractions!r}"
        )
    if not np.all(np.isfinite(f)) or f.min() < 0 or f.max() > 1:
        raise ValueError(f"fractions must lie in [0, 1], got {f.tolist()}")
    if not np.all(np.diff(f) > 0):
        raise ValueError(f"fractions must be strictly increasing, got {f.tolist()}")
    return f


def _spatial_attribution(attribution, channels: int, spatial: tuple) -> np.ndarray:
    """Attribution over voxels: accepts (*spatial), (1|C, *spatial), (1, 1|C, *spatial)."""
    a = _as_map(attribution, "attribution")
    shape = tuple(a.shape)
    if shape == spatial:
        return a
    if shape in ((channels,) + spatial, (1,) + spatial):
        return a.sum(axis=0)
    if shape in ((1, channels) + spatial, (1, 1) + spatial):
        return a.sum(axis=(0, 1))
    raise ValueError(
        f"attribution has shape {shape}; expected {spatial}, {(channels,) + spatial} or "
        f"{(1, channels) + spatial} for inputs with {channels} channel(s) on grid {spatial}"
    )


def _rank_of_voxels(order: np.ndarray) -> np.ndarray:
    """rank[v] = position of voxel v in ``order`` (0 = first to perturb)."""
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size, dtype=np.int64)
    return rank


def _outputs(forward_func, batch: torch.Tensor, target: Optional[int]) -> np.ndarray:
    out = forward_func(batch)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"forward_func must return a torch.Tensor, got {type(out).__name__}")
    n = batch.shape[0]
    if out.ndim == 0:
        out = out.reshape(1, 1)
    if out.shape[0] != n:
        raise ValueError(
            f"forward_func returned shape {tuple(out.shape)} for a batch of {n}; "
            f"expected ({n}, n_outputs)"
        )
    out = out.reshape(n, -1)
    if target is None:
        if out.shape[1] != 1:
            raise ValueError(
                f"target=None needs a single output, but forward_func returned "
                f"{out.shape[1]} outputs; pass target=<output index>"
            )
        col = 0
    else:
        if not -out.shape[1] <= target < out.shape[1]:
            raise ValueError(
                f"target {target} is out of range for {out.shape[1]} model outputs"
            )
        col = target
    return out[:, col].detach().to(torch.float64).cpu().numpy()


def deletion_insertion(
    forward_func: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    attribution: ArrayLike,
    target: Optional[int],
    *,
    baseline: Union[float, torch.Tensor] = 0.0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    output_std: float = 1.0,
    random_orderings: int = 0,
    generator: Union[None, int, torch.Generator] = None,
    batch_size: int = 8,
    show_progress: bool = False,
) -> dict:
    r"""Deletion and insertion curves (Petsiuk et al. 2018) for a regression output.

    Voxels are ordered by decreasing attribution (summed over channels if
    the map has one per input channel); ties are broken by the C-order flat
    index, lowest first, so the result is deterministic. For each fraction
    :math:`f` the top :math:`k_f = \lfloor f N + \tfrac12 \rfloor` of the
    :math:`N` voxels (all channels of a voxel together) are perturbed:

    * **deletion**: replace them with the baseline :math:`b`,
      :math:`x^{\mathrm{del}}_f = x \odot (1 - M_f) + b \odot M_f`;
    * **insertion**: start from the baseline and restore them,
      :math:`x^{\mathrm{ins}}_f = b \odot (1 - M_f) + x \odot M_f`.

    For a regression output there is no class probability to watch fall,
    so the curves record the absolute change of the prediction in units of
    the output's standard deviation :math:`\sigma` (the distance SMOCAM
    minimises):

    .. math::

        D(f) = \frac{|F(x^{\mathrm{del}}_f) - F(x)|}{\sigma}, \qquad
        I(f) = \frac{|F(x^{\mathrm{ins}}_f) - F(x)|}{\sigma}.

    :math:`D(0) = I(1) = 0` and :math:`D(1) = I(0) = |F(b) - F(x)|/\sigma`.
    The area under each curve is the trapezoid rule over ``fractions``,
    divided by the span of ``fractions`` (so it is the mean height; with the
    default fractions, which span [0, 1], it is the plain area).

    **Direction.** A faithful map puts the voxels the prediction depends on
    first, so the prediction moves away from :math:`F(x)` after deleting few
    voxels (deletion curve rises fast: **larger deletion AUC is better**)
    and comes back to :math:`F(x)` after restoring few voxels (insertion
    curve falls fast: **smaller insertion AUC is better**). This is the
    reverse of the sign convention of Petsiuk et al., whose curves show
    the class probability itself rather than its change. Compare with the
    reference from ``random_orderings`` random voxel orders.

    The model is called under ``torch.no_grad()`` on batches of perturbed
    inputs; it is not switched to eval mode here (call ``model.eval()``
    first). To pass extra forward arguments, wrap the model in a lambda.

    Args:
        forward_func (Callable): maps a ``N x C x *spatial`` tensor to
            ``N x n_outputs`` (or ``N``) predictions.
        inputs (torch.Tensor): one input, ``1 x C x *spatial``.
        attribution (numpy.ndarray or torch.Tensor): map of shape
            ``(*spatial)``, ``(C, *spatial)`` or ``(1, C, *spatial)``
            (channels are summed), or ``(1, *spatial)``/``(1, 1, *spatial)``.
        target (int or None): output index; ``None`` if the model has a
            single output.
        baseline (float or torch.Tensor, optional): value of deleted voxels,
            a scalar or a tensor broadcastable to ``inputs`` (e.g. a mean
            image). Default: ``0.0``
        fractions (sequence of float, optional): strictly increasing
            fractions of voxels in ``[0, 1]``, at least two.
            Default: :data:`DEFAULT_FRACTIONS`
        output_std (float, optional): :math:`\sigma` of the output over the
            training set. Default: ``1.0``
        random_orderings (int, optional): number :math:`R` of random voxel
            orders evaluated as reference (their mean curves and AUCs are
            returned). Default: ``0``
        generator (None, int or torch.Generator, optional): source of the
            random orders; an int is a seed. Default: ``None`` (torch's
            global generator)
        batch_size (int, optional): perturbed inputs per forward call.
            Default: ``8``
        show_progress (bool, optional): show a tqdm bar over the forward
            calls. Default: ``False``

    Returns:
        dict: with keys

        - ``"fractions"``: ``(F,)`` the fractions;
        - ``"n_voxels"``: ``(F,)`` int, the :math:`k_f` perturbed voxels;
        - ``"deletion"``, ``"insertion"``: ``(F,)`` curves :math:`D`, :math:`I`;
        - ``"deletion_auc"``, ``"insertion_auc"``: float areas;
        - ``"random_deletion"``, ``"random_insertion"``: ``(F,)`` mean curves
          of the random orders, ``None`` if ``random_orderings == 0``;
        - ``"random_deletion_auc"``, ``"random_insertion_auc"``: their mean
          areas (float, ``None`` if ``random_orderings == 0``);
        - ``"random_deletion_aucs"``, ``"random_insertion_aucs"``: ``(R,)``
          area of each random order (``None`` if ``random_orderings == 0``);
        - ``"output"``, ``"baseline_output"``: :math:`F(x)` and :math:`F(b)`.

    Examples::

        >>> import torch
        >>> w = torch.rand(1, 1, 7, 8, 9)
        >>> f = lambda x: (x * w).flatten(1).sum(1, keepdim=True)
        >>> x = torch.rand(1, 1, 7, 8, 9)
        >>> res = deletion_insertion(f, x, (w * x)[0, 0], target=0, random_orderings=2, generator=0)
        >>> res["deletion_auc"] >= res["random_deletion_auc"]
        True
    """
    frac, sigma = _check_arguments(forward_func, inputs, target, fractions, output_std, random_orderings, batch_size)
    _, channels, *spatial = inputs.shape
    a = _spatial_attribution(attribution, int(channels), tuple(int(s) for s in spatial))
    ks = np.floor(frac * a.size + 0.5).astype(np.int64)  # voxels perturbed at each fraction
    x = inputs.detach()
    b = _broadcast_baseline(baseline, x)
    # Orders: the map's (stable sort on -a), then the random references.
    orders = _voxel_orders(a, int(random_orderings), _torch_generator(generator))
    progress = _progress_bar(show_progress, 1 + len(orders) * -(-2 * len(ks) // batch_size))
    with torch.no_grad():
        ref = _outputs(forward_func, torch.cat([x, b], dim=0), target)
        progress.update(1)
        f_x, f_b = float(ref[0]), float(ref[1])
        run = _Curves(forward_func, x, b, ks, target, batch_size, f_x, sigma, progress)
        curves = [_order_curves(run, order) for order in orders]
    progress.close()
    return _result(frac, ks, curves, f_x, f_b)


def _check_arguments(forward_func, inputs, target, fractions, output_std, random_orderings, batch_size):
    """The checked ``fractions`` and ``output_std`` of :func:`deletion_insertion`; raises on any bad argument."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.ndim < 3 or inputs.shape[0] != 1:
        raise ValueError(
            f"inputs must have shape 1 x C x *spatial (one input), got {tuple(inputs.shape)}"
        )
    if not callable(forward_func):
        raise TypeError(f"forward_func must be callable, got {type(forward_func).__name__}")
    if target is not None and (not isinstance(target, numbers.Integral) or isinstance(target, bool)):
        raise TypeError(f"target must be an int or None, got {target!r}")
    if not isinstance(random_orderings, numbers.Integral) or random_orderings < 0:
        raise ValueError(f"random_orderings must be an int >= 0, got {random_orderings!r}")
    if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    sigma = float(output_std)
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"output_std must be positive and finite, got {output_std!r}")
    return _check_fractions(fractions), sigma


def _broadcast_baseline(baseline, x: torch.Tensor) -> torch.Tensor:
    """The baseline as a tensor of ``x``'s shape, dtype and device."""
    try:
        b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
        return torch.broadcast_to(b, x.shape)
    except (RuntimeError, TypeError, ValueError) as err:
        shape = tuple(baseline.shape) if hasattr(baseline, "shape") else "a scalar"
        raise ValueError(
            f"baseline of shape {shape} cannot be broadcast to inputs of shape "
            f"{tuple(x.shape)}: {err}"
        ) from None


def _torch_generator(generator) -> Optional[torch.Generator]:
    """A ``torch.Generator`` from an int seed; ``None`` and generators pass through."""
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(int(generator))
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    raise TypeError(f"generator must be None, an int seed or a torch.Generator, got {generator!r}")


def _voxel_orders(a: np.ndarray, random_orderings: int, gen: Optional[torch.Generator]) -> list:
    """The map's order (decreasing value, ties by flat index), then ``random_orderings`` random ones."""
    orders = [np.argsort(-a.ravel(), kind="stable")]
    for _ in range(random_orderings):
        perm = torch.randperm(a.size, generator=gen, device=gen.device if gen is not None else "cpu")
        orders.append(perm.cpu().numpy())
    return orders


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(show: bool, total: int):
    """A tqdm bar over the forward calls, or an object that ignores the updates."""
    if not show:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="deletion/insertion", unit="batch")


@dataclass(frozen=True)
class _Curves:
    """What the curves of every voxel order are computed with: the model, the input ``x`` and baseline ``b``
    (``1 x C x *spatial``), the voxel counts ``ks``, the target, the batch size, ``F(x)``, sigma and the bar."""

    forward_func: Callable[[torch.Tensor], torch.Tensor]
    x: torch.Tensor
    b: torch.Tensor
    ks: np.ndarray
    target: Optional[int]
    batch_size: int
    f_x: float
    sigma: float
    progress: Any


def _order_curves(run: _Curves, order: np.ndarray):
    """Deletion and insertion curves of one voxel order: ``|F(x') - F(x)| / sigma`` for each ``k`` in ``ks``."""
    x, b, ks, batch_size = run.x, run.b, run.ks, run.batch_size
    spatial = tuple(x.shape[2:])
    rank = torch.as_tensor(_rank_of_voxels(order), device=x.device).reshape((1, 1) + spatial)
    per_input = (-1, 1) + (1,) * len(spatial)
    jobs = [("del", k) for k in ks] + [("ins", k) for k in ks]
    values = np.empty(len(jobs), dtype=np.float64)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        k_t = torch.as_tensor([k for _, k in chunk], device=x.device).reshape(per_input)
        top = rank < k_t  # B x 1 x *spatial, broadcast over channels
        is_del = torch.as_tensor([kind == "del" for kind, _ in chunk], device=x.device).reshape(per_input)
        # Deletion: baseline where top, else x. Insertion: x where top, else baseline.
        take_baseline = torch.where(is_del, top, ~top)
        values[start:start + len(chunk)] = _outputs(run.forward_func, torch.where(take_baseline, b, x), run.target)
        run.progress.update(1)
    change = np.abs(values - run.f_x) / run.sigma
    return change[: len(ks)], change[len(ks):]


def _result(frac: np.ndarray, ks: np.ndarray, curves: list, f_x: float, f_b: float) -> dict:
    """:func:`deletion_insertion`'s dict from the curves of the map's order and of the random ones."""
    deletion, insertion = curves[0]
    result = {
        "fractions": frac,
        "n_voxels": ks,
        "deletion": deletion,
        "insertion": insertion,
        "deletion_auc": _normalised_auc(deletion, frac),
        "insertion_auc": _normalised_auc(insertion, frac),
        "random_deletion": None,
        "random_insertion": None,
        "random_deletion_auc": None,
        "random_insertion_auc": None,
        "random_deletion_aucs": None,
        "random_insertion_aucs": None,
        "output": f_x,
        "baseline_output": f_b,
    }
    if len(curves) > 1:
        rand_del = np.stack([c[0] for c in curves[1:]])
        rand_ins = np.stack([c[1] for c in curves[1:]])
        del_aucs = np.array([_normalised_auc(c, frac) for c in rand_del])
        ins_aucs = np.array([_normalised_auc(c, frac) for c in rand_ins])
        result.update(
            random_deletion=rand_del.mean(axis=0),
            random_insertion=rand_ins.mean(axis=0),
            random_deletion_auc=float(del_aucs.mean()),
            random_insertion_auc=float(ins_aucs.mean()),
            random_deletion_aucs=del_aucs,
            random_insertion_aucs=ins_aucs,
        )
    return result
