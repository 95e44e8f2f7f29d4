"""Train a 3-D volume regressor on the synthetic cohort and write a checkpoint.

Example (the shipped main model; see docs/models.md for all three)::

    python benchmarks/train.py --arch vgg --lr-correlation 0.95 \\
        --out captum_smocam/data/vgg3d_default.pt

Steps: generate the train/val/test subjects of :mod:`captum_smocam.synth` once
(cached as ``.npy`` under ``benchmarks/runs/``, git-ignored), normalise every
image with :func:`captum_smocam.preprocessing.normalize_intensity`, train with
AdamW + OneCycle on the MSE of standardised volumes, log per-epoch train/val
loss and wall time to stdout, evaluate the test split (R² and MAE in cm³ per
structure) and save the checkpoint with its metadata
(:func:`captum_smocam.models.save_checkpoint`).

Subject index ranges are disjoint: train ``[0, n_train)``, val
``[10000, 10000 + n_val)``, test ``[20000, 20000 + n_test)``. Benchmarks tune on
val and report on test, never on train.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from captum_smocam import synth  # noqa: E402
from captum_smocam.models import AlexNet3D, VGG3D, save_checkpoint  # noqa: E402
from captum_smocam.preprocessing import normalize_intensity  # noqa: E402

VAL_START = 10_000
TEST_START = 20_000
NORMALIZATION = "zscore_nonzero"
#: Structures whose test R² is printed every epoch (the poster's targets).
WATCH = ("left_lateral_ventricle", "right_lateral_ventricle", "left_hippocampus", "right_hippocampus")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=("vgg", "alexnet"), required=True)
    p.add_argument("--lr-correlation", type=float, required=True,
                   help="left/right volume correlation of the synthetic cohort")
    p.add_argument("--out", required=True, help="checkpoint path (.pt)")
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--n-val", type=int, default=80)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3, help="OneCycle peak learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--channels", type=int, nargs="+", default=None,
                   help="conv widths (default: VGG 8 16 32 64, AlexNet 16 32 64)")
    p.add_argument("--convs-per-block", type=int, nargs="+", default=[1],
                   help="VGG only: one int for all blocks or one per block")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="training seed (init, shuffling)")
    p.add_argument("--cohort-seed", type=int, default=0)
    p.add_argument("--spacing", type=float, default=synth.DEFAULT_SPACING)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=str(REPO / "benchmarks" / "runs"))
    args = p.parse_args(argv)
    if not -1.0 <= args.lr_correlation <= 1.0:
        p.error(f"--lr-correlation must be in [-1, 1], got {args.lr_correlation}")
    for name in ("n_train", "n_val", "n_test", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


# ----------------------------------------------------------------------------- data
def load_split(start, stop, args, cache_dir: Path):
    """Normalised images (float16 ``N x X x Y x Z``) and volumes (``N x S``) of subjects [start, stop).

    Generated once and cached; the cache name encodes everything that changes the data.
    """
    key = dict(start=start, stop=stop, lr_correlation=args.lr_correlation, spacing=args.spacing,
               cohort_seed=args.cohort_seed, normalization=NORMALIZATION,
               names=list(synth.STRUCTURE_NAMES))
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    stem = cache_dir / f"cohort_r{args.lr_correlation:g}_{start}-{stop}_{digest}"
    x_path, y_path = Path(f"{stem}_x.npy"), Path(f"{stem}_y.npy")
    if x_path.exists() and y_path.exists():
        print(f"data: cached {x_path.name}", flush=True)
        return np.load(x_path, mmap_mode="r"), np.load(y_path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    shape, _ = synth.default_grid(args.spacing)
    n = stop - start
    tmp_x = Path(f"{stem}_x.part.npy")
    xs = np.lib.format.open_memmap(tmp_x, mode="w+", dtype=np.float16, shape=(n, *shape))
    ys = np.zeros((n, len(synth.STRUCTURE_NAMES)), dtype=np.float64)
    t0 = time.time()
    cohort = synth.generate_cohort(range(start, stop), spacing=args.spacing,
                                   lr_correlation=args.lr_correlation, cohort_seed=args.cohort_seed)
    for i, subject in enumerate(tqdm(cohort, total=n, desc=f"subjects {start}-{stop}",
                                     mininterval=30, file=sys.stdout)):
        if subject.image.shape != tuple(shape):
            raise ValueError(f"subject {subject.index} has shape {subject.image.shape}, expected {shape}")
        xs[i] = normalize_intensity(subject.image, NORMALIZATION).astype(np.float16)
        ys[i] = [subject.volumes[name] for name in synth.STRUCTURE_NAMES]
    xs.flush()
    del xs
    np.save(y_path, ys)
    os.replace(tmp_x, x_path)
    print(f"data: generated {n} subjects [{start}, {stop}) in {time.time() - t0:.0f} s", flush=True)
    return np.load(x_path, mmap_mode="r"), ys


def batches(x, y, batch_size, order=None):
    order = np.arange(len(x)) if order is None else order
    for i in range(0, len(order), batch_size):
        idx = np.sort(order[i:i + batch_size])
        xb = torch.from_numpy(np.asarray(x[idx], dtype=np.float32)).unsqueeze(1)
        yield xb, torch.from_numpy(np.asarray(y[idx], dtype=np.float32))


@torch.no_grad()
def predict(model, x, batch_size=16):
    model.eval()
    out = [model(xb) for xb, _ in batches(x, np.zeros((len(x), 1)), batch_size)]
    return torch.cat(out).double().numpy()


def metrics(pred, true, names):
    """R² (1 - SSE/SST) and MAE (cm³) per structure."""
    res = {}
    for j, name in enumerate(names):
        err = pred[:, j] - true[:, j]
        sst = float(((true[:, j] - true[:, j].mean()) ** 2).sum())
        res[name] = {"r2": round(1.0 - float((err ** 2).sum()) / sst, 4),
                     "mae_cm3": round(float(np.abs(err).mean()), 4)}
    return res


# ----------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    print("command: python " + " ".join([os.path.relpath(__file__, REPO)] + sys.argv[1:]), flush=True)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)

    cache_dir = Path(args.cache_dir)
    splits = {"train": [0, args.n_train], "val": [VAL_START, VAL_START + args.n_val],
              "test": [TEST_START, TEST_START + args.n_test]}
    t_data = time.time()
    data = {k: load_split(a, b, args, cache_dir) for k, (a, b) in splits.items()}
    data_seconds = time.time() - t_data
    names = list(synth.STRUCTURE_NAMES)
    shape, affine = synth.default_grid(args.spacing)
    x_tr, y_tr = data["train"]
    mean, std = y_tr.mean(0), y_tr.std(0)
    print(f"data: {len(x_tr)} train subjects of {tuple(x_tr.shape[1:])}, {len(names)} outputs, "
          f"{data_seconds:.0f} s", flush=True)

    if args.arch == "vgg":
        channels = args.channels or [8, 16, 32, 64]
        cpb = args.convs_per_block[0] if len(args.convs_per_block) == 1 else args.convs_per_block
        model = VGG3D(len(names), channels=channels, convs_per_block=cpb, hidden=args.hidden,
                      output_mean=mean, output_std=std)
    else:
        channels = args.channels or [16, 32, 64]
        model = AlexNet3D(len(names), channels=channels, hidden=args.hidden,
                          output_mean=mean, output_std=std)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {type(model).__name__} {n_params} parameters", flush=True)

    steps_per_epoch = -(-len(x_tr) // args.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, epochs=args.epochs,
                                                steps_per_epoch=steps_per_epoch, pct_start=0.2)
    shuffler = np.random.default_rng(args.seed)
    x_va, y_va = data["val"]
    z_va = (y_va - mean) / std
    watch = [names.index(n) for n in WATCH if n in names]
    best = (float("inf"), None, -1)
    t_train = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0, total, count = time.time(), 0.0, 0
        for xb, yb in batches(x_tr, y_tr, args.batch_size, shuffler.permutation(len(x_tr))):
            loss = torch.nn.functional.mse_loss(model.forward_standardized(xb), model.standardize(yb))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(xb)
            count += len(xb)
        pred_va = predict(model, x_va)
        val_loss = float((((pred_va - mean) / std - z_va) ** 2).mean())
        r2 = metrics(pred_va[:, watch], y_va[:, watch], [names[j] for j in watch])
        r2s = " ".join(f"{k.replace('_lateral_ventricle', '_LV').replace('_hippocampus', '_hip')}="
                       f"{v['r2']:.3f}" for k, v in r2.items())
        print(f"epoch {epoch:3d}/{args.epochs} train_loss {total / count:.4f} val_loss {val_loss:.4f} "
              f"val_r2 {r2s} lr {sched.get_last_lr()[0]:.2e} epoch_s {time.time() - t0:.1f} "
              f"elapsed_s {time.time() - t_train:.0f}", flush=True)
        if val_loss < best[0]:
            best = (val_loss, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
    train_seconds = time.time() - t_train
    model.load_state_dict(best[1])
    model.eval()
    print(f"training: {train_seconds:.0f} s; keeping epoch {best[2]} (val_loss {best[0]:.4f})", flush=True)

    x_te, y_te = data["test"]
    test = metrics(predict(model, x_te), y_te, names)
    print(f"test split {splits['test']} ({len(x_te)} subjects):")
    print(f"{'structure':32s} {'R2':>7s} {'MAE_cm3':>9s} {'mean_cm3':>9s} {'sd_cm3':>8s}")
    for j, name in enumerate(names):
        print(f"{name:32s} {test[name]['r2']:7.3f} {test[name]['mae_cm3']:9.3f} "
              f"{mean[j]:9.2f} {std[j]:8.2f}")
    r2_all = np.array([v["r2"] for v in test.values()])
    print(f"test R2 median {np.median(r2_all):.3f} min {r2_all.min():.3f}", flush=True)

    meta = {
        "output_names": names,
        "output_units": "cm3",
        "input_shape": [int(s) for s in shape],
        "spacing_mm": float(args.spacing),
        "affine": np.asarray(affine, dtype=float).tolist(),
        "intensity_normalization": NORMALIZATION,
        "default_layer": model.default_layer,
        "lr_correlation": float(args.lr_correlation),
        "cohort_seed": int(args.cohort_seed),
        "train_seed": int(args.seed),
        "splits": splits,
        "test_metrics": test,
        "val_loss": round(best[0], 5),
        "best_epoch": int(best[2]),
        "train_seconds": round(train_seconds, 1),
        "data_seconds": round(data_seconds, 1),
        "epochs": int(args.epochs),
        "train_config": {k: v for k, v in vars(args).items() if k not in ("out", "cache_dir")},
        "torch_version": torch.__version__,
    }
    save_checkpoint(args.out, model, meta)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)", flush=True)


if __name__ == "__main__":
    main()
