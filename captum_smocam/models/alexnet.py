"""AlexNet3D: a large strided first convolution, three convolution layers, fully connected layers.

After the AlexNet-style network of Rebsamen et al. (2020), "Brain morphometry
estimation: from hours to seconds using deep learning", Front. Neurol.
11:244; :func:`rebsamen_alexnet3d` builds it at the paper's sizes.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

from torch import nn

from .base import VolumeRegressor, check_positive_ints, conv_bn_relu
from .registry import register_architecture

__all__ = ["AlexNet3D", "REBSAMEN_ALEXNET3D", "rebsamen_alexnet3d"]


@register_architecture
class AlexNet3D(VolumeRegressor):
    r"""AlexNet-style 3-D CNN regressing several structure volumes at once.

    Modelled on the network of Rebsamen et al. (2020), "Brain morphometry
    estimation: from hours to seconds using deep learning", Front. Neurol.
    11:244, which adapts AlexNet to 3-D T1 scans and regresses 165
    morphometric measures: a large strided first convolution, three
    convolution layers and fully connected layers. By default the widths are
    reduced so that it trains on a CPU; :func:`rebsamen_alexnet3d` builds the
    paper's widths, kernel sizes and strides. ``features`` holds, in order:

    * ``conv1``: ``Conv3d(k1, stride s1) -> BatchNorm3d -> ReLU``
    * ``pool1``: ``MaxPool3d(3, stride 2)``
    * ``conv2``: ``Conv3d(k2, stride s2) -> BatchNorm3d -> ReLU``
    * ``pool2``: ``MaxPool3d(3, stride 2)``
    * ``conv3``: ``Conv3d(3) -> BatchNorm3d -> ReLU``
    * ``pool3`` (only with ``pool3=True``): ``MaxPool3d(3, stride 2)``

    Each ``conv{k}`` outputs its ReLU activation. Then ``pool`` (adaptive
    average pooling to ``pool_size``, 1 = global) and ``head``: with one
    hidden width ``fc1 -> ReLU -> dropout -> fc2``; with several
    ``fc1 -> relu1 -> fc2 -> relu2 -> ... -> dropout -> fc{k+1}``;
    de-standardised with the buffers ``output_mean`` and ``output_std`` into cm³.

    Args:
        n_outputs (int): number of predicted structure volumes.
        in_channels (int, optional): input channels. Default: 1
        channels (sequence of 3 int, optional): output channels of ``conv1``,
            ``conv2``, ``conv3``. Default: ``(16, 32, 64)``
        kernel_sizes (sequence of 2 int, optional): odd kernel sizes of
            ``conv1`` and ``conv2``. Default: ``(5, 3)``
        hidden (int or sequence of int, optional): widths of the hidden fully
            connected layers. Default: 64
        dropout (float, optional): dropout before the last linear layer. Default: 0.0
        pool_size (int or sequence of 3 int, optional): output grid of the
            adaptive average pooling before the head; 1 is global average
            pooling. Default: 1
        output_mean (sequence of float, optional): training-set mean of each
            output in cm³. Default: zeros
        output_std (sequence of float, optional): training-set standard
            deviation of each output in cm³. Default: ones
        strides (sequence of 2 int, optional, keyword only, as the three
            settings below): strides of ``conv1`` and ``conv2``. Default: ``(2, 1)``
        padding (str, optional): ``"same"`` (``k // 2``) or ``"valid"`` (none)
            for ``conv1`` and ``conv2``. Default: ``"same"``
        pool_padding (int, optional): padding of the max-pooling layers. Default: 1
        pool3 (bool, optional): add ``features.pool3`` after ``conv3``. Default: False

    Shapes:
        input ``N x in_channels x X x Y x Z``; output ``N x n_outputs`` (cm³).

    Attributes:
        default_layer (str): ``"features.conv2"`` (1/4 of the input
            resolution with the default settings, as ``features.block3`` of
            :class:`VGG3D`).

    Examples::

        >>> import torch
        >>> model = AlexNet3D(3).eval()
        >>> model(torch.randn(2, 1, 21, 25, 23)).shape
        torch.Size([2, 3])
    """

    #: The layer to explain by default.
    default_layer = "features.conv2"

    def __init__(
        self,
        n_outputs: int,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64),
        kernel_sizes: Sequence[int] = (5, 3),
        hidden=64,
        dropout: float = 0.0,
        pool_size=1,
        output_mean=None,
        output_std=None,
        *,
        strides: Sequence[int] = (2, 1),
        padding: str = "same",
        pool_padding: int = 1,
        pool3: bool = False,
    ) -> None:
        super().__init__()
        hidden = check_positive_ints("hidden", [hidden] if isinstance(hidden, int) else hidden)
        self._check_sizes(n_outputs, in_channels, hidden[0], pool_size)
        channels = check_positive_ints("channels", channels, 3)
        kernel_sizes = check_positive_ints("kernel_sizes", kernel_sizes, 2)
        strides = check_positive_ints("strides", strides, 2)
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd, got {kernel_sizes!r}")
        if not (0.0 <= float(dropout) < 1.0):
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if isinstance(pool_padding, bool) or not isinstance(pool_padding, int) or pool_padding not in (0, 1):
            raise ValueError(f"pool_padding must be 0 or 1, got {pool_padding!r}")
        self.channels, self.kernel_sizes, self.strides = channels, kernel_sizes, strides
        self.padding, self.pool_padding, self.pool3, self.hidden = padding, pool_padding, bool(pool3), hidden
        c1, c2, c3 = channels
        k1, k2 = kernel_sizes
        s1, s2 = strides
        pad = None if padding == "same" else 0
        layers = OrderedDict(
            conv1=nn.Sequential(*conv_bn_relu(self.in_channels, c1, k1, stride=s1, padding=pad)),
            pool1=nn.MaxPool3d(kernel_size=3, stride=2, padding=pool_padding),
            conv2=nn.Sequential(*conv_bn_relu(c1, c2, k2, stride=s2, padding=pad)),
            pool2=nn.MaxPool3d(kernel_size=3, stride=2, padding=pool_padding),
            conv3=nn.Sequential(*conv_bn_relu(c2, c3, 3)),
        )
        if pool3:
            layers["pool3"] = nn.MaxPool3d(kernel_size=3, stride=2, padding=pool_padding)
        self.features = nn.Sequential(layers)
        if len(hidden) == 1:  # the shared layout (and the shipped checkpoint's state_dict keys)
            self._add_pool_and_head(c3, hidden[0], dropout)
        else:  # fc1 -> relu1 -> fc2 -> relu2 -> ... -> dropout -> fc{k+1}
            self.pool = nn.AdaptiveAvgPool3d(self.pool_size)
            head, width = OrderedDict(), c3 * math.prod(self.pool_size)
            for i, h in enumerate(hidden, start=1):
                head[f"fc{i}"] = nn.Linear(width, h)
                head[f"relu{i}"] = nn.ReLU(inplace=False)
                width = h
            head["dropout"] = nn.Dropout(float(dropout))
            head[f"fc{len(hidden) + 1}"] = nn.Linear(width, self.n_outputs)
            self.head = nn.Sequential(head)
        self._init_output_stats(self.n_outputs, output_mean, output_std)


    def arch_kwargs(self) -> dict:
        """The plain keyword arguments that rebuild this model (without its output statistics).

        The settings added for :func:`rebsamen_alexnet3d` (``strides``,
        ``padding``, ``pool_padding``, ``pool3``) are given only when they are
        not the defaults, so that the metadata of the shipped checkpoints stays
        as it was.

        Examples::

            >>> AlexNet3D(2).arch_kwargs()["kernel_sizes"], "strides" in AlexNet3D(2).arch_kwargs()
            ([5, 3], False)
        """
        return {
            **self._shared_kwargs(),
            "kernel_sizes": list(self.kernel_sizes),
            "hidden": self.hidden[0] if len(self.hidden) == 1 else list(self.hidden),
            "dropout": float(self.head.dropout.p),
            "pool_size": list(self.pool_size),
            **({"strides": list(self.strides)} if self.strides != (2, 1) else {}),
            **({"padding": self.padding} if self.padding != "same" else {}),
            **({"pool_padding": self.pool_padding} if self.pool_padding != 1 else {}),
            **({"pool3": True} if self.pool3 else {}),
        }


#: :class:`AlexNet3D` settings with the widths, kernel sizes and strides of Rebsamen et al. (2020),
#: Front. Neurol. 11:244 (doi:10.3389/fneur.2020.00244): conv 11³ stride 3, 144 channels -> max-pool ->
#: conv 5³ stride 2, 192 -> max-pool -> conv 3³, 192 -> max-pool -> FC 384 -> 192 -> 165 outputs, no
#: padding, for 256³ scans at 1 mm (feature maps 82³, 40³ after ``pool1``, 18³, 8³, 8³, 3³). BatchNorm
#: and the adaptive average pooling (to 3³: an identity at 256³) are this package's.
REBSAMEN_ALEXNET3D = {
    "channels": (144, 192, 192),
    "kernel_sizes": (11, 5),
    "strides": (3, 2),
    "padding": "valid",
    "pool_padding": 0,
    "pool3": True,
    "pool_size": 3,
    "hidden": (384, 192),
}


def rebsamen_alexnet3d(n_outputs: int = 165, in_channels: int = 1, **overrides) -> AlexNet3D:
    """An :class:`AlexNet3D` with Rebsamen et al.'s layer sizes (:data:`REBSAMEN_ALEXNET3D`), random weights.

    The network of Rebsamen, Suter, Wiest, Reyes & Rummel (2020), "Brain
    morphometry estimation: from hours to seconds using deep learning",
    Front. Neurol. 11:244, at its published widths, kernel sizes and strides,
    for 256³ scans and 165 outputs: what the SMOCAM poster explained. The
    weights are random (the cost of a mask does not depend on them): a model
    for timing, not for maps.

    Args:
        n_outputs (int, optional): outputs. Default: 165
        in_channels (int, optional): input channels. Default: 1
        **overrides: other :class:`AlexNet3D` arguments replacing those of
            :data:`REBSAMEN_ALEXNET3D`.

    Examples::

        >>> net = rebsamen_alexnet3d()
        >>> net.channels, net.kernel_sizes, net.strides, net.head.fc3.out_features
        ((144, 192, 192), (11, 5), (3, 2), 165)
    """
    kwargs = {**REBSAMEN_ALEXNET3D, **overrides}
    return AlexNet3D(n_outputs, in_channels=in_channels, **kwargs)

