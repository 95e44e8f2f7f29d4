"""Intensity normalisation shared by training, the benchmarks' subjects and NIfTI loading.

One function, one place: a model is trained on images normalised with
:func:`normalize_intensity` and its checkpoint records the ``method`` name, so
that :mod:`captum_smocam.nifti` applies exactly the same step to a user's scan.
"""
from __future__ import annotations

import numpy as np

#: Names accepted by :func:`normalize_intensity`.
NORMALIZATION_METHODS = ("zscore_nonzero", "none")


def normalize_intensity(image, method: str = "zscore_nonzero", mask=None):
    """Normalise a scan's intensities.

    Args:
        image (numpy.ndarray or torch.Tensor): an image of any shape.
        method (str, optional): ``"zscore_nonzero"`` subtracts the mean and
            divides by the standard deviation of the foreground voxels (the
            head), leaving zero background at ``-mean/sd``; ``"none"`` returns
            the input as ``float32``. Default: ``"zscore_nonzero"``
        mask (numpy.ndarray or torch.Tensor of bool, optional): the foreground,
            same shape as ``image``. Default: the voxels above zero, the rule
            the shipped models were trained with.
            :func:`captum_smocam.nifti.load_scan` passes the foreground found
            on the scan's own grid, so that the statistics do not depend on how
            the scan is resampled. Default: None

    Returns:
        Same type and shape as ``image``, ``float32``.

    Examples::

        >>> import numpy as np
        >>> x = np.zeros((4, 5, 6)); x[1:3, 1:4, 1:5] = np.arange(24).reshape(2, 3, 4)
        >>> y = normalize_intensity(x)
        >>> round(float(y[x > 0].mean()), 6)
        0.0
    """
    if method not in NORMALIZATION_METHODS:
        raise ValueError(
            f"unknown normalisation method {method!r}; expected one of {NORMALIZATION_METHODS}"
        )
    is_numpy = isinstance(image, np.ndarray)
    if is_numpy:
        x = image.astype(np.float32, copy=False)
    else:
        x = image.float()
    if method == "none":
        return x.copy() if is_numpy else x.clone()
    if mask is None:
        fg = x[x > 0]
    else:
        if tuple(mask.shape) != tuple(x.shape):
            raise ValueError(f"mask has shape {tuple(mask.shape)}, the image has {tuple(x.shape)}")
        fg = x[mask]
    n_fg = fg.size if is_numpy else fg.numel()
    if n_fg == 0:
        raise ValueError("cannot normalise an image with no foreground voxel (none above zero)"
                         if mask is None else "cannot normalise an image with an empty foreground mask")
    mean = fg.mean()
    sd = fg.std() if is_numpy else fg.std(correction=0)  # the population sd for both (numpy's default)
    if float(sd) == 0.0:
        sd = 1.0
    return (x - mean) / sd
