"""The one place where captum_smocam touches Captum's private helpers.

Captum does not promise that ``captum._utils`` stays stable; keeping every
such import here means a Captum upgrade breaks (at most) this module.
"""
from captum._utils.common import (  # noqa: F401
    _format_additional_forward_args,
    _format_output,
    _format_tensor_into_tuples,
    _is_tuple,
    _select_targets,
)
from captum._utils.typing import TargetType  # noqa: F401
from captum.attr._utils.attribution import GradientAttribution, LayerAttribution  # noqa: F401
from captum.log import log_usage  # noqa: F401
