"""One call for every attribution method we compare, configured the same way everywhere.

The CLI (``smocam compare``/``demo``), the benchmarks and the asymmetry
experiment all call :func:`attribute_map`, so a method is configured in one
place and the comparison is fair by construction. Each method returns a map on
the **input grid**, shape ``N x 1 x <input spatial dims>``, oriented so that
larger means "more important" (the sign rules are in :data:`SIGN_RULES`).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Union

from captum.attr import DeepLift, IntegratedGradients, LayerGradCam, Occlusion, Saliency
from torch import Tensor
from torch.nn import Module

from .smocam import SMOCAM, upsample_mask

#: Methods known to :func:`attribute_map`, in the order the comparison figures show them.
METHODS = ("smocam", "smocam_poster", "gradcam", "occlusion", "saliency", "deeplift", "integrated_gradients")

#: Display names.
METHOD_LABELS = {
    "smocam": "SMOCAM",
    "smocam_poster": "SMOCAM (poster)",
    "gradcam": "Grad-CAM",
    "occlusion": "Occlusion",
    "saliency": "Saliency",
    "deeplift": "DeepLIFT",
    "integrated_gradients": "Integrated Gradients",
}

#: Which sign each method keeps, and why (documented in docs/benchmarks.md).
SIGN_RULES = {
    "smocam": "the mask itself (in [0, 1] by construction)",
    "smocam_poster": "the mask itself (non-negative by construction)",
    "gradcam": "ReLU of the channel-weighted activations, as in Selvaraju et al. 2017",
    "occlusion": "absolute change of the output when the window is replaced by the baseline",
    "saliency": "absolute gradient (Simonyan et al. 2013; Captum's default abs=True)",
    "deeplift": "absolute attribution: a volume can grow with darker or brighter voxels",
    "integrated_gradients": "absolute attribution, for the same reason as DeepLIFT",
}

#: Occlusion's window and stride in voxels of the input grid. On the shipped 56 x 68 x 60 grid
#: (3 mm) this is 80 forward passes: in docs/benchmarks.md's cost run, about ten times SMOCAM's
#: time per map on its fast path (2.96 vs 0.29 s); 8/6 would be 891 passes, 11 times as many.
DEFAULT_OCCLUSION_WINDOW = 16
DEFAULT_OCCLUSION_STRIDE = 12


def background_baseline(x: Tensor) -> Tensor:
    """The baseline used by Occlusion, DeepLIFT and Integrated Gradients: the background value.

    For a normalised scan the background (air) is the minimum intensity; an
    all-background image is "a head with nothing in it", the natural reference
    for a volume regressor (an all-zero image would be mid-grey after
    ``zscore_nonzero`` normalisation).

    Args:
        x (Tensor): inputs, ``N x C x <spatial dims>``.

    Returns:
        Tensor: same shape, each example filled with its own minimum.
    """
    n = x.shape[0]
    mins = x.reshape(n, -1).min(dim=1).values
    return mins.view(n, *([1] * (x.dim() - 1))).expand_as(x).contiguous()


def attribute_map(
    method: str,
    model: Module,
    x: Tensor,
    target: Union[int, Sequence[int]],
    *,
    layer: Optional[Module] = None,
    output_std: Union[float, Tensor, Sequence[float]] = 1.0,
    smocam_kwargs: Optional[Dict[str, Any]] = None,
    occlusion_window: int = DEFAULT_OCCLUSION_WINDOW,
    occlusion_stride: int = DEFAULT_OCCLUSION_STRIDE,
    perturbations_per_eval: int = 8,
    ig_steps: int = 16,
    show_progress: bool = False,
    history: Optional[dict] = None,
) -> Tensor:
    """Attribution map of ``model``'s output ``target`` on the input grid.

    Args:
        method (str): one of :data:`METHODS`.
        model (torch.nn.Module): the regressor, in eval mode.
        x (Tensor): inputs, ``N x 1 x <spatial dims>``.
        target (int or list of int): output index (one for all, or one per example).
        layer (torch.nn.Module, optional): the layer for SMOCAM and Grad-CAM
            (required by those two). Default: None
        output_std (float, sequence or Tensor, optional): SMOCAM's sigma
            (one per output allowed). Default: 1.0
        smocam_kwargs (dict, optional): further arguments of
            :meth:`SMOCAM.attribute`. Default: None
        occlusion_window (int, optional): cubic window side in voxels.
            Default: ``DEFAULT_OCCLUSION_WINDOW``
        occlusion_stride (int, optional): window stride in voxels.
            Default: ``DEFAULT_OCCLUSION_STRIDE``
        perturbations_per_eval (int, optional): Occlusion's batch of
            perturbed inputs. Default: 8
        ig_steps (int, optional): Integrated Gradients' steps. Default: 16
        show_progress (bool, optional): progress bars where the method has
            them (SMOCAM, Occlusion). Default: False
        history (dict, optional): for SMOCAM, filled with the per-step loss
            terms (:attr:`SMOCAM.history`). Default: None

    Returns:
        Tensor: ``N x 1 x <spatial dims of x>``, detached, larger = more important.

    Examples::

        >>> import torch
        >>> from captum_smocam.models import VGG3D
        >>> net = VGG3D(3, channels=(4, 8)).eval()
        >>> x = torch.randn(1, 1, 12, 14, 10)
        >>> attribute_map("gradcam", net, x, 1, layer=net.features.block2).shape
        torch.Size([1, 1, 12, 14, 10])
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if method in ("smocam", "smocam_poster", "gradcam") and layer is None:
        raise ValueError(f"method {method!r} needs a layer")
    spatial = x.shape[2:]
    tgt = list(target) if isinstance(target, (list, tuple)) else target
    if method in ("smocam", "smocam_poster"):
        kwargs = dict(smocam_kwargs or {})
        if method == "smocam_poster":
            kwargs["objective"] = "poster"
        kwargs.setdefault("show_progress", show_progress)
        smocam = SMOCAM(model, layer)
        mask = smocam.attribute(x, target=tgt, output_std=output_std, **kwargs)
        if history is not None:
            history.update(smocam.history)
        return upsample_mask(mask, spatial).detach()
    if method == "gradcam":
        cam = LayerGradCam(model, layer).attribute(x, target=tgt, relu_attributions=True)
        return upsample_mask(cam, spatial).detach()
    if method == "saliency":
        return Saliency(model).attribute(x, target=tgt, abs=True).detach().sum(dim=1, keepdim=True)
    base = background_baseline(x)
    if method == "deeplift":
        attr = DeepLift(model).attribute(x, baselines=base, target=tgt)
    elif method == "integrated_gradients":
        attr = IntegratedGradients(model).attribute(x, baselines=base, target=tgt, n_steps=ig_steps,
                                                    internal_batch_size=ig_steps)
    else:  # occlusion
        window = (x.shape[1],) + (int(occlusion_window),) * len(spatial)
        strides = (x.shape[1],) + (int(occlusion_stride),) * len(spatial)
        attr = Occlusion(model).attribute(
            x, sliding_window_shapes=window, strides=strides, baselines=base, target=tgt,
            perturbations_per_eval=perturbations_per_eval, show_progress=show_progress,
        )
    return attr.detach().abs().sum(dim=1, keepdim=True)


def occlusion_evaluations(spatial: Sequence[int], window: int = DEFAULT_OCCLUSION_WINDOW,
                          stride: int = DEFAULT_OCCLUSION_STRIDE) -> int:
    """Number of forward passes Occlusion needs on a grid (its cost model).

    Examples::

        >>> occlusion_evaluations((60, 72, 60), 8, 6)
        891
    """
    return int(math.prod((s - window) // stride + 1 for s in spatial))
