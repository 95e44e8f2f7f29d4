"""A network from outside this package, trained on the synthetic cohort: MONAI's 3-D ResNet as a regressor.

SMOCAM must hold on the models users bring, not only on the package's own VGG3D
and AlexNet3D. This module builds one such model from MONAI
(``monai.networks.nets.ResNet``, an optional extra: ``pip install monai``) and
wraps it in :class:`ScaledRegressor`, which adds only what training and the
benchmarks need — the training set's output mean and standard deviation, so the
network learns standardised volumes and predicts cm³ — and leaves every
convolution MONAI's.

Examples::

    >>> import torch
    >>> net = MonaiResNetRegressor(16, channels=(4, 8, 8, 8))   # doctest: +SKIP
    >>> net(torch.randn(2, 1, 28, 34, 30)).shape            # doctest: +SKIP
    torch.Size([2, 16])
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

#: The masked layer of :func:`monai_resnet` by default: the first residual stage, at 1/4 of the input
#: resolution (the VGG3D default ``features.block3`` is at 1/4 too).
MONAI_RESNET_DEFAULT_LAYER = "net.layer1"


class ScaledRegressor(nn.Module):
    """Any regression network whose outputs are standardised volumes, predicting cm³.

    ``forward(x) = net(x) * output_std + output_mean``, with both buffers of shape
    ``n_outputs``; :meth:`forward_standardized` and :meth:`standardize` are what
    ``benchmarks/train.py`` trains with.

    Args:
        net (torch.nn.Module): ``N x C x X x Y x Z -> N x n_outputs``.
        n_outputs (int): number of outputs.
        output_mean (Tensor, optional): training-set means (cm³). Default: zeros
        output_std (Tensor, optional): training-set standard deviations. Default: ones
        default_layer (str, optional): qualified name of the layer SMOCAM masks by default.

    Examples::

        >>> import torch
        >>> lin = nn.Linear(8, 2); _ = nn.init.zeros_(lin.weight); _ = nn.init.zeros_(lin.bias)
        >>> m = ScaledRegressor(nn.Sequential(nn.Flatten(), lin), 2,
        ...                     output_mean=torch.tensor([1.0, 2.0]), output_std=torch.tensor([2.0, 3.0]))
        >>> m(torch.zeros(1, 1, 2, 2, 2)).tolist()   # a zero output is the training mean
        [[1.0, 2.0]]
    """

    def __init__(self, net: nn.Module, n_outputs: int, output_mean: Optional[torch.Tensor] = None,
                 output_std: Optional[torch.Tensor] = None, default_layer: str = "net") -> None:
        super().__init__()
        self.net = net
        self.n_outputs = int(n_outputs)
        mean = torch.zeros(n_outputs) if output_mean is None else torch.as_tensor(output_mean, dtype=torch.float32)
        std = torch.ones(n_outputs) if output_std is None else torch.as_tensor(output_std, dtype=torch.float32)
        if mean.numel() != n_outputs or std.numel() != n_outputs:
            raise ValueError(f"output_mean and output_std need {n_outputs} values, got {mean.numel()} and "
                             f"{std.numel()}")
        self.register_buffer("output_mean", mean.flatten().clone())
        self.register_buffer("output_std", std.flatten().clone())
        self.default_layer = default_layer

    def standardize(self, volumes: torch.Tensor) -> torch.Tensor:
        """Volumes in cm³ (``N x n_outputs``) on the standardised scale of the network's output."""
        return (volumes - self.output_mean) / self.output_std

    def forward_standardized(self, x: torch.Tensor) -> torch.Tensor:
        """The network's own output, ``N x n_outputs``."""
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted volumes in cm³, ``N x n_outputs``."""
        return self.net(x) * self.output_std + self.output_mean


class MonaiResNetRegressor(ScaledRegressor):
    """MONAI's 3-D ResNet (basic blocks) as a volume regressor: a :class:`ScaledRegressor` around it.

    ``monai.networks.nets.ResNet(block="basic", layers=layers, block_inplanes=channels,
    spatial_dims=3, n_input_channels=in_channels, conv1_t_size=7, conv1_t_stride=2,
    num_classes=n_outputs)``: a 7³ stride-2 stem, max pooling, four residual stages (strides
    1, 2, 2, 2), global average pooling and a linear head. The default masked layer is
    ``net.layer1`` (1/4 of the input resolution). A class, so that a checkpoint can name it
    as its factory (an ``nn.Module`` class is rebuilt from a weights-only file without a trust
    switch; ``docs/own-model.md``).

    Args:
        n_outputs (int, optional): number of regressed volumes. Default: 16
        in_channels (int, optional): input channels. Default: 1
        channels (sequence of 4 ints, optional): widths of the four stages. Default: (16, 32, 64, 128)
        layers (sequence of 4 ints, optional): basic blocks per stage. Default: (1, 1, 1, 1)
        output_mean, output_std (Tensor, optional): see :class:`ScaledRegressor`.

    Raises:
        ImportError: MONAI is not installed (``pip install monai``).
    """

    def __init__(self, n_outputs: int = 16, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128),
                 layers: Sequence[int] = (1, 1, 1, 1), output_mean: Optional[torch.Tensor] = None,
                 output_std: Optional[torch.Tensor] = None) -> None:
        try:
            from monai.networks.nets import ResNet
        except ImportError as exc:  # optional extra
            raise ImportError("MonaiResNetRegressor needs MONAI (pip install monai)") from exc
        net = ResNet(block="basic", layers=list(layers), block_inplanes=list(channels), spatial_dims=3,
                     n_input_channels=int(in_channels), conv1_t_size=7, conv1_t_stride=2,
                     num_classes=int(n_outputs))
        super().__init__(net, n_outputs, output_mean, output_std, MONAI_RESNET_DEFAULT_LAYER)
        self.eval()
