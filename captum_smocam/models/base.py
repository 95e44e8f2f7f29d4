"""What the package's architectures share: checked sizes, the pooled head, and outputs in cm³.

Every architecture is a :class:`VolumeRegressor`: a ``features`` stack, then
``pool`` (adaptive average pooling) and ``head`` (fully connected layers), and
the last layer de-standardised with the buffers ``output_mean`` and
``output_std`` so that ``model(x)`` is in cm³ while training minimises the MSE
of standardised targets (:meth:`VolumeRegressor.standardize`). An architecture
declares its own checkpoint config (:meth:`VolumeRegressor.arch_kwargs`) and
enters :data:`captum_smocam.models.registry.ARCHITECTURES` with
:func:`~captum_smocam.models.registry.register_architecture`.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Optional

import torch
from torch import nn

__all__ = ["VolumeRegressor", "conv_bn_relu", "check_positive_ints"]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: Optional[int] = None):
    """``Conv3d -> BatchNorm3d -> ReLU`` with 'same' padding for odd kernels (or ``padding``)."""
    return [
        nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=kernel_size,
            stride=stride,
            padding=kernel_size // 2 if padding is None else padding,
            bias=False,
        ),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=False),
    ]


def check_positive_ints(name: str, values, length: Optional[int] = None) -> tuple:
    """``values`` as a tuple of positive ints (``length`` of them if given); raises TypeError or ValueError.

    Examples::

        >>> check_positive_ints("channels", [4, 8])
        (4, 8)
    """
    try:
        values = tuple(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive ints, got {values!r}") from None
    if not values or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values
    ):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    if length is not None and len(values) != length:
        raise ValueError(f"{name} must have {length} entries, got {len(values)}: {values!r}")
    return values


def _check_pool_size(pool_size) -> tuple:
    if isinstance(pool_size, int) and not isinstance(pool_size, bool):
        pool_size = (pool_size,) * 3
    return check_positive_ints("pool_size", pool_size, 3)


class VolumeRegressor(nn.Module):
    """A 3-D CNN whose last layer is de-standardised into cm³ (``output_mean``/``output_std``)."""

    def arch_kwargs(self) -> dict:
        """The plain keyword arguments that rebuild this model, without its output statistics.

        What a checkpoint stores as ``arch_kwargs``
        (:func:`~captum_smocam.models.save_checkpoint`): each architecture
        declares its own.
        """
        raise NotImplementedError(f"{type(self).__name__} does not declare its arch_kwargs")

    def _shared_kwargs(self) -> dict:
        """The keyword arguments every architecture has, first in its :meth:`arch_kwargs`."""
        return {"n_outputs": self.n_outputs, "in_channels": self.in_channels, "channels": list(self.channels)}

    def _check_sizes(self, n_outputs, in_channels, hidden, pool_size) -> int:
        """Check the sizes every model takes, keep ``n_outputs``, ``in_channels``, ``pool_size``; return ``hidden``."""
        (n_outputs,) = check_positive_ints("n_outputs", [n_outputs])
        (in_channels,) = check_positive_ints("in_channels", [in_channels])
        (hidden,) = check_positive_ints("hidden", [hidden])
        self.pool_size = _check_pool_size(pool_size)
        self.n_outputs, self.in_channels = n_outputs, in_channels
        return hidden

    def _add_pool_and_head(self, features_out: int, hidden: int, dropout: Optional[float] = None) -> None:
        """``pool`` (adaptive average pooling) and ``head`` (``fc1 -> ReLU [-> dropout] -> fc2``) after the features."""
        self.pool = nn.AdaptiveAvgPool3d(self.pool_size)
        fc1 = nn.Linear(features_out * math.prod(self.pool_size), hidden)
        layers = OrderedDict(fc1=fc1, relu=nn.ReLU(inplace=False))
        if dropout is not None:
            layers["dropout"] = nn.Dropout(float(dropout))
        layers["fc2"] = nn.Linear(hidden, self.n_outputs)
        self.head = nn.Sequential(layers)

    def _init_output_stats(self, n_outputs: int, output_mean, output_std) -> None:
        mean = torch.zeros(n_outputs) if output_mean is None else torch.as_tensor(
            output_mean, dtype=torch.float32
        ).flatten()
        std = torch.ones(n_outputs) if output_std is None else torch.as_tensor(
            output_std, dtype=torch.float32
        ).flatten()
        for name, t in (("output_mean", mean), ("output_std", std)):
            if t.numel() != n_outputs:
                raise ValueError(
                    f"{name} must have n_outputs={n_outputs} entries, got {t.numel()}"
                )
        if std.device.type != "meta" and not bool(torch.all(std > 0)):  # meta: shapes only (load_checkpoint)
            raise ValueError(f"output_std must be positive, got {std.tolist()}")
        self.register_buffer("output_mean", mean.clone())
        self.register_buffer("output_std", std.clone())

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            if torch.overrides.is_tensor_like(x):
                return  # a stand-in that handles torch functions itself (a tracer's proxy): no shape yet
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input of shape N x {self.in_channels} x X x Y x Z, "
                f"got {tuple(x.shape)}"
            )

    def standardize(self, volumes: torch.Tensor) -> torch.Tensor:
        """Map volumes in cm³ (``N x n_outputs``) to the standardised scale of the last layer."""
        return (volumes - self.output_mean) / self.output_std

    def forward_standardized(self, x: torch.Tensor) -> torch.Tensor:
        """The last layer's output before de-standardisation (``N x n_outputs``)."""
        self._check_input(x)
        z = self.features(x)
        z = self.pool(z).flatten(1)
        return self.head(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted volumes in cm³, ``N x n_outputs``."""
        return self.forward_standardized(x) * self.output_std + self.output_mean

