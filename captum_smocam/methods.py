"""One call for every attribution method we compare, configured the same way everywhere.

The CLI (``smocam compare``/``demo``), the benchmarks and the asymmetry
experiment all call :func:`attribute_map`, so a method is configured in one
place and the comparison is fair by construction. Each method returns a map on
the **input grid**, shape ``N x 1 x <input spatial dims>``, oriented so that
larger means "more important" (the sign rules are in :data:`SIGN_RULES`).
The settings of every method, and where they come from, are the ``DEFAULT_*``
constants below; :func:`method_settings` returns them as one record.

References:
    D. Smilkov, N. Thorat, B. Kim, F. Viégas, M. Wattenberg, "SmoothGrad:
    removing noise by adding noise", arXiv:1706.03825, 2017.

    M. Sundararajan, A. Taly, Q. Yan, "Axiomatic attribution for deep
    networks", ICML 2017.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Union

import torch
from captum.attr import DeepLift, IntegratedGradients, LayerGradCam, NoiseTunnel, Occlusion, Saliency
from torch import Tensor
from torch.nn import Module

from .smocam import SMOCAM, upsample_mask

#: Methods known to :func:`attribute_map`, in the order the comparison figures show them.
METHODS = ("smocam", "smocam_poster", "gradcam", "occlusion", "saliency", "smoothgrad", "deeplift",
           "integrated_gradients")

#: Display names.
METHOD_LABELS = {
    "smocam": "SMOCAM",
    "smocam_poster": "SMOCAM (poster)",
    "gradcam": "Grad-CAM",
    "occlusion": "Occlusion",
    "saliency": "Saliency",
    "smoothgrad": "SmoothGrad",
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
    "smoothgrad": "mean over noisy copies of the absolute gradient (Saliency's rule, inside Captum's NoiseTunnel)",
    "deeplift": "absolute attribution: a volume can grow with darker or brighter voxels",
    "integrated_gradients": "absolute attribution, for the same reason as DeepLIFT",
}

#: Occlusion's window and stride in voxels of the input grid. On the shipped 56 x 68 x 60 grid
#: (3 mm) this is 80 forward passes: in docs/benchmarks.md's cost run, about ten times SMOCAM's
#: time per map on its fast path (2.96 vs 0.29 s); 8/6 would be 891 passes, 11 times as many.
DEFAULT_OCCLUSION_WINDOW = 16
DEFAULT_OCCLUSION_STRIDE = 12
#: SmoothGrad's noisy copies per map: Smilkov et al. 2017 (section 3.2) see diminishing returns past
#: about 50 samples.
DEFAULT_SMOOTHGRAD_SAMPLES = 50
#: SmoothGrad's noise sd as a fraction of each scan's intensity range (max - min): Smilkov et al.
#: 2017 find 10-20 % best; we take the middle.
DEFAULT_SMOOTHGRAD_NOISE = 0.15
#: Integrated Gradients' steps (Gauss-Legendre, Captum's default rule): Captum's default number;
#: Sundararajan et al. 2017 report 20-300 steps approximate the integral within 5 %.
DEFAULT_IG_STEPS = 50
#: Noisy copies (SmoothGrad) or path points (IG) per forward/backward pass: bounds memory only.
DEFAULT_INTERNAL_BATCH = 10
#: Seed of SmoothGrad's noise (drawn in a forked random state: the caller's is left as it was).
DEFAULT_SMOOTHGRAD_SEED = 0


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


def method_settings(method: str, *, occlusion_window: int = DEFAULT_OCCLUSION_WINDOW,
                    occlusion_stride: int = DEFAULT_OCCLUSION_STRIDE, ig_steps: int = DEFAULT_IG_STEPS,
                    smoothgrad_samples: int = DEFAULT_SMOOTHGRAD_SAMPLES,
                    smoothgrad_noise: float = DEFAULT_SMOOTHGRAD_NOISE) -> Dict[str, Any]:
    """The settings a method runs with in :func:`attribute_map`, as plain values (for manifests and tables).

    Args:
        method (str): one of :data:`METHODS`.
        occlusion_window, occlusion_stride, ig_steps, smoothgrad_samples,
            smoothgrad_noise: as in :func:`attribute_map`.

    Returns:
        dict: ``sign`` (:data:`SIGN_RULES`) and the method's own settings.

    Examples::

        >>> method_settings("smoothgrad")["noise_sd"]
        '0.15 x (max - min) of each scan'
        >>> method_settings("integrated_gradients")["baseline"]
        "each scan's minimum (background)"
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    out: Dict[str, Any] = {"sign": SIGN_RULES[method]}
    background = "each scan's minimum (background)"
    if method == "occlusion":
        out.update(window=int(occlusion_window), stride=int(occlusion_stride), baseline=background)
    elif method == "smoothgrad":
        out.update(samples=int(smoothgrad_samples), noise_sd=f"{smoothgrad_noise:g} x (max - min) of each scan",
                   seed=DEFAULT_SMOOTHGRAD_SEED)
    elif method == "integrated_gradients":
        out.update(steps=int(ig_steps), rule="gausslegendre", baseline=background)
    elif method == "deeplift":
        out.update(baseline=background)
    return out


