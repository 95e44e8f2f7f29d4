"""The cached-prefix fast path: run the network before the masked layer once.

Nothing computed before the masked layer depends on the mask, yet a hook-based
loop recomputes it at every optimisation step. Here the model is traced with
:mod:`torch.fx` (the masked layer kept as a leaf), the graph's nodes are split
into those that depend on the layer's output (the *suffix*) and the rest, the
whole graph runs once to store the values that cross from the rest into the
suffix (the *boundary*: the layer's output, and e.g. a skip connection that
starts before the layer and joins after it), and each optimisation step runs
the suffix alone.

When the model cannot be traced (data-dependent control flow, a forward
function that is not a module, ...) or the split suffix does not reproduce the
model's output, :func:`build_fast_runner` returns None and SMOCAM uses the hook
path; a ``logging`` message at INFO level says why.

Tracing and splitting are done once per model and layer, not per call: the
split graph (:class:`_Split`) is kept in a small per-process cache keyed on the
model's identity and a fingerprint of its state (:func:`module_fingerprint`:
every submodule's identity, type, train/eval mode and plain attributes, every
parameter's and buffer's storage and version), so replacing or modifying a
weight, swapping a submodule or switching ``train()``/``eval()`` traces again,
and an entry is dropped when its model is garbage-collected. What a cached
split cannot see is a change to code the forward runs (e.g. a monkey-patched
function it calls); :func:`clear_cache` forgets everything; the environment
variable ``SMOCAM_REUSE_SPLITS=0`` turns reuse off (read at every call), and
:func:`set_reuse_splits` sets it for the process.
"""
from __future__ import annotations

import logging
import weakref
from typing import Any, Callable, Dict, Hashable, Optional, Set, Tuple, Union

import torch
import torch.fx as fx
from torch import Tensor
from torch.nn import Module

from . import _settings
from ._cache import LRUCache
from ._model_state import layer_name, module_fingerprint

logger = logging.getLogger(__name__)

__all__ = ["build_fast_runner", "clear_cache", "cache_info", "reuse_splits", "set_reuse_splits", "call_signature",
           "split_key", "REUSE_ENV", "SPLIT_CACHE_SIZE"]

#: Environment variable that turns reuse across calls off (``0``, ``off``, ``false``, ``no``), read at every
#: call (:mod:`captum_smocam._settings`).
REUSE_ENV = _settings.REUSE_SPLITS
#: Most (model, layer) splits kept per process (least recently used dropped first).
SPLIT_CACHE_SIZE = 8


def reuse_splits() -> bool:
    """Whether splits and model copies are reused across calls: :func:`set_reuse_splits`, else the environment."""
    return _settings.reuse_splits()


def set_reuse_splits(enabled: Optional[bool]) -> None:
    """Reuse traced and split models across calls in this process: True, False (trace at every call, as before
    the cache), or None (follow ``SMOCAM_REUSE_SPLITS``)."""
    if enabled is not None and not isinstance(enabled, bool):
        raise ValueError(f"expected True, False or None, got {enabled!r}")
    _settings.set_override(REUSE_ENV, enabled)


class _LeafTracer(fx.Tracer):
    """A tracer that keeps one named module (the masked layer) as a leaf."""

    def __init__(self, leaf_name: str):
        super().__init__()
        self.leaf_name = leaf_name

    def is_leaf_module(self, m: Module, qualname: str) -> bool:
        return qualname == self.leaf_name or super().is_leaf_module(m, qualname)


