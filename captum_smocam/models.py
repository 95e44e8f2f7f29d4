"""3-D convolutional regression models for brain morphometry, and their checkpoints.

Two architectures predict the volumes (cm³) of all brain structures at once
from one normalised T1 scan (``N x 1 x X x Y x Z``):

* :class:`VGG3D` — blocks of 3x3x3 convolutions, BatchNorm and ReLU separated
  by max pooling, global average pooling and a two-layer head;
* :class:`AlexNet3D` — a large strided first convolution, three convolution
  layers and two fully connected layers, after the AlexNet-style network of
  Rebsamen et al. (2020), "Brain morphometry estimation: from hours to seconds
  using deep learning", Front. Neurol. 11:244.

Both end in global average pooling, so any input size works, and both
de-standardise their last layer with the buffers ``output_mean`` and
``output_std`` so that ``model(x)`` is in cm³ while training minimises the MSE
of standardised targets (:meth:`standardize`).

Checkpoints (:func:`save_checkpoint`, :func:`load_checkpoint`) hold only
tensors and plain Python values and are read with ``torch.load(...,
weights_only=True)``: loading a checkpoint never runs code. The architecture is
rebuilt from the names ``arch`` and ``arch_kwargs`` in its metadata.
:func:`load_default_model` reads the weights shipped in ``captum_smocam/data``.
"""
from __future__ import annotations

import importlib.resources
import math
import os
import pickle
import warnings
import zipfile
from collections import OrderedDict
from typing import Optional, Sequence

import numpy as np
import torch
import torch.fx
from torch import nn

from ._io import atomic_write
from ._text import shorten_list, shorten_message

__all__ = [
    "VGG3D",
    "AlexNet3D",
    "REBSAMEN_ALEXNET3D",
    "rebsamen_alexnet3d",
    "ARCHITECTURES",
    "DEFAULT_MODELS",
    "CHECKPOINT_FORMAT_VERSION",
    "MAX_PARAMETERS",
    "METADATA_KEYS",
    "build_model",
    "check_metadata",
    "save_checkpoint",
    "load_checkpoint",
    "set_reference_inputs",
    "load_default_model",
    "default_model_file",
]

#: Version of the checkpoint layout written by :func:`save_checkpoint`.
CHECKPOINT_FORMAT_VERSION = 1

#: Most reference inputs a checkpoint may carry (:func:`set_reference_inputs`).
MAX_REFERENCE_INPUTS = 64

#: :func:`load_checkpoint` refuses an architecture with more parameters and buffers than this
#: (the shipped models have about 0.5 million; 200 million float32 values are 800 MB).
MAX_PARAMETERS = 200_000_000

#: Keys every shipped checkpoint's metadata holds (see ``docs/models.md``).
METADATA_KEYS = (
    "format_version",
    "arch",
    "arch_kwargs",
    "output_names",
    "output_units",
    "output_mean",
    "output_std",
    "input_shape",
    "spacing_mm",
    "affine",
    "intensity_normalization",
    "default_layer",
    "lr_correlation",
    "train_seed",
    "splits",
    "test_metrics",
    "train_seconds",
    "epochs",
)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
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


def _check_positive_ints(name: str, values, length: Optional[int] = None) -> tuple:
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
    return _check_positive_ints("pool_size", pool_size, 3)


class _Standardized(nn.Module):
    """Shared de-standardisation of the last layer (``output_mean``/``output_std``)."""

    def _check_sizes(self, n_outputs, in_channels, hidden, pool_size) -> int:
        """Check the sizes every model takes, keep ``n_outputs``, ``in_channels``, ``pool_size``; return ``hidden``."""
        (n_outputs,) = _check_positive_ints("n_outputs", [n_outputs])
        (in_channels,) = _check_positive_ints("in_channels", [in_channels])
        (hidden,) = _check_positive_ints("hidden", [hidden])
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
        if isinstance(x, torch.fx.Proxy):
            return  # being traced (SMOCAM's fast path): shapes are not known yet
        if not isinstance(x, torch.Tensor):
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


