"""Localisation on one structure: how much of a map lies on it, or near it, and how well it separates it.

:func:`mass_inside`, :func:`dilate_mask`, :func:`mass_inside_dilated`,
:func:`auroc`, :func:`pointing_game`, :func:`false_positive_rate`; definitions
and references in :mod:`captum_smocam.metrics.localisation` and ``docs/metrics.md``.
"""
from __future__ import annotations

import numbers

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

from .._inputs import (
    ArrayLike, _as_map, _as_mask, _check_not_empty, _pair, _positive_mass, _spacing, _spacing_values, _strip_leading,
)

__all__ = ["mass_inside", "dilate_mask", "mass_inside_dilated", "auroc", "pointing_game", "false_positive_rate",
           "POINTING_TIES"]

#: Tie rules accepted by :func:`pointing_game`: ``"all"`` (every voxel that
#: attains the maximum must be inside the mask) or ``"any"`` (one is enough).
POINTING_TIES = ("all", "any")

# Relative tolerance on the dilation radius, so that a voxel at exactly
# ``margin_mm`` (e.g. sqrt(2) mm) is inside despite floating-point rounding.
_DILATION_RTOL = 1e-9


def mass_inside(attribution: ArrayLike, mask: ArrayLike, *, positive_only: bool = True) -> float:
    r"""Share of the attribution mass that lies inside a mask.

    .. math::

        \mathrm{MI}(a, S) = \frac{\sum_{v \in S} a_v^+}{\sum_{v} a_v^+},
        \qquad a_v^+ = \max(a_v, 0)

    Negative attribution (evidence *against* the output) is ignored, so that a
    map cannot score by cancelling mass. 1 means all positive mass is in the
    structure; a uniform map scores ``|S| / N``. Higher is better.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map of shape
            ``(*spatial)``, ``(1, *spatial)`` or ``(1, 1, *spatial)``.
        mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask of the
            structure on the same grid.
        positive_only (bool, optional): if ``True`` use :math:`a^+`; if
            ``False`` use :math:`|a|` (share of the attribution magnitude).
            Default: ``True``

    Returns:
        float: the share in ``[0, 1]``, or ``nan`` when the map has no positive
        mass (no magnitude with ``positive_only=False``): the share of nothing
        is undefined, and ``nan`` keeps such a map out of means computed with
        ``nanmean`` instead of counting it as 0 or 1.

    Raises:
        ValueError: shapes differ, the mask is empty or not binary, or the map
            has non-finite values.

    Examples::

        >>> import numpy as np
        >>> a = np.zeros((7, 8, 9)); a[1, 2, 3] = 3.0; a[5, 5, 5] = 1.0
        >>> m = np.zeros((7, 8, 9), bool); m[1, 2, 3] = True
        >>> mass_inside(a, m)
        0.75
    """
    a, m = _pair(_as_map(attribution, "attribution"), _as_mask(mask, "mask"), "attribution", "mask")
    _check_not_empty(m, "mask")
    w = _positive_mass(a, positive_only)
    total = float(w.sum())
    if total == 0.0:
        return float("nan")
    return float(w[m].sum() / total)


def dilate_mask(mask: ArrayLike, margin_mm: float, spacing=1.0) -> np.ndarray:
    r"""Grow a mask by a physical margin using the Euclidean distance transform.

    A voxel :math:`v` is in the dilated mask when its centre is within
    ``margin_mm`` of the centre of some voxel :math:`u` of the mask, distances
    measured in millimetres with the voxel spacing :math:`s`:

    .. math::

        D_r(S) = \{ v : \min_{u \in S} \lVert (v - u) \odot s \rVert_2 \le r \}

    computed with ``scipy.ndimage.distance_transform_edt(~mask, sampling=s)``
    (a relative tolerance of 1e-9 on :math:`r` keeps voxels at exactly
    :math:`r`, e.g. :math:`\sqrt{2}`, inside). A single voxel grows into the
    discrete ball of radius :math:`r`.

    Args:
        mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask of any
            shape ``(*spatial)``; leading axes of size 1 are kept.
        margin_mm (float): the margin :math:`r \ge 0`, in the units of
            ``spacing`` (millimetres for a NIfTI image's zooms). 0 returns a
            copy of the mask.
        spacing (float or sequence of float, optional): voxel size, one value
            for all axes or one per axis (``img.header.get_zooms()[:3]``). When
            the mask has more axes than ``spacing`` values, at most two leading
            axes of size 1 are ignored. Default: ``1.0``

    Returns:
        numpy.ndarray: boolean array of the mask's shape.

    Raises:
        ValueError: empty mask, negative or non-finite margin, bad spacing.

    Examples::

        >>> import numpy as np
        >>> m = np.zeros((7, 8, 9), bool); m[3, 4, 4] = True
        >>> int(dilate_mask(m, 1.0).sum())        # the voxel and its 6 faces
        7
        >>> int(dilate_mask(m, 2.0, spacing=(2.0, 1.0, 1.0)).sum())
        15
    """
    m = _as_mask(mask, "mask")
    _check_not_empty(m, "mask")
    if not isinstance(margin_mm, numbers.Real) or isinstance(margin_mm, bool):
        raise TypeError(f"margin_mm must be a real number, got {margin_mm!r}")
    margin = float(margin_mm)
    if not np.isfinite(margin) or margin < 0:
        raise ValueError(f"margin_mm must be finite and >= 0, got {margin_mm!r}")
    work = m
    values = _spacing_values(spacing)
    if isinstance(values, tuple) and 0 < len(values) < m.ndim:
        stripped = _strip_leading(m, m.ndim - len(values))
        if stripped is not None:
            work = stripped
    sampling = _spacing(values, work.ndim)
    if margin == 0.0:
        return m.copy()
    distance = ndimage.distance_transform_edt(~work, sampling=sampling)
    grown = distance <= margin * (1.0 + _DILATION_RTOL)
    return grown.reshape(m.shape)


