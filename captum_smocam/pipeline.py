"""From names to tensors: resolve a model, its layer, its targets and the device, and explain a scan.

Shared by the ``smocam`` command (``explain``, ``compare``, ``demo``,
``cohort``) and the benchmarks, so that every entry point reads checkpoints
(:func:`resolve_model`, the one resolver), target names, layer names, devices
and SMOCAM's settings (:func:`smocam_settings`) the same way.

Data flow: checkpoint -> (model, metadata) -> scan tensor on the model grid ->
:func:`explain` -> maps on the model grid (``K x 1 x X x Y x Z``), which
:func:`captum_smocam.nifti.save_map` writes back on the scan's own grid.
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch.nn import Module

from ._text import shorten_list
from .methods import attribute_map
from .models import DEFAULT_MODELS, default_model_file, load_checkpoint, load_default_model
from .smocam import DEFAULT_OBJECTIVE, OBJECTIVE_DEFAULTS

__all__ = [
    "DEFAULT_MODEL",
    "DEVICES",
    "resolve_model",
    "load_model",
    "resolve_device",
    "smocam_settings",
    "resolve_targets",
    "resolve_layer",
    "check_finite_outputs",
    "explain",
]

#: The model used when none is named (a key of :data:`captum_smocam.models.DEFAULT_MODELS`).
DEFAULT_MODEL = "vgg"
#: Values of ``device`` (and of the ``--device`` flag): see :func:`resolve_device`.
DEVICES = ("auto", "cpu", "cuda")


def resolve_model(spec: Union[None, str, os.PathLike, Module] = None, *, metadata=None,
                  trust_checkpoint: bool = False) -> Tuple[Module, Dict[str, Any], Optional[Path]]:
    """The one model resolver: a shipped name (``"vgg"``, ...), a checkpoint path, or a module; None is ``"vgg"``.

    The model must name its outputs (``metadata["output_names"]``): every
    entry point names files, tables and targets after them. A module in
    memory (any ``torch.nn.Module``) takes its description from ``metadata``
    (a dict or the path of a JSON description,
    :func:`captum_smocam.model_card.load_model_description`) or from the one
    it carries (:func:`captum_smocam.model_card.describe_model`).

    Args:
        spec (str, Path or torch.nn.Module, optional): a key of
            :data:`captum_smocam.models.DEFAULT_MODELS`, the path of a
            checkpoint (:func:`captum_smocam.models.save_checkpoint`, any
            architecture), or a module. Default: :data:`DEFAULT_MODEL`
        metadata (dict or str, optional): the description of a module given
            as ``spec``. Default: None
        trust_checkpoint (bool, optional): see :func:`captum_smocam.models.load_checkpoint`.
            Default: False

    Returns:
        tuple: ``(model, metadata, file)``: the model in eval mode, its
        checkpoint metadata, and the checkpoint file read (for a shipped model,
        the file installed in the package; None for a module), e.g. to hash it.

    Raises:
        FileNotFoundError: ``spec`` is neither a shipped name nor an existing file.
        ValueError: the checkpoint cannot be read, contradicts its metadata
            (see :func:`captum_smocam.models.check_metadata`) or names no
            outputs; a module has no description.

    Examples::

        >>> model, meta, path = resolve_model("vgg")  # doctest: +SKIP
        >>> path.name, meta["default_layer"]  # doctest: +SKIP
        ('vgg3d_default.pt', 'features.block3')
    """
    if isinstance(spec, Module):
        return _resolve_module(spec, metadata)
    if metadata is not None:
        raise ValueError("metadata= describes a module given in memory; a checkpoint carries its own")
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"model must be a shipped name, a checkpoint path or a torch.nn.Module, "
                        f"got {type(spec).__name__}")
    spec = DEFAULT_MODEL if spec is None else os.fspath(spec)
    if spec in DEFAULT_MODELS:
        model, meta = load_default_model(spec)
        path = Path(str(default_model_file(spec)))
    elif not os.path.isfile(spec):
        raise FileNotFoundError(
            f"model {spec!r} is neither a file nor a shipped model ({', '.join(sorted(DEFAULT_MODELS))})"
        )
    else:
        path = Path(spec)
        model, meta = load_checkpoint(path, trust_checkpoint=trust_checkpoint)
    if meta.get("output_names") is None:
        raise ValueError(
            f"checkpoint {spec!r} has no metadata['output_names']; save it with "
            f"save_checkpoint(path, model, {{'output_names': [...], ...}}) (one name per output)"
        )
    return model.eval(), meta, path


def _resolve_module(model: Module, metadata) -> Tuple[Module, Dict[str, Any], None]:
    """``(model, description, None)`` for a module in memory; see :func:`resolve_model`."""
    from .model_card import check_description, load_model_description, model_description

    if isinstance(metadata, (str, os.PathLike)):
        metadata = load_model_description(metadata)
    meta = metadata if metadata is not None else model_description(model)
    if meta is None:
        raise ValueError(
            f"the {type(model).__name__} given has no description: pass metadata={{...}} or call "
            f"captum_smocam.describe_model(model, input_shape=..., affine=..., output_names=..., "
            f"normalization=...) first (see docs/own-model.md)"
        )
    if not isinstance(meta, Mapping):
        raise TypeError(f"metadata must be a dict or the path of a JSON description, got {type(meta).__name__}")
    meta = check_description(meta, model, where="metadata")
    return model.eval(), meta, None


def load_model(spec: Union[None, str, os.PathLike, Module] = None, *, metadata=None,
               trust_checkpoint: bool = False) -> Tuple[Module, Dict[str, Any]]:
    """``(model, metadata)`` of :func:`resolve_model`, for callers that do not need the file."""
    model, meta, _ = resolve_model(spec, metadata=metadata, trust_checkpoint=trust_checkpoint)
    return model, meta


def resolve_device(device: str = "auto", index: int = 0) -> torch.device:
    """The device to compute on: ``"auto"`` is CUDA (device ``index``) when available, else the CPU.

    Args:
        device (str, optional): one of :data:`DEVICES`. Default: ``"auto"``
        index (int, optional): which CUDA device (modulo their number), e.g.
            ``LOCAL_RANK`` under ``torchrun``. Default: 0

    Raises:
        ValueError: an unknown ``device``, or ``"cuda"`` where CUDA is not available.

    Examples::

        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))}; got {device!r}")
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if device == "cuda" and not use_cuda:
        raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
    return torch.device("cuda", index % max(torch.cuda.device_count(), 1)) if use_cuda else torch.device("cpu")


