r"""What perturbs the layer: how a mask :math:`M` mixes the layer's features :math:`F` with a reference's.

A perturbation is a function of the mask (and, for ``"preserve"``, one
reference's features :math:`F_\mathrm{ref}`) that returns the function a runner
applies to the layer's tensor inside the network
(:mod:`captum_smocam.smocam.runners`):

* :func:`scale` (``"poster"``): :math:`F \cdot M` — features outside the mask
  go to zero;
* :func:`blend` (``"preserve"``): :math:`F_\mathrm{ref} + M (F - F_\mathrm{ref})`
  — :math:`M = 1` keeps the subject's own feature, :math:`M = 0` puts the
  reference's (preservation, as in Fong & Vedaldi 2017).

Examples::

    >>> import torch
    >>> f, ref, m = torch.tensor([2.0, 4.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])
    >>> scale(m, None)(f), blend(m, ref)(f)
    (tensor([2., 0.]), tensor([2., 1.]))
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor

__all__ = ["scale", "blend"]


def scale(mask: Tensor, reference: Optional[Tensor]) -> Callable[[Tensor], Tensor]:
    """``F -> F * M`` (``reference`` is not used)."""
    return lambda feature: feature * mask


def blend(mask: Tensor, reference: Optional[Tensor]) -> Callable[[Tensor], Tensor]:
    """``F -> F_ref + M * (F - F_ref)``."""
    return lambda feature: reference + mask * (feature - reference)