def _smoothgrad(model: Module, x: Tensor, tgt, samples: int, noise: float) -> Tensor:
    """SmoothGrad of each example with noise sd ``noise x (max - min)`` of that example, seeded."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"smoothgrad_samples must be an integer >= 1, got {samples!r}")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"smoothgrad_noise must be a finite number >= 0, got {noise!r}")
    tunnel = NoiseTunnel(Saliency(model))
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        sd = float(noise) * float(xi.max() - xi.min())
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(DEFAULT_SMOOTHGRAD_SEED)
            out.append(tunnel.attribute(xi, nt_type="smoothgrad", nt_samples=samples,
                                        nt_samples_batch_size=min(samples, DEFAULT_INTERNAL_BATCH), stdevs=sd,
                                        target=tgt[i] if isinstance(tgt, list) else tgt, abs=True).detach())
    return torch.cat(out)


def attribute_map(
    method: str,
    model: Module,
    x: Tensor,
    target: Union[int, Sequence[int]],
    *,
    layer: Optional[Module] = None,
    output_std: Union[None, float, Tensor, Sequence[float]] = None,
    smocam_kwargs: Optional[Dict[str, Any]] = None,
    occlusion_window: int = DEFAULT_OCCLUSION_WINDOW,
    occlusion_stride: int = DEFAULT_OCCLUSION_STRIDE,
    perturbations_per_eval: int = 8,
    ig_steps: int = DEFAULT_IG_STEPS,
    smoothgrad_samples: int = DEFAULT_SMOOTHGRAD_SAMPLES,
    smoothgrad_noise: float = DEFAULT_SMOOTHGRAD_NOISE,
    show_progress: bool = False,
    history: Optional[dict] = None,
    record: Optional[dict] = None,
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
            (one per output allowed); None lets SMOCAM take the model's own
            (see :meth:`SMOCAM.attribute`). Default: None
        smocam_kwargs (dict, optional): further arguments of
            :meth:`SMOCAM.attribute`. Default: None
        occlusion_window (int, optional): cubic window side in voxels.
            Default: ``DEFAULT_OCCLUSION_WINDOW``
        occlusion_stride (int, optional): window stride in voxels.
            Default: ``DEFAULT_OCCLUSION_STRIDE``
        perturbations_per_eval (int, optional): Occlusion's batch of
            perturbed inputs. Default: 8
        ig_steps (int, optional): Integrated Gradients' steps from the
            background baseline (:func:`background_baseline`) to the scan.
            Default: ``DEFAULT_IG_STEPS``
        smoothgrad_samples (int, optional): SmoothGrad's noisy copies.
            Default: ``DEFAULT_SMOOTHGRAD_SAMPLES``
        smoothgrad_noise (float, optional): SmoothGrad's Gaussian noise sd as
            a fraction of each scan's intensity range (max - min).
            Default: ``DEFAULT_SMOOTHGRAD_NOISE``
        show_progress (bool, optional): progress bars where the method has
            them (SMOCAM, Occlusion). Default: False
        history (dict, optional): for SMOCAM, filled with the per-step loss
            terms (:attr:`SMOCAM.history`). Default: None
        record (dict, optional): filled with what the call used: ``method``,
            ``settings`` (:func:`method_settings`) and, for SMOCAM,
            ``reference_source`` (:attr:`SMOCAM.reference_source`: which
            references the mask was measured against). Default: None

    Returns:
        Tensor: ``N x 1 x <spatial dims of x>``, detached, larger = more important.

    Examples::

        >>> import torch
        >>> from captum_smocam.models import VGG3D
        >>> net = VGG3D(3, channels=(4, 8)).eval()
        >>> x = torch.randn(1, 1, 12, 14, 10)
        >>> attribute_map("gradcam", net, x, 1, layer=net.features.block2).shape
        torch.Size([1, 1, 12, 14, 10])
        >>> attribute_map("smoothgrad", net, x, 1, smoothgrad_samples=4).shape
        torch.Size([1, 1, 12, 14, 10])
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if method in ("smocam", "smocam_poster", "gradcam") and layer is None:
        raise ValueError(f"method {method!r} needs a layer")
    spatial = x.shape[2:]
    tgt = list(target) if isinstance(target, (list, tuple)) else target
    if record is not None:
        record.update(method=method, settings=method_settings(
            method, occlusion_window=occlusion_window, occlusion_stride=occlusion_stride, ig_steps=ig_steps,
            smoothgrad_samples=smoothgrad_samples, smoothgrad_noise=smoothgrad_noise))
    if method in ("smocam", "smocam_poster"):
        kwargs = dict(smocam_kwargs or {})
        if method == "smocam_poster":
            kwargs["objective"] = "poster"
        kwargs.setdefault("show_progress", show_progress)
        smocam = SMOCAM(model, layer)
        mask = smocam.attribute(x, target=tgt, output_std=output_std, **kwargs)
        if history is not None:
            history.update(smocam.history)
        if record is not None:
            record["settings"].update({k: v for k, v in kwargs.items()
                                       if k != "show_progress" and isinstance(v, (bool, int, float, str))})
            record["reference_source"] = smocam.reference_source
        return upsample_mask(mask, spatial).detach()
    if method == "gradcam":
        cam = LayerGradCam(model, layer).attribute(x, target=tgt, relu_attributions=True)
        return upsample_mask(cam, spatial).detach()
    if method == "saliency":
        return Saliency(model).attribute(x, target=tgt, abs=True).detach().sum(dim=1, keepdim=True)
    if method == "smoothgrad":
        return _smoothgrad(model, x, tgt, smoothgrad_samples, smoothgrad_noise).sum(dim=1, keepdim=True)
    base = background_baseline(x)
    if method == "deeplift":
        attr = DeepLift(model).attribute(x, baselines=base, target=tgt)
    elif method == "integrated_gradients":
        attr = IntegratedGradients(model).attribute(x, baselines=base, target=tgt, n_steps=ig_steps,
                                                    internal_batch_size=min(ig_steps, DEFAULT_INTERNAL_BATCH))
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