class _Split:
    """A model traced with the layer as a leaf, its nodes split at the layer; holds no tensor of a call.

    ``suffix``: the nodes whose value depends on the layer's tensor, in graph
    order; ``boundary``: the nodes outside the suffix whose values the suffix
    (or the output) reads — the layer's output itself unless the layer's
    *input* is masked. :meth:`batched` lists the nodes that carry the batch,
    for a given pattern of per-example forward arguments.
    """

    def __init__(self, gm: fx.GraphModule, layer_node: fx.Node, to_input: bool):
        self.gm = gm
        self.layer_node = layer_node
        self.to_input = to_input
        self.nodes = list(gm.graph.nodes)
        self.placeholders = [nd for nd in self.nodes if nd.op == "placeholder"]
        # Nodes whose value depends on the mask.
        dependent: Set[fx.Node] = {layer_node}
        for nd in self.nodes:
            if nd is not layer_node and any(a in dependent for a in nd.all_input_nodes):
                dependent.add(nd)
        self.suffix = [nd for nd in self.nodes if nd in dependent and nd.op != "output"]
        self.output_node = next(nd for nd in self.nodes if nd.op == "output")
        # Values crossing into the suffix from the rest. When the layer's output is masked, the stored
        # output stands in for the layer, so its inputs are not read (nor kept, nor copied per chunk).
        boundary: Set[fx.Node] = set()
        for nd in self.suffix + [self.output_node]:
            if nd is layer_node and not to_input:
                continue
            for a in nd.all_input_nodes:
                if a not in dependent:
                    boundary.add(a)
        if not to_input:
            boundary.add(layer_node)  # its stored output is what gets masked
        self.boundary = boundary
        # Position of each node's last reader, so that the full pass can drop a value once it is read.
        self.last_use: Dict[fx.Node, int] = {}
        for i, nd in enumerate(self.nodes):
            for a in nd.all_input_nodes:
                self.last_use[a] = i
        self._batched: Dict[Tuple[int, Tuple[bool, ...]], Set[fx.Node]] = {}
        #: Verdict of the suffix check per call signature: True, or the reason it failed.
        self.checked: Dict[Hashable, Union[bool, str]] = {}

    def batched(self, n_inputs: int, per_example: Tuple[bool, ...]) -> Set[fx.Node]:
        """Nodes that depend on an input or on a per-example forward argument."""
        key = (n_inputs, per_example)
        if key not in self._batched:
            batched: Set[fx.Node] = set(self.placeholders[:n_inputs])
            batched |= {p for p, flag in zip(self.placeholders[n_inputs:], per_example) if flag}
            for nd in self.nodes:
                if any(a in batched for a in nd.all_input_nodes):
                    batched.add(nd)
            self._batched[key] = batched
        return self._batched[key]


