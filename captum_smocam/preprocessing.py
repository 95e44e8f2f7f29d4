"""Intensity normalisation shared by training, the benchmarks' subjects and NIfTI loading.

One function, one place: a model is trained on images normalised with
:func:`normalize_intensity` and its checkpoint records the ``method`` name, so
that :mod:`captum_smocam.nifti` applies exactly the same step to a user's scan.

Each name says what it does (see ``docs/own-model.md`` for choosing one):

* ``"zscore_by_foreground"`` — every voxel, background included, is z-scored
  with the mean and standard deviation of the foreground (voxels above 0):
  the background ends at ``-mean/sd``. The shipped models were trained so.
  Its old name ``"zscore_nonzero"`` still works, with a DeprecationWarning
  when a user passes it (checkpoints that record it are read silently).
* ``"monai_nonzero"`` — MONAI's ``NormalizeIntensity(nonzero=True)``: only
  the nonzero voxels are z-scored with their own mean and (population)
  standard deviation; zeros stay 0.
* ``"none"`` — intensities as stored, as ``float32``.
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["NORMALIZATION_METHODS", "DEPRECATED_NORMALIZATION_NAMES", "canonical_normalization",
           "normalize_intensity"]

#: Names accepted by :func:`normalize_intensity`.
NORMALIZATION_METHODS = ("zscore_by_foreground", "monai_nonzero", "none")

#: Old name -> the name that says what it does; still accepted (with a DeprecationWarning for users).
DEPRECATED_NORMALIZATION_NAMES = {"zscore_nonzero": "zscore_by_foreground"}


def canonical_normalization(method, *, warn: bool = True, stacklevel: int = 3) -> str:
    """The name in :data:`NORMALIZATION_METHODS` that ``method`` stands for; unknown names are an error.

    Args:
        method (str): a normalisation name, or a deprecated one.
        warn (bool, optional): issue a DeprecationWarning for a deprecated name. Default: True

    Examples::

        >>> canonical_normalization("monai_nonzero")
        'monai_nonzero'
        >>> canonical_normalization("zscore_nonzero", warn=False)
        'zscore_by_foreground'
    """
    if isinstance(method, str) and method in DEPRECATED_NORMALIZATION_NAMES:
        new = DEPRECATED_NORMALIZATION_NAMES[method]
        if warn:
            warnings.warn(f"intensity normalisation {method!r} is deprecated: it is called {new!r} now "
                          f"(every voxel z-scored with the foreground's mean and sd, so the background becomes "
                          f"-mean/sd); for MONAI's NormalizeIntensity(nonzero=True) use 'monai_nonzero'",
                          DeprecationWarning, stacklevel=stacklevel)
        return new
    if not isinstance(method, str) or method not in NORMALIZATION_METHODS:
        raise ValueError(f"unknown normalisation method {method!r}; expected one of {NORMALIZATION_METHODS} "
                         f"(see docs/own-model.md)")
    return method


def normalize_intensity(image, method: str = "zscore_by_foreground", mask=None):
    """Normalise a scan's intensities.

    Args:
        image (numpy.ndarray or torch.Tensor): an image of any shape.
        method (str, optional): ``"zscore_by_foreground"`` subtracts the mean
            and divides by the standard deviation of the foreground voxels
            (the head) from *every* voxel, leaving zero background at
            ``-mean/sd``; ``"monai_nonzero"`` z-scores only the foreground
            (default: the nonzero voxels, as MONAI's
            ``NormalizeIntensity(nonzero=True)``) with its own statistics and
            sets every other voxel to 0; ``"none"`` returns the input as
            ``float32``. ``"zscore_nonzero"`` is the deprecated name of
            ``"zscore_by_foreground"``. Default: ``"zscore_by_foreground"``
        mask (numpy.ndarray or torch.Tensor of bool, optional): the foreground,
            same shape as ``image``. Default: the voxels above zero for
            ``"zscore_by_foreground"`` (the rule the shipped models were
            trained with), the nonzero voxels for ``"monai_nonzero"``.
            :func:`captum_smocam.nifti.load_scan` passes the foreground found
            on the scan's own grid, so that the statistics do not depend on how
            the scan is resampled. Default: None

    Returns:
        Same type and shape as ``image``, ``float32``.

    Raises:
        ValueError: an unknown ``method``, a mask of another shape, or no foreground voxel.

    Examples::

        >>> import numpy as np
        >>> x = np.zeros((4, 5, 6)); x[1:3, 1:4, 1:5] = np.arange(1, 25).reshape(2, 3, 4)
        >>> y = normalize_intensity(x)
        >>> round(float(y[x > 0].mean()), 6), float(y[0, 0, 0]) < 0
        (0.0, True)
        >>> z = normalize_intensity(x, "monai_nonzero")
        >>> round(float(z[x > 0].mean()), 6), float(z[0, 0, 0])
        (0.0, 0.0)
    """
    method = canonical_normalization(method)
    is_numpy = isinstance(image, np.ndarray)
    if is_numpy:
        x = image.astype(np.float32, copy=False)
    else:
        x = image.float()
    if method == "none":
        return x.copy() if is_numpy else x.clone()
    default_mask = mask is None
    if default_mask:
        mask = (x != 0) if method == "monai_nonzero" else (x > 0)
    elif tuple(mask.shape) != tuple(x.shape):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, the image has {tuple(x.shape)}")
    fg = x[mask]
    n_fg = fg.size if is_numpy else fg.numel()
    if n_fg == 0:
        raise ValueError("cannot normalise an image with no foreground voxel (none above zero)"
                         if default_mask else "cannot normalise an image with an empty foreground mask")
    mean = fg.mean()
    sd = fg.std() if is_numpy else fg.std(correction=0)  # the population sd for both (numpy's default)
    if float(sd) == 0.0:
        sd = 1.0
    out = (x - mean) / sd
    if method == "monai_nonzero":
        out = np.where(mask, out, np.float32(0.0)).astype(np.float32) if is_numpy else out.where(mask, out.new_zeros(()))
    return out