def smocam_settings(objective: Optional[str] = None, **given: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """SMOCAM's settings as the user gave them (to pass on), and as they take effect (to record).

    Only what was given is passed to :meth:`captum_smocam.SMOCAM.attribute`:
    the objective's own defaults (:data:`captum_smocam.smocam.OBJECTIVE_DEFAULTS`)
    apply to the rest, so a setting the objective does not have (``l2_weight``
    with ``"preserve"``) is never sent unasked. The effective settings are what
    ``smocam cohort`` records in its done-markers, so that changing any of
    them, the objective included, recomputes a scan.

    Args:
        objective (str, optional): one of :data:`captum_smocam.smocam.OBJECTIVES`.
            Default: :data:`captum_smocam.smocam.DEFAULT_OBJECTIVE`
        **given: settings of :meth:`SMOCAM.attribute` (``n_steps``, ``lr``,
            ``area_weight``, ``l2_weight``, ``smooth_weight``); None means not given.

    Returns:
        tuple: ``(kwargs, effective)``: ``{"objective": ..., <given settings>}``,
        and the objective's defaults updated with the given settings, with ``"objective"``.

    Raises:
        ValueError: an unknown objective, a setting the objective does not
            have, or ``n_steps`` that is not an integer >= 1.

    Examples::

        >>> smocam_settings("poster", n_steps=20, lr=None)[0]
        {'objective': 'poster', 'n_steps': 20}
        >>> effective = smocam_settings("preserve")[1]
        >>> sorted(effective)
        ['area_weight', 'distance_unit', 'fidelity_tol', 'lr', 'n_steps', 'objective', 'smooth_weight']
    """
    objective = DEFAULT_OBJECTIVE if objective is None else objective
    if objective not in OBJECTIVE_DEFAULTS:
        raise ValueError(f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVE_DEFAULTS)}")
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - set(OBJECTIVE_DEFAULTS[objective]))
    if unknown:
        raise ValueError(f"the {objective!r} objective has no setting {', '.join(unknown)}; its settings are "
                         f"{', '.join(OBJECTIVE_DEFAULTS[objective])}")
    n_steps = given.get("n_steps")
    if n_steps is not None and (isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral)
                                or n_steps < 1):
        raise ValueError(f"n_steps must be an integer >= 1 or None, got {n_steps!r}")
    kwargs = {"objective": objective, **given}
    return kwargs, {**OBJECTIVE_DEFAULTS[objective], "objective": objective, **given}


