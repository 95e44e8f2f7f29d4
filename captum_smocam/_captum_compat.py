"""The one place where captum_smocam touches Captum's private helpers.

Captum does not promise that ``captum._utils`` and ``captum.attr._utils`` stay
stable; keeping every such import here means a Captum upgrade breaks (at most)
this module. Only what the package uses is imported (today
:mod:`captum_smocam.smocam`: the attribution base classes, the target type,
the formatting of additional forward arguments and the usage logger).
"""
from captum._utils.common import _format_additional_forward_args  # noqa: F401
from captum._utils.typing import TargetType  # noqa: F401
from captum.attr._utils.attribution import GradientAttribution, LayerAttribution  # noqa: F401
from captum.log import log_usage  # noqa: F401

__all__ = [
    "GradientAttribution",
    "LayerAttribution",
    "TargetType",
    "_format_additional_forward_args",
    "log_usage",
]