def mass_inside_dilated(
    attribution: ArrayLike,
    mask: ArrayLike,
    margin_mm: float,
    spacing=1.0,
    *,
    positive_only: bool = True,
) -> float:
    r"""Share of the positive attribution mass inside the mask grown by a margin.

    :math:`\mathrm{MI}(a, D_r(S))` with :math:`D_r` from :func:`dilate_mask`.
    SMOCAM tends to highlight a structure *and its neighbours* (Konate et al.,
    SMOCAM poster); this score credits mass within ``margin_mm`` of the
    structure. Higher is better; compare methods at the same margin.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map on the mask's grid.
        mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask.
        margin_mm (float): margin in the units of ``spacing``.
        spacing (float or sequence of float, optional): voxel size.
            Default: ``1.0``
        positive_only (bool, optional): see :func:`mass_inside`.
            Default: ``True``

    Returns:
        float: the share in ``[0, 1]``, or ``nan`` when the map has no
        positive mass.

    Examples::

        >>> import numpy as np
        >>> a = np.zeros((7, 8, 9)); a[3, 4, 4] = 1.0; a[3, 4, 5] = 1.0
        >>> m = np.zeros((7, 8, 9), bool); m[3, 4, 4] = True
        >>> mass_inside_dilated(a, m, margin_mm=1.0)
        1.0
    """
    a, m = _pair(_as_map(attribution, "attribution"), _as_mask(mask, "mask"), "attribution", "mask")
    grown = dilate_mask(m, margin_mm, spacing)
    return mass_inside(a, grown, positive_only=positive_only)


def auroc(attribution: ArrayLike, mask: ArrayLike) -> float:
    r"""Area under the ROC curve of the map used as a detector of the mask's voxels.

    Each voxel is a sample, the structure's voxels are positives, the
    attribution value is the score. With :math:`R_v` the rank of :math:`a_v`
    among all :math:`N` voxels (ties receive their average rank), :math:`P`
    positives and :math:`Q = N - P` negatives, the Mann--Whitney formula gives

    .. math::

        \mathrm{AUROC} = \frac{\sum_{v \in S} R_v - P(P+1)/2}{P\,Q}
        = \Pr(a_u > a_w) + \tfrac12 \Pr(a_u = a_w),
        \quad u \in S,\ w \notin S .

    1 means every structure voxel scores above every other voxel, 0.5 is
    chance (a constant map scores exactly 0.5), 0 is the inverted map. Higher
    is better. The signed map is used: AUROC depends only on the order of the
    values, so negative evidence ranks below zero.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map on the mask's grid.
        mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask.

    Returns:
        float: AUROC in ``[0, 1]``.

    Raises:
        ValueError: the mask is empty or covers every voxel (no negatives),
            shapes differ.

    Examples::

        >>> import numpy as np
        >>> m = np.zeros((7, 8, 9), bool); m[2:4, 3:5, 1:6] = True
        >>> auroc(m.astype(float), m), auroc(1.0 - m, m)
        (1.0, 0.0)
    """
    a, m = _pair(_as_map(attribution, "attribution"), _as_mask(mask, "mask"), "attribution", "mask")
    _check_not_empty(m, "mask")
    n_pos = int(m.sum())
    n_neg = m.size - n_pos
    if n_neg == 0:
        raise ValueError(
            f"mask covers all {m.size} voxels; AUROC needs voxels outside the mask"
        )
    ranks = rankdata(a.ravel(), method="average")
    u = ranks[m.ravel()].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (float(n_pos) * float(n_neg)))


