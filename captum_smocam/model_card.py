"""A description any ``torch.nn.Module`` can carry: its input grid, outputs, normalisation and layer.

The package's own checkpoints carry this description in their metadata
(``docs/models.md``); :func:`describe_model` gives the same keys to a user's
network (a MONAI ``DenseNet121``, a ``ResNet``, anything), so that every
step downstream — :func:`captum_smocam.nifti.load_scan`, region tables,
``SMOCAM.attribute`` targets by name, :func:`captum_smocam.models.save_checkpoint`,
``smocam explain`` / ``compare`` / ``cohort`` and
:func:`captum_smocam.cohort.run_cohort` — reads it the same way.

The keys (all plain JSON values; see ``docs/own-model.md``):

=========================== ================================================================
``input_shape``             ``[X, Y, Z]``: the model grid's shape (the tensor's spatial shape)
``affine``                  4 x 4 voxel -> world (MNI mm) matrix of the model grid
``spacing_mm``              voxel sizes in mm, from ``affine`` (written for reading only)
``intensity_normalization`` a name of :data:`captum_smocam.preprocessing.NORMALIZATION_METHODS`
``in_channels``             input channels (1 for a T1 scan)
``output_names``            one distinct name per output
``output_units``            one unit for all outputs, or one per output
``output_std``              one sigma per output (SMOCAM's scale of a change of prediction), optional
``default_layer``           the layer SMOCAM masks when none is named, optional
``n_reference_inputs``      how many reference scans the model carries (set by the package)
=========================== ================================================================

A description lives as the attribute :data:`DESCRIPTION_ATTR` of the module,
in a checkpoint's metadata, or in a small JSON file
(:func:`save_model_description`, :func:`load_model_description`).

Besides its description and weights, a model carries what SMOCAM reads from it,
set and read here only (also inside ``DataParallel`` / ``torch.compile``
wrappers):

* reference inputs (a few normalised scans of the model's population):
  :func:`set_reference_inputs` attaches them, :func:`get_reference_inputs`
  reads them; they are the default ``baselines`` of SMOCAM's ``"preserve"``
  objective and checkpoints store them beside the weights;
* sigma, the spread of each output over the training data that SMOCAM's
  distance is measured in: :func:`get_output_std` reads the model's
  ``output_std`` buffer (the package's architectures) or its description's.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ._model_state import unwrap_model
from ._text import shorten_list, shorten_message

__all__ = [
    "MAX_REFERENCE_INPUTS",
    "set_reference_inputs",
    "get_reference_inputs",
    "get_output_std",
    "DESCRIPTION_ATTR",
    "DESCRIPTION_KEYS",
    "describe_model",
    "check_description",
    "model_description",
    "save_model_description",
    "load_model_description",
    "target_indices",
    "model_fingerprint",
]

#: The attribute of a module that holds its description (a dict).
DESCRIPTION_ATTR = "smocam_metadata"

#: Keys of a description (a checkpoint's metadata may hold more: training history, ``arch``, ...).
DESCRIPTION_KEYS = ("input_shape", "affine", "spacing_mm", "intensity_normalization", "in_channels",
                    "output_names", "output_units", "output_std", "default_layer")

_DESCRIBE_ARGS = ("input_shape", "affine", "spacing", "normalization", "in_channels", "output_names",
                  "output_units", "output_std", "default_layer")


def _where(where: str, key: str) -> str:
    return f"{where}: {key}" if where else key


def _check_shape(value, where: str) -> list:
    try:
        shape = [v for v in value]
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in shape
    ):
        raise ValueError(f"{_where(where, 'input_shape')} must be 3 positive ints [X, Y, Z], got {value!r}")
    return [int(v) for v in shape]


def _check_affine(value, where: str) -> list:
    try:
        a = np.asarray(value, dtype=np.float64)
        ok = a.shape == (4, 4) and bool(np.all(np.isfinite(a))) and abs(np.linalg.det(a[:3, :3])) > 1e-12 \
            and np.allclose(a[3], [0, 0, 0, 1])
    except (TypeError, ValueError):
        ok = False
    if not ok:
        shown = np.asarray(value).tolist() if isinstance(value, np.ndarray) else value
        raise ValueError(f"{_where(where, 'affine')} must be an invertible 4 x 4 voxel -> world matrix with last "
                         f"row [0, 0, 0, 1], got {shorten_message(repr(shown), 200)}")
    return a.tolist()


def _check_names(value, where: str) -> list:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value or not all(
        isinstance(v, str) and v.strip() for v in value
    ):
        raise ValueError(f"{_where(where, 'output_names')} must be a non-empty list of non-empty str, got "
                         f"{shorten_list(value) if isinstance(value, (list, tuple)) else repr(value)}")
    repeated = sorted({v for v in value if list(value).count(v) > 1})
    if repeated:
        raise ValueError(f"{_where(where, 'output_names')} repeats {repeated[0]!r}; names must be distinct")
    return [str(v) for v in value]


def _check_std(value, n: int, where: str) -> list:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().flatten().tolist()
    elif isinstance(value, np.ndarray):
        value = value.ravel().tolist()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * n
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and math.isfinite(v)
        and v > 0 for v in value
    ):
        raise ValueError(f"{_where(where, 'output_std')} must be finite numbers > 0 (one per output), got {value!r}")
    if len(value) != n:
        raise ValueError(f"{_where(where, 'output_std')} has {len(value)} values but there are {n} output names")
    return [float(v) for v in value]


def _check_units(value, n: int, where: str):
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and len(value) == n and all(isinstance(u, str) for u in value):
        return list(value)
    raise ValueError(f"{_where(where, 'output_units')} must be one str or {n} str (one per output), got {value!r}")


def _check_layer(model: Optional[nn.Module], name, where: str) -> Optional[str]:
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise ValueError(f"{_where(where, 'default_layer')} must be a layer name (str), got {name!r}")
    if model is not None:
        try:
            model.get_submodule(name)
        except AttributeError:
            known = [n for n, _ in model.named_modules() if n]
            raise ValueError(f"{_where(where, 'default_layer')} {name!r} is not a layer of the model; its layers "
                             f"include {shorten_list(known)}") from None
    return name


def check_description(description: Mapping[str, Any], model: Optional[nn.Module] = None, *,
                      where: str = "model description") -> Dict[str, Any]:
    """Validate a description (and its agreement with ``model``); return it as plain values.

    Required: ``input_shape``, ``affine``, ``intensity_normalization`` and
    ``output_names``; the rest is optional. Every problem is a one-line
    ValueError naming the key and the bad value.

    Args:
        description (Mapping): the keys of :data:`DESCRIPTION_KEYS` (others are kept as they are).
        model (torch.nn.Module, optional): the network it describes (``default_layer`` must be one of its layers).
        where (str, optional): how messages name the description. Default: ``"model description"``

    Returns:
        dict: a copy with lists for tuples and ``spacing_mm`` filled in from ``affine``.

    Examples::

        >>> check_description({"input_shape": [7, 8, 9], "affine": np.eye(4), "intensity_normalization": "none",
        ...                    "output_names": ["a"]})["spacing_mm"]
        [1.0, 1.0, 1.0]
        >>> check_description({"input_shape": [7, 8], "affine": np.eye(4)})
        Traceback (most recent call last):
        ...
        ValueError: model description: input_shape must be 3 positive ints [X, Y, Z], got [7, 8]
    """
    from .preprocessing import canonical_normalization

    if not isinstance(description, Mapping):
        raise TypeError(f"{where} must be a dict, got {type(description).__name__}")
    meta = dict(description)
    meta["input_shape"] = _check_shape(meta.get("input_shape"), where)
    meta["affine"] = _check_affine(meta.get("affine"), where)
    meta["spacing_mm"] = [float(v) for v in np.round(np.linalg.norm(np.asarray(meta["affine"])[:3, :3], axis=0), 6)]
    if "intensity_normalization" not in meta:
        raise ValueError(f"{where} lacks 'intensity_normalization'; one of 'zscore_by_foreground', "
                         f"'monai_nonzero' or 'none' (see docs/own-model.md)")
    try:
        canonical_normalization(meta["intensity_normalization"], warn=False)
    except ValueError as err:
        raise ValueError(f"{_where(where, 'intensity_normalization')}: {err}") from None
    meta["output_names"] = _check_names(meta.get("output_names"), where)
    n = len(meta["output_names"])
    if meta.get("output_units") is not None:
        meta["output_units"] = _check_units(meta["output_units"], n, where)
    if meta.get("output_std") is not None:
        meta["output_std"] = _check_std(meta["output_std"], n, where)
    channels = meta.get("in_channels", 1)
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"{_where(where, 'in_channels')} must be a positive int, got {channels!r}")
    meta["in_channels"] = int(channels)
    layer = _check_layer(unwrap_model(model) if model is not None else None, meta.get("default_layer"), where)
    if layer is None:
        meta.pop("default_layer", None)
    return meta


def describe_model(
    model: nn.Module,
    *,
    input_shape: Sequence[int],
    output_names: Sequence[str],
    normalization: str,
    affine=None,
    spacing: Optional[Union[float, Sequence[float]]] = None,
    output_units: Union[str, Sequence[str]] = "",
    output_std=None,
    default_layer: Optional[str] = None,
    in_channels: int = 1,
    reference_inputs: Optional[torch.Tensor] = None,
    check_forward: bool = True,
) -> Dict[str, Any]:
    """Describe a network for SMOCAM: its input grid, outputs, normalisation and default layer.

    The description is validated, attached to the module as
    ``model.smocam_metadata`` (:data:`DESCRIPTION_ATTR`) and returned; it
    holds the keys a shipped checkpoint's metadata holds
    (:data:`DESCRIPTION_KEYS`), so :func:`captum_smocam.models.save_checkpoint`,
    :func:`captum_smocam.nifti.load_scan`, ``SMOCAM.attribute(target="name")``
    and :func:`captum_smocam.cohort.run_cohort` all understand it.

    Args:
        model (torch.nn.Module): any network mapping ``N x in_channels x X x Y x Z`` to ``N x n_outputs``.
        input_shape (sequence of 3 int): the model grid's shape ``[X, Y, Z]``.
        output_names (sequence of str): one distinct name per output.
        normalization (str): the intensity normalisation the network was
            trained with, a name of :data:`captum_smocam.preprocessing.NORMALIZATION_METHODS`:
            ``"zscore_by_foreground"``, ``"monai_nonzero"`` (MONAI's
            ``NormalizeIntensity(nonzero=True)``) or ``"none"``. No default:
            a wrong one moves every prediction without any error.
        affine (array-like, optional): 4 x 4 voxel -> world (MNI mm) matrix of
            the model grid, e.g. FSL's 2 mm MNI152 ``[[-2, 0, 0, 90], [0, 2, 0,
            -126], [0, 0, 2, -72], [0, 0, 0, 1]]`` (LAS). Default: from ``spacing``
        spacing (float or 3 float, optional): voxel sizes in mm of an RAS grid
            centred on the world origin, used only when ``affine`` is None.
            One of ``affine`` and ``spacing`` is required.
        output_units (str or sequence of str, optional): unit(s) of the outputs. Default: ``""``
        output_std (float or sequence of float, optional): one sigma per
            output, SMOCAM's scale of a change of prediction (e.g. the training
            targets' standard deviations). Default: None (not recorded)
        default_layer (str, optional): the layer to mask when none is named,
            e.g. ``"features.denseblock3"``. Default: None
        in_channels (int, optional): input channels. Default: 1
        reference_inputs (Tensor, optional): ``K x in_channels x X x Y x Z``
            normalised scans of the model's population, the default baselines
            of SMOCAM's ``"preserve"`` objective
            (:func:`captum_smocam.models.set_reference_inputs`). Default: None
        check_forward (bool, optional): run the network once on zeros of the
            input shape (eval mode, no gradients) and check that it returns one
            value per output name. Default: True

    Returns:
        dict: the description (plain values).

    Raises:
        ValueError: a field is missing or wrong (one line naming it), or the
            network's output does not have one value per name.
        TypeError: ``model`` is not a ``torch.nn.Module``.

    Examples::

        >>> net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.AdaptiveAvgPool3d(1),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> meta = describe_model(net, input_shape=[7, 8, 9], spacing=2.0, output_names=["left", "right"],
        ...                       normalization="monai_nonzero", output_std=[0.5, 0.5], default_layer="0")
        >>> meta["affine"][0], net.smocam_metadata["output_names"]
        ([2.0, 0.0, 0.0, -6.0], ['left', 'right'])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    target = unwrap_model(model)
    if affine is None:
        if spacing is None:
            raise ValueError("describe_model needs the model grid's affine (4 x 4 voxel -> mm) or its spacing")
        s = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError(f"spacing must be positive mm (one or three), got {spacing!r}")
        shape = np.asarray(_check_shape(input_shape, "describe_model"), dtype=np.float64)
        affine = np.eye(4)
        affine[:3, :3] = np.diag(s)
        affine[:3, 3] = -(shape - 1) / 2.0 * s
    meta = check_description({
        "input_shape": input_shape, "affine": affine, "intensity_normalization": normalization,
        "output_names": list(output_names) if isinstance(output_names, (list, tuple)) else output_names,
        "output_units": output_units, "output_std": output_std, "default_layer": default_layer,
        "in_channels": in_channels,
    }, target, where="describe_model")
    from .preprocessing import canonical_normalization

    canonical_normalization(normalization, stacklevel=3)  # warns for a deprecated name
    if meta.get("output_std") is None:
        meta.pop("output_std")
    if check_forward:
        _check_outputs(target, meta)
    if reference_inputs is not None:
        if not isinstance(reference_inputs, torch.Tensor) or tuple(reference_inputs.shape[2:]) != tuple(
            meta["input_shape"]
        ):
            got = tuple(reference_inputs.shape) if isinstance(reference_inputs, torch.Tensor) else type(
                reference_inputs).__name__
            raise ValueError(f"describe_model: reference_inputs must be K x {meta['in_channels']} x "
                             f"{' x '.join(map(str, meta['input_shape']))} (the input shape), got {got}")
        set_reference_inputs(target, reference_inputs)
        meta["n_reference_inputs"] = int(reference_inputs.shape[0])
    setattr(target, DESCRIPTION_ATTR, meta)
    return dict(meta)


