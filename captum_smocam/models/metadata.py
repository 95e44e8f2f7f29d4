"""A checkpoint's metadata: plain values only, and checked against the model it describes.

A checkpoint holds tensors and plain Python values (dict, list, str, int,
float, bool, None) so that ``torch.load(..., weights_only=True)`` reads it
without running code: :func:`to_plain` turns tuples and numpy scalars into
such values and :func:`check_plain` refuses anything else. :func:`check_metadata`
refuses metadata that contradicts its model; :data:`METADATA_KEYS` lists what a
shipped checkpoint's metadata holds (``docs/models.md`` describes each key).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..preprocessing import DEPRECATED_NORMALIZATION_NAMES, NORMALIZATION_METHODS

__all__ = ["METADATA_KEYS", "check_metadata", "check_plain", "to_plain"]

#: Keys every shipped checkpoint's metadata holds (see ``docs/models.md``).
METADATA_KEYS = (
    "format_version",
    "arch",
    "arch_kwargs",
    "output_names",
    "output_units",
    "output_mean",
    "output_std",
    "input_shape",
    "spacing_mm",
    "affine",
    "intensity_normalization",
    "default_layer",
    "lr_correlation",
    "train_seed",
    "splits",
    "test_metrics",
    "train_seconds",
    "epochs",
)


_PLAIN_SCALARS = (str, int, float, bool, type(None))


def check_plain(value, where: str = "metadata") -> None:
    """Raise TypeError unless ``value`` is built from dict/list/str/int/float/bool/None."""
    if isinstance(value, _PLAIN_SCALARS):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} keys must be str, got {k!r}")
            check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"{where} must hold only dict, list, str, int, float, bool or None; "
        f"got {type(value).__name__}: {value!r}"
    )


def to_plain(value):
    """A copy with tuples as lists and subclasses of str/int/float/bool (``numpy.float64``,
    ``torch.__version__``) as the builtin types, which ``weights_only`` loading accepts."""
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):  # numpy scalar -> Python scalar
        value = value.item()
    for kind in (bool, str, int, float):
        if isinstance(value, kind):
            return kind(value)
    return value


def check_metadata(metadata: dict, model: nn.Module, where: str = "checkpoint") -> None:
    """Raise ValueError if checkpoint metadata contradicts the model it describes.

    Keys are optional (a checkpoint may carry only what its user needs), but
    each one present must agree with the model: ``output_names`` (distinct
    non-empty strings, one per output), ``output_units`` (one string, or one
    per output), ``output_mean`` / ``output_std`` (one finite value per output,
    equal to the model's buffers: ``output_std`` is SMOCAM's sigma),
    ``default_layer`` (a layer of the model), ``input_shape`` (3 positive
    ints), ``affine`` (an invertible 4 x 4 matrix) and
    ``intensity_normalization`` (a name known to
    :func:`captum_smocam.preprocessing.normalize_intensity`).

    Args:
        metadata (dict): the metadata.
        model (torch.nn.Module): the model, with ``n_outputs``.
        where (str, optional): how messages name the checkpoint. Default: ``"checkpoint"``

    Examples::

        >>> from captum_smocam.models import VGG3D
        >>> check_metadata({"output_names": ["a"]}, VGG3D(2))
        Traceback (most recent call last):
        ...
        ValueError: checkpoint: metadata['output_names'] has 1 names but the model has 2 outputs
    """
    names = metadata.get("output_names")
    n = getattr(model, "n_outputs", None)  # a user's network may not say: then its output_names count
    n = int(n) if n is not None else (len(names) if isinstance(names, list) else None)
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(v, str) and v.strip() for v in names):
            raise ValueError(f"{where}: metadata['output_names'] must be a list of non-empty str, got {names!r}")
        if len(names) != n:
            raise ValueError(f"{where}: metadata['output_names'] has {len(names)} names but the model has {n} outputs")
        repeated = sorted({v for v in names if names.count(v) > 1})
        if repeated:
            raise ValueError(f"{where}: metadata['output_names'] repeats {repeated[0]!r}; names must be distinct")
    units = metadata.get("output_units")
    if units is not None and not isinstance(units, str) and not (
        isinstance(units, list) and (n is None or len(units) == n) and all(isinstance(u, str) for u in units)
    ):
        raise ValueError(f"{where}: metadata['output_units'] must be a str or {n} str, got {units!r}")
    for key in ("output_mean", "output_std"):
        values = metadata.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
        ):
            raise ValueError(f"{where}: metadata[{key!r}] must be a list of finite numbers, got {values!r}")
        if n is not None and len(values) != n:
            raise ValueError(f"{where}: metadata[{key!r}] has {len(values)} values but the model has {n} outputs")
        buffer = getattr(model, key, None)
        if isinstance(buffer, torch.Tensor) and not torch.allclose(
            torch.tensor(values, dtype=torch.float32), buffer.detach().float().cpu(), rtol=1e-5, atol=1e-6
        ):
            raise ValueError(
                f"{where}: metadata[{key!r}] {values} differs from the model's {key} buffer {buffer.tolist()}"
            )
    layer = metadata.get("default_layer")
    if layer is not None:
        try:
            model.get_submodule(str(layer))
        except AttributeError:
            raise ValueError(f"{where}: metadata['default_layer'] {layer!r} is not a layer of the model") from None
    shape = metadata.get("input_shape")
    if shape is not None and not (
        isinstance(shape, list) and len(shape) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)
    ):
        raise ValueError(f"{where}: metadata['input_shape'] must be 3 positive ints [X, Y, Z], got {shape!r}")
    affine = metadata.get("affine")
    if affine is not None:
        try:
            a = np.asarray(affine, dtype=np.float64)
            ok = a.shape == (4, 4) and bool(np.all(np.isfinite(a))) and abs(np.linalg.det(a[:3, :3])) > 1e-12
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{where}: metadata['affine'] must be an invertible 4 x 4 matrix, got {affine!r}")
    norm = metadata.get("intensity_normalization")
    if norm is not None and norm not in NORMALIZATION_METHODS and norm not in DEPRECATED_NORMALIZATION_NAMES:
        raise ValueError(
            f"{where}: metadata['intensity_normalization'] {norm!r} is not one of {NORMALIZATION_METHODS}"
        )

