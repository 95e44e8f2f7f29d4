"""References made from the scan itself, for a model that carries none (the fallbacks of ``"preserve"``).

SMOCAM's ``"preserve"`` objective measures a mask against reference inputs: the
caller's ``baselines``, else the model's ``reference_inputs``, else these. They
localise less well than scans of other subjects (``docs/method.md``), so
:class:`captum_smocam.SMOCAM` warns whenever it falls back to them;
:mod:`captum_smocam.references` builds references from a user's own scans.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["FALLBACKS", "DEFAULT_FALLBACK", "shifted_copies", "fallback_references"]

#: The schemes of :func:`fallback_references`; the first is the default.
FALLBACKS = ("shift", "minimum", "minimum+shift", "blur", "zero")
DEFAULT_FALLBACK = FALLBACKS[0]


def shifted_copies(x: Tensor, shift: Sequence[int]) -> Tensor:
    """Copies of each example shifted by ``+-shift[a]`` voxels along every spatial axis ``a``.

    The references of ``objective="preserve"`` when neither ``baselines`` nor
    the model's ``reference_inputs`` are given: the subject's own scan moved by
    one layer voxel in each direction, so the features at any place come from
    a neighbouring place of the same brain (``torch.roll``: what leaves one
    side enters on the other).

    Args:
        x (Tensor): ``N x C x <spatial dims>``.
        shift (sequence of int): one shift per spatial dim.

    Returns:
        Tensor: ``N x 2d x C x <spatial dims>`` for ``d`` spatial dims, ordered
        ``(-shift[0], +shift[0], -shift[1], ...)``.

    Examples::

        >>> import torch
        >>> x = torch.arange(4.0).reshape(1, 1, 4)
        >>> shifted_copies(x, [1])[0, :, 0]
        tensor([[1., 2., 3., 0.],
                [3., 0., 1., 2.]])
    """
    spatial = x.dim() - 2
    if len(shift) != spatial:
        raise ValueError(f"shift has {len(shift)} values for {spatial} spatial dims: {list(shift)}")
    copies = [torch.roll(x, sign * int(s), dims=2 + a) for a, s in enumerate(shift) for sign in (-1, 1)]
    return torch.stack(copies, dim=1)


def fallback_references(x: Tensor, shift: Sequence[int], scheme: str = DEFAULT_FALLBACK) -> Tensor:
    """Reference inputs made from the scan itself, for a model that carries none.

    Schemes (``scheme=``, all ours; ``docs/method.md`` says how they were compared):

    * ``"shift"``: the scan moved by ``+-shift[a]`` voxels along every spatial axis
      (:func:`shifted_copies`; ``2d`` references);
    * ``"minimum"``: a constant image at the scan's minimum, i.e. its background (1 reference);
    * ``"minimum+shift"``: both (``1 + 2d`` references);
    * ``"blur"``: the scan blurred by a Gaussian whose standard deviation is ``shift`` voxels per
      axis (one layer voxel; 1 reference);
    * ``"zero"``: an all-zero input, Captum's default baseline (1 reference).

    Args:
        x (Tensor): ``N x C x <spatial dims>``.
        shift (sequence of int): one layer voxel in input voxels, per spatial dim.
        scheme (str, optional): one of :data:`FALLBACKS`. Default: ``DEFAULT_FALLBACK``

    Returns:
        Tensor: ``N x K x C x <spatial dims>``.

    Examples::

        >>> import torch
        >>> x = torch.arange(4.0).reshape(1, 1, 4)
        >>> fallback_references(x, [1], "minimum")[0, :, 0]
        tensor([[0., 0., 0., 0.]])
        >>> fallback_references(x, [1], "minimum+shift").shape
        torch.Size([1, 3, 1, 4])
    """
    if scheme not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {scheme!r}")
    n = x.shape[0]
    if scheme == "shift":
        return shifted_copies(x, shift)
    if scheme == "zero":
        return torch.zeros_like(x).unsqueeze(1)
    if scheme == "blur":
        from .spatial import gaussian_blur

        return gaussian_blur(x, [float(v) for v in shift]).unsqueeze(1)
    low = x.reshape(n, -1).amin(dim=1).reshape(n, *([1] * (x.dim() - 1)))
    minimum = low.expand_as(x).unsqueeze(1)
    if scheme == "minimum":
        return minimum.clone()
    return torch.cat([minimum, shifted_copies(x, shift)], dim=1)
