"""Runners: evaluate the network with a perturbation applied in the layer (fast path, hook path, kernel plans).

A runner is called as ``runner(perturb, rows)`` and returns the model's output
for the examples ``rows`` with the layer's tensor replaced by
``perturb(tensor)``; ``runner.reference()`` gives the unmasked output and the
layer's tensor. Three kinds:

* the fast path (:func:`captum_smocam.fastpath.build_fast_runner`): the network
  before the layer runs once, each step runs the traced suffix;
* :class:`HookRunner`: the whole forward function at every step, the
  perturbation applied by a forward hook (any forward function);
* :class:`PlannedRunner`: either of them under a kernel plan
  (:mod:`captum_smocam.kernels`) and, if asked, ``torch.autocast``.

:class:`Network` is the model as one call evaluates it (forward function,
layer, side, plan, autocast); :func:`call_plan` picks the call's plan
(:mod:`captum_smocam.kernel_choice`), and :func:`model_in_dtype` gives the copy
of the model in another dtype (the poster's float64) that runs instead.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import weakref
from copy import deepcopy
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor
from torch.nn import Module

from .. import kernel_choice
from .._cache import LRUCache
from .._model_state import layer_name, module_fingerprint
from ..fastpath import build_fast_runner, reuse_splits
from ..kernels import STOCK, KernelPlan
from .inputs import index_rows

logger = logging.getLogger(__name__)

__all__ = ["HookRunner", "PlannedRunner", "Network", "build_runner", "call_plan", "model_in_dtype",
           "COPY_CACHE_SIZE"]


class _LayerReached(Exception):
    """Raised by a capture hook to stop a forward pass once the layer's tensor is known."""


class HookRunner:
    """Evaluates the whole forward function with the perturbation applied by a hook on the layer.

    Works for any forward function; every step pays for the layers before the
    masked one, which the fast path (:mod:`captum_smocam.fastpath`) avoids.
    """

    name = "hook"

    def __init__(self, forward_func, layer, inputs, additional_args, attribute_to_layer_input):
        self.forward_func = forward_func
        self.layer = layer
        self.inputs = inputs
        self.additional_args = additional_args or ()
        self.to_input = attribute_to_layer_input
        self.n = inputs[0].shape[0]

    def _forward(self, rows: Tensor) -> Tensor:
        inputs = tuple(index_rows(x, rows, self.n) for x in self.inputs)
        args = tuple(index_rows(a, rows, self.n) for a in self.additional_args)
        return self.forward_func(*inputs, *args)

    def _capture(self, stop: bool) -> Tuple[Any, Tensor]:
        seen: List[Any] = []

        def capture_out(module, args, output):
            seen.append(output)
            if stop:
                raise _LayerReached

        def capture_in(module, args):
            seen.append(args[0] if args else None)
            if stop:
                raise _LayerReached

        handle = (
            self.layer.register_forward_pre_hook(capture_in)
            if self.to_input
            else self.layer.register_forward_hook(capture_out)
        )
        output = None
        try:
            output = self._forward(torch.arange(self.n, device=self.inputs[0].device))
        except _LayerReached:
            pass
        finally:
            handle.remove()
        if not seen:
            raise ValueError(
                f"the layer {type(self.layer).__name__} is never reached by the forward pass; "
                "pass a module that the model calls"
            )
        if len(seen) > 1:
            raise ValueError(
                f"the layer {type(self.layer).__name__} is called {len(seen)} times in one forward "
                "pass; SMOCAM needs a layer that is used once"
            )
        if not isinstance(seen[0], Tensor):
            raise TypeError(
                f"the layer's {'input' if self.to_input else 'output'} is a "
                f"{type(seen[0]).__name__}, expected a Tensor"
            )
        return output, seen[0]

    def reference(self) -> Tuple[Tensor, Tensor]:
        """Unmasked output and the tensor the mask will act on (all rows)."""
        return self._capture(stop=False)

    def layer_tensor(self) -> Tensor:
        """The tensor the mask acts on, without running the layers after it."""
        return self._capture(stop=True)[1]

    def __call__(self, perturb: Callable[[Tensor], Tensor], rows: Tensor) -> Tensor:
        if self.to_input:

            def hook(module, args):
                return (perturb(args[0]), *args[1:])

            handle = self.layer.register_forward_pre_hook(hook)
        else:

            def hook(module, args, output):
                return perturb(output)

            handle = self.layer.register_forward_hook(hook)
        try:
            return self._forward(rows)
        finally:
            handle.remove()


