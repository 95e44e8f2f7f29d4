"""The models shipped with the package: their names, their files, and loading one."""
from __future__ import annotations

import importlib.resources

from .checkpoints import load_checkpoint

__all__ = ["DEFAULT_MODELS", "load_default_model", "default_model_file"]

#: Names accepted by :func:`load_default_model` and the shipped files they read.
DEFAULT_MODELS = {
    "vgg": "vgg3d_default.pt",
    "vgg_independent": "vgg3d_independent.pt",
    "alexnet": "alexnet3d_default.pt",
    "alexnet_independent": "alexnet3d_independent.pt",
    # MONAI's ResNet (captum_smocam.benchmarking.outside; loading it needs `pip install monai`)
    "monai_resnet_independent": "monai_resnet_independent.pt",
}


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