class VGG3D(_Standardized):
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
        channels = _check_positive_ints("channels", channels)
        if isinstance(convs_per_block, int) and not isinstance(convs_per_block, bool):
            convs_per_block = (convs_per_block,) * len(channels)
        convs_per_block = _check_positive_ints("convs_per_block", convs_per_block, len(channels))
        self.channels, self.convs_per_block = channels, convs_per_block

        blocks = OrderedDict()
        c_in = self.in_channels
        for k, (c_out, n_conv) in enumerate(zip(channels, convs_per_block), start=1):
            layers = [] if k == 1 else [nn.MaxPool3d(kernel_size=2, stride=2)]
            for _ in range(n_conv):
                layers += _conv_bn_relu(c_in, c_out)
                c_in = c_out
            blocks[f"block{k}"] = nn.Sequential(*layers)
        self.features = nn.Sequential(blocks)
        self.default_layer = f"features.block{min(3, len(channels))}"
        self._add_pool_and_head(c_in, hidden)
        self._init_output_stats(self.n_outputs, output_mean, output_std)


class AlexNet3D(_Standardized):
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
        strides (sequence of 2 int, optional): strides of ``conv1`` and
            ``conv2``. Default: ``(2, 1)``
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
        strides: Sequence[int] = (2, 1),
        padding: str = "same",
        pool_padding: int = 1,
        pool3: bool = False,
    ) -> None:
        super().__init__()
        hidden = _check_positive_ints("hidden", [hidden] if isinstance(hidden, int) else hidden)
        self._check_sizes(n_outputs, in_channels, hidden[0], pool_size)
        channels = _check_positive_ints("channels", channels, 3)
        kernel_sizes = _check_positive_ints("kernel_sizes", kernel_sizes, 2)
        strides = _check_positive_ints("strides", strides, 2)
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
            conv1=nn.Sequential(*_conv_bn_relu(self.in_channels, c1, k1, stride=s1, padding=pad)),
            pool1=nn.MaxPool3d(kernel_size=3, stride=2, padding=pool_padding),
            conv2=nn.Sequential(*_conv_bn_relu(c1, c2, k2, stride=s2, padding=pad)),
            pool2=nn.MaxPool3d(kernel_size=3, stride=2, padding=pool_padding),
            conv3=nn.Sequential(*_conv_bn_relu(c2, c3, 3)),
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


#: Architectures a checkpoint may name in its ``arch`` field.
ARCHITECTURES = {"VGG3D": VGG3D, "AlexNet3D": AlexNet3D}

#: Names accepted by :func:`load_default_model` and the shipped files they read.
DEFAULT_MODELS = {
    "vgg": "vgg3d_default.pt",
    "vgg_independent": "vgg3d_independent.pt",
    "alexnet": "alexnet3d_default.pt",
    "alexnet_independent": "alexnet3d_independent.pt",
    # MONAI's ResNet (captum_smocam.benchmarking.outside; loading it needs `pip install monai`)
    "monai_resnet_independent": "monai_resnet_independent.pt",
}


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


def _arch_kwargs(model: nn.Module) -> dict:
    """The plain keyword arguments that rebuild ``model`` (without its output statistics)."""
    if isinstance(model, VGG3D):
        return {
            "n_outputs": model.n_outputs,
            "in_channels": model.in_channels,
            "channels": list(model.channels),
            "convs_per_block": list(model.convs_per_block),
            "hidden": model.head.fc1.out_features,
            "pool_size": list(model.pool_size),
        }
    if isinstance(model, AlexNet3D):
        return {
            "n_outputs": model.n_outputs,
            "in_channels": model.in_channels,
            "channels": list(model.channels),
            "kernel_sizes": list(model.kernel_sizes),
            "hidden": model.hidden[0] if len(model.hidden) == 1 else list(model.hidden),
            "dropout": float(model.head.dropout.p),
            "pool_size": list(model.pool_size),
            # Settings added for rebsamen_alexnet3d: written only when not the defaults, so that the
            # metadata of the shipped checkpoints stays as it was.
            **({"strides": list(model.strides)} if model.strides != (2, 1) else {}),
            **({"padding": model.padding} if model.padding != "same" else {}),
            **({"pool_padding": model.pool_padding} if model.pool_padding != 1 else {}),
            **({"pool3": True} if model.pool3 else {}),
        }
    raise TypeError(
        f"cannot checkpoint a {type(model).__name__}; expected one of {sorted(ARCHITECTURES)}"
    )


