"""Sanity of a map: does it change when the model's weights are destroyed? (Adebayo et al. 2018)

:func:`spearman` compares two maps; :func:`cascading_randomization`
re-initialises the layers from the output end and compares each new map with
the original one.

References:
    J. Adebayo, J. Gilmer, M. Muelly, I. Goodfellow, M. Hardt, B. Kim,
    "Sanity checks for saliency maps", NeurIPS 2018.
"""
from __future__ import annotations

import copy
import numbers
from typing import Callable

import numpy as np
import torch
from scipy.stats import rankdata

from ._inputs import ArrayLike, _as_map, _pair

__all__ = ["spearman", "cascading_randomization"]


def spearman(a: ArrayLike, b: ArrayLike, *, abs: bool = False) -> float:
    r"""Spearman rank correlation of two maps (flattened).

    .. math::

        \rho(a, b) = \operatorname{corr}\big(R(a), R(b)\big)

    the Pearson correlation of the ranks (ties receive their average rank).
    With ``abs=True`` the ranks of :math:`|a|` and :math:`|b|` are used, as in
    Adebayo et al. (2018), who report both variants because the sign of many
    attribution methods flips under randomisation while their magnitude
    pattern persists.

    Args:
        a (numpy.ndarray or torch.Tensor): a map.
        b (numpy.ndarray or torch.Tensor): a map of the same spatial shape.
        abs (bool, optional): compare absolute values. Default: ``False``

    Returns:
        float: :math:`\rho \in [-1, 1]`, or ``nan`` when a map is constant
        (its ranks have no variance, so no correlation is defined).

    Examples::

        >>> import numpy as np
        >>> a = np.arange(24.0).reshape(2, 3, 4)
        >>> spearman(a, a ** 3), spearman(a, -a), spearman(-a, a, abs=True)
        (1.0, -1.0, 1.0)
    """
    x, y = _pair(_as_map(a, "a"), _as_map(b, "b"), "a", "b")
    if abs:
        x, y = np.abs(x), np.abs(y)
    rx = rankdata(x.ravel())
    ry = rankdata(y.ravel())
    rx -= rx.mean()
    ry -= ry.mean()
    denom = np.sqrt(np.dot(rx, rx) * np.dot(ry, ry))
    if denom == 0.0:
        return float("nan")
    return float(np.clip(np.dot(rx, ry) / denom, -1.0, 1.0))


