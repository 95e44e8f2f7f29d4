"""Seconds per step of SMOCAM's fast path under named kernel plans, side by side, against the roofline floor.

Issue 23, item 3: why the fast path is further from the roofline on an Intel Xeon than on the AMD EPYC.
One process, one input (``size³``, N(0, 1), the shipped VGG3D, its references resampled to the size),
one mask; for each plan, the time per step is the difference of an ``n``-step and a 1-step call over
``n - 1`` (so the per-call set-up cancels), the best of ``--repeats`` rounds in which the plans take turns.
The floor is the suffix's floating-point operations per step (:class:`captum_smocam.benchmarking.SuffixStep`)
over the float32 matrix-product rate measured in the same run (:func:`captum_smocam.benchmarking.matmul_peak_gflops`).
Plans are given explicitly; each plan's mask is compared with that of ``onednn+rowwise`` (other
convolution kernels change the last bits, so ``stock`` differs; the pooling kernel must not).

Usage::

    python benchmarks/plan_speed.py --threads 1 --out benchmarks/logs/plan_speed/intel_t1.md
"""
from __future__ import annotations

import argparse
import collections
import os
import time
import warnings

import torch

from captum_smocam import SMOCAM
from captum_smocam.benchmarking import (SuffixStep, load_model, load_warning, machine_description,
                                        matmul_peak_gflops, write_text)
from captum_smocam.kernels import STOCK, KernelPlan
from captum_smocam.models import get_reference_inputs, rebsamen_alexnet3d, set_reference_inputs

