"""What SMOCAM is asked to explain, checked and put in shape: inputs, baselines, targets, numbers, dtypes, rows.

Everything here runs before any network evaluation of a call (or on its first
output, for the targets) and either returns the value in the form the rest of
the package uses or raises a one-line ``ValueError`` / ``TypeError`` naming the
bad value. The rows of a batch are looked at here too: which examples are
identical (:func:`distinct_rows`, so the network before the layer runs once
for K outputs of one scan) and how to go over every row in bounded memory
(:func:`row_chunks`).
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import Module

from .._captum_compat import TargetType
from .defaults import CHECK_CHUNK, HALF_DTYPES

__all__ = ["format_inputs", "format_baselines", "check_inputs", "check_number", "check_work_dtype",
           "check_finite_mask", "target_flat_indices", "first_float_dtype", "index_rows", "cast_floating",
           "stored_rows", "row_chunks", "distinct_rows"]


def format_inputs(inputs: Any) -> Tuple[Tensor, ...]:
    """``inputs`` as a tuple of tensors (a single tensor becomes a 1-tuple)."""
    if isinstance(inputs, Tensor):
        return (inputs,)
    if isinstance(inputs, tuple) and inputs and all(isinstance(x, Tensor) for x in inputs):
        return inputs
    got = type(inputs).__name__ if not isinstance(inputs, tuple) else "a tuple of " + ", ".join(
        type(x).__name__ for x in inputs
    )
    raise TypeError(f"inputs must be a torch.Tensor or a tuple of Tensors, got {got}")


def check_inputs(inputs: Tuple[Tensor, ...], model_dtype: Optional[torch.dtype]) -> int:
    """Check every input (batch, dtype, device, finite values; a warning for a constant example); returns ``N``."""
    for i, x in enumerate(inputs):
        if x.dim() < 2:
            raise ValueError(f"input {i} has shape {tuple(x.shape)}; expected a batch N x C x ...")
        if x.shape[0] == 0:
            raise ValueError(f"input {i} has batch size 0 (shape {tuple(x.shape)}): nothing to explain")
        if not x.is_floating_point():
            raise TypeError(f"input {i} has dtype {x.dtype}; SMOCAM needs floating-point inputs (x.float())")
        if model_dtype is not None and x.dtype != model_dtype:
            raise TypeError(
                f"input {i} has dtype {x.dtype} but the model's parameters are {model_dtype}; "
                f"convert the input with x.to({model_dtype})"
            )
        if x.device.type == "meta":
            raise ValueError(f"input {i} is on the meta device (shapes only, no values); "
                             "move it to cpu or cuda")
        if not all(bool(torch.isfinite(c).all()) for c in row_chunks(stored_rows(x))):
            n_bad = sum(int((~torch.isfinite(c)).sum()) for c in row_chunks(x))
            raise ValueError(f"input {i} contains {n_bad} NaN or Inf value(s)")
    n = inputs[0].shape[0]
    if any(x.shape[0] != n for x in inputs):
        raise ValueError(f"all inputs must share the batch size; got {[tuple(x.shape) for x in inputs]}")
    for i, x in enumerate(inputs):
        if x[0].numel() > 1 and any(bool((f == f[:, :1]).all(dim=1).any())
                                    for f in (c.reshape(c.shape[0], -1) for c in row_chunks(stored_rows(x)))):
            warnings.warn(f"input {i} has a constant example (every value the same): its map will show "
                          "nothing about the scan", UserWarning, stacklevel=4)
    return n


def format_baselines(baselines: Any, inputs: Tuple[Tensor, ...], what: str = "baselines"
                     ) -> Optional[Tuple[Tensor, ...]]:
    """``None``, or one ``K x <input shape without batch>`` tensor per input (same ``K``).

    ``what`` names the references in errors (``"the model's reference_inputs"``
    when they come from the model, not from the caller).
    """
    if baselines is None:
        return None
    items = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(items) != len(inputs):
        raise ValueError(f"{what} must give one entry per input: got {len(items)} for {len(inputs)} input(s)")
    model_refs = what != "baselines"
    out = []
    for i, (b, x) in enumerate(zip(items, inputs)):
        if isinstance(b, numbers.Real) and not isinstance(b, bool):
            b = torch.full_like(x[:1], float(b))
        if not isinstance(b, Tensor):
            raise TypeError(f"baselines must be numbers or Tensors, got {type(b).__name__} for input {i}")
        if tuple(b.shape) == tuple(x.shape[1:]):
            b = b.unsqueeze(0)
        if b.dim() != x.dim() or tuple(b.shape[1:]) != tuple(x.shape[1:]) or b.shape[0] < 1:
            if model_refs:
                raise ValueError(
                    f"{what} have shape {tuple(b.shape)} but input {i} has shape {tuple(x.shape)}: the model "
                    f"expects inputs of size {tuple(b.shape[1:])} per example, got {tuple(x.shape[1:])} "
                    "(resample the input onto the model's grid, or pass baselines of the input's size)"
                )
            raise ValueError(
                f"baselines for input {i} have shape {tuple(b.shape)}; expected K x {tuple(x.shape[1:])} "
                "(K reference inputs, shared by every example)"
            )
        if b.device.type == "meta":
            raise ValueError(f"{what} for input {i} are on the meta device (shapes only, no values); "
                             f"give them on {x.device}")
        if not b.is_floating_point() or not torch.isfinite(b).all():
            if model_refs:
                raise ValueError(f"{what} are not finite floating-point values (dtype {b.dtype}, "
                                 f"{int((~torch.isfinite(b)).sum()) if b.is_floating_point() else 0} NaN or Inf): "
                                 "set them again with models.set_reference_inputs, or pass baselines")
            raise ValueError(f"baselines for input {i} must be finite floating-point values")
        out.append(b.detach().to(device=x.device, dtype=x.dtype))
    if len({b.shape[0] for b in out}) != 1:
        raise ValueError(f"every input needs the same number of baselines, got {[b.shape[0] for b in out]}")
    return tuple(out)


def check_number(name: str, value: Any, *, positive: bool = False, integer: bool = False) -> None:
    """A finite real number (``>= 0``, or ``> 0`` with ``positive``); an int with ``integer``.

    Examples::

        >>> check_number("lr", 0.5, positive=True)
        >>> check_number("n_steps", 1.5, positive=True, integer=True)
        Traceback (most recent call last):
        ...
        ValueError: n_steps must be an integer > 0, got 1.5
    """
    ok_type = isinstance(value, numbers.Integral) if integer else isinstance(value, numbers.Real)
    if isinstance(value, bool) or not ok_type or not math.isfinite(float(value)):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind} {'> 0' if positive else '>= 0'}, got {value!r}")
    if (positive and value <= 0) or value < 0:
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")


def check_work_dtype(work_dtype: torch.dtype, given: bool) -> None:
    """Refuse to optimise in float16 / bfloat16 (a one-line error naming the dtype and what to use)."""
    if work_dtype in HALF_DTYPES:
        where = f"dtype={work_dtype}" if given else f"a model and input in {work_dtype}"
        raise ValueError(f"SMOCAM cannot optimise a mask in {work_dtype} ({where}): the objective underflows to "
                         f"zero or NaN masks; use dtype=torch.float32 (or float64), and autocast={work_dtype} to "
                         "run the network in half precision")


def check_finite_mask(mask: Tensor) -> None:
    """Never return a mask with NaN or Inf values."""
    if not bool(torch.isfinite(mask).all()):
        bad = int((~torch.isfinite(mask)).sum())
        raise ValueError(f"the optimised mask has {bad} NaN or Inf value(s) of {mask.numel()}: the model's "
                         "gradients are not finite here (check the model, the input, dtype and autocast)")


def target_flat_indices(target: TargetType, output_shape: Tuple[int, ...]) -> Tensor:
    """One flat index into ``output[i].reshape(-1)`` per example; validates ``target``.

    Examples::

        >>> target_flat_indices([(0, 1), (1, 2)], (2, 2, 3))
        tensor([1, 5])
    """
    n, per_example = output_shape[0], tuple(output_shape[1:])
    n_out = int(np.prod(per_example)) if per_example else 1

    def one(t) -> int:
        if isinstance(t, Tensor):
            if t.numel() != 1:
                raise TypeError(f"a per-example target must be a scalar, got a tensor of shape {tuple(t.shape)}")
            t = int(t.item())
        if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
            idx: Tuple[int, ...] = (int(t),)
        elif isinstance(t, tuple) and all(isinstance(v, (int, np.integer)) for v in t):
            idx = tuple(int(v) for v in t)
        else:
            raise TypeError(f"target {t!r} is not an int or a tuple of ints")
        if not per_example:
            raise ValueError(f"target {t!r} given, but the model output has shape {tuple(output_shape)} (no output axis)")
        if len(idx) != len(per_example):
            raise ValueError(
                f"target {t!r} has {len(idx)} index(es) but each example's output has shape {per_example}"
            )
        norm = []
        for v, size in zip(idx, per_example):
            if not -size <= v < size:
                raise ValueError(f"target {t!r} is out of range for outputs of shape {per_example}")
            norm.append(v % size)
        return int(np.ravel_multi_index(tuple(norm), per_example))

    if target is None:
        if n_out != 1:
            raise ValueError(
                f"target=None, but the model has {n_out} outputs per example (output shape "
                f"{tuple(output_shape)}); pass target=<output index>"
            )
        flat = [0] * n
    elif isinstance(target, list):
        if len(target) != n:
            raise ValueError(f"a list target must have one entry per example: got {len(target)} for a batch of {n}")
        flat = [one(t) for t in target]
    elif isinstance(target, Tensor) and target.numel() > 1:
        if target.dim() != 1 or target.shape[0] != n:
            raise ValueError(
                f"a tensor target must have shape ({n},) (one per example), got {tuple(target.shape)}"
            )
        flat = [one(t) for t in target]
    else:
        flat = [one(target)] * n
    return torch.tensor(flat, dtype=torch.long)


def first_float_dtype(model: Optional[Module]) -> Optional[torch.dtype]:
    """The dtype of the model's first floating-point parameter or buffer (None: no model, or none)."""
    if model is None:
        return None
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def index_rows(value: Any, rows: Tensor, n: int) -> Any:
    """Select batch rows of tensors whose first dimension is the batch (anything else is returned as it is)."""
    if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n:
        return value[rows]
    return value


