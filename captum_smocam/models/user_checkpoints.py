"""Checkpoints of any other architecture: a user's network saved with its description.

:func:`captum_smocam.models.save_checkpoint` and :func:`~captum_smocam.models.load_checkpoint`
handle the package's own networks by name (``arch`` ``"VGG3D"``/``"AlexNet3D"``,
:data:`~captum_smocam.models.registry.ARCHITECTURES`) and hand every other
module to this module. Two routes:

* **factory** (``metadata["arch"] == "factory"``): the file holds tensors and
  plain values only (read with ``torch.load(..., weights_only=True)``) and
  names an entry point, ``"package.module:Callable"`` plus keyword arguments,
  that rebuilds the untrained network; the state dict is then loaded
  strictly. Loading imports ``package.module`` (code installed on this
  machine). When the callable is a ``torch.nn.Module`` subclass (MONAI's
  ``monai.networks.nets.DenseNet121``, your own class) nothing else runs; any
  other callable (a function) could do anything when called, so it is called
  only with ``trust_checkpoint=True``.
* **pickled module** (``metadata["arch"] == "pickled_module"``, written with
  ``trust_pickle=True``): the whole module is pickled, for networks that no
  entry point rebuilds. Unpickling can run any code, so such a file is read
  only with ``trust_checkpoint=True`` (``smocam ... --trust-checkpoint``):
  use it for files you made yourself.

Both keep the description (:mod:`captum_smocam.model_card`) in ``metadata``
and the reference inputs as float16 beside the weights, as the package's own
checkpoints do.
"""
from __future__ import annotations

import importlib
import re
import warnings
from collections import OrderedDict
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from .._io import atomic_write
from .._text import shorten_list
from ..model_card import DESCRIPTION_ATTR, check_description, model_description
from ..model_card import get_reference_inputs, set_reference_inputs
from .checkpoint_file import CHECKPOINT_FORMAT_VERSION, MAX_PARAMETERS, store_references
from .metadata import check_plain, to_plain

__all__ = ["USER_ARCHS", "FACTORY_PATTERN", "save_user_checkpoint", "load_user_checkpoint", "resolve_factory"]

#: ``metadata["arch"]`` of the two routes.
USER_ARCHS = ("factory", "pickled_module")

#: ``"package.module:Callable"`` (the callable may be an attribute path, ``"pkg.mod:Class.build"``).
FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")

_TRUST_HINT = "pass trust_checkpoint=True (smocam: --trust-checkpoint) if you made this file or trust its source"


def _factory_name(factory) -> str:
    if callable(factory) and not isinstance(factory, str):
        module = getattr(factory, "__module__", None)
        qual = getattr(factory, "__qualname__", None)
        if not module or not qual or "<" in qual:
            raise ValueError(f"factory {factory!r} has no importable name; pass 'package.module:callable'")
        factory = f"{module}:{qual}"
    if not isinstance(factory, str) or not FACTORY_PATTERN.match(factory):
        raise ValueError(f"factory must be 'package.module:callable' (e.g. 'monai.networks.nets:DenseNet121'), "
                         f"got {factory!r}")
    return factory


def resolve_factory(factory: str, *, trust_checkpoint: bool = False, where: str = "checkpoint"):
    """The callable named by ``"package.module:Callable"``, imported; a non-Module class needs trust.

    Raises:
        ValueError: a malformed name, a module that cannot be imported, a
            missing attribute, or a callable that is not an ``nn.Module``
            subclass without ``trust_checkpoint``.
    """
    factory = _factory_name(factory)
    module_name, attr = factory.split(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{where}: cannot import {module_name!r} for factory {factory!r} ({err}); install the "
                         f"package that defines the network") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{where}: factory {factory!r}: {module_name!r} has no attribute {attr!r}") from None
    is_module_class = isinstance(obj, type) and issubclass(obj, nn.Module)
    if not is_module_class and not (callable(obj) and trust_checkpoint):
        what = "not callable" if not callable(obj) else "a function, not a torch.nn.Module class; calling it could run any code"
        raise ValueError(f"{where}: factory {factory!r} is {what}; {_TRUST_HINT}")
    return obj


