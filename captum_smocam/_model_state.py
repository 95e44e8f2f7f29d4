"""A model's identity for SMOCAM's caches, and the module inside its wrappers.

The helpers that every cache and every entry point share, so that a model is
seen the same way everywhere (three identities, each for what it keys):

* :func:`unwrap_model`: the module inside ``nn.DataParallel``,
  ``DistributedDataParallel`` and ``torch.compile`` wrappers (in any nesting),
  whose hooks run, whose train/eval mode matters and whose attributes
  (``reference_inputs``, ``default_layer``) are the model's;
* :func:`state_fingerprint`: per parameter and buffer, its identity, storage,
  version counter *and a digest of its values*. The version counter misses
  in-place edits made through ``.data`` (``p.data.mul_(2)``, EMA updates,
  weight surgery), which share the storage but not the counter; the digest
  sees them. It costs one pass over the weights (a few milliseconds for the
  shipped models) and changes no result: it only decides whether a cached
  trace, model copy or reference feature may be reused;
* :func:`module_fingerprint`: the state *and* the structure a traced graph
  depends on (submodules, their modes and plain attributes): the key of the
  fast path's splits, the model copies and the reference features;
* :func:`architecture_key`: the architecture only (types, code, settings,
  shapes — never values), a string that stays the same across processes: the
  key of the kernel plans.
"""
from __future__ import annotations

import hashlib
from typing import Any, Hashable, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Module

__all__ = ["unwrap_model", "layer_name", "tensor_digest", "state_fingerprint", "module_fingerprint", "architecture_key"]

_PARALLEL = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
#: Attribute values an architecture key reads (anything else is not part of the architecture) ...
_SCALARS = (bool, int, float, str, type(None))
#: ... and those a module fingerprint compares by value (anything else by identity).
_PLAIN = _SCALARS + (torch.dtype, torch.device, torch.memory_format)


def unwrap_model(model: Any) -> Any:
    """The module inside ``DataParallel`` / ``DistributedDataParallel`` / ``torch.compile`` wrappers.

    Anything else (a plain module, a function) is returned as it is.

    Examples::

        >>> import torch
        >>> net = torch.nn.Linear(2, 1)
        >>> unwrap_model(torch.nn.DataParallel(net)) is net
        True
    """
    while isinstance(model, Module):
        if isinstance(model, _PARALLEL) and isinstance(getattr(model, "module", None), Module):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            break
    return model


def layer_name(model: Module, layer: Module) -> Optional[str]:
    """The qualified name of ``layer`` inside ``model`` (``""`` for the model itself), or None if it is not in it.

    Examples::

        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
        >>> layer_name(net, net[1]), layer_name(net, torch.nn.ReLU())
        ('1', None)
    """
    return next((name for name, m in model.named_modules() if m is layer), None)


def tensor_digest(t: Tensor) -> Optional[bytes]:
    """A digest of a tensor's values (BLAKE2b of its bytes); None for a tensor without values (meta)."""
    t = t.detach()
    if t.device.type == "meta":
        return None
    if t.device.type != "cpu":
        t = t.cpu()
    flat = t.contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    return hashlib.blake2b(flat.view(torch.uint8).numpy(), digest_size=16).digest()


def state_fingerprint(module: Optional[Module]) -> Tuple:
    """Changes whenever a parameter or buffer of ``module`` is replaced or its values change in any way.

    Per tensor: ``id``, ``data_ptr``, ``_version`` and :func:`tensor_digest`.

    Examples::

        >>> import torch
        >>> net = torch.nn.Linear(2, 1)
        >>> before = state_fingerprint(net)
        >>> _ = net.weight.data.mul_(2.0)  # no version bump
        >>> before == state_fingerprint(net)
        False
    """
    if module is None:
        return ()
    return tuple((id(t), t.data_ptr(), t._version, tensor_digest(t))
                 for t in (*module.parameters(), *module.buffers()))


def _plain_value(value: Any) -> Hashable:
    """A hashable stand-in for an attribute's value: the value itself when plain, else its identity."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (tuple, list)) and len(value) <= 64 and all(isinstance(v, _PLAIN) for v in value):
        return (type(value).__name__, *value)
    if isinstance(value, Tensor):
        return ("tensor", id(value), value._version)
    return ("id", id(value))


def module_fingerprint(module: Module) -> Tuple:
    """Changes whenever anything a traced graph of ``module`` depends on (that SMOCAM can see) changes.

    For every submodule: its name, identity, type, train/eval mode, plain
    attributes (numbers, strings, tuples of them; any other attribute by
    identity) and an instance-level ``forward`` override; for every parameter
    and buffer: its storage, version counter (bumped by every in-place
    change, ``load_state_dict`` included) and a digest of its values (which
    also sees edits through ``.data``; :func:`state_fingerprint`).

    Examples::

        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> before = module_fingerprint(net)
        >>> before == module_fingerprint(net)
        True
        >>> with torch.no_grad():
        ...     _ = net[0].weight.mul_(2.0)
        >>> before == module_fingerprint(net)
        False
    """
    parts = []
    for name, m in module.named_modules():
        attrs = tuple(sorted((k, _plain_value(v)) for k, v in vars(m).items()
                             if not k.startswith("_") and k != "training"))
        parts.append((name, id(m), type(m), m.training, attrs))
    return tuple(parts), state_fingerprint(module)


def _code_digest(cls: type) -> str:
    """A digest of the bytecode of ``cls.forward`` (changes when the forward's code does)."""
    code = getattr(getattr(cls, "forward", None), "__code__", None)
    if code is None:
        return ""
    return hashlib.sha1(code.co_code + repr(code.co_consts).encode() + repr(code.co_names).encode()).hexdigest()[:12]


def architecture_key(model: Any) -> str:
    """What a plan depends on in a model: its modules' types, code and settings, its tensors' shapes — not values.

    Per submodule: the class, a digest of its ``forward``'s bytecode, its
    ``repr`` and its plain attributes (numbers, strings, tuples of them); per
    parameter and buffer: name, shape and dtype.
    """
    if isinstance(model, torch.nn.Module):
        parts = [repr(model)]
        for name, m in model.named_modules():
            attrs = sorted((k, v) for k, v in vars(m).items() if not k.startswith("_") and k != "training"
                           and (isinstance(v, _SCALARS)
                                or (isinstance(v, tuple) and all(isinstance(x, _SCALARS) for x in v))))
            parts.append(f"{name}:{type(m).__module__}.{type(m).__qualname__}:{_code_digest(type(m))}:{attrs!r}")
        parts += [f"{n}:{tuple(t.shape)}:{t.dtype}" for n, t in (*model.named_parameters(), *model.named_buffers())]
        return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]
    return f"{type(model).__module__}.{getattr(model, '__qualname__', type(model).__qualname__)}"
