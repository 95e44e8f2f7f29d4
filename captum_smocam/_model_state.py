"""A model's identity for SMOCAM's caches, and the module inside its wrappers.

Two helpers that every cache and every entry point share, so that a model is
seen the same way everywhere:

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
  trace, model copy or reference feature may be reused.
"""
from __future__ import annotations

import hashlib
from typing import Any, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Module

__all__ = ["unwrap_model", "tensor_digest", "state_fingerprint"]

_PARALLEL = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)


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
