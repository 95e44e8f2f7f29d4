"""VGG3D: blocks of 3x3x3 convolutions with max pooling between them, regressing structure volumes."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import nn

from .base import VolumeRegressor, check_positive_ints, conv_bn_relu
from .registry import register_architecture

__all__ = ["VGG3D"]


@register_architecture
class VGG3D(VolumeRegressor):
    r"""VGG-style 3-D CNN regressing several structure volumes at once.

    ``features`` holds one ``nn.Sequential`` per entry of ``channels``, named
    ``block1``, ``block2``, ...; every block but the first *starts* with a
    ``MaxPool3d(2)`` and then applies ``convs_per_block`` times
    ``Conv3d(3x3x3) -> BatchNorm3d -> ReLU``. The first block does not pool.
    So the tensor a block outputs is its last ReLU activation, at
    ``1 / 2**(k-1)`` of the input resolution for ``block{k}`` (floor division
    per axis), which is the feature map SMOCAM and Grad-CAM mask when a block
    is named as the layer. Then ``pool`` (adaptive average pooling to
    ``pool_size``; ``1`` is global average pooling) and ``head``
    (``fc1 -> ReLU -> fc2``) give one standardised value per output,
    de-standardised with the buffers ``output_mean`` and ``output_std``:

    .. math::
        \hat y = \mathrm{head}(\mathrm{pool}(\mathrm{features}(x))) \cdot \sigma + \mu

    so the model returns cm³ and any input size works (adaptive pooling). A
    ``pool_size`` above 1 keeps a coarse position (e.g. which hemisphere) in
    the pooled features.

    Args:
        n_outputs (int): number of predicted structure volumes.
        in_channels (int, optional): input channels. Default: 1
        channels (sequence of int, optional): output channels of each block.
            Default: ``(8, 16, 32, 64)``
        convs_per_block (int or sequence of int, optional): convolutions in
            each block (one int for all blocks). Default: 1
        hidden (int, optional): width of the head's hidden layer.
            Default: 64
        pool_size (int or sequence of 3 int, optional): output grid of the
            adaptive average pooling before the head; 1 is global average
            pooling. Default: 1
        output_mean (sequence of float, optional): training-set mean of each
            output in cm³ (:math:`\mu`). Default: zeros
        output_std (sequence of float, optional): training-set standard
            deviation of each output in cm³ (:math:`\sigma`). Default: ones

    Shapes:
        input ``N x in_channels x X x Y x Z``; output ``N x n_outputs`` (cm³).

    Attributes:
        default_layer (str): the layer to explain by default,
            ``"features.block3"`` (the last block if there are fewer): 1/4 of
            the input resolution, fine enough to separate the left and right
            hippocampi (see ``docs/models.md`` for the voxel counts).

    Examples::

        >>> import torch
        >>> model = VGG3D(4, output_mean=[10.0] * 4, output_std=[2.0] * 4).eval()
        >>> model(torch.randn(2, 1, 20, 24, 22)).shape
        torch.Size([2, 4])
        >>> model.get_submodule(model.default_layer)(torch.randn(1, 16, 10, 12, 11)).shape
        torch.Size([1, 32, 5, 6, 5])
    """

    def __init__(
        self,
        n_outputs: int,
        in_channels: int = 1,
        channels: Sequence[int] = (8, 16, 32, 64),
        convs_per_block=1,
        hidden: int = 64,
        pool_size=1,
        output_mean=None,
        output_std=None,
    ) -> None:
        super().__init__()
        hidden = self._check_sizes(n_outputs, in_channels, hidden, pool_size)
        channels = check_positive_ints("channels", channels)
        if isinstance(convs_per_block, int) and not isinstance(convs_per_block, bool):
            convs_per_block = (convs_per_block,) * len(channels)
        convs_per_block = check_positive_ints("convs_per_block", convs_per_block, len(channels))
        self.channels, self.convs_per_block = channels, convs_per_block

        blocks = OrderedDict()
        c_in = self.in_channels
        for k, (c_out, n_conv) in enumerate(zip(channels, convs_per_block), start=1):
            layers = [] if k == 1 else [nn.MaxPool3d(kernel_size=2, stride=2)]
            for _ in range(n_conv):
                layers += conv_bn_relu(c_in, c_out)
                c_in = c_out
            blocks[f"block{k}"] = nn.Sequential(*layers)
        self.features = nn.Sequential(blocks)
        self.default_layer = f"features.block{min(3, len(channels))}"
        self._add_pool_and_head(c_in, hidden)
        self._init_output_stats(self.n_outputs, output_mean, output_std)


    def arch_kwargs(self) -> dict:
        """The plain keyword arguments that rebuild this model (without its output statistics).

        Examples::

            >>> VGG3D(2, channels=(4, 8)).arch_kwargs()["convs_per_block"]
            [1, 1]
        """
        return {
            **self._shared_kwargs(),
            "convs_per_block": list(self.convs_per_block),
            "hidden": self.head.fc1.out_features,
            "pool_size": list(self.pool_size),
        }
