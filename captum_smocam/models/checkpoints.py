"""Checkpoints: a model and its metadata written to one file, and read back without running code.

:func:`save_checkpoint` and :func:`load_checkpoint` hold only tensors and
plain Python values and are read with ``torch.load(..., weights_only=True)``:
loading a checkpoint never runs code. The package's own architectures are
rebuilt from the names ``arch`` and ``arch_kwargs`` in the metadata
(:data:`~captum_smocam.models.registry.ARCHITECTURES`); any other network is
handed to :mod:`~captum_smocam.models.user_checkpoints` (an entry point that
rebuilds it, or a trusted pickle).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Optional

import torch
from torch import nn

from .._io import atomic_write
from .._model_state import unwrap_model
from .._text import first_line, shorten_list, shorten_message
from ..model_card import get_output_std, set_reference_inputs
from .checkpoint_file import (CHECKPOINT_FORMAT_VERSION, MAX_PARAMETERS, read_checkpoint_file,
                              store_references)
from .metadata import check_metadata, check_plain, to_plain
from .registry import ARCHITECTURES, build_model
from .user_checkpoints import USER_ARCHS, load_user_checkpoint, save_user_checkpoint

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path, model: nn.Module, metadata: Optional[dict] = None, *, factory=None,
                    factory_kwargs: Optional[dict] = None, trust_pickle: bool = False) -> dict:
    """Write a model and its metadata to a file that :func:`load_checkpoint` reads.

    The file holds ``{"state_dict": ..., "metadata": ...}`` made of tensors and
    plain values only, and ``"reference_inputs"`` (float16 when every value
    survives float16 exactly, else float32: they load back as they were) when the model has
    reference inputs (:func:`set_reference_inputs`); ``metadata`` then records
    their number as ``n_reference_inputs``. ``metadata`` is completed with ``format_version``,
    ``arch``, ``arch_kwargs``, ``output_mean``, ``output_std`` and
    ``default_layer`` taken from the model (values given in ``metadata`` for
    the last three must agree with the model and are overwritten otherwise).
    The file is written atomically (:func:`captum_smocam._io.atomic_write`).

    Any other network (a MONAI ``DenseNet121``, your own module) is saved by
    :func:`captum_smocam.models.user_checkpoints.save_user_checkpoint`: with its
    description (:func:`captum_smocam.model_card.describe_model`, or the same
    keys in ``metadata``) and either an entry point that rebuilds it
    (``factory``, a weights-only file) or, with ``trust_pickle=True``, the
    whole module pickled (read back only with ``trust_checkpoint=True``). See
    ``docs/own-model.md``.

    Args:
        path (str or os.PathLike): destination file (``.pt``).
        model (torch.nn.Module): the model to save (also inside
            ``nn.DataParallel`` or ``DistributedDataParallel``: the wrapped
            module is saved).
        metadata (dict, optional): plain values (dict, list, str, int, float,
            bool, None) describing the model; see ``docs/models.md`` for the
            keys of a shipped checkpoint. Default: ``{}``
        factory (str or callable, optional): for a network other than
            the registered architectures (:class:`~captum_smocam.models.VGG3D`, ...): ``"package.module:Callable"``
            (or the class itself) that rebuilds it from ``factory_kwargs``.
            Default: None
        factory_kwargs (dict, optional): plain keyword arguments of
            ``factory``. Default: ``{}``
        trust_pickle (bool, optional): for a network no entry point rebuilds:
            pickle the whole module. Loading such a file can run any code, so
            :func:`load_checkpoint` reads it only with ``trust_checkpoint=True``.
            Default: False

    Returns:
        dict: the metadata as written.

    Examples::

        >>> import tempfile, os
        >>> from captum_smocam.models import VGG3D
        >>> m = VGG3D(2, channels=(4, 8))
        >>> p = os.path.join(tempfile.mkdtemp(), "m.pt")
        >>> save_checkpoint(p, m, {"output_names": ["a", "b"]})["arch"]
        'VGG3D'
    """
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    model = unwrap_model(model)
    if not isinstance(model, tuple(ARCHITECTURES.values())):  # any other network: user_checkpoints.py
        return save_user_checkpoint(path, model, metadata, factory=factory, factory_kwargs=factory_kwargs,
                                    trust_pickle=trust_pickle)
    meta = to_plain(metadata)
    check_plain(meta)
    meta["format_version"] = CHECKPOINT_FORMAT_VERSION
    meta["arch"] = type(model).__name__
    meta["arch_kwargs"] = model.arch_kwargs()
    meta["output_mean"] = [float(v) for v in model.output_mean]
    meta["output_std"] = [float(v) for v in get_output_std(model)]
    meta.setdefault("default_layer", model.default_layer)
    try:
        model.get_submodule(meta["default_layer"])
    except AttributeError:
        raise ValueError(
            f"metadata['default_layer'] {meta['default_layer']!r} is not a layer of the model"
        ) from None
    names = meta.get("output_names")
    if names is not None and len(names) != model.n_outputs:
        raise ValueError(
            f"metadata['output_names'] has {len(names)} names but the model has "
            f"{model.n_outputs} outputs"
        )
    state = OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items())
    blob = {"state_dict": state, "metadata": meta}
    store_references(blob, model, meta)
    with atomic_write(path) as tmp:
        torch.save(blob, tmp)
    return meta


def load_checkpoint(path, map_location="cpu", *, trust_checkpoint: bool = False):
    """Read a checkpoint written by :func:`save_checkpoint` without running code.

    The file is read with ``torch.load(..., weights_only=True)``, which
    unpickles tensors and plain containers only: a file holding any other
    object (for example one whose ``__reduce__`` would call a function) is
    refused with a ValueError. The model is rebuilt from the metadata's
    ``arch`` and ``arch_kwargs`` and its weights and output statistics loaded
    strictly. Reference inputs stored in the file become the model's
    ``reference_inputs`` buffer (:func:`set_reference_inputs`), which SMOCAM's
    ``"preserve"`` objective uses when it is given no ``baselines``.

    Args:
        path (str or os.PathLike): the checkpoint file.
        map_location (str or torch.device, optional): where tensors are
            loaded. Default: ``"cpu"``
        trust_checkpoint (bool, optional): also read files that could run
            code when loaded: a whole module pickled
            (``save_checkpoint(..., trust_pickle=True)``) or a factory that
            is a function rather than an ``nn.Module`` class
            (:mod:`captum_smocam.models.user_checkpoints`). Only for files you made or
            trust. Default: False

    Returns:
        tuple: ``(model, metadata)`` — the model in eval mode and its metadata dict.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is empty, is not a PyTorch checkpoint, is
            truncated or corrupt, is a TorchScript archive (SMOCAM needs
            hooks, which ScriptModules do not support), holds objects that
            could run code, or is not a captum_smocam checkpoint.

    Examples::

        >>> import tempfile, os, torch
        >>> from captum_smocam.models import VGG3D
        >>> m = VGG3D(2, channels=(4, 8)).eval()
        >>> p = os.path.join(tempfile.mkdtemp(), "m.pt")
        >>> _ = save_checkpoint(p, m)
        >>> m2, meta = load_checkpoint(p)
        >>> x = torch.randn(1, 1, 7, 8, 9)
        >>> torch.equal(m(x), m2(x))
        True
    """
    path = os.fspath(path)
    blob = read_checkpoint_file(path, map_location, trust_checkpoint)
    if isinstance(blob, dict) and isinstance(blob.get("metadata"), dict) and blob["metadata"].get("arch") in USER_ARCHS:
        # any other network than the package's own
        if blob["metadata"].get("format_version") != CHECKPOINT_FORMAT_VERSION:
            raise ValueError(f"{path!r}: unsupported checkpoint format_version "
                             f"{blob['metadata'].get('format_version')!r}; expected {CHECKPOINT_FORMAT_VERSION}")
        return load_user_checkpoint(path, blob, map_location, trust_checkpoint=trust_checkpoint)
    if not isinstance(blob, dict) or not {"state_dict", "metadata"} <= set(blob) <= {
        "state_dict", "metadata", "reference_inputs"
    }:
        keys = f"a dict with keys {shorten_list(sorted(map(str, blob)), 5)}" if isinstance(blob, dict) \
            else f"a {type(blob).__name__}"
        hint = (" (a bare state_dict? Save the network with captum_smocam.models.save_checkpoint(path, model, "
                "metadata, factory='package.module:Class', factory_kwargs={...}); see docs/own-model.md)"
                if isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()) else "")
        raise ValueError(
            f"{path!r} is not a captum_smocam checkpoint: expected a dict with keys "
            f"['metadata', 'state_dict'] (and optionally 'reference_inputs'), got {keys}{hint}"
        )
    meta = blob["metadata"]
    if not isinstance(meta, dict):
        raise ValueError(f"{path!r}: metadata must be a dict, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{path!r}: unsupported checkpoint format_version {version!r}; "
            f"expected {CHECKPOINT_FORMAT_VERSION}"
        )
    model = _build_checked(path, meta, blob["state_dict"])
    try:
        model.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{path!r}: weights do not match architecture {meta['arch']} "
            f"{meta['arch_kwargs']}: {shorten_message(first_line(err), 300)}"
        ) from None
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"{path!r}: {name} has {int((~torch.isfinite(t)).sum())} NaN or Inf value(s); "
                f"the model would predict NaN"
            )
    check_metadata(meta, model, where=repr(path))
    if "reference_inputs" in blob:
        reference = blob["reference_inputs"]
        try:
            set_reference_inputs(model, reference.float() if isinstance(reference, torch.Tensor) else reference)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path!r}: {err}") from None
        shape = meta.get("input_shape")
        if shape is not None and list(reference.shape[2:]) != list(shape):
            raise ValueError(f"{path!r}: reference inputs have spatial shape {tuple(reference.shape[2:])}, "
                             f"the model's input_shape is {tuple(shape)}")
    model.to(map_location)
    model.smocam_metadata = dict(meta)  # the description it carries (model_card.DESCRIPTION_ATTR): targets by name
    return model.eval(), meta


def _build_checked(path: str, meta: dict, state_dict) -> nn.Module:
    """The untrained model of ``meta``, built only after its size was checked on the meta device.

    A checkpoint's ``arch_kwargs`` are data: ``channels=[200000, ...]`` would
    make the constructor allocate terabytes before any weight is compared. The
    model is therefore first built on PyTorch's ``meta`` device (shapes, no
    storage) and refused if it has more than :data:`MAX_PARAMETERS` elements or
    if any tensor's shape differs from the one stored in the file.
    """
    arch, kwargs = meta.get("arch"), meta.get("arch_kwargs")
    if not isinstance(kwargs, dict):
        raise ValueError(f"{path!r}: metadata['arch_kwargs'] must be a dict, got {kwargs!r}")
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path!r}: state_dict must be a dict of tensors, got {type(state_dict).__name__}")
    try:
        with torch.device("meta"):
            shape_only = build_model(arch, kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path!r}: cannot build {arch!r} from arch_kwargs {kwargs}: {err}") from None
    expected = shape_only.state_dict()
    n_elements = sum(t.numel() for t in expected.values())
    if n_elements > MAX_PARAMETERS:
        raise ValueError(
            f"{path!r}: architecture {arch} {kwargs} would have {n_elements:,} parameters and buffers "
            f"(at most {MAX_PARAMETERS:,} are accepted); the checkpoint's arch_kwargs are corrupt"
        )
    for name, t in expected.items():
        got = state_dict.get(name)
        if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(t.shape):
            raise ValueError(
                f"{path!r}: weights do not match architecture {arch} {kwargs}: {name} has shape "
                f"{tuple(got.shape)} in the file, the architecture needs {tuple(t.shape)}"
            )
    return build_model(arch, kwargs)
