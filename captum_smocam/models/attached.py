"""What a model carries for SMOCAM besides its weights: reference inputs and sigma, read and set in one place.

* reference inputs (a few normalised scans of the model's population):
  :func:`set_reference_inputs` attaches them, :func:`get_reference_inputs`
  reads them; they are the default ``baselines`` of SMOCAM's ``"preserve"``
  objective and checkpoints store them beside the weights;
* sigma, the spread of each output over the training data that SMOCAM's
  distance is measured in: :func:`get_output_std` reads it from the model's
  ``output_std`` buffer (the package's architectures) or, for any other
  network, from its description (:func:`captum_smocam.describe_model`, or a
  checkpoint's metadata).

Both read the module inside ``DataParallel`` / ``DistributedDataParallel`` /
``torch.compile`` wrappers (:func:`captum_smocam._model_state.unwrap_model`).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from .._model_state import unwrap_model
from ..model_card import DESCRIPTION_ATTR

__all__ = ["MAX_REFERENCE_INPUTS", "set_reference_inputs", "get_reference_inputs", "get_output_std"]

#: Most reference inputs a model (and its checkpoint) may carry (:func:`set_reference_inputs`).
MAX_REFERENCE_INPUTS = 64


def set_reference_inputs(model: nn.Module, inputs: Optional[torch.Tensor]) -> nn.Module:
    """Attach reference inputs to a model: the default ``baselines`` of SMOCAM's ``"preserve"`` objective.

    The inputs (a few normalised training scans of the model's population,
    ``K x in_channels x X x Y x Z``) are kept as the non-persistent buffer
    ``model.reference_inputs``: they move with ``model.to(...)``, are not part
    of ``state_dict()``, and :func:`~captum_smocam.models.save_checkpoint` stores them beside the
    weights (as float16 when that keeps every value exactly, else float32). ``None`` removes them.

    Args:
        model (torch.nn.Module): the model (``in_channels`` is checked when it has one).
        inputs (Tensor or None): ``K x C x X x Y x Z`` with ``1 <= K <= MAX_REFERENCE_INPUTS``.

    Returns:
        torch.nn.Module: the same model.

    Examples::

        >>> from captum_smocam.models import VGG3D
        >>> m = VGG3D(2, channels=(4, 8))
        >>> set_reference_inputs(m, torch.zeros(3, 1, 8, 10, 9)).reference_inputs.shape
        torch.Size([3, 1, 8, 10, 9])
        >>> "reference_inputs" in m.state_dict()
        False
    """
    model = unwrap_model(model)
    if inputs is None:
        if hasattr(model, "reference_inputs"):
            del model.reference_inputs
        return model
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        raise TypeError(f"reference inputs must be a floating-point tensor, got {type(inputs).__name__}")
    channels = getattr(model, "in_channels", inputs.shape[1] if inputs.dim() > 1 else None)
    if inputs.dim() != 5 or inputs.shape[1] != channels or not 1 <= inputs.shape[0] <= MAX_REFERENCE_INPUTS:
        raise ValueError(
            f"reference inputs must have shape K x {channels} x X x Y x Z with 1 <= K <= {MAX_REFERENCE_INPUTS}, "
            f"got {tuple(inputs.shape)}"
        )
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("reference inputs contain NaN or Inf values")
    device = next(model.parameters()).device if any(True for _ in model.parameters()) else inputs.device
    model.register_buffer("reference_inputs", inputs.detach().to(device=device, dtype=torch.float32).clone(),
                          persistent=False)
    return model


def get_reference_inputs(model: Any) -> Optional[torch.Tensor]:
    """The reference inputs a model carries (:func:`set_reference_inputs`, or its checkpoint's), or None.

    Args:
        model (torch.nn.Module): the model, also inside wrappers.

    Returns:
        Tensor or None: ``K x C x X x Y x Z`` float32, on the model's device.

    Examples::

        >>> from captum_smocam.models import VGG3D
        >>> m = VGG3D(2, channels=(4, 8))
        >>> get_reference_inputs(m) is None
        True
        >>> get_reference_inputs(set_reference_inputs(m, torch.zeros(3, 1, 8, 10, 9))).shape
        torch.Size([3, 1, 8, 10, 9])
    """
    reference = getattr(unwrap_model(model), "reference_inputs", None)
    return reference if isinstance(reference, torch.Tensor) else None


def get_output_std(model: Any) -> Optional[torch.Tensor]:
    """Sigma of a model: the spread of each output over its training data, or None when it says none.

    The ``output_std`` buffer when the model has one (the package's
    architectures, the training standard deviation in cm³), else the
    ``output_std`` of the description it carries
    (:func:`captum_smocam.describe_model`, or the metadata of the checkpoint
    it was loaded from) as float64, else None. SMOCAM measures the change of
    a prediction in this unit when it is given no ``output_std``.

    Args:
        model (torch.nn.Module): the model, also inside wrappers; anything
            else (a function) gives None.

    Returns:
        Tensor or None: one value per output (detached).

    Examples::

        >>> from captum_smocam.models import VGG3D
        >>> get_output_std(VGG3D(2, output_std=[2.0, 3.0]))
        tensor([2., 3.])
        >>> get_output_std(torch.nn.Linear(2, 1)) is None
        True
    """
    model = unwrap_model(model)
    if not isinstance(model, nn.Module):
        return None
    std = getattr(model, "output_std", None)
    if isinstance(std, torch.Tensor) and std.is_floating_point() and std.numel() >= 1:
        return std.detach()
    card = getattr(model, DESCRIPTION_ATTR, None)
    if isinstance(card, dict) and card.get("output_std") is not None:
        return torch.as_tensor(card["output_std"], dtype=torch.float64)
    return None
