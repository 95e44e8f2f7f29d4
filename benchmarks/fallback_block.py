"""Does each fallback find the block that a model reads? Issue 19's test model, with and without sigma.

:class:`captum_smocam.benchmarking.tuning.BlockReader` reads only the mean features of one block of its layer;
on random-texture input a reference made of the scan itself barely changes its output. For each fallback
(``SMOCAM.attribute(fallback=...)``) and for ``output_std`` left unset (sigma from the references' effect) or
set to 1, print the share of the mask's mass on the block (chance 48/1680 = 0.029), the mask's maximum and the
sigma used, over ``--n`` random-texture inputs (seed ``--seed``).

Usage::

    python benchmarks/fallback_block.py > benchmarks/results/fallback_block.md
"""
from __future__ import annotations

import argparse
import warnings

import pandas as pd
import torch

from captum_smocam import SMOCAM
from captum_smocam.benchmarking.io import markdown_table
from captum_smocam.benchmarking.tuning import BLOCK_SHAPE, BlockReader, block_share
from captum_smocam.smocam import FALLBACKS


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=4, help="random-texture inputs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    net = BlockReader().eval()
    x = torch.rand(args.n, 1, *BLOCK_SHAPE)
    rows = []
    for scheme in FALLBACKS:
        for std in (None, 1.0):
            smocam = SMOCAM(net, net.conv)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mask = smocam.attribute(x, target=0, fallback=scheme, output_std=std)
            share = block_share(mask)
            rows.append({"fallback": scheme, "output_std": "unset (effect)" if std is None else std,
                         "block share (mean)": float(share.mean()), "block share (min)": float(share.min()),
                         "mask max": float(mask.max()), "sigma used (mean)": float(smocam.output_std_used.mean())})
    cmd = "python benchmarks/fallback_block.py" + (f" --n {args.n}" if args.n != 4 else "") + (
        f" --seed {args.seed}" if args.seed else "")
    print(f"Command: `{cmd}`; torch {torch.__version__}, {args.threads} thread(s)\n")
    print(markdown_table(pd.DataFrame(rows), float_format="{:.3g}"))


if __name__ == "__main__":
    main()