class _FastRunner:
    """Evaluates the suffix of a traced model given a mask; see the module docstring."""

    name = "fast"

    def __init__(self, split: _Split, inputs, additional_args, to_input: bool):
        self.split = split
        self.gm = split.gm
        self.layer_node = split.layer_node
        self.to_input = to_input
        self.args = (*inputs, *additional_args)
        self.n = inputs[0].shape[0]
        self.suffix, self.output_node, self.boundary = split.suffix, split.output_node, split.boundary
        per_example = tuple(isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == self.n for a in additional_args)
        self.batched = split.batched(len(inputs), per_example)
        self.stored: Dict[fx.Node, Any] = {}
        self._reference: Optional[Tuple[Any, Tensor]] = None
        self._rows: Optional[Tensor] = None
        self._indexed: Dict[fx.Node, Any] = {}

    # -- one node ---------------------------------------------------------- #
    def _run_node(self, nd: fx.Node, env: Dict[fx.Node, Any]) -> Any:
        args = fx.node.map_arg(nd.args, lambda a: env[a])
        kwargs = fx.node.map_arg(nd.kwargs, lambda a: env[a])
        if nd.op == "call_module":
            return self.gm.get_submodule(nd.target)(*args, **kwargs)
        if nd.op == "call_function":
            return nd.target(*args, **kwargs)
        if nd.op == "call_method":
            self_obj, *rest = args
            return getattr(self_obj, nd.target)(*rest, **kwargs)
        if nd.op == "get_attr":
            obj: Any = self.gm
            for part in nd.target.split("."):
                obj = getattr(obj, part)
            return obj
        raise RuntimeError(f"unexpected node {nd.op} in the suffix")

    def reference(self) -> Tuple[Any, Tensor]:
        """Run the whole graph once; keep the boundary values and the layer's tensor."""
        if self._reference is not None:
            return self._reference
        env: Dict[fx.Node, Any] = {}
        arg_iter = iter(self.args)
        feature_node = self.layer_node.args[0] if self.to_input else self.layer_node
        keep = self.boundary | {feature_node}
        for i, nd in enumerate(self.split.nodes):
            if nd.op == "placeholder":
                try:
                    env[nd] = next(arg_iter)
                except StopIteration:
                    env[nd] = nd.args[0] if nd.args else None  # default value
            elif nd.op == "output":
                output = fx.node.map_arg(nd.args[0], lambda a: env[a])
            else:
                env[nd] = self._run_node(nd, env)
                # Values read for the last time go now: the pass holds a few layers' activations, not all.
                for a in nd.all_input_nodes:
                    if self.split.last_use.get(a) == i and a not in keep:
                        del env[a]
        self.stored = {nd: _detach(env[nd]) for nd in self.boundary}
        feature = env[feature_node]
        self._reference = (output, feature)
        return output, feature

    def _boundary_for(self, rows: Tensor) -> Dict[fx.Node, Any]:
        """Stored values indexed by ``rows``; cached, since every step of a chunk uses the same rows."""
        if self._rows is not rows:
            self._indexed = {}  # the previous chunk's rows go before this chunk's are made
            self._indexed = {
                nd: (v[rows] if nd in self.batched and isinstance(v, Tensor) and v.dim() > 0 else v)
                for nd, v in self.stored.items()
            }
            self._rows = rows
        return self._indexed

    def __call__(self, perturb: Callable[[Tensor], Tensor], rows: Tensor) -> Tensor:
        """The model's output for examples ``rows`` with the layer's tensor replaced by ``perturb(tensor)``."""
        env: Dict[fx.Node, Any] = dict(self._boundary_for(rows))
        for nd in self.suffix:
            if nd is self.layer_node:
                if self.to_input:
                    args = fx.node.map_arg(nd.args, lambda a: env[a])
                    kwargs = fx.node.map_arg(nd.kwargs, lambda a: env[a])
                    env[nd] = self.gm.get_submodule(nd.target)(perturb(args[0]), *args[1:], **kwargs)
                else:
                    env[nd] = perturb(env[nd])
            else:
                env[nd] = self._run_node(nd, env)
        return fx.node.map_arg(self.output_node.args[0], lambda a: env[a])


def _detach(v: Any) -> Any:
    return v.detach() if isinstance(v, Tensor) else v


# --------------------------------------------------------------------------- #
# Reuse across calls.
# --------------------------------------------------------------------------- #
def call_signature(inputs, additional_args) -> Optional[Tuple]:
    """Shapes, dtypes and devices of the inputs and tensor arguments, other arguments' values; None if unhashable."""
    sig = []
    for x in (*inputs, *additional_args):
        if isinstance(x, Tensor):
            sig.append(("T", tuple(x.shape), x.dtype, x.device.type, x.device.index))
        else:
            try:
                hash(x)
            except TypeError:
                return None
            sig.append(("V", type(x).__name__, x))
    return tuple(sig)


class _Entry:
    def __init__(self, model: Module, value: Any):
        self.model_ref = weakref.ref(model)
        self.value = value


_SPLITS = LRUCache(SPLIT_CACHE_SIZE)


def _forget_model(model_id: int) -> None:
    for key in [k for k in _SPLITS.keys() if k[0] == model_id]:
        _SPLITS.pop(key, None)


def clear_cache() -> None:
    """Forget every traced and split model (the next call traces again)."""
    _SPLITS.clear()


def cache_info() -> Dict[str, int]:
    """``{"entries": ..., "hits": ..., "misses": ...}`` of the split cache (for tests and benchmarks)."""
    return {"entries": len(_SPLITS), **_STATS}


_STATS = {"hits": 0, "misses": 0}


def _cached(model: Module, key: Tuple, build: Callable[[], Any]) -> Any:
    """``build()`` once per ``key`` (whose first item is ``id(model)``) while ``model`` lives."""
    if not reuse_splits():
        return build()
    entry = _SPLITS.get(key)
    if entry is not None and entry.model_ref() is model:
        _STATS["hits"] += 1
        return entry.value
    _STATS["misses"] += 1
    value = build()
    if not any(k[0] == id(model) for k in _SPLITS.keys()):
        weakref.finalize(model, _forget_model, id(model))
    _SPLITS.put(key, _Entry(model, value))
    return value


