"""How much does a SMOCAM mask move when its input moves by a rounding error?

For each scan (``--split`` subjects, first ``--n-subjects``) all outputs are
explained twice in one batch each: on the scan, and on the scan plus
``--eps`` times Gaussian noise (1e-7 is the size of float32 rounding
differences between kernels). The maximum relative difference of each pair of
masks, ``max|a - b| / max|a|``, shows how well-conditioned the optimisation
is: a well-posed, converged optimisation moves by about ``eps``; a mask that
moves by much more sits between near-equivalent optima, and only identical
arithmetic (``smocam.MIN_ROWS``, float64) makes it reproducible.

Usage::

    python benchmarks/sensitivity.py                    # 4 val subjects x 16 outputs, both objectives
    python benchmarks/sensitivity.py --quick

Writes ``<out-dir>/sensitivity<tag>.csv`` and ``sensitivity<tag>.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from captum_smocam.benchmarking import load_model, load_subject, machine_description, split_indices, write_csv, write_text
from captum_smocam.smocam import OBJECTIVES, SMOCAM

REPO = Path(__file__).resolve().parents[1]
RESULTS, QUICK = REPO / "benchmarks" / "results", REPO / "benchmarks" / "runs" / "quick"


def main(argv=None) -> int:
    import pandas as pd

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg")
    p.add_argument("--split", default="val")
    p.add_argument("--n-subjects", type=int, default=4)
    p.add_argument("--eps", type=float, default=1e-7)
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    p.add_argument("--dtype", choices=["default", "float32", "float64"], default="default",
                   help="optimisation dtype (default: the objective's, smocam.OBJECTIVE_DTYPE)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="1 subject, 4 outputs")
    p.add_argument("--out-dir", default=None)
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    out_dir = Path(args.out_dir or (QUICK if args.quick else RESULTS))
    suffix = ("_quick" if args.quick else "") + args.tag
    torch.set_num_threads(args.threads)
    model, meta = load_model(args.model)
    layer = model.get_submodule(meta["default_layer"])
    names = list(meta["output_names"])
    targets = list(range(4 if args.quick else len(names)))
    indices = split_indices(meta, args.split, 1 if args.quick else args.n_subjects)
    extra = {} if args.dtype == "default" else {"dtype": getattr(torch, args.dtype)}
    gen = torch.Generator().manual_seed(args.seed)
    rows = []
    for objective in args.objectives:
        for index in indices:
            x, _ = load_subject(index, meta)
            xp = x + args.eps * torch.randn(x.shape, generator=gen)
            kw = dict(objective=objective, output_std=meta["output_std"], **extra)
            sm = SMOCAM(model, layer)
            a = sm.attribute(x.expand(len(targets), *x.shape[1:]), target=targets, **kw).flatten(1).double()
            b = sm.attribute(xp.expand(len(targets), *x.shape[1:]), target=targets, **kw).flatten(1).double()
            diff = ((a - b).abs().amax(dim=1) / a.abs().amax(dim=1)).tolist()
            rows += [{"objective": objective, "subject": index, "target": names[t], "max_rel_diff": d}
                     for t, d in zip(targets, diff)]
            print(f"{objective} {index}: max {max(diff):.1e}", flush=True)
    df = pd.DataFrame(rows)
    write_csv(df, out_dir / f"sensitivity{suffix}.csv")
    command = "python benchmarks/sensitivity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"Command: `{command}`  ", f"Model {args.model}, eps {args.eps:g}, {args.split} subjects {indices}, "
             f"{len(targets)} outputs each, dtype {args.dtype}; {machine_description()}\n",
             "| objective | maps | median | 90th percentile | max | maps > 1e-3 | worst map |", "|---|---|---|---|---|---|---|"]
    for objective, g in df.groupby("objective", sort=False):
        v = g["max_rel_diff"]
        w = g.loc[v.idxmax()]
        lines.append(f"| {objective} | {len(v)} | {v.median():.1e} | {v.quantile(0.9):.1e} | {v.max():.1e} | "
                     f"{int((v > 1e-3).sum())} | subject {w.subject}, {w.target} |")
    md = "\n".join(lines) + "\n"
    write_text(md, out_dir / f"sensitivity{suffix}.md")
    print(md, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
