"""Localisation on a left/right pair: whether a map looks at the explained side, or at the right hemisphere.

:func:`side_specificity` (share of mass), :func:`side_specificity_density`
(share of mean attention, blind to the sides' sizes) and :func:`hemisphere_share`
(no label map needed: the sign of the world x coordinate).
"""
from __future__ import annotations

import numpy as np

from .._inputs import ArrayLike, _as_map, _as_mask, _check_not_empty, _pair, _to_numpy

__all__ = ["side_specificity", "side_specificity_density", "hemisphere_share"]


def _positive_on_pair(attribution, target_mask, contralateral_mask):
    """``(positive part of the map, target mask, contralateral mask)``, checked and on one grid."""
    a = _as_map(attribution, "attribution")
    t = _as_mask(target_mask, "target_mask")
    c = _as_mask(contralateral_mask, "contralateral_mask")
    a, t = _pair(a, t, "attribution", "target_mask")
    a, c = _pair(a, c, "attribution", "contralateral_mask")
    _check_not_empty(t, "target_mask")
    _check_not_empty(c, "contralateral_mask")
    return np.clip(a, 0.0, None), t, c


def side_specificity(
    attribution: ArrayLike, target_mask: ArrayLike, contralateral_mask: ArrayLike
) -> float:
    r"""Share of the positive mass on a paired structure that is on the target side.

    .. math::

        \mathrm{SS}(a) = \frac{\sum_{v \in T} a_v^+}{\sum_{v \in T \cup C} a_v^+}

    with :math:`T` the target structure (e.g. the right hippocampus, whose
    volume is predicted) and :math:`C` its contralateral twin. 1: the map uses
    only the target side; 0.5: both sides equally (the failure the SMOCAM
    poster reports for subjects with a large asymmetry); 0: only the wrong
    side. Higher is better. Voxels in both masks count once, as target.
    Mass outside :math:`T \cup C` is ignored (see :func:`mass_inside`).

    Args:
        attribution (numpy.ndarray or torch.Tensor): map on the masks' grid.
        target_mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask of
            the structure whose output is explained.
        contralateral_mask (numpy.ndarray or torch.Tensor): the other side.

    Returns:
        float: the share in ``[0, 1]``, or ``nan`` when the map has no
        positive mass on either structure: the map says nothing about the
        side, which is neither specific (1) nor unspecific (0.5).

    Raises:
        ValueError: shapes differ, a mask is empty or not binary.

    Examples::

        >>> import numpy as np
        >>> a = np.zeros((7, 8, 9)); a[1, 1, 1] = 3.0; a[5, 1, 1] = 1.0
        >>> right = np.zeros((7, 8, 9), bool); right[1, 1, 1] = True
        >>> left = np.zeros((7, 8, 9), bool); left[5, 1, 1] = True
        >>> side_specificity(a, right, left)
        0.75
    """
    w, t, c = _positive_on_pair(attribution, target_mask, contralateral_mask)
    on_target = float(w[t].sum())
    on_both = float(w[t | c].sum())
    if on_both == 0.0:
        return float("nan")
    return on_target / on_both


def side_specificity_density(
    attribution: ArrayLike, target_mask: ArrayLike, contralateral_mask: ArrayLike
) -> float:
    r"""Like :func:`side_specificity`, but on the mean positive attention per voxel of each side.

    .. math::

        \mathrm{SS}_\rho(a) = \frac{\bar a^+_T}{\bar a^+_T + \bar a^+_C},
        \qquad \bar a^+_S = \frac{1}{|S|} \sum_{v \in S} a_v^+

    The mass version is biased by the structures' sizes: a uniform map gets
    :math:`|T| / (|T| + |C|)`, e.g. 0.4 for the smaller side of a pair whose
    volumes differ by 40 %. The density version gives 0.5 to a uniform map
    whatever the sizes, so it compares subjects with different asymmetries.
    1: only the target side; 0.5: both sides alike; 0: only the wrong side.
    Higher is better. Voxels in both masks count on both sides.

    Args and errors: as :func:`side_specificity`.

    Returns:
        float: the share in ``[0, 1]``; ``nan`` when there is no positive attention on either structure.

    Examples::

        >>> import numpy as np
        >>> a = np.ones((7, 8, 9)); t = np.zeros_like(a, bool); t[:2] = True
        >>> c = np.zeros_like(a, bool); c[4:] = True
        >>> side_specificity_density(a, t, c)  # uniform map, |C| = 1.5 |T|
        0.5
        >>> side_specificity(a, t, c)
        0.4
    """
    w, t, c = _positive_on_pair(attribution, target_mask, contralateral_mask)
    on_target, on_other = float(w[t].mean()), float(w[c].mean())
    if on_target + on_other == 0.0:
        return float("nan")
    return on_target / (on_target + on_other)


def hemisphere_share(attribution: ArrayLike, affine: ArrayLike, side: str) -> float:
    r"""Share of the positive mass of a map that lies in one hemisphere.

    The hemisphere of a voxel is the sign of its world x coordinate (RAS, as
    in MNI space: :math:`x < 0` is left, :math:`x > 0` right), computed from
    ``affine``; voxels on the midplane :math:`x = 0` count for neither side.
    Unlike :func:`side_specificity`, it needs no label map: it says whether a
    map of the right hippocampus looks at the right half of the brain at all.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map, ``X x Y x Z``.
        affine (numpy.ndarray or torch.Tensor): ``4 x 4`` voxel-to-world
            matrix of the map's grid.
        side (str): ``"left"`` or ``"right"``.

    Returns:
        float: the share in ``[0, 1]``, or ``nan`` when the map has no
        positive mass off the midplane.

    Raises:
        ValueError: ``side`` is neither ``"left"`` nor ``"right"``, or
        ``affine`` is not ``4 x 4`` or does not match the map's dimensions.

    Examples::

        >>> import numpy as np
        >>> affine = np.diag([3.0, 3.0, 3.0, 1.0]); affine[0, 3] = -9.0  # x = -9, -6, ..., 9
        >>> a = np.zeros((7, 8, 9)); a[5] = 1.0; a[1] = 1.0 / 3  # x = +6 and x = -6
        >>> round(hemisphere_share(a, affine, "right"), 6)
        0.75
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    a = _as_map(attribution, "attribution")
    m = np.asarray(_to_numpy(affine, "affine"), dtype=np.float64)
    if m.shape != (4, 4) or a.ndim != 3:
        raise ValueError(
            f"expected a 3-D map and a 4 x 4 affine, got map shape {a.shape} and affine shape {m.shape}"
        )
    i, j, k = np.ogrid[: a.shape[0], : a.shape[1], : a.shape[2]]
    x = m[0, 0] * i + m[0, 1] * j + m[0, 2] * k + m[0, 3]  # world x of every voxel
    w = np.clip(a, 0.0, None)
    left, right = float(w[x < 0].sum()), float(w[x > 0].sum())
    if left + right == 0.0:
        return float("nan")
    return (left if side == "left" else right) / (left + right)
