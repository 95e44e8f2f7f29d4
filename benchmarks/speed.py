"""How fast is SMOCAM? Naive loop, fast path, hook path, suffix lower bound, K outputs, Captum methods.

Everything is measured in one process on one model (the shipped VGG3D, or a
randomly initialised VGG3D of the same architecture while the shipped weights
do not exist) and one input per size, so the ratios are comparable even on a
loaded machine. Peak memory is measured with
:class:`captum_smocam.benchmarking.PeakMemory` (CPU: the kernel's peak resident
set size ``VmHWM``, reset just before the call, minus the resident set at the
call's start: what the call adds at its peak, allocator caching included;
CUDA: ``torch.cuda.max_memory_allocated``), on CPU in a fresh subprocess per
method, so that memory an earlier method left resident does not hide the cost.

Seconds per mask are, by default, *extrapolated* from short runs so that the
whole benchmark fits in ~10 minutes: each method runs once with 1 step
(``t1`` = set-up + one evaluation) and once with ``1 + k`` steps; with
``step = (t_{1+k} - t_1) / k``, one mask at ``n_steps`` costs
``t1 + (n_steps - 1) * step``. ``--full-steps`` times real ``n_steps`` runs
instead. The fast path is also timed once for real at the default settings
on the default layer (the "< 5 s per mask" target).

Run::

    python benchmarks/speed.py                 # full run (~10 min on 2 CPU cores)
    python benchmarks/speed.py --quick         # tiny smoke run (< 1 min)
    python benchmarks/speed.py --device cuda   # same script on a GPU

Writes ``speed.md`` (Markdown tables) and ``speed.json`` under ``--out``; a
``--quick`` run writes ``speed_quick.md`` and ``speed_quick.json``, by default
under ``benchmarks/runs/quick/speed/`` (git-ignored), never over the published
tables.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from captum_smocam import benchmarking
from captum_smocam.benchmarking import PeakMemory, cpu_model, shipped_model_available, write_json, write_text
from captum_smocam.smocam import (
    DEFAULT_L2_WEIGHT,
    DEFAULT_LR,
    DEFAULT_N_STEPS,
    DEFAULT_SMOOTH_WEIGHT,
    SMOCAM,
    smocam_objective,
)

REPO = Path(__file__).resolve().parents[1]
#: Where the full run's tables go (committed), and a quick run's (git-ignored scratch).
RESULTS, QUICK = REPO / "benchmarks" / "logs" / "speed", REPO / "benchmarks" / "runs" / "quick" / "speed"

SMOCAM_METHODS = ("naive", "fast", "hook")
CAPTUM_METHODS = ("LayerGradCam", "Saliency", "DeepLift", "Occlusion")


# ----------------------------------------------------------------------------- set-up
def load_model(device, use_shipped=True):
    """``(model, default layer, description)``: the shipped VGG, or an untrained VGG3D of its architecture."""
    name = "vgg" if use_shipped and shipped_model_available("vgg") else "untrained"
    model, meta = benchmarking.load_model(name)
    source = ("shipped captum_smocam/data/vgg3d_default.pt" if name == "vgg" else
              f"random-init VGG3D({benchmarking.SHIPPED_VGG_ARCH}) (shipped weights not used)")
    return model.to(device).eval(), meta["default_layer"], source


def make_input(size, device):
    """A reproducible N(0, 1) volume ``1 x 1 x size^3`` (content does not change the cost)."""
    g = torch.Generator().manual_seed(size)
    return torch.randn(1, 1, size, size, size, generator=g).to(device)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


# ----------------------------------------------------------------------------- naive reference
def naive_smocam(model, layer, x, target, n_steps=DEFAULT_N_STEPS, lr=DEFAULT_LR):
    """The textbook loop: whole network every step, a hook multiplies the layer output by the mask.

    Same objective (:func:`smocam_objective`, sigma = 1), same optimiser (Adam,
    step ``lr`` relative to the uniform unit-norm value, cosine decay to 1 %),
    same projection onto ``M >= 0`` and best-iterate rule as SMOCAM; the
    gradient is taken with respect to the mask only (no parameter gradients).
    """
    seen = []
    handle = layer.register_forward_hook(lambda m, a, o: seen.append(o.shape))
    with torch.no_grad():
        reference = model(x)[:, target]
    handle.remove()
    spatial = tuple(seen[0][2:])
    unit = 1.0 / math.sqrt(float(np.prod(spatial)))
    rel = torch.ones((x.shape[0], 1, *spatial), device=x.device, requires_grad=True)
    optimiser = torch.optim.Adam([rel], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=n_steps, eta_min=0.01 * lr)
    state = {}
    handle = layer.register_forward_hook(lambda m, a, o: o * state["mask"])
    best, best_rel = math.inf, rel.detach().clone()
    try:
        for step in range(n_steps):
            mask = rel * unit
            state["mask"] = mask
            out = model(x)[:, target]
            loss = smocam_objective(out, reference, mask, 1.0, DEFAULT_L2_WEIGHT, DEFAULT_SMOOTH_WEIGHT)["total"].sum()
            if float(loss.detach()) < best:
                best, best_rel = float(loss), rel.detach().clone()
            if step == n_steps - 1:
                break
            (rel.grad,) = torch.autograd.grad(loss, rel)
            optimiser.step()
            schedule.step()
            with torch.no_grad():
                rel.clamp_(min=0.0)
    finally:
        handle.remove()
    return best_rel * unit


# ----------------------------------------------------------------------------- suffix lower bound
class VGGSuffix(nn.Module):
    """The layers of a VGG3D after ``features.block{k}``: the rest of the blocks, pooling, head."""

    def __init__(self, model, layer_name):
        super().__init__()
        names = list(model.features._modules)
        block = layer_name.split(".")[-1]
        if not layer_name.startswith("features.") or block not in names:
            raise ValueError(f"layer {layer_name!r} is not one of features.{names}")
        self.blocks = nn.Sequential(*[model.features._modules[n] for n in names[names.index(block) + 1:]])
        self.pool, self.head = model.pool, model.head
        self.register_buffer("mean", model.output_mean)
        self.register_buffer("std", model.output_std)

    def forward(self, z):
        return self.head(self.pool(self.blocks(z)).flatten(1)) * self.std + self.mean


def suffix_step_seconds(model, layer_name, x, target, reps, device):
    """Seconds of one ``suffix(F * M)`` forward + backward to ``M``, ``F`` cached (mean of ``reps``)."""
    seen = []
    layer = model.get_submodule(layer_name)
    handle = layer.register_forward_hook(lambda m, a, o: seen.append(o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    feature = seen[0]
    suffix = VGGSuffix(model, layer_name)
    mask = torch.ones((1, 1, *feature.shape[2:]), device=x.device, requires_grad=True)

    def one():
        out = suffix(feature * mask)[0, target]
        torch.autograd.grad(out, mask)

    one()  # warm-up
    seconds, _ = timed(lambda: [one() for _ in range(reps)], device)
    return seconds / reps


# ----------------------------------------------------------------------------- SMOCAM runs
def run_smocam(method, model, layer_name, x, target, n_steps):
    if method == "naive":
        return naive_smocam(model, model.get_submodule(layer_name), x, target, n_steps)
    sm = SMOCAM(model, model.get_submodule(layer_name))
    mask = sm.attribute(x, target=target, n_steps=n_steps, fast=(method == "fast"))
    if sm.path != method:
        raise RuntimeError(f"asked for the {method} path, SMOCAM ran the {sm.path} path")
    return mask


def run_k(model_, layer_name, x, k, n_steps, internal_batch_size=None):
    sm = SMOCAM(model_, model_.get_submodule(layer_name))
    return sm.attribute(x.expand(k, *x.shape[1:]), target=list(range(k)), n_steps=n_steps,
                        internal_batch_size=internal_batch_size)


def per_mask_seconds(run, n_steps, k, device, full):
    """``(seconds, how)`` for one call at ``n_steps``: real, or extrapolated from 1 and 1 + k steps."""
    if full or n_steps <= 1 + k:
        return timed(lambda: run(n_steps), device)[0], "measured"
    t1 = timed(lambda: run(1), device)[0]
    tk = timed(lambda: run(1 + k), device)[0]
    step = max(tk - t1, 0.0) / k
    return t1 + (n_steps - 1) * step, f"t(1)+{n_steps - 1}*step, step from {1 + k} vs 1 steps"


# ----------------------------------------------------------------------------- Captum
def run_captum(method, model, layer_name, x, target):
    from captum.attr import DeepLift, LayerGradCam, Occlusion, Saliency

    if method == "LayerGradCam":
        return LayerGradCam(model, model.get_submodule(layer_name)).attribute(x, target=target)
    if method == "Saliency":
        return Saliency(model).attribute(x, target=target)
    if method == "DeepLift":
        return DeepLift(model).attribute(x, target=target, baselines=0.0)
    if method == "Occlusion":
        w = occlusion_window(x.shape[2])
        return Occlusion(model).attribute(x, target=target, sliding_window_shapes=(1, w, w, w),
                                          strides=(1, w, w, w), baselines=0.0, perturbations_per_eval=8)
    raise ValueError(method)


def occlusion_window(size):
    """Occlusion cube side = stride = size / 4 (4^3 = 64 occluded patches)."""
    return max(1, size // 4)


# ----------------------------------------------------------------------------- memory
def measure_peak(spec, device):
    """``(peak MiB, how)`` of one call of ``spec["method"]`` on a freshly loaded model and input."""
    model, _, _ = load_model(device, not spec["random"])
    x = make_input(spec["size"], device)
    method, layer, steps = spec["method"], spec["layer"], spec["steps"]
    with PeakMemory(device) as mem:
        if method in SMOCAM_METHODS:
            run_smocam(method, model, layer, x, 0, steps)
        elif method == "fast K":
            run_k(model, layer, x, spec["k"], steps)
        else:
            run_captum(method, model, layer, x, 0)
    return mem.peak_mb, mem.description


def memory_child(spec):
    """Measure one method once in this (fresh) process; print the peak-memory increase as JSON."""
    torch.set_num_threads(spec["threads"])
    peak, how = measure_peak(spec, spec["device"])
    print(json.dumps({"peak_mib": peak, "how": how}))


def peak_memory_mib(spec, device):
    """``(peak MiB, how)`` of one call: in a fresh subprocess on CPU, in this process on CUDA."""
    if torch.device(device).type == "cuda":
        return measure_peak(spec, device)
    out = subprocess.run([sys.executable, __file__, "--_memory-child", json.dumps(spec)],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["peak_mib"], result["how"]


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="device of model and input (default: cuda if available)")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96], help="cubic input sizes")
    p.add_argument("--layers", nargs="+", default=None,
                   help="masked layers (default: features.block2 and the checkpoint's default_layer)")
    p.add_argument("--n-steps", type=int, default=DEFAULT_N_STEPS)
    p.add_argument("--k-steps", type=int, default=10,
                   help="steps of the long short run used to extrapolate seconds per mask")
    p.add_argument("--full-steps", action="store_true", help="time real n_steps runs (slow)")
    p.add_argument("--suffix-reps", type=int, default=20)
    p.add_argument("--k", type=int, default=None, help="outputs of one scan at once (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-real-run", action="store_true",
                   help="skip the real default-settings fast-path run (first size only)")
    p.add_argument("--random", action="store_true", help="random-init VGG3D even if shipped weights exist")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--out", default=None,
                   help=f"output folder (default: {RESULTS.relative_to(REPO)}; with --quick {QUICK.relative_to(REPO)})")
    p.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.n_steps, args.k_steps, args.suffix_reps = [24], 6, 2, 2
        args.k = args.k or 4
        args.no_real_run = True
    args.out = args.out or str(QUICK if args.quick else RESULTS)  # a quick run never overwrites the tables
    return args


def fmt(v, spec=".3g"):
    return "—" if v is None else format(v, spec)


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return
    torch.set_num_threads(args.threads)
    device = args.device
    model, default_layer, source = load_model(device, not args.random)
    layers = args.layers or [n for n in ("features.block2", default_layer) if n != default_layer] + [default_layer]
    k_out = args.k or model.n_outputs
    cpu = cpu_model()
    info = {
        "command": "python " + " ".join([os.path.relpath(__file__, REPO)] + (argv or sys.argv[1:])),
        "device": device, "cuda_name": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else None,
        "nproc": os.cpu_count(), "cpu": cpu, "threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        "captum": __import__("captum").__version__, "model": source, "default_layer": default_layer,
        "layers": layers, "n_steps": args.n_steps, "k_steps": args.k_steps, "full_steps": args.full_steps,
        "K": k_out, "loadavg_start": os.getloadavg(),
    }
    print(json.dumps(info, indent=1), flush=True)
    rows, krows, crows, mrows, real = [], [], [], [], []
    t_start = time.time()
    for size in args.sizes:
        x = make_input(size, device)
        # Seconds per mask, per layer.
        for layer in layers:
            row = {"size": size, "layer": layer}
            for method in SMOCAM_METHODS:
                row[method], row["how"] = per_mask_seconds(
                    lambda n, m=method: run_smocam(m, model, layer, x, 0, n),
                    args.n_steps, args.k_steps, device, args.full_steps)
                print(f"{size}^3 {layer} {method}: {row[method]:.2f} s/mask ({row['how']})", flush=True)
            row["suffix_step"] = suffix_step_seconds(model, layer, x, 0, args.suffix_reps, device)
            row["lower_bound"] = args.n_steps * row["suffix_step"]
            row["naive/fast"] = row["naive"] / row["fast"]
            row["fast/bound"] = row["fast"] / row["lower_bound"]
            print(f"{size}^3 {layer} suffix lower bound: {row['lower_bound']:.2f} s/mask", flush=True)
            rows.append(row)
        # The default settings for real, on the default layer.
        if not args.no_real_run and size == args.sizes[0]:
            sec, _ = timed(lambda: run_smocam("fast", model, default_layer, x, 0, args.n_steps), device)
            real.append({"size": size, "layer": default_layer, "fast_seconds": sec, "n_steps": args.n_steps})
            print(f"{size}^3 {default_layer} fast, real {args.n_steps}-step call: {sec:.2f} s", flush=True)
        # K outputs of one scan at once vs K single calls (default layer).
        sec_k, how_k = per_mask_seconds(lambda n: run_k(model, default_layer, x, k_out, n),
                                        args.n_steps, args.k_steps, device, args.full_steps)
        single = next(r["fast"] for r in rows if r["size"] == size and r["layer"] == default_layer)
        krow = {"size": size, "layer": default_layer, "K": k_out, "all_at_once": sec_k,
                "K_single": k_out * single, "ratio": sec_k / (k_out * single), "how": how_k}
        krows.append(krow)
        print(f"{size}^3 K={k_out}: all at once {sec_k:.2f} s vs {k_out} single {k_out * single:.2f} s "
              f"(ratio {krow['ratio']:.3f})", flush=True)
        # Captum methods.
        for method in CAPTUM_METHODS:
            sec, _ = timed(lambda m=method: run_captum(m, model, default_layer, x, 0), device)
            crows.append({"size": size, "method": method, "seconds": sec})
            print(f"{size}^3 {method}: {sec:.2f} s/map", flush=True)
        # Peak memory, default layer, fresh process per method.
        if not args.no_memory:
            base = {"size": size, "layer": default_layer, "steps": 3, "k": k_out, "device": device,
                    "threads": args.threads, "random": args.random}
            for method in [*SMOCAM_METHODS, "fast K", *CAPTUM_METHODS]:
                mib, info["memory_method"] = peak_memory_mib({**base, "method": method}, device)
                mrows.append({"size": size, "method": method, "peak_mib": mib})
                print(f"{size}^3 peak memory {method}: {mib:.0f} MiB", flush=True)
    info["seconds_total"] = time.time() - t_start
    info["loadavg_end"] = os.getloadavg()
    write_report(args, info, rows, real, krows, crows, mrows)


def write_report(args, info, rows, real, krows, crows, mrows):
    md = [f"Command: `{info['command']}`  ",
          f"Device: {info['device']} ({info['cuda_name'] or info['cpu']}), torch threads {info['threads']}, "
          f"nproc {info['nproc']}, torch {info['torch']}, captum {info['captum']}, Python {info['python']}  ",
          f"Model: {info['model']}; default layer `{info['default_layer']}`; n_steps {info['n_steps']}; "
          f"load average at start/end {tuple(round(v, 1) for v in info['loadavg_start'])} / "
          f"{tuple(round(v, 1) for v in info['loadavg_end'])}; total {info['seconds_total']:.0f} s", ""]
    md += ["### Seconds per mask", "",
           "| input | layer | naive loop | SMOCAM fast | SMOCAM hook | suffix lower bound | naive / fast | fast / bound |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['size']}³ | `{r['layer']}` | {fmt(r['naive'])} | {fmt(r['fast'])} | {fmt(r['hook'])} | "
                  f"{fmt(r['lower_bound'])} | {fmt(r['naive/fast'])} | {fmt(r['fast/bound'])} |")
    if rows:
        md += ["", f"(naive/fast/hook: {rows[0]['how']}; lower bound: n_steps x one suffix forward + "
               f"backward timed alone, mean of {args.suffix_reps})"]
    if real:
        md += ["", "### One real call at default settings (fast path, default layer)", "",
               "| input | layer | n_steps | seconds |", "|---|---|---|---|"]
        md += [f"| {r['size']}³ | `{r['layer']}` | {r['n_steps']} | {r['fast_seconds']:.2f} |" for r in real]
    if krows:
        md += ["", "### All K outputs of one scan (default layer, fast path)", "",
               "| input | K | all at once (s) | K single calls (s) | ratio |", "|---|---|---|---|---|"]
        md += [f"| {r['size']}³ | {r['K']} | {fmt(r['all_at_once'])} | {fmt(r['K_single'])} | {r['ratio']:.3f} |"
               for r in krows]
        md += ["", f"(all at once: {krows[0]['how']}; K single calls = K x the single fast-path mask above)"]
    if crows:
        md += ["", "### Captum methods, seconds per map (same input, target 0)", "",
               "| input | method | seconds |", "|---|---|---|"]
        md += [f"| {r['size']}³ | {r['method']} | {r['seconds']:.3f} |" for r in crows]
        md += ["", "(LayerGradCam on the default layer; DeepLift baseline 0; Occlusion: cube window = stride = "
               "input/4, baseline 0, 8 perturbations per evaluation)"]
    if mrows:
        how = info["memory_method"] + ("" if info["device"].startswith("cuda") else ", fresh subprocess per method")
        how += ", 3 optimisation steps"
        md += ["", f"### Peak extra memory (MiB; {how})", "", "| input | method | MiB |", "|---|---|---|"]
        md += [f"| {r['size']}³ | {r['method']} | {r['peak_mib']:.0f} |" for r in mrows]
    text = "\n".join(md) + "\n"
    print("\n" + text, flush=True)
    out, name = Path(args.out), "speed_quick" if args.quick else "speed"
    write_text(text, out / f"{name}.md")
    write_json({"info": info, "per_mask": rows, "real": real, "k_outputs": krows, "captum": crows, "memory": mrows},
               out / f"{name}.json")


if __name__ == "__main__":
    main()