def _check_outputs(model: nn.Module, meta: Mapping[str, Any]) -> None:
    """One forward pass on zeros of the input shape: the output must be ``1 x len(output_names)``."""
    params = next(iter(model.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    dtype = params.dtype if params is not None and params.is_floating_point() else torch.float32
    x = torch.zeros(1, meta["in_channels"], *meta["input_shape"], device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            y = model(x)
    except Exception as err:  # the user's network: say what input it got
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"describe_model: the network fails on an input of shape {tuple(x.shape)} "
                         f"({type(err).__name__}: {text[:300]})") from None
    finally:
        model.train(was_training)
    n = len(meta["output_names"])
    if not isinstance(y, torch.Tensor) or y.dim() != 2 or y.shape != (1, n):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"describe_model: the network returns {got} for one scan, expected (1, {n}): one value "
                         f"per output name")


def model_description(model: nn.Module) -> Optional[Dict[str, Any]]:
    """The description a module carries (:func:`describe_model`, or a loaded checkpoint's), else None."""
    model = unwrap_model(model)
    meta = getattr(model, DESCRIPTION_ATTR, None)
    return dict(meta) if isinstance(meta, Mapping) else None


def save_model_description(description: Mapping[str, Any], path) -> str:
    """Write a description as a small JSON file (atomically) that :func:`load_model_description` reads.

    Examples::

        >>> import tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "model.json")
        >>> d = {"input_shape": [7, 8, 9], "affine": np.eye(4).tolist(), "intensity_normalization": "none",
        ...      "output_names": ["a"]}
        >>> load_model_description(save_model_description(d, p))["output_names"]
        ['a']
    """
    from ._io import write_json

    meta = check_description(description, where=str(path))
    keep = {k: meta[k] for k in DESCRIPTION_KEYS if k in meta}
    write_json(keep, path)
    return str(path)


def load_model_description(path) -> Dict[str, Any]:
    """Read and validate a JSON description written by :func:`save_model_description` (or by hand).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not JSON, not an object, or a field is wrong (one line naming it).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model description not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"model description {path} is not JSON: {err}") from None
    return check_description(data, where=path)


def target_indices(target, model) -> Any:
    """``target`` with output names replaced by indices, from the names ``model`` carries.

    A string (or a list of strings) needs names: from the module's description
    (:func:`describe_model`, or a loaded checkpoint). Anything else is returned
    as it is.

    Examples::

        >>> net = torch.nn.Linear(3, 2)
        >>> net.smocam_metadata = {"output_names": ["a", "b"]}
        >>> target_indices("b", net), target_indices(["a", "b", 1], net), target_indices(0, net)
        (1, [0, 1, 1], 0)
    """
    if not isinstance(target, str) and not (isinstance(target, (list, tuple)) and any(isinstance(t, str)
                                                                                      for t in target)):
        return target
    meta = model_description(model) if isinstance(model, nn.Module) else None
    names = (meta or {}).get("output_names") or getattr(unwrap_model(model), "output_names", None)
    if not names:
        raise ValueError(f"target {target!r} is an output name, but the model carries no output names: pass an "
                         f"index (target=0), or describe it first with captum_smocam.describe_model(model, "
                         f"output_names=[...], ...)")
    names = list(names)

    def one(t):
        if not isinstance(t, str):
            return t
        if t not in names:
            raise ValueError(f"unknown target {t!r}; the model's outputs are {shorten_list(names)}")
        return names.index(t)

    if isinstance(target, str):
        return one(target)
    return [one(t) for t in target]


def model_fingerprint(model: nn.Module, metadata: Optional[Mapping[str, Any]] = None) -> str:
    """First 16 hex digits of a SHA-256 over a module's state dict (names, shapes, dtypes, values) and ``metadata``.

    What ``smocam cohort`` records for an in-memory model instead of a checkpoint file's hash, so that
    changing a weight or the description recomputes every scan.
    """
    digest = hashlib.sha256()
    for name, t in unwrap_model(model).state_dict().items():
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    if metadata is not None:
        digest.update(json.dumps(metadata, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- reference inputs and sigma
#: Most reference inputs a model (and its checkpoint) may carry (:func:`set_reference_inputs`).
MAX_REFERENCE_INPUTS = 64


def set_reference_inputs(model: nn.Module, inputs: Optional[torch.Tensor]) -> nn.Module:
    """Attach reference inputs to a model: the default ``baselines`` of SMOCAM's ``"preserve"`` objective.

    The inputs (a few normalised training scans of the model's population,
    ``K x in_channels x X x Y x Z``) are kept as the non-persistent buffer
    ``model.reference_inputs``: they move with ``model.to(...)``, are not part
    of ``state_dict()``, and :func:`~captum_smocam.models.save_checkpoint` stores them beside the
    weights (as float16 when that keeps every value exactly, else float32). ``None`` removes them.

    Args:
        model (torch.nn.Module): the model (``in_channels`` is checked when it has one).
        inputs (Tensor or None): ``K x C x X x Y x Z`` with ``1 <= K <= MAX_REFERENCE_INPUTS``.

    Returns:
        torch.nn.Module: the same model.

    Examples::

        >>> from captum_smocam.models import VGG3D
        >>> m = VGG3D(2, channels=(4, 8))
        >>> set_reference_inputs(m, torch.zeros(3, 1, 8, 10, 9)).reference_inputs.shape
        torch.Size([3, 1, 8, 10, 9])
        >>> "reference_inputs" in m.state_dict()
        False
    """
    model = unwrap_model(model)
    if inputs is None:
        if hasattr(model, "reference_inputs"):
            del model.reference_inputs
        return model
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        raise TypeError(f"reference inputs must be a floating-point tensor, got {type(inputs).__name__}")
    channels = getattr(model, "in_channels", inputs.shape[1] if inputs.dim() > 1 else None)
    if inputs.dim() != 5 or inputs.shape[1] != channels or not 1 <= inputs.shape[0] <= MAX_REFERENCE_INPUTS:
        raise ValueError(
            f"reference inputs must have shape K x {channels} x X x Y x Z with 1 <= K <= {MAX_REFERENCE_INPUTS}, "
            f"got {tuple(inputs.shape)}"
        )
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("reference inputs contain NaN or Inf values")
    device = next(model.parameters()).device if any(True for _ in model.parameters()) else inputs.device
    model.register_buffer("reference_inputs", inputs.detach().to(device=device, dtype=torch.float32).clone(),
                          persistent=False)
    return model


def get_reference_inputs(model: Any) -> Optional[torch.Tensor]:
    """The reference inputs a model carries (:func:`set_reference_inputs`, or its checkpoint's), or None.

    Args:
        model (torch.nn.Module): the model, also inside wrappers.

    Returns:
        Tensor or None: ``K x C x X x Y x Z`` float32, on the model's device.

    Examples::

        >>> from captum_smocam.models import VGG3D
        >>> m = VGG3D(2, channels=(4, 8))
        >>> get_reference_inputs(m) is None
        True
        >>> get_reference_inputs(set_reference_inputs(m, torch.zeros(3, 1, 8, 10, 9))).shape
        torch.Size([3, 1, 8, 10, 9])
    """
    reference = getattr(unwrap_model(model), "reference_inputs", None)
    return reference if isinstance(reference, torch.Tensor) else None


def get_output_std(model: Any) -> Optional[torch.Tensor]:
    """Sigma of a model: the spread of each output over its training data, or None when it says none.

    The ``output_std`` buffer when the model has one (the package's
    architectures, the training standard deviation in cm³), else the
    ``output_std`` of the description it carries
    (:func:`captum_smocam.describe_model`, or the metadata of the checkpoint
    it was loaded from) as float64, else None. SMOCAM measures the change of
    a prediction in this unit when it is given no ``output_std``.

    Args:
        model (torch.nn.Module): the model, also inside wrappers; anything
            else (a function) gives None.

    Returns:
        Tensor or None: one value per output (detached).

    Examples::

        >>> from captum_smocam.models import VGG3D
        >>> get_output_std(VGG3D(2, output_std=[2.0, 3.0]))
        tensor([2., 3.])
        >>> get_output_std(torch.nn.Linear(2, 1)) is None
        True
    """
    model = unwrap_model(model)
    if not isinstance(model, nn.Module):
        return None
    std = getattr(model, "output_std", None)
    if isinstance(std, torch.Tensor) and std.is_floating_point() and std.numel() >= 1:
        return std.detach()
    card = getattr(model, DESCRIPTION_ATTR, None)
    if isinstance(card, dict) and card.get("output_std") is not None:
        return torch.as_tensor(card["output_std"], dtype=torch.float64)
    return None
