"""The architectures a checkpoint may name, and the model its name and config rebuild.

An architecture enters :data:`ARCHITECTURES` by decorating its class with
:func:`register_architecture`; the class declares its own config
(:meth:`~captum_smocam.models.base.VolumeRegressor.arch_kwargs`), so a new
architecture touches nothing but its own module (and the import in
``captum_smocam/models/__init__.py``).
"""
from __future__ import annotations

from typing import Dict

from torch import nn

from .base import VolumeRegressor

__all__ = ["ARCHITECTURES", "register_architecture", "build_model"]

#: Architectures a checkpoint may name in its ``arch`` field (class name -> class).
ARCHITECTURES: Dict[str, type] = {}


def register_architecture(cls: type) -> type:
    """Class decorator: enter a :class:`~captum_smocam.models.base.VolumeRegressor` into :data:`ARCHITECTURES`.

    The class is registered under its name, which checkpoints record as
    ``arch``; its :meth:`~captum_smocam.models.base.VolumeRegressor.arch_kwargs`
    give the ``arch_kwargs`` that rebuild an instance.

    Raises:
        TypeError: ``cls`` is not a subclass of ``VolumeRegressor``.
        ValueError: another class is registered under the same name.
    """
    if not (isinstance(cls, type) and issubclass(cls, VolumeRegressor)):
        raise TypeError(f"an architecture must be a VolumeRegressor subclass, got {cls!r}")
    if ARCHITECTURES.get(cls.__name__, cls) is not cls:
        raise ValueError(f"architecture name {cls.__name__!r} is already taken by {ARCHITECTURES[cls.__name__]!r}")
    ARCHITECTURES[cls.__name__] = cls
    return cls


def build_model(arch: str, arch_kwargs: dict) -> nn.Module:
    """Build an untrained model from an architecture name and its keyword arguments.

    Args:
        arch (str): a key of :data:`ARCHITECTURES` (``"VGG3D"`` or ``"AlexNet3D"``).
        arch_kwargs (dict): keyword arguments of that class (plain values).

    Returns:
        torch.nn.Module: the model, in training mode.

    Examples::

        >>> build_model("VGG3D", {"n_outputs": 2, "channels": [4, 8]}).channels
        (4, 8)
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    if not isinstance(arch_kwargs, dict):
        raise TypeError(f"arch_kwargs must be a dict, got {type(arch_kwargs).__name__}")
    return ARCHITECTURES[arch](**arch_kwargs)
