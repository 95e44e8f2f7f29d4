"""3-D convolutional regression models for brain morphometry, what they carry, and their checkpoints.

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
of standardised targets (:meth:`~captum_smocam.models.base.VolumeRegressor.standardize`).

Checkpoints (:func:`save_checkpoint`, :func:`load_checkpoint`) hold only
tensors and plain Python values and are read with ``torch.load(...,
weights_only=True)``: loading a checkpoint never runs code. The architecture is
rebuilt from the names ``arch`` and ``arch_kwargs`` in its metadata.
:func:`load_default_model` reads the weights shipped in ``captum_smocam/data``.

Modules, in the order data flows through them (every public name is importable from here):

* :mod:`.base` — what every architecture shares (checked sizes, the pooled
  head, outputs in cm³); :mod:`.registry` — :data:`ARCHITECTURES`, which a
  class enters with ``@register_architecture`` and its own ``arch_kwargs()``;
* :mod:`.vgg`, :mod:`.alexnet` — the architectures;
* what a model carries besides its weights — reference inputs
  (:func:`set_reference_inputs`, :func:`get_reference_inputs`) and sigma
  (:func:`get_output_std`) — is set and read in :mod:`captum_smocam.model_card`
  beside its description, and handed on from here;
* :mod:`.metadata` — plain-value metadata and :func:`check_metadata`;
  :mod:`.checkpoint_file` — the format version and reading a file safely;
  :mod:`.checkpoints` — :func:`save_checkpoint`, :func:`load_checkpoint`;
  :mod:`.user_checkpoints` — any other network (an entry point, or a trusted
  pickle);
* :mod:`.shipped` — the shipped weights (:data:`DEFAULT_MODELS`, :func:`load_default_model`).
"""
from __future__ import annotations

from .registry import ARCHITECTURES, build_model
from .vgg import VGG3D
from .alexnet import REBSAMEN_ALEXNET3D, AlexNet3D, rebsamen_alexnet3d
from ..model_card import MAX_REFERENCE_INPUTS, get_output_std, get_reference_inputs, set_reference_inputs
from .metadata import METADATA_KEYS, check_metadata
from .checkpoint_file import CHECKPOINT_FORMAT_VERSION, MAX_PARAMETERS
from .checkpoints import load_checkpoint, save_checkpoint
from .shipped import DEFAULT_MODELS, default_model_file, load_default_model

__all__ = [
    "VGG3D",
    "AlexNet3D",
    "REBSAMEN_ALEXNET3D",
    "rebsamen_alexnet3d",
    "ARCHITECTURES",
    "DEFAULT_MODELS",
    "CHECKPOINT_FORMAT_VERSION",
    "MAX_PARAMETERS",
    "MAX_REFERENCE_INPUTS",
    "METADATA_KEYS",
    "build_model",
    "check_metadata",
    "save_checkpoint",
    "load_checkpoint",
    "set_reference_inputs",
    "get_reference_inputs",
    "get_output_std",
    "load_default_model",
    "default_model_file",
]
