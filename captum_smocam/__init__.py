"""captum_smocam: SMOCAM attention masks for 3-D convolutional regression models.

The attribution class is :class:`SMOCAM` (a Captum ``LayerAttribution``);
:func:`describe_model` describes any network (input grid, outputs,
normalisation, layer) for everything else; the rest lives in sub-modules: ``captum_smocam.synth`` (synthetic T1 cohort),
``captum_smocam.models`` (3-D regressors and shipped weights),
``captum_smocam.metrics`` (scores of attribution maps),
``captum_smocam.regions`` (per-region attention), ``captum_smocam.nifti``
(NIfTI in and out), ``captum_smocam.plotting``, ``captum_smocam.cohort``
(whole studies), the ``smocam`` command (``captum_smocam.cli``) and what the
scripts in ``benchmarks/`` share (``captum_smocam.benchmarking``). README.md's
"Where things are" lists every module in the order data flows through them.
"""

__version__ = "0.1.0"

# The face of SMOCAM (captum_smocam.smocam): the class, its objectives, and the defaults of each objective.
from .smocam import SMOCAM, preservation_objective, smocam_objective, upsample_mask  # noqa: E402
from .smocam import DEFAULT_OBJECTIVE, OBJECTIVE_DEFAULTS, OBJECTIVES  # noqa: E402
from .smocam import POSTER_L2_WEIGHT, POSTER_LR, POSTER_N_STEPS, POSTER_SMOOTH_WEIGHT  # noqa: E402
from .smocam import PRESERVE_AREA_WEIGHT, PRESERVE_LR, PRESERVE_N_STEPS, PRESERVE_SMOOTH_WEIGHT  # noqa: E402
from .model_card import describe_model  # noqa: E402

__all__ = [
    "SMOCAM", "smocam_objective", "preservation_objective", "upsample_mask", "describe_model",
    "OBJECTIVES", "DEFAULT_OBJECTIVE", "OBJECTIVE_DEFAULTS",
    "POSTER_L2_WEIGHT", "POSTER_SMOOTH_WEIGHT", "POSTER_N_STEPS", "POSTER_LR",
    "PRESERVE_AREA_WEIGHT", "PRESERVE_SMOOTH_WEIGHT", "PRESERVE_N_STEPS", "PRESERVE_LR",
    "__version__",
]