def save_user_checkpoint(path, model: nn.Module, metadata: Dict[str, Any], *, factory=None,
                         factory_kwargs: Optional[Dict[str, Any]] = None, trust_pickle: bool = False) -> dict:
    """Write any module with its description; see :func:`captum_smocam.models.save_checkpoint`."""
    carried = model_description(model) or {}
    meta = to_plain({**carried, **metadata})
    check_plain(meta)
    try:
        meta = check_description(meta, model, where="save_checkpoint")
    except ValueError as err:
        raise ValueError(f"{err} (describe the model with captum_smocam.describe_model(model, ...) or pass "
                         f"these keys in metadata)") from None
    meta["format_version"] = CHECKPOINT_FORMAT_VERSION
    meta.pop("factory", None), meta.pop("factory_kwargs", None), meta.pop("module_class", None)
    if factory is not None:
        if trust_pickle:
            raise ValueError("save_checkpoint: give either factory= (an entry point and the weights) or "
                             "trust_pickle=True (the whole module pickled), not both")
        kwargs = to_plain(dict(factory_kwargs or {}))
        check_plain(kwargs, "factory_kwargs")
        meta.update(arch="factory", factory=_factory_name(factory), factory_kwargs=kwargs)
        state = OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items())
        blob: Dict[str, Any] = {"state_dict": state, "metadata": meta}
    elif trust_pickle:
        meta.update(arch="pickled_module", module_class=f"{type(model).__module__}.{type(model).__qualname__}")
        blob = {"module": model, "metadata": meta}
    else:
        raise TypeError(
            f"cannot checkpoint a {type(model).__name__} by name: pass factory='package.module:callable' and "
            f"factory_kwargs (rebuilds it, weights-only file), or trust_pickle=True (pickles the whole module; "
            f"reading it back needs trust_checkpoint=True)"
        )
    store_references(blob, model, meta)  # float16 only when lossless (issue 21, class 6)
    saved = get_reference_inputs(model) if "module" in blob else None
    if saved is not None:
        set_reference_inputs(model, None)  # stored beside the module, not pickled with it
        try:
            with atomic_write(path) as tmp:
                torch.save(blob, tmp)
        finally:
            model.register_buffer("reference_inputs", saved, persistent=False)  # the same tensor back
    else:
        with atomic_write(path) as tmp:
            torch.save(blob, tmp)
    return meta


def load_user_checkpoint(path: str, blob: dict, map_location="cpu", *,
                         trust_checkpoint: bool = False) -> Tuple[nn.Module, dict]:
    """``(model, metadata)`` of a file written by :func:`save_user_checkpoint` (already read into ``blob``)."""
    where = repr(path)
    meta = blob["metadata"]
    arch = meta.get("arch")
    if arch == "factory":
        extra = sorted(set(blob) - {"state_dict", "metadata", "reference_inputs"})
        if extra or "state_dict" not in blob or not isinstance(blob["state_dict"], dict):
            raise ValueError(f"{where}: a factory checkpoint holds 'state_dict', 'metadata' and optionally "
                             f"'reference_inputs', got keys {sorted(blob)}")
        kwargs = meta.get("factory_kwargs", {})
        if not isinstance(kwargs, dict):
            raise ValueError(f"{where}: metadata['factory_kwargs'] must be a dict, got {kwargs!r}")
        build = resolve_factory(meta.get("factory"), trust_checkpoint=trust_checkpoint, where=where)
        state = blob["state_dict"]
        try:
            with torch.device("meta"):
                shape_only = build(**kwargs)
        except Exception:  # some factories cannot build on the meta device: then no size check first
            shape_only = None
        if isinstance(shape_only, nn.Module):
            n_elements = sum(t.numel() for t in shape_only.state_dict().values())
            if n_elements > MAX_PARAMETERS:
                raise ValueError(f"{where}: {meta['factory']}({kwargs}) would have {n_elements:,} parameters and "
                                 f"buffers (at most {MAX_PARAMETERS:,} are accepted)")
        try:
            model = build(**kwargs)
        except Exception as err:
            raise ValueError(f"{where}: {meta['factory']}(**{kwargs}) failed: {type(err).__name__}: "
                             f"{str(err).strip()[:300]}") from None
        if not isinstance(model, nn.Module):
            raise ValueError(f"{where}: {meta['factory']} returned a {type(model).__name__}, not a torch.nn.Module")
        _load_state(model, state, where)
    elif arch == "pickled_module":
        model = blob.get("module")
        if not isinstance(model, nn.Module):
            raise ValueError(f"{where}: a pickled-module checkpoint must hold a torch.nn.Module under 'module', "
                             f"got {type(model).__name__}")
    else:
        raise ValueError(f"{where}: unknown metadata['arch'] {arch!r}")
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{where}: {name} has {int((~torch.isfinite(t)).sum())} NaN or Inf value(s); "
                             f"the model would predict NaN")
    meta = check_description(meta, model, where=where)
    if "reference_inputs" in blob:
        reference = blob["reference_inputs"]
        if not isinstance(reference, torch.Tensor) or tuple(reference.shape[2:]) != tuple(meta["input_shape"]):
            raise ValueError(f"{where}: reference inputs must be K x C x {tuple(meta['input_shape'])}")
        set_reference_inputs(model, reference.float())
    setattr(model, DESCRIPTION_ATTR, dict(meta))
    model.to(map_location)
    return model.eval(), meta


def _load_state(model: nn.Module, state: dict, where: str) -> None:
    """``load_state_dict(strict=True)`` with a message of a few lines, never every weight name."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and isinstance(state[k], torch.Tensor)
             and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({shorten_list(missing, 3)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({shorten_list(unexpected, 3)})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                         f"{tuple(expected[k].shape)} in the network)")
        raise ValueError(f"{where}: the weights do not fit the network the factory builds: {'; '.join(parts)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_state_dict(state, strict=True)