def resolve_targets(metadata: Mapping[str, Any], spec: Union[str, int, Sequence[Union[str, int]]]) -> List[int]:
    """Output indices from ``"all"``, a name, an index, or a comma-separated / list mix of those.

    Examples::

        >>> meta = {"output_names": ["left_hippocampus", "right_hippocampus"]}
        >>> resolve_targets(meta, "right_hippocampus,0")
        [1, 0]
        >>> resolve_targets(meta, "all")
        [0, 1]
    """
    names = list(metadata["output_names"])
    if isinstance(spec, str):
        items: List[Union[str, int]] = [s.strip() for s in spec.split(",") if s.strip()]
    elif isinstance(spec, int):
        items = [spec]
    else:
        items = list(spec)
    if not items:
        raise ValueError(f"no target given; expected a name, an index or 'all' (outputs: {shorten_list(names, 12)})")
    out: List[int] = []
    for item in items:
        if isinstance(item, str) and item == "all":
            out.extend(range(len(names)))
        elif isinstance(item, str) and item in names:
            out.append(names.index(item))
        elif isinstance(item, int) or (isinstance(item, str) and item.lstrip("-").isdigit()):
            idx = int(item)
            if not 0 <= idx < len(names):
                raise ValueError(f"target index {idx} is out of range: the model has {len(names)} outputs")
            out.append(idx)
        else:
            raise ValueError(f"unknown target {item!r}; expected 'all', an index or one of: {shorten_list(names, 12)}")
    return out


def resolve_layer(model: Module, metadata: Mapping[str, Any], name: Optional[str] = None) -> Tuple[str, Module]:
    """The layer to explain at: ``name``, or the checkpoint's ``default_layer``."""
    name = name or metadata.get("default_layer") or getattr(model, "default_layer", None)
    if not name:
        known = [n for n, _ in model.named_modules() if n]
        raise ValueError(f"no layer given and the model names no default_layer: pass one (--layer NAME, or "
                         f"describe_model(..., default_layer=NAME)); its layers include {shorten_list(known, 12)}")
    try:
        return name, model.get_submodule(name)
    except AttributeError:
        known = [n for n, _ in model.named_modules() if n]
        raise ValueError(f"unknown layer {name!r}; layers of this model include: {shorten_list(known, 12)}") from None


