r"""The objectives: their loss terms, and the two objective classes made of a mask, a perturbation and terms.

For a chosen layer with feature map :math:`F` and a chosen model output
:math:`y = f(x)_i`, SMOCAM minimises, independently for each example, one of
two objectives of the output :math:`y_M` of the network whose layer sees the
perturbed features (:mod:`captum_smocam.smocam.perturbation`):

``"poster"`` (:class:`PosterObjective`, :func:`smocam_objective`)
    The SMOCAM poster's objective (Konate et al.), exactly, with :math:`F M`:

    .. math::

        \frac{|y_M - y|}{\sigma} + \lambda\,\bigl|1 - \|M\|_2\bigr|
        + \gamma\,\tfrac12 \sum_{a} \|\nabla_a M\|_1

``"preserve"`` (:class:`PreserveObjective`, :func:`preservation_objective`; the default, ours)
    A reference-conditioned preservation mask: the layer sees
    :math:`F_\mathrm{ref} + M (F - F_\mathrm{ref})` with :math:`M \in [0, 1]`:

    .. math::

        \rho\bigl((y_M - y)/\sigma\bigr) + \alpha\,\overline{M} + \beta\,\mathrm{TV}(M)/n^{(d-1)/d}

    — the smallest smooth region of this subject's own features that keeps the
    prediction when everything else comes from the reference. With ``K``
    references the loop uses reference ``step % K`` at each step, the same for
    every example, so the mask must keep the prediction whatever the rest of
    the brain looks like. See ``docs/method.md``.

Gradients are taken with every absolute value smoothed by ``smoothing``
(:func:`smooth_abs`), so the iterates converge rather than oscillate; the terms
recorded in :attr:`SMOCAM.history` are the exact ones. Each objective class
holds its mask parametrisation (``parametrisation``,
:mod:`captum_smocam.smocam.mask`), its ``perturbation`` and its ``terms``;
the loop (:mod:`captum_smocam.smocam.loop`) sees only these.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ..fallbacks import DEFAULT_FALLBACK
from . import perturbation
from .defaults import (
    DEFAULT_SMOOTHING,
    POSTER_L2_WEIGHT,
    POSTER_SMOOTH_WEIGHT,
    PRESERVE_AREA_WEIGHT,
    PRESERVE_DISTANCE_UNIT,
    PRESERVE_SMOOTH_WEIGHT,
)
from .mask import SigmoidMask, UnitScaledMask

__all__ = ["smooth_abs", "total_variation", "smocam_objective", "preservation_objective", "PosterObjective",
           "PreserveObjective"]


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


def total_variation(mask: Tensor, eps: float = 0.0) -> Tensor:
    """``1/2 sum_axes sum |forward difference|`` per example (smoothed by ``eps``), for 1-3 spatial dims.

    Examples::

        >>> total_variation(torch.tensor([[[0.0, 1.0, 1.0, 0.0]]]))
        tensor([1.])
    """
    n = mask.shape[0]
    tv = mask.new_zeros(n)
    for dim in range(2, mask.dim()):
        tv = tv + smooth_abs(mask.diff(dim=dim), eps).reshape(n, -1).sum(dim=1)
    return 0.5 * tv


def smocam_objective(masked_output: Tensor, reference_output: Tensor, mask: Tensor,
                     output_std: Union[float, Tensor] = 1.0, l2_weight: float = POSTER_L2_WEIGHT,
                     smooth_weight: float = POSTER_SMOOTH_WEIGHT) -> Dict[str, Tensor]:
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
        l2_weight (float, optional): :math:`\lambda`. Default: ``POSTER_L2_WEIGHT``
        smooth_weight (float, optional): :math:`\gamma`. Default: ``POSTER_SMOOTH_WEIGHT``

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
    smooth = total_variation(mask)
    total = distance + l2_weight * l2 + smooth_weight * smooth
    return {"total": total, "distance": distance, "l2": l2, "smooth": smooth}


def preservation_objective(
    masked_output: Tensor,
    reference_output: Tensor,
    mask: Tensor,
    output_std: Union[float, Tensor] = 1.0,
    area_weight: float = PRESERVE_AREA_WEIGHT,
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
        area_weight (float, optional): :math:`\alpha`. Default: ``PRESERVE_AREA_WEIGHT``
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
    smooth = total_variation(mask, smoothing) / n_vox ** ((n_spatial - 1) / n_spatial)
    total = distance + area_weight * area + smooth_weight * smooth
    return {"total": total, "distance": distance, "area": area, "smooth": smooth}


class PosterObjective:
    """The poster's objective: ``F * M`` with :class:`~captum_smocam.smocam.mask.UnitScaledMask`.

    The terms reported in :attr:`SMOCAM.history` are exactly
    :func:`smocam_objective`; gradients are taken of the same objective with
    every absolute value smoothed by ``smoothing`` (:func:`smooth_abs`), so the
    steps shrink near the optimum. No reference, no fidelity constraint.
    """

    name = "poster"
    needs_reference = False
    perturbation = staticmethod(perturbation.scale)
    fidelity_tol = math.inf
    distance_unit = "sigma"
    fallback: Optional[str] = None

    def __init__(self, l2_weight: float, smooth_weight: float, smoothing: float, nonnegative: bool) -> None:
        self.l2_weight, self.smooth_weight = l2_weight, smooth_weight
        self.smoothing, self.nonnegative = smoothing, nonnegative
        self.parametrisation = UnitScaledMask(nonnegative)

    def terms(self, masked: Tensor, reference: Tensor, mask: Tensor, std: Tensor) -> Tuple[Dict[str, Tensor], Tensor]:
        """The exact terms (for the history) and the smoothed loss whose gradient is taken, per example."""
        exact = smocam_objective(masked, reference, mask, std, self.l2_weight, self.smooth_weight)
        if self.smoothing == 0:
            return exact, exact["total"]
        eps, n, unit = self.smoothing, mask.shape[0], UnitScaledMask.unit(mask.shape)
        loss = (
            smooth_abs((masked - reference) / std, eps)
            + self.l2_weight * smooth_abs(1.0 - mask.reshape(n, -1).norm(dim=1), eps)
            + self.smooth_weight * unit * total_variation(mask / unit, eps)
        )
        return exact, loss


class PreserveObjective:
    """Ours: ``F_ref + M * (F - F_ref)`` with :class:`~captum_smocam.smocam.mask.SigmoidMask` (:func:`preservation_objective`).

    ``fidelity_tol`` (in sigma; ``math.inf``: off) turns on the dual ascent of
    the loop on the distance term; ``fallback`` names the references made from
    the scan when there are none (:mod:`captum_smocam.fallbacks`);
    ``distance_unit`` is ``"sigma"`` or ``"effect"``
    (:data:`~captum_smocam.smocam.defaults.DISTANCE_UNITS`).
    """

    name = "preserve"
    needs_reference = True
    perturbation = staticmethod(perturbation.blend)
    parametrisation = SigmoidMask()

    def __init__(self, area_weight: float, smooth_weight: float, smoothing: float,
                 fidelity_tol: float = math.inf, fallback: str = DEFAULT_FALLBACK,
                 distance_unit: str = PRESERVE_DISTANCE_UNIT) -> None:
        self.area_weight, self.smooth_weight, self.smoothing = area_weight, smooth_weight, smoothing
        self.fidelity_tol, self.fallback, self.distance_unit = fidelity_tol, fallback, distance_unit

    def terms(self, masked: Tensor, reference: Tensor, mask: Tensor, std: Tensor) -> Tuple[Dict[str, Tensor], Tensor]:
        """The terms of :func:`preservation_objective` (already smoothed), and their total as the loss."""
        t = preservation_objective(masked, reference, mask, std, self.area_weight, self.smooth_weight, self.smoothing)
        return t, t["total"]