class PlannedRunner:
    """A runner whose network evaluations run under a kernel plan (and ``torch.autocast`` if asked).

    Under autocast the outputs and the layer's tensor come back in ``dtype``
    (the mask's and the objective's), whatever precision the network ran in.
    """

    def __init__(self, runner, plan, autocast: Optional[torch.dtype], dtype: torch.dtype) -> None:
        self.runner, self.plan, self.autocast, self.dtype = runner, plan, autocast, dtype
        self.name, self.to_input = getattr(runner, "name", None), getattr(runner, "to_input", None)

    def context(self, device: torch.device):
        """The plan's kernels, and autocast if asked, on ``device``."""
        if self.autocast is None:
            return self.plan.activate()
        stack = contextlib.ExitStack()
        stack.enter_context(self.plan.activate())
        stack.enter_context(torch.autocast(device_type=device.type, dtype=self.autocast))
        return stack

    def _cast(self, value: Any) -> Any:
        if self.autocast is not None and isinstance(value, Tensor) and value.is_floating_point():
            return value.to(self.dtype)
        return value

    def _device(self) -> torch.device:
        args = getattr(self.runner, "inputs", None) or getattr(self.runner, "args", None) or ()
        return next((a.device for a in args if isinstance(a, Tensor)), torch.device("cpu"))

    def reference(self):
        with self.context(self._device()):
            output, feature = self.runner.reference()
        return self._cast(output), self._cast(feature)

    def layer_tensor(self) -> Tensor:
        with self.context(self._device()):
            return self._cast(self.runner.layer_tensor())

    def __call__(self, perturb: Callable[[Tensor], Tensor], rows: Tensor) -> Tensor:
        with self.context(rows.device):
            out = self.runner(perturb, rows)
        return self._cast(out)


@dataclasses.dataclass(frozen=True)
class Network:
    """The network as one call evaluates it: forward function, masked layer and side, kernel plan, autocast.

    ``dtype`` is the type of the mask and the objective (the outputs come back
    in it under autocast).
    """

    forward_func: Any
    layer: Module
    to_input: bool
    plan: KernelPlan
    autocast: Optional[torch.dtype]
    dtype: torch.dtype

    def planned(self, runner) -> PlannedRunner:
        """``runner`` evaluating under this call's kernel plan and autocast setting."""
        return PlannedRunner(runner, self.plan, self.autocast, self.dtype)

    def hook(self, inputs, args) -> PlannedRunner:
        """A planned :class:`HookRunner` of the network on ``inputs`` and ``args``."""
        return self.planned(HookRunner(self.forward_func, self.layer, inputs, args, self.to_input))


def build_runner(forward_func, layer, inputs, args, to_input, fast):
    """The fast path's runner when ``fast`` and the model can be split, else a :class:`HookRunner`."""
    runner = None
    if fast:
        runner = build_fast_runner(forward_func, layer, inputs, args, to_input)
    if runner is None:
        runner = HookRunner(forward_func, layer, inputs, args, to_input)
    return runner