def check_finite_outputs(outputs: Tensor, names: Sequence[str], indices: Optional[Sequence[int]] = None,
                         *, where: str = "the scan") -> None:
    """Raise ValueError if the model's outputs (``indices`` of them, default all) are NaN or Inf.

    A non-finite prediction has no explanation: SMOCAM's distance term is NaN
    at every step and the mask stays uniform, so the map would look like an
    answer while meaning nothing.

    Args:
        outputs (Tensor): one scan's outputs, ``1 x n_outputs`` or ``n_outputs``.
        names (sequence of str): output names, for the message.
        indices (sequence of int, optional): the outputs to check. Default: all
        where (str, optional): how the message names the input. Default: ``"the scan"``

    Examples::

        >>> check_finite_outputs(torch.tensor([[1.0, float("nan")]]), ["a", "b"])
        Traceback (most recent call last):
        ...
        ValueError: the model's output is not finite for the scan: b=nan (a checkpoint with NaN or overflowing weights, or an input far outside the training range?)
    """
    values = outputs.detach().reshape(-1).cpu()
    idx = range(len(values)) if indices is None else list(indices)
    bad = [i for i in idx if not bool(torch.isfinite(values[i]))]
    if bad:
        shown = ", ".join(f"{names[i]}={float(values[i])}" for i in bad[:4]) + (" ..." if len(bad) > 4 else "")
        raise ValueError(
            f"the model's output is not finite for {where}: {shown} (a checkpoint with NaN or overflowing "
            f"weights, or an input far outside the training range?)"
        )


def explain(
    model: Module,
    metadata: Mapping[str, Any],
    x: Tensor,
    targets: Sequence[int],
    *,
    method: str = "smocam",
    layer: Optional[Module] = None,
    smocam_kwargs: Optional[Dict[str, Any]] = None,
    internal_batch_size: Optional[int] = None,
    show_progress: bool = False,
    **method_kwargs: Any,
) -> Tensor:
    """Maps of several outputs of one scan, on the model grid.

    For SMOCAM the K targets run as one expanded batch, so the network before
    the layer runs once (the multi-target fast path); other methods run once
    per target.

    Args:
        model (Module): the regressor, eval mode.
        metadata (Mapping): its checkpoint metadata (``output_std`` is SMOCAM's sigma).
        x (Tensor): one scan, ``1 x 1 x X x Y x Z``.
        targets (sequence of int): output indices.
        method (str, optional): see :data:`captum_smocam.methods.METHODS`. Default: ``"smocam"``
        layer (Module, optional): layer for SMOCAM/Grad-CAM; default the checkpoint's.
        smocam_kwargs (dict, optional): further :meth:`SMOCAM.attribute` arguments.
        internal_batch_size (int, optional): at most this many SMOCAM masks at once.
        show_progress (bool, optional): progress bars. Default: False

    Returns:
        Tensor: ``K x 1 x X x Y x Z``, one map per target, larger = more important.

    Raises:
        ValueError: ``x`` is not one scan, or the model's prediction of a
            target is NaN or Inf (see :func:`check_finite_outputs`), or a map
            came out non-finite.
    """
    if x.dim() < 3 or x.shape[0] != 1:
        raise ValueError(f"explain takes one scan (1 x C x ...), got shape {tuple(x.shape)}")
    if layer is None:
        _, layer = resolve_layer(model, metadata)
    names = list(metadata["output_names"])
    # sigma from the checkpoint's metadata; without it SMOCAM takes the model's own or measures the effect
    std = (torch.tensor(metadata["output_std"], dtype=torch.float32) if metadata.get("output_std") is not None
           else None)
    targets = list(targets)
    with torch.no_grad():
        check_finite_outputs(model(x), names, targets)
    if method == "smocam":
        kwargs = dict(smocam_kwargs or {})
        if internal_batch_size is not None:
            kwargs["internal_batch_size"] = internal_batch_size
        batch = x.expand(len(targets), *x.shape[1:])
        maps = attribute_map("smocam", model, batch, targets, layer=layer, output_std=std,
                             smocam_kwargs=kwargs, show_progress=show_progress, **method_kwargs)
    else:
        maps = torch.cat([attribute_map(method, model, x, t, layer=layer, output_std=std,
                                        show_progress=show_progress, **method_kwargs) for t in targets])
    bad = [names[t] for k, t in enumerate(targets) if not bool(torch.isfinite(maps[k]).all())]
    if bad:
        raise ValueError(f"the {method} map of {', '.join(bad)} has NaN or Inf values")
    return maps
