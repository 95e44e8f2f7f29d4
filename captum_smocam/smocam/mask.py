r"""The mask's parametrisation: the optimised parameters :math:`\theta` and the mask :math:`M` they give.

The optimiser works on :math:`\theta`; the network and the loss terms see
:math:`M(\theta)` (``N x 1 x <spatial dims of the layer>``, broadcast over the
layer's channels). One class per objective, each with the same four methods:
``initial`` (the starting :math:`\theta`), ``mask`` (:math:`\theta \to M`),
``project`` (after each step) and, for the upsampling of the result to the
input grid, :func:`upsample_mask`.

* :class:`UnitScaledMask` (``"poster"``): :math:`M = u R` with :math:`R \ge 0`
  and :math:`u = 1/\sqrt{\#\mathrm{voxels}}`, the value of the uniform
  unit-norm mask, so that a step size means the same on every layer; starts
  at :math:`R = 1` (the uniform unit-norm mask) and is projected onto
  :math:`R \ge 0` after each step (``nonnegative``).
* :class:`SigmoidMask` (``"preserve"``): :math:`M = \mathrm{sigmoid}(\theta)`
  in ``[0, 1]``; starts at :math:`\theta =` ``PRESERVE_INIT_LOGIT`` (0.047
  everywhere); no projection.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .defaults import PRESERVE_INIT_LOGIT

__all__ = ["UnitScaledMask", "SigmoidMask", "upsample_mask"]


class UnitScaledMask:
    """``M = u * R``, ``u = 1/sqrt(#voxels)``, ``R >= 0`` when ``nonnegative`` (the poster's mask).

    Examples::

        >>> p = UnitScaledMask(nonnegative=True)
        >>> theta = p.initial((1, 1, 2, 2, 2), None, torch.zeros(1))
        >>> round(float(p.mask(theta).norm()), 6)  # the uniform unit-norm mask
        1.0
    """

    def __init__(self, nonnegative: bool) -> None:
        self.nonnegative = nonnegative

    @staticmethod
    def unit(shape: Sequence[int]) -> float:
        """``u = 1/sqrt(#voxels)`` of a mask of ``shape`` (``N x 1 x <spatial dims>``)."""
        return 1.0 / math.sqrt(float(np.prod(shape[2:])))

    def initial(self, shape: Tuple[int, ...], init: Optional[Tensor], like: Tensor) -> Tensor:
        """``R`` of the uniform unit-norm mask, or of the mask values ``init``, on ``like``'s device and dtype."""
        start = torch.ones(shape) if init is None else init.detach().float() / self.unit(shape)
        return start.to(device=like.device, dtype=like.dtype)

    def mask(self, param: Tensor) -> Tensor:
        return param * self.unit(param.shape)

    def project(self, param: Tensor) -> None:
        if self.nonnegative:
            param.clamp_(min=0.0)


class SigmoidMask:
    """``M = sigmoid(theta)`` in ``[0, 1]`` (the preserve objective's mask).

    Examples::

        >>> p = SigmoidMask()
        >>> round(float(p.mask(p.initial((1, 1, 2), None, torch.zeros(1)))[0, 0, 0]), 3)
        0.047
    """

    @staticmethod
    def initial(shape: Tuple[int, ...], init: Optional[Tensor], like: Tensor) -> Tensor:
        """Every logit ``PRESERVE_INIT_LOGIT``, or the logits of the mask values ``init`` (clamped off 0 and 1)."""
        if init is None:
            return torch.full(shape, PRESERVE_INIT_LOGIT, device=like.device, dtype=like.dtype)
        m = init.detach().to(device=like.device, dtype=like.dtype).clamp(1e-4, 1 - 1e-4)
        return torch.log(m) - torch.log1p(-m)

    @staticmethod
    def mask(param: Tensor) -> Tensor:
        return torch.sigmoid(param)

    @staticmethod
    def project(param: Tensor) -> None:
        pass


def upsample_mask(mask: Tensor, size: Sequence[int]) -> Tensor:
    """Upsample a layer-resolution mask to ``size`` (linear, bilinear or trilinear).

    This is ``LayerAttribution.interpolate(mask, size, mode)`` with ``mode`` picked
    from the number of spatial dimensions (see
    :data:`captum_smocam.spatial.INTERPOLATION_MODES`), i.e.
    ``align_corners=False``: each mask voxel is the centre of the block of input
    voxels it covers.

    Args:
        mask (Tensor): shape ``N x C x <spatial dims>``.
        size (sequence of int): target spatial size, e.g. ``x.shape[2:]``.

    Returns:
        Tensor: shape ``N x C x size``.

    Examples::

        >>> upsample_mask(torch.ones(2, 1, 3, 4, 5), (6, 8, 10)).shape
        torch.Size([2, 1, 6, 8, 10])
    """
    from ..spatial import upsample

    return upsample(mask, size, "linear", what="mask")
