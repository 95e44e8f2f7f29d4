"""Store reference inputs in a checkpoint: the default ``baselines`` of SMOCAM's ``"preserve"`` objective.

The references are the first ``--n`` training subjects of the model's own
cohort (:func:`captum_smocam.benchmarking.reference_scans`), normalised as
the model saw them, stored as float16 beside the weights
(:func:`captum_smocam.models.set_reference_inputs`). The weights and the
metadata are written back unchanged (checked), with ``n_reference_inputs``
added. ``benchmarks/train.py`` attaches the same references to the models it
trains; this script adds them to checkpoints trained before it did.

Usage::

    python benchmarks/reference_inputs.py captum_smocam/data/vgg3d_default.pt --n 8
"""
from __future__ import annotations

import argparse
import sys

import torch

from captum_smocam.benchmarking import reference_scans
from captum_smocam.models import get_reference_inputs, load_checkpoint, save_checkpoint, set_reference_inputs

#: How many training subjects the shipped checkpoints carry (chosen by benchmarks/sweep_smocam.py: n_refs).
DEFAULT_N = 8


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="checkpoint files, rewritten in place")
    p.add_argument("--n", type=int, default=DEFAULT_N, help=f"number of training subjects (default {DEFAULT_N})")
    args = p.parse_args(argv)
    for path in args.checkpoints:
        model, meta = load_checkpoint(path)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        set_reference_inputs(model, reference_scans(meta, args.n))
        save_checkpoint(path, model, meta)
        again, meta2 = load_checkpoint(path)
        same = all(torch.equal(before[k], v) for k, v in again.state_dict().items())
        if not same or {k: v for k, v in meta2.items() if k != "n_reference_inputs"} != \
                {k: v for k, v in meta.items() if k != "n_reference_inputs"}:
            raise SystemExit(f"error: {path}: weights or metadata changed on rewrite")
        print(f"{path}: {args.n} reference inputs {tuple(get_reference_inputs(again).shape)} stored", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
