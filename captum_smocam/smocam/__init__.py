"""SMOCAM: the SMOoth Conditional Attention Mask, as a Captum layer attribution, in parts with one job each.

SMOCAM optimises a mask on one layer's feature map so that the network, with
the perturbed features, still makes the prediction being explained. The parts,
in the order a call uses them (after TorchRay's extremal perturbation: what
perturbs, the mask, the loop; and MONAI's CAM classes: the runner apart):

* :mod:`~captum_smocam.smocam.defaults` — every default and threshold, named by objective;
* :mod:`~captum_smocam.smocam.settings` — one call's settings, checked once and frozen;
* :mod:`~captum_smocam.smocam.inputs` — inputs, targets, baselines and rows, checked and shaped;
* :mod:`~captum_smocam.smocam.runners` — the network evaluated with a perturbation in the layer
  (fast path, hooks, kernel plans, dtype copies);
* :mod:`~captum_smocam.smocam.references` — where the references and sigma come from, once per call;
* :mod:`~captum_smocam.smocam.mask` — the parametrisation theta -> M, and the upsampling of M;
* :mod:`~captum_smocam.smocam.perturbation` — how M mixes F and F_ref;
* :mod:`~captum_smocam.smocam.objective` — the loss terms and the two objectives;
* :mod:`~captum_smocam.smocam.loop` — the optimisation loop and the fidelity of its result;
* :mod:`~captum_smocam.smocam.attribution` — the :class:`SMOCAM` class that runs them.

Two objectives (``objective=`` of :meth:`SMOCAM.attribute`): ``"preserve"``
(the default; ours) and ``"poster"`` (the SMOCAM poster's, exactly); see
:mod:`~captum_smocam.smocam.objective` and ``docs/method.md``.
"""
from ..fallbacks import DEFAULT_FALLBACK, FALLBACKS  # the words of ``fallback=``
from .attribution import SMOCAM
from .defaults import (
    DEFAULT_OBJECTIVE,
    DEFAULT_SMOOTHING,
    DISTANCE_UNITS,
    EMPTY_MASK_WARN,
    FIDELITY_MAX_WEIGHT,
    FIDELITY_RATE,
    FIDELITY_WARN,
    HALF_DTYPES,
    INTERPOLATION_MODES,
    LOSS_TERMS,
    LR_FLOOR,
    MIN_ROWS,
    OBJECTIVE_DEFAULTS,
    OBJECTIVE_DTYPE,
    OBJECTIVES,
    POSTER_L2_WEIGHT,
    POSTER_LR,
    POSTER_N_STEPS,
    POSTER_SMOOTH_WEIGHT,
    PRESERVE_AREA_WEIGHT,
    PRESERVE_DISTANCE_UNIT,
    PRESERVE_FIDELITY_TOL,
    PRESERVE_INIT_LOGIT,
    PRESERVE_LR,
    PRESERVE_N_STEPS,
    PRESERVE_SMOOTH_WEIGHT,
)
from .mask import upsample_mask
from .objective import PosterObjective, PreserveObjective, preservation_objective, smocam_objective, smooth_abs

__all__ = [
    "SMOCAM",
    "smocam_objective",
    "preservation_objective",
    "smooth_abs",
    "upsample_mask",
    "PosterObjective",
    "PreserveObjective",
    "OBJECTIVES",
    "DEFAULT_OBJECTIVE",
    "OBJECTIVE_DEFAULTS",
    "OBJECTIVE_DTYPE",
    "POSTER_L2_WEIGHT",
    "POSTER_SMOOTH_WEIGHT",
    "POSTER_N_STEPS",
    "POSTER_LR",
    "PRESERVE_AREA_WEIGHT",
    "PRESERVE_SMOOTH_WEIGHT",
    "PRESERVE_LR",
    "PRESERVE_N_STEPS",
    "PRESERVE_INIT_LOGIT",
    "PRESERVE_FIDELITY_TOL",
    "PRESERVE_DISTANCE_UNIT",
    "DISTANCE_UNITS",
    "FIDELITY_RATE",
    "FIDELITY_MAX_WEIGHT",
    "FIDELITY_WARN",
    "EMPTY_MASK_WARN",
    "LR_FLOOR",
    "MIN_ROWS",
    "DEFAULT_SMOOTHING",
    "HALF_DTYPES",
    "LOSS_TERMS",
    "INTERPOLATION_MODES",
    "FALLBACKS",
    "DEFAULT_FALLBACK",
]
