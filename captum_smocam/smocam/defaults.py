"""SMOCAM's settings by objective: every default, bound and threshold, named for the objective it belongs to.

``POSTER_*`` are the defaults of ``objective="poster"`` (the SMOCAM poster's
objective; chosen by the first round's validation sweep, docs/benchmarks.md),
``PRESERVE_*`` those of ``objective="preserve"`` (ours, the default; chosen on
10 validation subjects x 4 targets of the shipped VGG3D by
``benchmarks/sweep_smocam.py`` with a rule fixed before the run,
docs/benchmarks.md, "Tuning"). :data:`OBJECTIVE_DEFAULTS` gathers them; ``None``
in :meth:`~captum_smocam.smocam.SMOCAM.attribute` means these.

Examples::

    >>> OBJECTIVE_DEFAULTS["poster"]["n_steps"], OBJECTIVE_DEFAULTS["preserve"]["n_steps"]
    (100, 150)
    >>> DEFAULT_OBJECTIVE in OBJECTIVES
    True
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ..kernels import MIN_ROWS
from ..spatial import INTERPOLATION_MODES

__all__ = [
    "OBJECTIVES", "DEFAULT_OBJECTIVE", "POSTER_L2_WEIGHT", "POSTER_SMOOTH_WEIGHT", "POSTER_N_STEPS", "POSTER_LR",
    "PRESERVE_AREA_WEIGHT", "PRESERVE_SMOOTH_WEIGHT", "PRESERVE_LR", "PRESERVE_N_STEPS", "PRESERVE_INIT_LOGIT",
    "PRESERVE_FIDELITY_TOL", "PRESERVE_DISTANCE_UNIT", "DISTANCE_UNITS", "FIDELITY_RATE", "FIDELITY_MAX_WEIGHT",
    "FIDELITY_WARN", "EMPTY_MASK_WARN", "LR_FLOOR", "MIN_ROWS", "DEFAULT_SMOOTHING", "OBJECTIVE_DEFAULTS",
    "OBJECTIVE_DTYPE", "HALF_DTYPES", "LOSS_TERMS", "INTERPOLATION_MODES", "CHECK_CHUNK",
]

#: The objectives :meth:`SMOCAM.attribute` knows; the first is the default.
OBJECTIVES = ("preserve", "poster")
#: The default objective (chosen on validation subjects by benchmarks/sweep_smocam.py; docs/method.md).
DEFAULT_OBJECTIVE = "preserve"

#: Poster objective: weight of the L2-budget term ``|1 - ||M||_2|`` (validation sweep of the
#: first round; see docs/benchmarks.md).
POSTER_L2_WEIGHT = 1.0
#: Poster objective: weight of the smoothness term ``1/2 sum_axes ||grad_axis M||_1``
#: (validation sweep: 0.05 returned the uniform mask for 18 of 24 maps; 0.003 ranked first).
POSTER_SMOOTH_WEIGHT = 0.003
#: Poster objective: number of optimisation steps.
POSTER_N_STEPS = 100
#: Poster objective: Adam step size, in units of the uniform unit-norm mask value
#: ``1/sqrt(#voxels)`` (validation sweep on the shipped VGG3D).
POSTER_LR = 1.0

#: Preserve objective: weight of the area term ``mean(M)``.
PRESERVE_AREA_WEIGHT = 20.0
#: Preserve objective: weight of the smoothness term (total variation divided by
#: ``#voxels^((d-1)/d)``, so the same blob costs the same on every layer).
PRESERVE_SMOOTH_WEIGHT = 0.01
#: Preserve objective: Adam step size on the mask's logits.
PRESERVE_LR = 0.2
#: Preserve objective: number of optimisation steps (the sweep ranked 150 first; 1.5 x the poster's cost).
PRESERVE_N_STEPS = 150
#: Preserve objective: initial logit of every voxel (``sigmoid(-3) = 0.047``).
PRESERVE_INIT_LOGIT = -3.0

#: Preserve objective: the prediction the mask must keep, in units of sigma. While an example's masked
#: prediction is further than this from the unmasked one, the weight of its distance term grows (dual
#: ascent on a Lagrange multiplier, floored at 1, i.e. at the plain objective); ``None`` keeps the plain
#: objective (the default of issue 12).
PRESERVE_FIDELITY_TOL: Optional[float] = None
#: Step of that dual ascent: the multiplier grows by ``rate * (|y_M - y| / sigma - tol)`` per step.
FIDELITY_RATE = 1.0
#: Largest value the multiplier may take.
FIDELITY_MAX_WEIGHT = 1000.0
#: After the optimisation, a warning is given for an example whose mask does not keep its prediction:
#: the mean over the references of ``|y_M - y| / sigma`` above this (see :attr:`SMOCAM.fidelity`).
FIDELITY_WARN = 0.25
#: ... or whose mask is empty: its largest value below this (``"preserve"``; the mask is in ``[0, 1]``).
EMPTY_MASK_WARN = 0.05

#: Preserve objective: the unit of the distance term. ``"sigma"``: ``output_std`` (the population spread,
#: as the poster); ``"effect"``: per example, the root mean square over the references of the change of
#: the prediction when every feature is the reference's (the most a mask can change it), so that the
#: same settings mean the same on any model, output scale and reference set (ours).
DISTANCE_UNITS = ("sigma", "effect")
PRESERVE_DISTANCE_UNIT = "sigma"

#: Final step size of the cosine decay, as a fraction of ``lr``.
LR_FLOOR = 0.01

#: Width of the smoothed absolute value ``sqrt(t^2 + eps^2) - eps`` used to take
#: gradients of the L1 terms, with ``t`` in each term's natural unit (sigma for
#: the distance, the mask's scale for its differences). 0 uses plain subgradients.
DEFAULT_SMOOTHING = 0.01

#: Default settings of each objective (``None`` in :meth:`SMOCAM.attribute` means these).
OBJECTIVE_DEFAULTS: Dict[str, Dict[str, float]] = {
    "preserve": {"area_weight": PRESERVE_AREA_WEIGHT, "smooth_weight": PRESERVE_SMOOTH_WEIGHT,
                 "n_steps": PRESERVE_N_STEPS, "lr": PRESERVE_LR,
                 "fidelity_tol": PRESERVE_FIDELITY_TOL,
                 "distance_unit": PRESERVE_DISTANCE_UNIT},
    "poster": {"l2_weight": POSTER_L2_WEIGHT, "smooth_weight": POSTER_SMOOTH_WEIGHT,
               "n_steps": POSTER_N_STEPS, "lr": POSTER_LR},
}

#: Floating-point type of the optimisation by objective (``None``: the model's own). The poster's
#: objective has many near-equal optima; in float32 a last-bit difference between a batched and a
#: single evaluation can send the optimisation to another one, so it runs in float64 (docs/method.md).
OBJECTIVE_DTYPE: Dict[str, Optional[torch.dtype]] = {"preserve": None, "poster": torch.float64}

#: Dtypes in which SMOCAM's optimisation cannot run (the objective's small terms underflow: zero or NaN masks).
HALF_DTYPES = (torch.float16, torch.bfloat16)

#: Loss terms recorded in :attr:`SMOCAM.history`, by objective.
LOSS_TERMS = {"poster": ("total", "distance", "l2", "smooth"), "preserve": ("total", "distance", "area", "smooth")}

#: Most elements the checks over every row of the inputs look at at once (their memory: 16 MiB of float32).
CHECK_CHUNK = 1 << 22
