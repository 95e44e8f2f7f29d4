"""Digests of SMOCAM's outputs on fixed inputs: a refactor must leave every one unchanged, to the last bit.

Runs SMOCAM on the shipped models (and a tiny random VGG without ``output_std``)
over a grid of settings that reaches every part of the method: both objectives,
the model's references, given baselines, each fallback, ``fidelity_tol``,
``distance_unit``, the fast path with its kernel plan and the hook path, batches
and single calls, ``tol`` stopping, ``internal_batch_size`` and
``upsample_to_input``. For each case it records the SHA-256 of the mask's bytes
and of the per-step history, with ``fidelity``, ``output_std_used``,
``reference_source`` and ``path``.

Floating point is bitwise reproducible only on one machine with one torch
build and thread count, so a digest file is compared with one written on the
same machine (``--against``); it is not a result to publish.

Usage::

    python benchmarks/mask_digest.py --out /tmp/before.json            # on the old code
    python benchmarks/mask_digest.py --out /tmp/after.json --against /tmp/before.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings

import torch

from captum_smocam import SMOCAM, fallbacks
from captum_smocam.benchmarking.data import load_model, load_subject, shipped_model_available
from captum_smocam.models import VGG3D

STEPS = 12


def _digest(t):
    if t is None:
        return None
    if isinstance(t, dict):
        return {k: _digest(v) for k, v in sorted(t.items())}
    t = t.detach().contiguous().cpu()
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:20]


def _layer(model, meta):
    return model.get_submodule(meta.get("default_layer", "features.block3"))


def _record(sm, mask):
    return {
        "mask": _digest(mask),
        "shape": list(mask.shape),
        "history": _digest(sm.history),
        "fidelity": _digest(sm.fidelity),
        "output_std_used": _digest(sm.output_std_used),
        "reference_source": sm.reference_source,
        "path": sm.path,
    }


def _cases():
    """(name, model spec, subject index, attribute kwargs, targets, batch)."""
    std = {"n_steps": STEPS}
    cases = [
        ("vgg/default/batch4", "vgg", {}, [0, 1, 2, 3], True),
        ("vgg/short/single", "vgg", std, [5], False),
        ("vgg/short/batch16", "vgg", std, list(range(16)), True),
        ("vgg/short/ibs3", "vgg", {**std, "internal_batch_size": 3}, [0, 1, 2, 3, 4, 5, 6], True),
        ("vgg/hook/stock", "vgg", {**std, "fast": False, "kernel_plan": "stock"}, [1, 2], True),
        ("vgg/stock/fast", "vgg", {**std, "kernel_plan": "stock"}, [1, 2], True),
        ("vgg/poster", "vgg", {"objective": "poster", "n_steps": STEPS}, [0, 3], True),
        ("vgg/poster/signed", "vgg", {"objective": "poster", "n_steps": STEPS, "nonnegative": False,
                                      "relu_attributions": True}, [2], True),
        ("vgg/baseline0", "vgg", {**std, "baselines": 0.0}, [0, 1], True),
        ("vgg/fidelity", "vgg", {**std, "fidelity_tol": 0.1}, [0, 1], True),
        ("vgg/effect", "vgg", {**std, "distance_unit": "effect", "output_std": 0.7}, [0, 1], True),
        ("vgg/tol", "vgg", {"n_steps": 60, "tol": 1e-3, "patience": 5}, [0, 1], True),
        ("vgg/upsample", "vgg", {**std, "upsample_to_input": True, "smooth_weight": 1.0,
                                 "area_weight": 40.0, "lr": 0.3}, [3], True),
        ("vgg/float64", "vgg", {**std, "dtype": torch.float64}, [1], True),
        ("vgg/layer_input", "vgg", {**std, "attribute_to_layer_input": True}, [1], True),
        ("alexnet/short", "alexnet", std, [0, 1, 2], True),
        ("vgg_independent/short", "vgg_independent", std, [0, 1], True),
        ("alexnet_independent/short", "alexnet_independent", std, [2, 3], True),
        ("monai_resnet_independent/short", "monai_resnet_independent", std, [0, 1], True),
        ("tiny/no_std", "untrained", std, [0, 1], True),
    ]
    for fb in fallbacks.FALLBACKS:
        cases.append((f"vgg/fallback/{fb}", "vgg", {**std, "fallback": fb, "_no_refs": True}, [0, 1], True))
    return cases


def run(selected=None):
    from captum_smocam.models import get_reference_inputs, set_reference_inputs

    out = {}
    models = {}
    for name, spec, kwargs, targets, batch in _cases():
        if selected and not any(s in name for s in selected):
            continue
        if spec != "untrained" and not shipped_model_available(spec):
            out[name] = "unavailable"
            continue
        if spec not in models:
            try:
                models[spec] = load_model(spec)
            except Exception as exc:  # e.g. MONAI not installed
                out[name] = f"unavailable: {type(exc).__name__}"
                continue
        model, meta = models[spec]
        kwargs = dict(kwargs)
        no_refs = kwargs.pop("_no_refs", False)
        if spec == "untrained":
            torch.manual_seed(0)
            model = VGG3D(16, channels=(4, 8, 8)).eval()
            x = torch.randn(1, 1, 20, 24, 18)
            layer = model.features.block2
        else:
            x, _ = load_subject(20000, meta)
            layer = _layer(model, meta)
        saved = get_reference_inputs(model)
        if no_refs:
            set_reference_inputs(model, None)
        try:
            torch.manual_seed(1)
            sm = SMOCAM(model, layer)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if batch:
                    xs = x.expand(len(targets), *x.shape[1:])
                    mask = sm.attribute(xs, target=list(targets), **kwargs)
                else:
                    mask = sm.attribute(x, target=targets[0], **kwargs)
            out[name] = _record(sm, mask)
        finally:
            if no_refs and saved is not None:
                set_reference_inputs(model, saved)
        print(name, out[name] if isinstance(out[name], str) else out[name]["mask"], flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON file of digests to write")
    p.add_argument("--against", help="a digest file written on the same machine to compare with")
    p.add_argument("--only", nargs="*", help="run only the cases whose name contains one of these")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = run(args.only)
    with open(args.out, "w") as f:
        json.dump({"torch": torch.__version__, "threads": 1, "cases": out}, f, indent=1, sort_keys=True)
    if args.against:
        with open(args.against) as f:
            before = json.load(f)["cases"]
        diff = [k for k in out if before.get(k) != out[k]]
        missing = [k for k in before if k not in out and not args.only]
        for k in diff:
            print(f"DIFFERS: {k}\n  before {before.get(k)}\n  after  {out[k]}")
        for k in missing:
            print(f"MISSING: {k}")
        if diff or missing:
            return 1
        print(f"all {len(out)} cases identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