def pointing_game(
    attribution: ArrayLike,
    mask: ArrayLike,
    *,
    margin_mm: float = 0.0,
    spacing=1.0,
    ties: str = "all",
) -> bool:
    r"""Pointing game: is the map's maximum inside the (dilated) structure?

    Zhang et al. (2016) count a *hit* when the maximum of the map falls on the
    annotated object, with a tolerance of 15 pixels; here the tolerance is a
    physical ``margin_mm`` (:func:`dilate_mask`). Over a set of subjects the
    pointing accuracy is ``hits / (hits + misses)``; higher is better.

    Ties: when several voxels share the maximum value, ``ties="all"``
    (default) counts a hit only if *every* maximal voxel is inside the
    dilated mask; ``ties="any"`` counts a hit if at least one is. The strict
    default is chosen because with ``"any"`` a constant (e.g. all-zero or
    saturated) map would hit every structure.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map on the mask's grid.
        mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask.
        margin_mm (float, optional): tolerance in the units of ``spacing``.
            Default: ``0.0``
        spacing (float or sequence of float, optional): voxel size.
            Default: ``1.0``
        ties (str, optional): ``"all"`` or ``"any"``, see above.
            Default: ``"all"``

    Returns:
        bool: ``True`` for a hit.

    Examples::

        >>> import numpy as np
        >>> a = np.zeros((7, 8, 9)); a[3, 4, 6] = 1.0
        >>> m = np.zeros((7, 8, 9), bool); m[3, 4, 4] = True
        >>> pointing_game(a, m), pointing_game(a, m, margin_mm=2.0)
        (False, True)
    """
    if ties not in POINTING_TIES:
        raise ValueError(f"ties must be one of {POINTING_TIES}, got {ties!r}")
    a, m = _pair(_as_map(attribution, "attribution"), _as_mask(mask, "mask"), "attribution", "mask")
    region = dilate_mask(m, margin_mm, spacing)
    at_max = a == a.max()
    inside = region[at_max]
    return bool(inside.all() if ties == "all" else inside.any())


def false_positive_rate(
    attribution: ArrayLike,
    mask: ArrayLike,
    margin_mm: float,
    spacing=1.0,
    *,
    quantile: float = 0.99,
    within: ArrayLike = None,
) -> float:
    r"""Share of the voxels away from the structure that the map ranks above nearly all of the structure.

    Siegel et al. (2025) count a false positive where a voxel outside the
    dilated structure has more attention than the 99th percentile of the
    attention inside the structure:

    .. math::

        t = Q_{0.99}\{a_v : v \in S\}, \qquad
        \mathrm{FPR}(a) = \frac{|\{v \in O : a_v > t\}|}{|O|}, \qquad
        O = W \setminus D_r(S)

    with :math:`D_r` from :func:`dilate_mask`, :math:`W` the voxels
    considered (``within``; default the whole grid) and :math:`Q` numpy's
    linear-interpolation quantile. 0 is best, 1 worst. The comparison is
    strict: a constant map has no voxel above :math:`t` and scores 0, so read
    it with a score that rewards finding the structure (hit rate, AUROC).

    Args:
        attribution (numpy.ndarray or torch.Tensor): map on the mask's grid.
        mask (numpy.ndarray or torch.Tensor): boolean (or 0/1) mask of the structure.
        margin_mm (float): dilation of the structure, in the units of ``spacing``.
        spacing (float or sequence of float, optional): voxel size. Default: ``1.0``
        quantile (float, optional): the quantile :math:`q` in ``[0, 1]``. Default: ``0.99``
        within (numpy.ndarray or torch.Tensor, optional): boolean mask of the
            voxels counted (e.g. the brain). Default: None (all)

    Returns:
        float: the rate in ``[0, 1]``.

    Raises:
        ValueError: shapes differ, an empty mask, ``quantile`` out of range, or
            no voxel left outside the dilated structure.

    Examples::

        >>> import numpy as np
        >>> m = np.zeros((7, 8, 9), bool); m[1:3, 1:3, 1:3] = True
        >>> a = m.astype(float); a[6, 7, 8] = 5.0   # one voxel far away outranks the structure
        >>> outside = int((~dilate_mask(m, 1.0)).sum())
        >>> round(false_positive_rate(a, m, margin_mm=1.0) * outside, 9)
        1.0
    """
    a, m = _pair(_as_map(attribution, "attribution"), _as_mask(mask, "mask"), "attribution", "mask")
    _check_not_empty(m, "mask")
    if not isinstance(quantile, numbers.Real) or isinstance(quantile, bool) or not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be a number in [0, 1], got {quantile!r}")
    outside = ~dilate_mask(m, margin_mm, spacing)
    if within is not None:
        a, w = _pair(a, _as_mask(within, "within"), "attribution", "within")
        outside &= w
    n_outside = int(outside.sum())
    if n_outside == 0:
        raise ValueError(f"no voxel is left outside the structure dilated by {margin_mm} mm"
                         + (" within the given region" if within is not None else "")
                         + f" (grid {a.shape}); a false-positive rate needs some")
    threshold = float(np.quantile(a[m], quantile))
    return float(np.count_nonzero(a[outside] > threshold) / n_outside)