_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _check_plain(value, where: str = "metadata") -> None:
    """Raise TypeError unless ``value`` is built from dict/list/str/int/float/bool/None."""
    if isinstance(value, _PLAIN_SCALARS):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} keys must be str, got {k!r}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"{where} must hold only dict, list, str, int, float, bool or None; "
        f"got {type(value).__name__}: {value!r}"
    )


def _to_plain(value):
    """A copy with tuples as lists and subclasses of str/int/float/bool (``numpy.float64``,
    ``torch.__version__``) as the builtin types, which ``weights_only`` loading accepts."""
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):  # numpy scalar -> Python scalar
        value = value.item()
    for kind in (bool, str, int, float):
        if isinstance(value, kind):
            return kind(value)
    return value


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``nn.DataParallel`` / ``DistributedDataParallel`` / ``torch.compile`` wrappers."""
    from ._model_state import unwrap_model

    return unwrap_model(model)


def set_reference_inputs(model: nn.Module, inputs: Optional[torch.Tensor]) -> nn.Module:
    """Attach reference inputs to a model: the default ``baselines`` of SMOCAM's ``"preserve"`` objective.

    The inputs (a few normalised training scans of the model's population,
    ``K x in_channels x X x Y x Z``) are kept as the non-persistent buffer
    ``model.reference_inputs``: they move with ``model.to(...)``, are not part
    of ``state_dict()``, and :func:`save_checkpoint` stores them beside the
    weights (as float16 when that keeps every value exactly, else float32). ``None`` removes them.

    Args:
        model (torch.nn.Module): the model (``in_channels`` is checked when it has one).
        inputs (Tensor or None): ``K x C x X x Y x Z`` with ``1 <= K <= MAX_REFERENCE_INPUTS``.

    Returns:
        torch.nn.Module: the same model.

    Examples::

        >>> m = VGG3D(2, channels=(4, 8))
        >>> set_reference_inputs(m, torch.zeros(3, 1, 8, 10, 9)).reference_inputs.shape
        torch.Size([3, 1, 8, 10, 9])
        >>> "reference_inputs" in m.state_dict()
        False
    """
    model = _unwrap(model)
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


def save_checkpoint(path, model: nn.Module, metadata: Optional[dict] = None, *, factory=None,
                    factory_kwargs: Optional[dict] = None, trust_pickle: bool = False) -> dict:
    """Write a model and its metadata to a file that :func:`load_checkpoint` reads.

    The file holds ``{"state_dict": ..., "metadata": ...}`` made of tensors and
    plain values only, and ``"reference_inputs"`` (float16 when every value
    survives float16 exactly, else float32: they load back as they were) when the model has
    reference inputs (:func:`set_reference_inputs`); ``metadata`` then records
    their number as ``n_reference_inputs``. ``metadata`` is completed with ``format_version``,
    ``arch``, ``arch_kwargs``, ``output_mean``, ``output_std`` and
    ``default_layer`` taken from the model (values given in ``metadata`` for
    the last three must agree with the model and are overwritten otherwise).
    The file is written atomically (:func:`captum_smocam._io.atomic_write`).

    Any other network (a MONAI ``DenseNet121``, your own module) is saved by
    :func:`captum_smocam.checkpoints.save_user_checkpoint`: with its
    description (:func:`captum_smocam.model_card.describe_model`, or the same
    keys in ``metadata``) and either an entry point that rebuilds it
    (``factory``, a weights-only file) or, with ``trust_pickle=True``, the
    whole module pickled (read back only with ``trust_checkpoint=True``). See
    ``docs/own-model.md``.

    Args:
        path (str or os.PathLike): destination file (``.pt``).
        model (torch.nn.Module): the model to save (also inside
            ``nn.DataParallel`` or ``DistributedDataParallel``: the wrapped
            module is saved).
        metadata (dict, optional): plain values (dict, list, str, int, float,
            bool, None) describing the model; see ``docs/models.md`` for the
            keys of a shipped checkpoint. Default: ``{}``
        factory (str or callable, optional): for a network other than
            :class:`VGG3D`/:class:`AlexNet3D`: ``"package.module:Callable"``
            (or the class itself) that rebuilds it from ``factory_kwargs``.
            Default: None
        factory_kwargs (dict, optional): plain keyword arguments of
            ``factory``. Default: ``{}``
        trust_pickle (bool, optional): for a network no entry point rebuilds:
            pickle the whole module. Loading such a file can run any code, so
            :func:`load_checkpoint` reads it only with ``trust_checkpoint=True``.
            Default: False

    Returns:
        dict: the metadata as written.

    Examples::

        >>> import tempfile, os
        >>> m = VGG3D(2, channels=(4, 8))
        >>> p = os.path.join(tempfile.mkdtemp(), "m.pt")
        >>> save_checkpoint(p, m, {"output_names": ["a", "b"]})["arch"]
        'VGG3D'
    """
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    model = _unwrap(model)
    if not isinstance(model, tuple(ARCHITECTURES.values())):  # any other network: checkpoints.py
        from .checkpoints import save_user_checkpoint

        return save_user_checkpoint(path, model, metadata, factory=factory, factory_kwargs=factory_kwargs,
                                    trust_pickle=trust_pickle)
    meta = _to_plain(metadata)
    _check_plain(meta)
    meta["format_version"] = CHECKPOINT_FORMAT_VERSION
    meta["arch"] = type(model).__name__
    meta["arch_kwargs"] = _arch_kwargs(model)
    meta["output_mean"] = [float(v) for v in model.output_mean]
    meta["output_std"] = [float(v) for v in model.output_std]
    meta.setdefault("default_layer", model.default_layer)
    try:
        model.get_submodule(meta["default_layer"])
    except AttributeError:
        raise ValueError(
            f"metadata['default_layer'] {meta['default_layer']!r} is not a layer of the model"
        ) from None
    names = meta.get("output_names")
    if names is not None and len(names) != model.n_outputs:
        raise ValueError(
            f"metadata['output_names'] has {len(names)} names but the model has "
            f"{model.n_outputs} outputs"
        )
    state = OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items())
    blob = {"state_dict": state, "metadata": meta}
    _store_references(blob, model, meta)
    with atomic_write(path) as tmp:
        torch.save(blob, tmp)
    return meta



def _store_references(blob: dict, model: nn.Module, meta: dict) -> None:
    """Put the model's reference inputs (if any) into a checkpoint's ``blob`` and count them in ``meta``."""
    reference = getattr(model, "reference_inputs", None)
    if isinstance(reference, torch.Tensor):
        blob["reference_inputs"] = _stored_references(reference, meta)
        meta["n_reference_inputs"] = int(reference.shape[0])
    else:
        meta.pop("n_reference_inputs", None)


def _stored_references(reference: torch.Tensor, meta: dict) -> torch.Tensor:
    """The reference inputs as stored in a checkpoint: float16 when every value survives the round trip
    exactly, else float32 (so they always load back as they were); checked as :func:`load_checkpoint` does."""
    ref = reference.detach().cpu().float()
    if not bool(torch.isfinite(ref).all()):
        raise ValueError(f"the model's reference_inputs contain {int((~torch.isfinite(ref)).sum())} NaN or Inf "
                         "value(s); set them again with set_reference_inputs")
    shape = meta.get("input_shape")
    if shape is not None and list(ref.shape[2:]) != list(shape):
        raise ValueError(f"the model's reference_inputs have spatial shape {tuple(ref.shape[2:])}, but "
                         f"metadata['input_shape'] is {tuple(shape)}")
    half = ref.to(torch.float16)
    return half if torch.equal(half.float(), ref) else ref


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _read_checkpoint_file(path: str, map_location, trust_checkpoint: bool = False):
    """``torch.load(path, weights_only=True)``, with a message that says what the file is when it fails.

    Raises FileNotFoundError for a missing file and ValueError for everything
    else: an empty file, bytes that are neither a zip archive nor a pickle, a
    TorchScript archive, a truncated or corrupt archive, and a pickle that
    names a global (a function or class) that ``weights_only`` loading
    refuses, i.e. one that could run code.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path!r}")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"cannot read checkpoint {path!r}: the file is empty (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if zipfile.is_zipfile(path):
        try:
            names = zipfile.ZipFile(path).namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            names = []
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            raise ValueError(
                f"{path!r} is a TorchScript file (torch.jit.save of a scripted or traced module), not a "
                f"captum_smocam checkpoint: SMOCAM masks a layer through forward hooks, which ScriptModules "
                f"do not support. Save the original nn.Module with "
                f"captum_smocam.models.save_checkpoint(path, model, metadata) and pass that file."
            )
    elif not head.startswith((b"\x80", b"PK")):  # a pickle's PROTO opcode, or a (damaged) zip archive
        raise ValueError(
            f"cannot read checkpoint {path!r}: not a PyTorch checkpoint (a checkpoint is a zip archive or a "
            f"pickle written by torch.save; this {size}-byte file starts with bytes {head.hex(' ')})"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before failing clearly
            return torch.load(path, map_location=map_location, weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as err:
        detail = [line.strip() for line in str(err).splitlines() if "GLOBAL" in line]
        if detail:
            raise ValueError(
                f"refusing to load {path!r}: it is not a plain captum_smocam checkpoint (it holds "
                f"objects other than tensors and plain values, which could run code when unpickled: "
                f"{detail[0][:200]}); if you made this file or trust its source, pass trust_checkpoint=True "
                f"(smocam: --trust-checkpoint)"
            ) from None
        found = [line.strip() for line in str(err).splitlines() if line.strip().startswith("Unsupported")]
        raise ValueError(
            f"cannot read checkpoint {path!r}: its pickle data are corrupt or truncated "
            f"({found[0] if found else _first_line(err)})"
        ) from None
    except Exception as err:  # torch.load raises RuntimeError, EOFError, KeyError, ... on damaged files
        raise ValueError(
            f"cannot read checkpoint {path!r}: the file is corrupt or truncated "
            f"({type(err).__name__}: {_first_line(err)})"
        ) from None


def load_checkpoint(path, map_location="cpu", *, trust_checkpoint: bool = False):
    """Read a checkpoint written by :func:`save_checkpoint` without running code.

    The file is read with ``torch.load(..., weights_only=True)``, which
    unpickles tensors and plain containers only: a file holding any other
    object (for example one whose ``__reduce__`` would call a function) is
    refused with a ValueError. The model is rebuilt from the metadata's
    ``arch`` and ``arch_kwargs`` and its weights and output statistics loaded
    strictly. Reference inputs stored in the file become the model's
    ``reference_inputs`` buffer (:func:`set_reference_inputs`), which SMOCAM's
    ``"preserve"`` objective uses when it is given no ``baselines``.

    Args:
        path (str or os.PathLike): the checkpoint file.
        map_location (str or torch.device, optional): where tensors are
            loaded. Default: ``"cpu"``
        trust_checkpoint (bool, optional): also read files that could run
            code when loaded: a whole module pickled
            (``save_checkpoint(..., trust_pickle=True)``) or a factory that
            is a function rather than an ``nn.Module`` class
            (:mod:`captum_smocam.checkpoints`). Only for files you made or
            trust. Default: False

    Returns:
        tuple: ``(model, metadata)`` — the model in eval mode and its metadata dict.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is empty, is not a PyTorch checkpoint, is
            truncated or corrupt, is a TorchScript archive (SMOCAM needs
            hooks, which ScriptModules do not support), holds objects that
            could run code, or is not a captum_smocam checkpoint.

    Examples::

        >>> import tempfile, os, torch
        >>> m = VGG3D(2, channels=(4, 8)).eval()
        >>> p = os.path.join(tempfile.mkdtemp(), "m.pt")
        >>> _ = save_checkpoint(p, m)
        >>> m2, meta = load_checkpoint(p)
        >>> x = torch.randn(1, 1, 7, 8, 9)
        >>> torch.equal(m(x), m2(x))
        True
    """
    path = os.fspath(path)
    blob = _read_checkpoint_file(path, map_location, trust_checkpoint)
    if isinstance(blob, dict) and isinstance(blob.get("metadata"), dict) and blob["metadata"].get("arch") in (
        "factory", "pickled_module"
    ):  # any other network than the package's own (checkpoints.USER_ARCHS)
        from .checkpoints import load_user_checkpoint

        if blob["metadata"].get("format_version") != CHECKPOINT_FORMAT_VERSION:
            raise ValueError(f"{path!r}: unsupported checkpoint format_version "
                             f"{blob['metadata'].get('format_version')!r}; expected {CHECKPOINT_FORMAT_VERSION}")
        return load_user_checkpoint(path, blob, map_location, trust_checkpoint=trust_checkpoint)
    if not isinstance(blob, dict) or not {"state_dict", "metadata"} <= set(blob) <= {
        "state_dict", "metadata", "reference_inputs"
    }:
        keys = f"a dict with keys {shorten_list(sorted(map(str, blob)), 5)}" if isinstance(blob, dict) \
            else f"a {type(blob).__name__}"
        hint = (" (a bare state_dict? Save the network with captum_smocam.models.save_checkpoint(path, model, "
                "metadata, factory='package.module:Class', factory_kwargs={...}); see docs/own-model.md)"
                if isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()) else "")
        raise ValueError(
            f"{path!r} is not a captum_smocam checkpoint: expected a dict with keys "
            f"['metadata', 'state_dict'] (and optionally 'reference_inputs'), got {keys}{hint}"
        )
    meta = blob["metadata"]
    if not isinstance(meta, dict):
        raise ValueError(f"{path!r}: metadata must be a dict, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{path!r}: unsupported checkpoint format_version {version!r}; "
            f"expected {CHECKPOINT_FORMAT_VERSION}"
        )
    model = _build_checked(path, meta, blob["state_dict"])
    try:
        model.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{path!r}: weights do not match architecture {meta['arch']} "
            f"{meta['arch_kwargs']}: {shorten_message(_first_line(err), 300)}"
        ) from None
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"{path!r}: {name} has {int((~torch.isfinite(t)).sum())} NaN or Inf value(s); "
                f"the model would predict NaN"
            )
    check_metadata(meta, model, where=repr(path))
    if "reference_inputs" in blob:
        reference = blob["reference_inputs"]
        try:
            set_reference_inputs(model, reference.float() if isinstance(reference, torch.Tensor) else reference)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path!r}: {err}") from None
        shape = meta.get("input_shape")
        if shape is not None and list(reference.shape[2:]) != list(shape):
            raise ValueError(f"{path!r}: reference inputs have spatial shape {tuple(reference.shape[2:])}, "
                             f"the model's input_shape is {tuple(shape)}")
    model.to(map_location)
    model.smocam_metadata = dict(meta)  # the description it carries (model_card.DESCRIPTION_ATTR): targets by name
    return model.eval(), meta