PLANS = {
    "stock": STOCK,
    "onednn+rowwise": KernelPlan("onednn+rowwise", "onednn", "rowwise", False, 1),
    "onednn+rowwise+pool": KernelPlan("onednn+rowwise+pool", "onednn", "rowwise", False, 1, pool="channels_last"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("vgg", "rebsamen"), default="vgg",
                   help="the shipped VGG3D (its references resampled to the size), or the Rebsamen-size "
                        "AlexNet3D of the poster's scale (random weights, seed 0, 4 random references; "
                        "docs/models.md)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--layer", default="features.block3")
    p.add_argument("--steps", type=int, default=21, help="steps of the long call (the short one has 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--plans", nargs="+", default=list(PLANS), choices=list(PLANS),
                   help="the first is the base of the ratios")
    p.add_argument("--out", required=True, help="Markdown file to write")
    p.add_argument("--ops-steps", type=int, nargs=2, default=(2, 12), metavar=("SHORT", "LONG"),
                   help="the profiled calls' steps")
    p.add_argument("--ops", type=int, default=12, help="list the N most costly operations per step of the "
                                                       "first plan (torch.profiler; 0: none)")
    return p.parse_args(argv)


def per_step_ops(sm, x, plan, short=2, long=12):
    """``{op: (calls, ms)}`` per optimisation step: torch.profiler's self time in a ``long``-step call minus a
    ``short``-step one, over ``long - short`` (set-up, references and the final check cancel)."""
    from torch.profiler import ProfilerActivity, profile

    def run(n):
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            sm.attribute(x, target=0, n_steps=n, kernel_plan=plan)
        calls, ms = collections.Counter(), collections.Counter()
        for e in prof.key_averages(group_by_input_shape=True):
            key = f"{e.key} {e.input_shapes[:2]}"
            calls[key] += e.count
            ms[key] += e.self_cpu_time_total / 1e3
        return calls, ms

    c_short, t_short = run(short)
    c_long, t_long = run(long)
    steps = long - short
    return {k: ((c_long[k] - c_short[k]) / steps, (t_long[k] - t_short[k]) / steps) for k in c_long}


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    x = torch.randn(1, 1, *(args.size,) * 3, generator=torch.Generator().manual_seed(args.size))
    if args.model == "rebsamen":
        torch.manual_seed(0)
        model = rebsamen_alexnet3d(165).eval()
        refs = torch.randn(4, 1, *x.shape[2:], generator=torch.Generator().manual_seed(1))
    else:
        model, _ = load_model("vgg")
        refs = torch.nn.functional.interpolate(get_reference_inputs(model), size=(args.size,) * 3,
                                               mode="trilinear", align_corners=False)
    set_reference_inputs(model, refs)
    layer = model.get_submodule(args.layer)
    peak = matmul_peak_gflops()
    flops = SuffixStep(model, args.layer, x).flops()
    warnings.simplefilter("ignore")
    sms = {name: SMOCAM(model, layer) for name in args.plans}
    for name, sm in sms.items():  # warm-up: tracing, references' features
        sm.attribute(x, target=0, n_steps=2, kernel_plan=PLANS[name])
    best = {name: float("inf") for name in args.plans}
    masks = {}
    for _ in range(args.repeats):
        for name, sm in sms.items():
            sm.attribute(x, target=0, n_steps=1, kernel_plan=PLANS[name])  # the first call after another plan's
            t0 = time.perf_counter()                                         # redoes its set-up: not timed
            sm.attribute(x, target=0, n_steps=1, kernel_plan=PLANS[name])
            t1 = time.perf_counter()
            masks[name] = sm.attribute(x, target=0, n_steps=args.steps, kernel_plan=PLANS[name])
            t2 = time.perf_counter()
            best[name] = min(best[name], ((t2 - t1) - (t1 - t0)) / (args.steps - 1))
    peak = max(peak, matmul_peak_gflops())
    floor = flops / (peak * 1e9)
    warning = load_warning(load_start, os.getloadavg(), os.cpu_count() or 1, args.threads)
    first = args.plans[0]
    same_as = "onednn+rowwise" if "onednn+rowwise" in masks else first
    lines = [f"# Fast-path step time by kernel plan ({args.model}, {args.size}³, `{args.layer}`, one mask)", "",
             f"Command: `python benchmarks/plan_speed.py --model {args.model} --threads {args.threads} --size {args.size} "
             f"--layer {args.layer} --steps {args.steps} --repeats {args.repeats} --plans {' '.join(args.plans)} "
             f"--ops {args.ops} --ops-steps {' '.join(map(str, args.ops_steps))} --out {args.out}`", "",
             f"Machine: {machine_description()}, torch {torch.__version__}, {args.threads} thread(s); load "
             f"{load_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end." + (f" **{warning}**" if warning else ""),
             "", f"Suffix: {flops / 1e9:.3f} GFLOP per step; float32 matrix product {peak:.0f} GFLOP/s; "
             f"floor {floor * 1e3:.2f} ms per step.", "",
             f"| plan | ms per step | / floor | / {first} | mask bitwise equal to {same_as}'s |",
             "|---|---|---|---|---|"]
    for name in args.plans:
        lines.append(f"| {name} | {best[name] * 1e3:.2f} | {best[name] / floor:.2f} × | "
                     f"{best[name] / best[first]:.3f} | {bool(torch.equal(masks[name], masks[same_as]))} |")
    if args.ops:
        ops = per_step_ops(sms[first], x, PLANS[first], *args.ops_steps)
        total = sum(ms for _, ms in ops.values())
        conv = sum(ms for k, (_, ms) in ops.items() if "convolution" in k)
        lines += ["", f"Per step under `{first}` (torch.profiler, self time, "
                  f"{args.ops_steps[1]}-step call minus {args.ops_steps[0]}-step call): "
                  f"{total:.2f} ms in all, of which convolutions {conv:.2f} ms "
                  f"({flops / (conv * 1e-3) / 1e9:.0f} GFLOP/s if they do all of the suffix's "
                  f"{flops / 1e9:.3f} GFLOP); the {args.ops} most costly operations:", "",
                  "| operation [input shapes] | calls per step | ms per step |", "|---|---|---|"]
        for k, (n, ms) in sorted(ops.items(), key=lambda kv: -kv[1][1])[:args.ops]:
            lines.append(f"| `{k}` | {n:.1f} | {ms:.3f} |")
    text = "\n".join(lines) + "\n"
    write_text(text, args.out)
    print(text)


if __name__ == "__main__":
    main()
