"""Checks shared by the scores: maps and masks as NumPy arrays on one grid, voxel spacings.

Every score accepts a ``numpy.ndarray`` or a ``torch.Tensor`` of shape
``(*spatial)``; a map of shape ``(1, *spatial)`` or ``(1, 1, *spatial)`` is
squeezed when paired with a ``(*spatial)`` one (:func:`_pair`).
"""
from __future__ import annotations

import numbers
from typing import Optional, Union

import numpy as np
import torch

from ..spatial import to_numpy

ArrayLike = Union[np.ndarray, torch.Tensor]


def _to_numpy(x, name: str) -> np.ndarray:
    """``x`` (a numpy array or a torch tensor, nothing else) as a numpy array."""
    return to_numpy(x, name, images=False, sequences=False)

def _as_map(x, name: str) -> np.ndarray:
    """An attribution map as finite float64."""
    a = _to_numpy(x, name)
    if a.dtype == bool:
        a = a.astype(np.float64)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if a.ndim == 0:
        raise ValueError(f"{name} must have at least one spatial dimension, got shape ()")
    n_bad = int(np.count_nonzero(~np.isfinite(a)))
    if n_bad:
        raise ValueError(
            f"{name} has {n_bad} non-finite value(s) (NaN or inf); expected finite values"
        )
    return a


def _as_mask(x, name: str) -> np.ndarray:
    """A mask as a boolean array; numeric masks must hold only 0 and 1."""
    m = _to_numpy(x, name)
    if m.ndim == 0:
        raise ValueError(f"{name} must have at least one spatial dimension, got shape ()")
    if m.dtype != bool:
        if not (np.issubdtype(m.dtype, np.floating) or np.issubdtype(m.dtype, np.integer)):
            raise TypeError(f"{name} must be boolean or numeric, got dtype {m.dtype}")
        values = np.unique(m)
        if not np.all(np.isin(values, (0, 1))):
            shown = values[~np.isin(values, (0, 1))][:5]
            raise ValueError(
                f"{name} must be boolean or hold only 0 and 1, found values such as "
                f"{shown.tolist()}"
            )
        m = m.astype(bool)
    return m


def _check_not_empty(mask: np.ndarray, name: str) -> None:
    if not mask.any():
        raise ValueError(f"{name} is empty (no voxel set, shape {mask.shape}); expected at least one")


def _strip_leading(x: np.ndarray, n: int) -> Optional[np.ndarray]:
    """Drop ``n`` (at most 2) leading axes of size 1, or return None."""
    if n == 0:
        return x
    if n > 2 or x.ndim - n < 1 or any(s != 1 for s in x.shape[:n]):
        return None
    return x.reshape(x.shape[n:])


def _pair(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str):
    """Bring two maps to the same shape by squeezing batch/channel axes."""
    if a.shape == b.shape:
        return a, b
    if a.ndim > b.ndim:
        a2, b2 = _strip_leading(a, a.ndim - b.ndim), b
    else:
        a2, b2 = a, _strip_leading(b, b.ndim - a.ndim)
    if a2 is None or b2 is None or a2.shape != b2.shape:
        raise ValueError(
            f"shape mismatch: {a_name} has shape {tuple(a.shape)} and {b_name} has shape "
            f"{tuple(b.shape)}; expected the same spatial shape (leading axes of size 1, "
            "at most two, are squeezed)"
        )
    return a2, b2


def _spacing_values(spacing):
    """A spacing as a float or a tuple of floats (not yet checked)."""
    if isinstance(spacing, torch.Tensor):
        spacing = spacing.detach().cpu().numpy()
    if isinstance(spacing, np.ndarray):
        spacing = spacing.item() if spacing.ndim == 0 else tuple(spacing.ravel().tolist())
    if isinstance(spacing, numbers.Real) and not isinstance(spacing, bool):
        return float(spacing)
    try:
        return tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise TypeError(
            "spacing must be a positive number or a sequence of positive numbers (one per "
            f"axis), got {spacing!r}"
        ) from None


def _spacing(spacing, ndim: int) -> tuple:
    """Validate a voxel spacing (scalar or one value per axis)."""
    values = _spacing_values(spacing)
    if isinstance(values, float):
        values = (values,) * ndim
    elif len(values) != ndim:
        raise ValueError(
            f"spacing has {len(values)} value(s) {values} but the mask has {ndim} "
            "spatial dimension(s); expected a scalar or one value per axis"
        )
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be positive and finite, got {values}")
    return values


def _positive_mass(a: np.ndarray, positive_only: bool) -> np.ndarray:
    return np.clip(a, 0.0, None) if positive_only else np.abs(a)