def check_metadata(metadata: dict, model: nn.Module, where: str = "checkpoint") -> None:
    """Raise ValueError if checkpoint metadata contradicts the model it describes.

    Keys are optional (a checkpoint may carry only what its user needs), but
    each one present must agree with the model: ``output_names`` (distinct
    non-empty strings, one per output), ``output_units`` (one string, or one
    per output), ``output_mean`` / ``output_std`` (one finite value per output,
    equal to the model's buffers: ``output_std`` is SMOCAM's sigma),
    ``default_layer`` (a layer of the model), ``input_shape`` (3 positive
    ints), ``affine`` (an invertible 4 x 4 matrix) and
    ``intensity_normalization`` (a name known to
    :func:`captum_smocam.preprocessing.normalize_intensity`).

    Args:
        metadata (dict): the metadata.
        model (torch.nn.Module): the model, with ``n_outputs``.
        where (str, optional): how messages name the checkpoint. Default: ``"checkpoint"``

    Examples::

        >>> check_metadata({"output_names": ["a"]}, VGG3D(2))
        Traceback (most recent call last):
        ...
        ValueError: checkpoint: metadata['output_names'] has 1 names but the model has 2 outputs
    """
    from .preprocessing import DEPRECATED_NORMALIZATION_NAMES, NORMALIZATION_METHODS

    names = metadata.get("output_names")
    n = getattr(model, "n_outputs", None)  # a user's network may not say: then its output_names count
    n = int(n) if n is not None else (len(names) if isinstance(names, list) else None)
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(v, str) and v.strip() for v in names):
            raise ValueError(f"{where}: metadata['output_names'] must be a list of non-empty str, got {names!r}")
        if len(names) != n:
            raise ValueError(f"{where}: metadata['output_names'] has {len(names)} names but the model has {n} outputs")
        repeated = sorted({v for v in names if names.count(v) > 1})
        if repeated:
            raise ValueError(f"{where}: metadata['output_names'] repeats {repeated[0]!r}; names must be distinct")
    units = metadata.get("output_units")
    if units is not None and not isinstance(units, str) and not (
        isinstance(units, list) and (n is None or len(units) == n) and all(isinstance(u, str) for u in units)
    ):
        raise ValueError(f"{where}: metadata['output_units'] must be a str or {n} str, got {units!r}")
    for key in ("output_mean", "output_std"):
        values = metadata.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
        ):
            raise ValueError(f"{where}: metadata[{key!r}] must be a list of finite numbers, got {values!r}")
        if n is not None and len(values) != n:
            raise ValueError(f"{where}: metadata[{key!r}] has {len(values)} values but the model has {n} outputs")
        buffer = getattr(model, key, None)
        if isinstance(buffer, torch.Tensor) and not torch.allclose(
            torch.tensor(values, dtype=torch.float32), buffer.detach().float().cpu(), rtol=1e-5, atol=1e-6
        ):
            raise ValueError(
                f"{where}: metadata[{key!r}] {values} differs from the model's {key} buffer {buffer.tolist()}"
            )
    layer = metadata.get("default_layer")
    if layer is not None:
        try:
            model.get_submodule(str(layer))
        except AttributeError:
            raise ValueError(f"{where}: metadata['default_layer'] {layer!r} is not a layer of the model") from None
    shape = metadata.get("input_shape")
    if shape is not None and not (
        isinstance(shape, list) and len(shape) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)
    ):
        raise ValueError(f"{where}: metadata['input_shape'] must be 3 positive ints [X, Y, Z], got {shape!r}")
    affine = metadata.get("affine")
    if affine is not None:
        try:
            a = np.asarray(affine, dtype=np.float64)
            ok = a.shape == (4, 4) and bool(np.all(np.isfinite(a))) and abs(np.linalg.det(a[:3, :3])) > 1e-12
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{where}: metadata['affine'] must be an invertible 4 x 4 matrix, got {affine!r}")
    norm = metadata.get("intensity_normalization")
    if norm is not None and norm not in NORMALIZATION_METHODS and norm not in DEPRECATED_NORMALIZATION_NAMES:
        raise ValueError(
            f"{where}: metadata['intensity_normalization'] {norm!r} is not one of {NORMALIZATION_METHODS}"
        )


