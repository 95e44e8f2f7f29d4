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
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Set, Tuple

import torch
import torch.fx as fx
from torch import Tensor
from torch.nn import Module

logger = logging.getLogger(__name__)


class _LeafTracer(fx.Tracer):
    """A tracer that keeps one named module (the masked layer) as a leaf."""

    def __init__(self, leaf_name: str):
        super().__init__()
        self.leaf_name = leaf_name

    def is_leaf_module(self, m: Module, qualname: str) -> bool:
        return qualname == self.leaf_name or super().is_leaf_module(m, qualname)


def _qualified_name(model: Module, layer: Module) -> Optional[str]:
    for name, module in model.named_modules():
        if module is layer:
            return name
    return None


class _FastRunner:
    """Evaluates the suffix of a traced model given a mask; see the module docstring."""

    name = "fast"

    def __init__(self, gm: fx.GraphModule, layer_node: fx.Node, inputs, additional_args, to_input: bool):
        self.gm = gm
        self.layer_node = layer_node
        self.to_input = to_input
        self.args = (*inputs, *additional_args)
        self.n = inputs[0].shape[0]
        graph_nodes = list(gm.graph.nodes)
        self.placeholders = [nd for nd in graph_nodes if nd.op == "placeholder"]
        # Nodes whose value depends on the mask.
        dependent: Set[fx.Node] = {layer_node}
        for nd in graph_nodes:
            if nd is not layer_node and any(a in dependent for a in nd.all_input_nodes):
                dependent.add(nd)
        self.suffix = [nd for nd in graph_nodes if nd in dependent and nd.op != "output"]
        self.output_node = next(nd for nd in graph_nodes if nd.op == "output")
        # Values crossing into the suffix from the rest.
        boundary: Set[fx.Node] = set()
        for nd in self.suffix + [self.output_node]:
            for a in nd.all_input_nodes:
                if a not in dependent:
                    boundary.add(a)
        if not to_input:
            boundary.add(layer_node)  # its stored output is what gets masked
        self.boundary = boundary
        # Values that carry the batch (depend on an input), to be indexed by rows.
        batched: Set[fx.Node] = set(self.placeholders[: len(inputs)])
        batched |= {
            p for p, a in zip(self.placeholders[len(inputs):], additional_args)
            if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == self.n
        }
        for nd in graph_nodes:
            if any(a in batched for a in nd.all_input_nodes):
                batched.add(nd)
        self.batched = batched
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
        for nd in self.gm.graph.nodes:
            if nd.op == "placeholder":
                try:
                    env[nd] = next(arg_iter)
                except StopIteration:
                    env[nd] = nd.args[0] if nd.args else None  # default value
            elif nd.op == "output":
                output = fx.node.map_arg(nd.args[0], lambda a: env[a])
            else:
                env[nd] = self._run_node(nd, env)
        self.stored = {nd: _detach(env[nd]) for nd in self.boundary}
        if self.to_input:
            feature = env[self.layer_node.args[0]]
        else:
            feature = env[self.layer_node]
        self._reference = (output, feature)
        return output, feature

    def _boundary_for(self, rows: Tensor) -> Dict[fx.Node, Any]:
        """Stored values indexed by ``rows``; cached, since every step of a chunk uses the same rows."""
        if self._rows is not rows:
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


def build_fast_runner(forward_func, layer: Module, inputs, additional_args, to_input: bool) -> Optional[_FastRunner]:
    """A :class:`_FastRunner` for ``forward_func``, or None when the fast path does not apply.

    The runner is checked before use: its suffix, run on every example twice
    over (a batch of ``2N``) with the layer's tensor unchanged, must reproduce the model's
    output; otherwise (e.g. a batch size baked into a ``view``) None is returned.
    """
    if not isinstance(forward_func, Module):
        logger.info("SMOCAM: forward_func is not an nn.Module; using the hook path")
        return None
    name = _qualified_name(forward_func, layer)
    if not name:
        logger.info("SMOCAM: the layer is not a submodule of the model; using the hook path")
        return None
    try:
        graph = _LeafTracer(name).trace(forward_func)
        gm = fx.GraphModule(forward_func, graph)
    except Exception as exc:  # any tracing failure means: use the hook path
        logger.info("SMOCAM: the model cannot be traced with torch.fx (%s: %s); using the hook path",
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return None
    nodes = [nd for nd in gm.graph.nodes if nd.op == "call_module" and nd.target == name]
    if len(nodes) != 1:
        logger.info("SMOCAM: the layer appears %d times in the traced graph; using the hook path", len(nodes))
        return None
    placeholders = [nd for nd in gm.graph.nodes if nd.op == "placeholder"]
    if len(placeholders) < len(inputs) + len(additional_args):
        logger.info("SMOCAM: the traced forward takes fewer arguments than given; using the hook path")
        return None
    runner = _FastRunner(gm, nodes[0], inputs, additional_args, to_input)
    try:
        with torch.no_grad():
            output, feature = runner.reference()
            n = inputs[0].shape[0]
            rows = torch.arange(n, device=inputs[0].device).repeat(2)
            check = runner(lambda t: t, rows)
        if not (isinstance(output, Tensor) and isinstance(check, Tensor)):
            raise TypeError("the model does not return a single tensor")
        if check.shape != (2 * n, *output.shape[1:]) or not torch.allclose(
            check, output.repeat(2, *([1] * (output.dim() - 1))), rtol=1e-4, atol=1e-5 * (1 + float(output.abs().max()))
        ):
            raise ValueError("the suffix does not reproduce the model's output")
    except Exception as exc:
        logger.info("SMOCAM: the fast path failed its check (%s: %s); using the hook path",
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return None
    return runner
