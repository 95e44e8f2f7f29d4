"""The settings of one SMOCAM call: checked once, resolved against the objective's defaults, frozen.

:func:`call_settings` takes the arguments of :meth:`SMOCAM.attribute` that are
settings (not data: inputs, targets, baselines and sigma are the data), checks
each (a one-line ``ValueError`` / ``TypeError`` naming the bad value), fills the
``None`` ones from :data:`~captum_smocam.smocam.defaults.OBJECTIVE_DEFAULTS`,
builds the objective (:mod:`captum_smocam.smocam.objective`) and returns one
frozen :class:`CallSettings` that the runners and the loop read.

Examples::

    >>> s = call_settings(objective="poster", n_steps=5)
    >>> s.objective.name, s.n_steps, s.lr
    ('poster', 5, 1.0)
    >>> call_settings(objective="poster", area_weight=1.0)
    Traceback (most recent call last):
    ...
    ValueError: area_weight is a setting of another objective than 'poster'; 'poster' takes ['l2_weight', 'lr', 'n_steps', 'smooth_weight']
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Optional, Union

import torch
from torch import Tensor

from ..fallbacks import DEFAULT_FALLBACK, FALLBACKS
from ..kernels import KernelPlan
from .defaults import DEFAULT_SMOOTHING, DISTANCE_UNITS, OBJECTIVE_DEFAULTS, OBJECTIVE_DTYPE, OBJECTIVES
from .inputs import check_number, check_work_dtype
from .objective import PosterObjective, PreserveObjective

__all__ = ["CallSettings", "call_settings", "check_runner_settings", "KERNEL_PLANS"]

#: The words ``kernel_plan`` accepts (besides a :class:`~captum_smocam.kernels.KernelPlan`).
KERNEL_PLANS = ("auto", "fastest", "stock", "off")


@dataclasses.dataclass(frozen=True)
class CallSettings:
    """Everything one call of :meth:`SMOCAM.attribute` is set to do (the arguments of the same names).

    ``objective`` is the built objective (:class:`PosterObjective` or
    :class:`PreserveObjective`, holding its weights, smoothing, fidelity
    tolerance, fallback and distance unit); ``work_dtype`` is the type the
    optimisation runs in (``None``: the inputs').
    """

    objective: Any
    n_steps: int
    lr: float
    lr_decay: str = "cosine"
    tol: Optional[float] = None
    patience: int = 10
    init: Union[str, Tensor] = "uniform"
    internal_batch_size: Optional[int] = None
    show_progress: bool = False
    upsample_to_input: bool = False
    relu_attributions: bool = False
    to_input: bool = False
    fast: bool = True
    kernel_plan: Union[str, KernelPlan] = "auto"
    autocast: Optional[torch.dtype] = None
    dtype: Optional[torch.dtype] = None

    @property
    def work_dtype(self) -> Optional[torch.dtype]:
        """``dtype``, else the objective's (:data:`~captum_smocam.smocam.defaults.OBJECTIVE_DTYPE`)."""
        return self.dtype if self.dtype is not None else OBJECTIVE_DTYPE[self.objective.name]


def _objective_settings(objective: str, given: dict) -> dict:
    """The objective's defaults with the given (not None) values in; refuses another objective's settings."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    defaults = OBJECTIVE_DEFAULTS[objective]
    for name in ("area_weight", "l2_weight", "fidelity_tol", "distance_unit"):
        if given[name] is not None and name not in defaults:
            raise ValueError(f"{name} is a setting of another objective than {objective!r}; "
                             f"{objective!r} takes {sorted(defaults)}")
    settings = dict(defaults)
    settings.update({name: value for name, value in given.items() if value is not None})
    if settings.get("distance_unit", "sigma") not in DISTANCE_UNITS:
        raise ValueError(f"distance_unit must be one of {DISTANCE_UNITS}, got {settings['distance_unit']!r}")
    if "fidelity_tol" in settings:
        tol_ = settings["fidelity_tol"]
        if tol_ is not None and (isinstance(tol_, bool) or not isinstance(tol_, numbers.Real) or math.isnan(tol_)
                                 or tol_ < 0):
            raise ValueError(f"fidelity_tol must be a number >= 0 (math.inf: off), got {tol_!r}")
    return settings


def call_settings(*, objective: str, area_weight: Optional[float] = None, l2_weight: Optional[float] = None,
                  smooth_weight: Optional[float] = None, n_steps: Optional[int] = None, lr: Optional[float] = None,
                  fidelity_tol: Optional[float] = None, distance_unit: Optional[str] = None,
                  fallback: Optional[str] = None, smoothing: float = DEFAULT_SMOOTHING, nonnegative: bool = True,
                  lr_decay: str = "cosine", tol: Optional[float] = None, patience: int = 10,
                  init: Union[str, Tensor] = "uniform", internal_batch_size: Optional[int] = None,
                  show_progress: bool = False, upsample_to_input: bool = False, relu_attributions: bool = False,
                  to_input: bool = False, fast: bool = True, kernel_plan: Union[str, KernelPlan] = "auto",
                  autocast: Optional[torch.dtype] = None, dtype: Optional[torch.dtype] = None) -> CallSettings:
    """Check the settings of a call and build its :class:`CallSettings`.

    Every argument is the argument of :meth:`SMOCAM.attribute` of the same name
    (``to_input`` is ``attribute_to_layer_input``); ``None`` weights, steps and
    step sizes take the objective's defaults.
    """
    settings = _objective_settings(objective, {
        "area_weight": area_weight, "l2_weight": l2_weight, "smooth_weight": smooth_weight, "n_steps": n_steps,
        "lr": lr, "fidelity_tol": fidelity_tol, "distance_unit": distance_unit})
    fallback = DEFAULT_FALLBACK if fallback is None else fallback
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    check_number("n_steps", settings["n_steps"], positive=True, integer=True)
    check_number("lr", settings["lr"], positive=True)
    for name in ("area_weight", "l2_weight", "smooth_weight"):
        if name in settings:
            check_number(name, settings[name])
    check_number("smoothing", smoothing)
    fields = CallSettings(
        objective=None, n_steps=int(settings["n_steps"]), lr=float(settings["lr"]), lr_decay=lr_decay, tol=tol,
        patience=patience, init=init, internal_batch_size=internal_batch_size, show_progress=show_progress,
        upsample_to_input=upsample_to_input, relu_attributions=relu_attributions, to_input=to_input, fast=fast,
        kernel_plan=kernel_plan, autocast=autocast, dtype=dtype)
    _check_loop(fields)
    if objective == "poster":
        obj: Any = PosterObjective(settings["l2_weight"], settings["smooth_weight"], float(smoothing),
                                   bool(nonnegative))
    else:
        obj = PreserveObjective(settings["area_weight"], settings["smooth_weight"], float(smoothing),
                                math.inf if settings["fidelity_tol"] is None else float(settings["fidelity_tol"]),
                                fallback, settings["distance_unit"])
    return dataclasses.replace(fields, objective=obj, patience=int(fields.patience))


def _check_loop(s: CallSettings) -> None:
    """The checks of the loop's and the runners' settings."""
    if s.lr_decay not in ("cosine", "none"):
        raise ValueError(f"lr_decay must be 'cosine' or 'none', got {s.lr_decay!r}")
    if s.tol is not None:
        check_number("tol", s.tol)
    check_number("patience", s.patience, positive=True, integer=True)
    if s.internal_batch_size is not None:
        check_number("internal_batch_size", s.internal_batch_size, positive=True, integer=True)
    if isinstance(s.init, str) and s.init != "uniform":
        raise ValueError(f"init must be 'uniform' or a tensor, got {s.init!r}")
    if not isinstance(s.init, (str, Tensor)):
        raise TypeError(f"init must be 'uniform' or a tensor, got {type(s.init).__name__}")


def check_runner_settings(s: CallSettings, input_dtype: torch.dtype) -> None:
    """The checks of ``dtype``, ``kernel_plan`` and ``autocast``, made once the inputs' dtype is known."""
    if s.dtype is not None and not (isinstance(s.dtype, torch.dtype) and s.dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {s.dtype!r}")
    check_work_dtype(s.work_dtype or input_dtype, given=s.dtype is not None)
    if not (isinstance(s.kernel_plan, KernelPlan) or s.kernel_plan in KERNEL_PLANS):
        raise ValueError(f"kernel_plan must be 'auto', 'fastest', 'stock', 'off' or a KernelPlan, "
                         f"got {s.kernel_plan!r}")
    if s.autocast is not None and s.autocast not in (torch.bfloat16, torch.float16):
        raise ValueError(f"autocast must be None, torch.bfloat16 or torch.float16, got {s.autocast!r}")