def _build_checked(path: str, meta: dict, state_dict) -> nn.Module:
    """The untrained model of ``meta``, built only after its size was checked on the meta device.

    A checkpoint's ``arch_kwargs`` are data: ``channels=[200000, ...]`` would
    make the constructor allocate terabytes before any weight is compared. The
    model is therefore first built on PyTorch's ``meta`` device (shapes, no
    storage) and refused if it has more than :data:`MAX_PARAMETERS` elements or
    if any tensor's shape differs from the one stored in the file.
    """
    arch, kwargs = meta.get("arch"), meta.get("arch_kwargs")
    if not isinstance(kwargs, dict):
        raise ValueError(f"{path!r}: metadata['arch_kwargs'] must be a dict, got {kwargs!r}")
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path!r}: state_dict must be a dict of tensors, got {type(state_dict).__name__}")
    try:
        with torch.device("meta"):
            shape_only = build_model(arch, kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path!r}: cannot build {arch!r} from arch_kwargs {kwargs}: {err}") from None
    expected = shape_only.state_dict()
    n_elements = sum(t.numel() for t in expected.values())
    if n_elements > MAX_PARAMETERS:
        raise ValueError(
            f"{path!r}: architecture {arch} {kwargs} would have {n_elements:,} parameters and buffers "
            f"(at most {MAX_PARAMETERS:,} are accepted); the checkpoint's arch_kwargs are corrupt"
        )
    for name, t in expected.items():
        got = state_dict.get(name)
        if isinstance(got, torch.Tensor) and tuple(got.shape) != tuple(t.shape):
            raise ValueError(
                f"{path!r}: weights do not match architecture {arch} {kwargs}: {name} has shape "
                f"{tuple(got.shape)} in the file, the architecture needs {tuple(t.shape)}"
            )
    return build_model(arch, kwargs)