def _default_layers(model: torch.nn.Module) -> list:
    """Names of modules owning parameters, output end first."""
    names = [
        name
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    return names[::-1]


def _resolve_layers(model: torch.nn.Module, layers) -> list:
    if layers is None:
        names = _default_layers(model)
        if not names:
            raise ValueError("model has no parameters; nothing to randomise")
        return names
    if isinstance(layers, (str, torch.nn.Module)):
        layers = [layers]
    by_name = dict(model.named_modules())
    by_id = {id(m): n for n, m in model.named_modules()}
    names = []
    for layer in layers:
        if isinstance(layer, torch.nn.Module):
            if id(layer) not in by_id:
                raise ValueError(f"layer {type(layer).__name__} is not a sub-module of the model")
            name = by_id[id(layer)]
        elif isinstance(layer, str):
            if layer not in by_name:
                raise ValueError(
                    f"layer {layer!r} is not a module of the model; expected one of "
                    f"{[n for n in by_name if n][:20]}"
                )
            name = layer
        else:
            raise TypeError(f"layers must hold module names or modules, got {layer!r}")
        if not any(True for _ in by_name[name].parameters()):
            raise ValueError(f"layer {name!r} has no parameters to randomise")
        names.append(name)
    if not names:
        raise ValueError("layers is empty; expected at least one layer to randomise")
    return names


def _reinitialise(module: torch.nn.Module, subtree: bool) -> None:
    """Re-initialise parameters (and normalisation statistics) in place.

    ``subtree=False`` touches only the parameters the module owns directly;
    ``subtree=True`` also every sub-module (a block named by the user).
    """
    for sub in module.modules() if subtree else [module]:
        own = list(sub.parameters(recurse=False))
        is_leaf = not any(True for _ in sub.children())
        reset = getattr(sub, "reset_parameters", None)
        if own and is_leaf and callable(reset):
            reset()
        elif own:
            with torch.no_grad():
                for p in own:
                    std = float(p.std()) if p.numel() > 1 else 0.0
                    p.normal_(0.0, std if np.isfinite(std) and std > 0 else 0.01)
        stats = getattr(sub, "reset_running_stats", None)
        if callable(stats):
            stats()


def cascading_randomization(
    model: torch.nn.Module,
    attribute_fn: Callable,
    inputs: torch.Tensor,
    target,
    *,
    layers=None,
    seed: int = 0,
    abs: bool = True,
    show_progress: bool = False,
):
    r"""Cascading model-parameter randomisation test (Adebayo et al. 2018).

    A map that explains the *model* must change when the model's learned
    weights are destroyed. On a deep copy of ``model`` the parameterised
    layers are re-initialised one after another, from the output end to the
    input end, so that after step :math:`j` the top :math:`j` layers are
    random; after each step the map is recomputed and compared with the
    original map by the Spearman rank correlation (:func:`spearman`). A
    method passes when the correlation drops quickly; a map that stays
    correlated after the top layers are random depends on the input more
    than on the model (e.g. edge detection). **Lower is better.**

    Re-initialisation: each layer's ``reset_parameters()`` (PyTorch's default
    initialiser for that layer) is called with torch's RNG seeded to
    ``seed + step`` inside ``torch.random.fork_rng`` (the caller's RNG state is
    untouched); a module without ``reset_parameters`` (or one with children)
    gets its own parameters drawn from :math:`\mathcal{N}(0, s^2)`, :math:`s`
    the standard deviation of the learned values (0.01 if undefined).
    BatchNorm-style layers also have their running statistics reset
    (``reset_running_stats()``): otherwise the learned mean and variance
    would survive the randomisation. Note that ``reset_parameters()`` of a
    normalisation layer sets :math:`\gamma = 1, \beta = 0`, i.e. the layer
    becomes the identity in eval mode rather than random.

    The user's ``model`` is never modified or passed to ``attribute_fn``; the
    original map is computed on an unmodified copy.

    Args:
        model (torch.nn.Module): the trained model.
        attribute_fn (Callable): ``attribute_fn(model_copy, inputs, target)``
            returning a map (numpy array or tensor) of a fixed shape.
        inputs (torch.Tensor): the input passed to ``attribute_fn``.
        target (Any): passed to ``attribute_fn`` unchanged.
        layers (sequence of str or torch.nn.Module, optional): layers to
            randomise, in the order given (list them from the output end for a
            cascading test). ``None`` selects every module that owns
            parameters directly (the leaf layers), in reverse registration
            order. Default: ``None``
        seed (int, optional): base seed of the re-initialisation.
            Default: ``0``
        abs (bool, optional): correlate absolute values (Adebayo et al.'s
            main variant). Default: ``True``
        show_progress (bool, optional): tqdm bar over the steps.
            Default: ``False``

    Returns:
        pandas.DataFrame: one row per step with columns ``step`` (1-based),
        ``layer`` (the module name randomised at that step; all earlier
        rows' layers stay random) and ``spearman`` (correlation with the
        original map).

    Examples::

        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 5 * 6, 1))
        >>> def grad_x_input(m, x, t):
        ...     x = x.clone().requires_grad_(True)
        ...     m(x)[:, t].sum().backward()
        ...     return (x.grad * x)[0, 0]
        >>> df = cascading_randomization(net, grad_x_input, torch.rand(1, 1, 4, 5, 6), 0)
        >>> list(df["layer"])
        ['3', '0']
    """
    import pandas as pd

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(attribute_fn):
        raise TypeError(f"attribute_fn must be callable, got {type(attribute_fn).__name__}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    names = _resolve_layers(model, layers)

    work = copy.deepcopy(model)
    original = _as_map(attribute_fn(work, inputs, target), "attribute_fn output")
    modules = dict(work.named_modules())
    cuda_devices = sorted(
        {p.device.index or 0 for p in work.parameters() if p.device.type == "cuda"}
    )

    steps = names
    if show_progress:
        from tqdm.auto import tqdm

        steps = tqdm(names, desc="cascading randomisation", unit="layer")
    rows = []
    for step, name in enumerate(steps, start=1):
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(int(seed) + step)
            _reinitialise(modules[name], subtree=layers is not None)
        current = _as_map(attribute_fn(work, inputs, target), "attribute_fn output")
        if current.shape != original.shape:
            raise ValueError(
                f"attribute_fn returned shape {current.shape} after randomising {name!r}, "
                f"but {original.shape} for the original model; expected a fixed shape"
            )
        rows.append({"step": step, "layer": name, "spearman": spearman(original, current, abs=abs)})
    return pd.DataFrame(rows, columns=["step", "layer", "spearman"])