def call_plan(forward_func, layer, inputs, additional_args, distinct, settings) -> Tuple[KernelPlan, str]:
    """The kernel plan of a call (see ``kernel_plan`` of :meth:`SMOCAM.attribute`), and where it came from.

    ``settings`` is the call's :class:`~captum_smocam.smocam.settings.CallSettings`;
    a plan is probed on one copy of the first distinct example (``distinct[:1]``).
    """
    kernel_plan, autocast = settings.kernel_plan, settings.autocast
    if isinstance(kernel_plan, KernelPlan):
        return kernel_plan, "given"
    module = forward_func if isinstance(forward_func, Module) else None
    training = module is not None and any(m.training for m in module.modules())
    mode = "fastest" if kernel_plan == "fastest" else kernel_choice.kernel_tuning_mode()
    why_stock = ("asked for" if kernel_plan in ("stock", "off") else
                 f"{kernel_choice.TUNING_ENV} is off" if mode == "off" else
                 "forward_func is not an nn.Module" if module is None else
                 "the model is in training mode" if training else
                 "autocast" if autocast is not None else None)
    name = None if module is None else layer_name(module, layer)
    if why_stock is None and name is None:
        why_stock = "the layer is not a submodule of the model"
    if why_stock is None and kernel_choice.candidates(inputs[0].device, inputs[0].dtype) == [STOCK]:
        why_stock = f"no other plan on {inputs[0].device.type}"
    if why_stock is not None:
        return STOCK, f"stock: {why_stock}"
    key = kernel_choice.plan_key(module, name, [x.shape[1:] for x in inputs], inputs[0].dtype,
                                 inputs[0].device, settings.to_input)
    key += f"|{mode}"

    def choose():
        one = distinct[:1]
        probe_inputs = tuple(x[one] for x in inputs)
        probe_args = tuple(index_rows(a, one, inputs[0].shape[0]) for a in (additional_args or ()))
        try:
            runner = build_runner(forward_func, layer, probe_inputs, probe_args, settings.to_input, settings.fast)
            return kernel_choice.choose_plan(_probe(runner, inputs[0].device), _probe_masks(runner),
                                             fastest=(mode == "fastest"))
        except Exception as exc:  # the probe could not run: PyTorch's kernels, padded
            logger.info("SMOCAM: no kernel plan could be tried (%s: %s); using PyTorch's kernels",
                        type(exc).__name__, exc)
            return dataclasses.replace(STOCK, reason=f"probe failed ({type(exc).__name__})")

    return kernel_choice.plan_for(key, choose)


def _probe_masks(runner) -> Tensor:
    """Five test masks in ``[0.5, 1.5)`` of the layer's spatial shape (seeded), on its device and dtype."""
    with torch.no_grad():
        _, feature = runner.reference()
    g = torch.Generator().manual_seed(0)
    masks = (0.5 + torch.rand((5, 1, *feature.shape[2:]), generator=g, dtype=torch.float64))
    return masks.to(device=feature.device, dtype=feature.dtype)


def _probe(runner, device: torch.device):
    """``probe(plan, m)`` of :func:`~captum_smocam.kernel_choice.verify`: outputs and mask gradients of ``len(m)``
    copies of the runner's one example under ``plan``."""
    weights: Dict[int, Tensor] = {}

    def probe(plan, m):
        rows = torch.zeros(m.shape[0], dtype=torch.long, device=device)
        m = m.detach().clone().requires_grad_(True)
        with torch.enable_grad(), plan.activate():
            out = runner(lambda t: t * m, rows)
        flat = out.reshape(m.shape[0], -1)
        if flat.shape[1] not in weights:
            weights[flat.shape[1]] = torch.linspace(-1.0, 1.0, flat.shape[1], dtype=flat.dtype, device=flat.device)
        (grad,) = torch.autograd.grad((flat * weights[flat.shape[1]]).sum(), m)
        return flat.detach(), grad

    return probe


#: How many copies of models in another dtype are kept per process (the latest; ``dtype=``, the poster's float64).
COPY_CACHE_SIZE = 2
_DTYPE_COPIES = LRUCache(COPY_CACHE_SIZE)


def held_tensors(module: Optional[Module]) -> Tuple[Tensor, ...]:
    """The parameters and buffers of ``module``: a cache entry holds them, so that no other tensor can take their
    identity while the entry lives."""
    return () if module is None else (*module.parameters(), *module.buffers())


def model_in_dtype(model: Module, layer: Module, dtype: torch.dtype) -> Tuple[Module, Module]:
    """A copy of ``model`` in ``dtype`` and the copy of ``layer`` inside it (the user's model is untouched).

    The copy is made once and reused while the model's state is unchanged
    (:func:`~captum_smocam._model_state.module_fingerprint`), so its traced
    split is reused too.
    """
    name = layer_name(model, layer)
    if name is None:
        logger.info("SMOCAM: the layer is not a submodule of the model; the optimisation stays in the model's dtype")
        return model, layer
    key = (id(model), name, dtype, module_fingerprint(model))
    hit = _DTYPE_COPIES.get(key) if reuse_splits() else None
    if hit is not None and hit[0]() is model:
        copy = hit[1]
    else:
        copy = deepcopy(model).to(dtype)
        _DTYPE_COPIES.put(key, (weakref.ref(model), copy, held_tensors(model)))
    return copy, copy.get_submodule(name)