def load_default_model(name: str = "vgg"):
    """Load one of the models shipped with the package, in eval mode.

    Args:
        name (str, optional): ``"vgg"`` (VGG3D trained on a cohort whose left
            and right volumes correlate at 0.95), ``"vgg_independent"`` (same
            recipe, left and right independent), ``"alexnet"`` (AlexNet3D,
            correlation 0.95), ``"alexnet_independent"`` (AlexNet3D, left and
            right independent) or ``"monai_resnet_independent"`` (MONAI's 3-D
            ResNet, left and right independent; needs MONAI). Default: ``"vgg"``

    Returns:
        tuple: ``(model, metadata)`` as :func:`load_checkpoint`.

    Examples::

        >>> model, meta = load_default_model("vgg")  # doctest: +SKIP
        >>> meta["output_names"][:2]  # doctest: +SKIP
        ['left_lateral_ventricle', 'right_lateral_ventricle']
    """
    with importlib.resources.as_file(default_model_file(name)) as path:
        return load_checkpoint(path)


def default_model_file(name: str = "vgg"):
    """Where the shipped model ``name`` is installed: the file :func:`load_default_model` reads.

    Args:
        name (str, optional): a key of :data:`DEFAULT_MODELS`. Default: ``"vgg"``

    Returns:
        importlib.resources.abc.Traversable: the file inside the package (a plain path in a normal install).

    Raises:
        ValueError: ``name`` is not a shipped model.
        FileNotFoundError: the model's file is not installed.

    Examples::

        >>> default_model_file("vgg").name
        'vgg3d_default.pt'
    """
    if name not in DEFAULT_MODELS:
        raise ValueError(f"unknown default model {name!r}; expected one of {sorted(DEFAULT_MODELS)}")
    resource = importlib.resources.files("captum_smocam") / "data" / DEFAULT_MODELS[name]
    if not resource.is_file():
        raise FileNotFoundError(
            f"the shipped model {name!r} ({DEFAULT_MODELS[name]}) is not installed in "
            f"{resource}; train it with benchmarks/train.py (see docs/models.md)"
        )
    return resource
