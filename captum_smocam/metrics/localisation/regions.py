"""Localisation among the regions of a label map: the rank of a structure by mean attention, and the hit rate.

:func:`region_rank` and :func:`region_hit` (hit rate top-1 / top-3 of Siegel et al., 2025).
"""
from __future__ import annotations

import numpy as np

from .._inputs import ArrayLike, _as_map, _pair, _to_numpy

__all__ = ["region_rank", "region_hit"]


def _region_means(attribution, labels, background) -> "tuple[np.ndarray, np.ndarray]":
    """``(region labels, mean positive attention of each)`` over the labels other than ``background``."""
    a = _as_map(attribution, "attribution")
    lab = _to_numpy(labels, "labels")
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.issubdtype(lab.dtype, np.floating) or not np.all(lab == np.round(lab)):
            raise TypeError(f"labels must hold integer labels, got dtype {lab.dtype}")
        lab = lab.astype(np.int64)
    a, lab = _pair(a, lab, "attribution", "labels")
    flat = lab.ravel()
    regions, inverse = np.unique(flat, return_inverse=True)
    sums = np.bincount(inverse, weights=np.clip(a.ravel(), 0.0, None))
    means = sums / np.bincount(inverse)
    keep = regions != background
    return regions[keep], means[keep]


def region_rank(attribution: ArrayLike, labels: ArrayLike, label: int, *, background: int = 0) -> int:
    r"""Rank of a structure among a label map's regions by mean positive attention (1 = the most attended).

    Each region :math:`R` of the label map (every label but ``background``)
    gets its mean positive attention :math:`\bar a^+_R = |R|^{-1} \sum_{v \in R} a_v^+`;
    the rank of the structure :math:`S` is the number of regions whose mean
    is at least its own, itself included:

    .. math::

        \mathrm{rank}(S) = |\{R : \bar a^+_R \ge \bar a^+_S\}|

    Ties count against the structure (a constant map ranks it last), as the
    strict tie rule of :func:`pointing_game`. Means rather than sums, so that
    a large region (the white matter) does not win by size. Lower is better;
    :func:`region_hit` turns it into the hit rate of Siegel et al. (2025).

    Args:
        attribution (numpy.ndarray or torch.Tensor): map on the label map's grid.
        labels (numpy.ndarray or torch.Tensor): integer label map.
        label (int): the structure's label.
        background (int, optional): the label that is not a region. Default: 0

    Returns:
        int: the rank, from 1 to the number of regions.

    Raises:
        ValueError: ``label`` is not in the label map (or is the background), shapes differ.
        TypeError: the label map does not hold integers.

    Examples::

        >>> import numpy as np
        >>> lab = np.zeros((7, 8, 9), int); lab[0:2] = 1; lab[2:4] = 2; lab[4:7] = 3
        >>> a = np.zeros((7, 8, 9)); a[0, 0, 0] = 9.0; a[2:4] = 0.5; a[4:7] = 0.4
        >>> region_rank(a, lab, 2), region_rank(a, lab, 3), region_rank(a, lab, 1)  # 1: one hot voxel, low mean
        (1, 2, 3)
    """
    regions, means = _region_means(attribution, labels, background)
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or label == background \
            or label not in regions:
        raise ValueError(f"label {label!r} is not a region of the label map (its regions: "
                         f"{regions[:20].tolist()}{' ...' if len(regions) > 20 else ''})")
    own = means[regions == label][0]
    return int(np.count_nonzero(means >= own))


def region_hit(attribution: ArrayLike, labels: ArrayLike, label: int, top_k: int = 1, *,
               background: int = 0) -> bool:
    """Hit: the structure is among the ``top_k`` regions of a label map by mean positive attention.

    ``region_rank(attribution, labels, label) <= top_k`` (:func:`region_rank`).
    Averaged over maps it is the hit rate top-1 (``top_k=1``) or top-3
    (``top_k=3``) of Siegel et al. (2025); higher is better. Chance for
    top-k among :math:`R` regions is :math:`k / R`.

    Args:
        attribution (numpy.ndarray or torch.Tensor): map on the label map's grid.
        labels (numpy.ndarray or torch.Tensor): integer label map.
        label (int): the structure's label.
        top_k (int, optional): how many of the most attended regions count. Default: 1
        background (int, optional): the label that is not a region. Default: 0

    Returns:
        bool: ``True`` for a hit.

    Examples::

        >>> import numpy as np
        >>> lab = np.zeros((7, 8, 9), int); lab[0:2] = 1; lab[2:4] = 2; lab[4:7] = 3
        >>> a = np.zeros((7, 8, 9)); a[0, 0, 0] = 9.0; a[2:4] = 0.5; a[4:7] = 0.4
        >>> region_hit(a, lab, 1), region_hit(a, lab, 1, top_k=3)
        (False, True)
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    return region_rank(attribution, labels, label, background=background) <= top_k