def _trace_split(model: Module, layer_name: str, n_args: int, to_input: bool) -> Union[_Split, str]:
    """The :class:`_Split` of ``model`` at ``layer_name``, or why there is none."""
    try:
        graph = _LeafTracer(layer_name).trace(model)
        gm = fx.GraphModule(model, graph)
    except Exception as exc:  # any tracing failure means: use the hook path
        return (f"the model cannot be traced with torch.fx ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''})")
    nodes = [nd for nd in gm.graph.nodes if nd.op == "call_module" and nd.target == layer_name]
    if len(nodes) != 1:
        return f"the layer appears {len(nodes)} times in the traced graph"
    placeholders = [nd for nd in gm.graph.nodes if nd.op == "placeholder"]
    if len(placeholders) < n_args:
        return "the traced forward takes fewer arguments than given"
    return _Split(gm, nodes[0], to_input)


def split_key(model: Module, layer_name: str, n_args: int, to_input: bool) -> Tuple:
    """The key of a model's split in the cache: identity, layer, and :func:`module_fingerprint`."""
    return (id(model), layer_name, n_args, bool(to_input), module_fingerprint(model))


def _check(runner: _FastRunner, n: int, device) -> Union[bool, str]:
    """True if the suffix, run on every example twice over, reproduces the graph's output; else why not."""
    try:
        with torch.no_grad():
            output, _ = runner.reference()
            rows = torch.arange(n, device=device).repeat(2)
            check = runner(lambda t: t, rows)
        if not (isinstance(output, Tensor) and isinstance(check, Tensor)):
            raise TypeError("the model does not return a single tensor")
        if check.shape != (2 * n, *output.shape[1:]) or not torch.allclose(
            check, output.repeat(2, *([1] * (output.dim() - 1))), rtol=1e-4, atol=1e-5 * (1 + float(output.abs().max()))
        ):
            raise ValueError("the suffix does not reproduce the model's output")
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return True


def build_fast_runner(forward_func, layer: Module, inputs, additional_args, to_input: bool) -> Optional[_FastRunner]:
    """A :class:`_FastRunner` for ``forward_func``, or None when the fast path does not apply.

    The model is traced and split once per model state (see the module
    docstring); the runner is checked once per call signature (shapes,
    dtypes, devices): its suffix, run on every example twice over (a batch of
    ``2N``) with the layer's tensor unchanged, must reproduce the model's
    output; otherwise (e.g. a batch size baked into a ``view``) None is
    returned.

    Args:
        forward_func (Module): the model.
        layer (Module): the masked layer, a submodule of ``forward_func``.
        inputs (tuple[Tensor, ...]): ``N x ...`` inputs.
        additional_args (tuple): further forward arguments.
        to_input (bool): mask the layer's input instead of its output.

    Returns:
        _FastRunner or None.
    """
    if not isinstance(forward_func, Module):
        logger.info("SMOCAM: forward_func is not an nn.Module; using the hook path")
        return None
    name = layer_name(forward_func, layer)
    if not name:
        logger.info("SMOCAM: the layer is not a submodule of the model; using the hook path")
        return None
    n_args = len(inputs) + len(additional_args)
    key = split_key(forward_func, name, n_args, to_input)
    split = _cached(forward_func, key, lambda: _trace_split(forward_func, name, n_args, to_input))
    if isinstance(split, str):
        logger.info("SMOCAM: %s; using the hook path", split)
        return None
    runner = _FastRunner(split, inputs, additional_args, to_input)
    signature = call_signature(inputs, additional_args)
    verdict = split.checked.get(signature) if (signature is not None and reuse_splits()) else None
    if verdict is None:
        verdict = _check(runner, inputs[0].shape[0], inputs[0].device)
        if signature is not None:
            split.checked[signature] = verdict
    if verdict is not True:
        logger.info("SMOCAM: the fast path failed its check (%s); using the hook path", verdict)
        return None
    return runner