def cast_floating(args: Any, dtype: torch.dtype) -> Any:
    """Floating-point tensors of ``args`` in ``dtype``; everything else as it is."""
    if not args:
        return args
    return tuple(a.to(dtype) if isinstance(a, Tensor) and a.is_floating_point() else a for a in args)


def stored_rows(x: Tensor) -> Tensor:
    """The rows of ``x`` with distinct storage: ``x[:1]`` when every row is the same memory (stride 0 along
    the batch, as ``x.expand(K, ...)``), else ``x``."""
    return x[:1] if x.dim() > 0 and x.shape[0] > 1 and x.stride(0) == 0 else x


def row_chunks(x: Tensor):
    """``x`` in slices of whole rows of at most :data:`CHECK_CHUNK` elements (one row at least), so that a
    check over every row costs the memory of one slice, not of ``len(x)`` rows."""
    step = max(1, CHECK_CHUNK // max(1, x[:1].numel()))
    for start in range(0, x.shape[0], step):
        yield x[start:start + step]


def distinct_rows(inputs, additional_args, n) -> Tuple[Tensor, Tensor]:
    """Indices of the distinct examples, and for each example the position of its representative.

    Rows are grouped by a cheap fingerprint (per-row sums) and confirmed with
    ``torch.equal``, so a batch of distinct scans costs one pass. The sums are
    taken one row at a time (memory of one row, whatever ``n``), and a batch
    whose rows all share one storage (``x.expand(K, ...)``, the K outputs of
    one scan) is one example without looking at its values.

    Examples::

        >>> x = torch.stack([torch.zeros(2), torch.ones(2), torch.zeros(2)])
        >>> distinct_rows((x,), (), 3)
        (tensor([0, 1]), tensor([0, 1, 0]))
    """
    device = inputs[0].device
    per_example = [a for a in (additional_args or ()) if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n]
    tensors = [t.detach() for t in list(inputs) + per_example]
    if all(stored_rows(t).shape[0] == 1 for t in tensors):
        return torch.zeros(1, dtype=torch.long, device=device), torch.zeros(n, dtype=torch.long, device=device)
    prints = torch.stack([torch.stack([t[i].double().sum() for t in tensors]) for i in range(n)]).cpu().tolist()
    groups: Dict[Tuple[float, ...], List[int]] = {}
    distinct: List[int] = []
    rows_of: List[int] = []
    for i in range(n):
        candidates = groups.setdefault(tuple(prints[i]), [])
        for pos in candidates:
            j = distinct[pos]
            if all(torch.equal(t[i], t[j]) for t in tensors):
                rows_of.append(pos)
                break
        else:
            candidates.append(len(distinct))
            rows_of.append(len(distinct))
            distinct.append(i)
    return torch.tensor(distinct, device=device), torch.tensor(rows_of, device=device)
