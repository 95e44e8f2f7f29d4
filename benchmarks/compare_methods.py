"""Benchmark SMOCAM against Grad-CAM, Occlusion, Saliency and DeepLIFT where the truth is known.

The shipped VGG3D regressor (``captum_smocam.models.load_default_model("vgg")``)
predicts the volume of every structure of the synthetic cohort
(:mod:`captum_smocam.synth`), so for each explained output we know which voxels
*should* matter: the structure itself (and, for a paired structure, not its
contralateral twin). On TEST-split subjects, for each target and method, the
map comes from :func:`captum_smocam.methods.attribute_map` (the one place the
methods are configured) and is scored with :mod:`captum_smocam.metrics`:

* localisation: mass inside the structure, inside the structure dilated by
  ``--margin-mm``, AUROC, pointing game (strict and within the margin);
* side specificity against the contralateral structure;
* faithfulness: deletion/insertion AUC (baseline = background value) with a
  random-ordering reference computed once per subject and target;
* cost: wall time per map and peak resident-memory increase during the call;
* sanity (on ``--randomization-subjects`` subjects): Adebayo et al.'s cascading
  randomisation, Spearman correlation to the original map after randomising the
  head (top) and then every layer (all).

Usage (the default run, ~20 test subjects x 4 targets x 5 methods)::

    python benchmarks/compare_methods.py
    python benchmarks/compare_methods.py --quick      # 1 subject, 1 target, < 2 min

Results: ``<out-dir>/compare_methods.csv`` (one row per subject x target x
method), ``<out-dir>/compare_randomization.csv``, ``<out-dir>/compare_summary.md``
(mean ± sd over subjects) and the comparison figure. CSVs are written atomically
after every subject, so an interrupted run keeps what it finished.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from captum_smocam import metrics, synth  # noqa: E402
from captum_smocam.methods import (  # noqa: E402
    DEFAULT_OCCLUSION_STRIDE,
    DEFAULT_OCCLUSION_WINDOW,
    METHOD_LABELS,
    attribute_map,
    occlusion_evaluations,
)
from captum_smocam.preprocessing import normalize_intensity  # noqa: E402

#: The targets of the default run (the poster's structures).
DEFAULT_TARGETS = ("left_lateral_ventricle", "right_lateral_ventricle", "left_hippocampus", "right_hippocampus")
#: The methods of the default run (Integrated Gradients with ``--methods ... integrated_gradients``).
DEFAULT_METHODS = ("smocam", "gradcam", "occlusion", "saliency", "deeplift")
#: Fractions of the deletion/insertion curves (those of docs/metrics.md).
FRACTIONS = metrics.DEFAULT_FRACTIONS
#: Score columns of the per-map table, with "higher is better" (True) or not.
SCORES = {
    "mass_inside": True,
    "mass_dilated": True,
    "auroc": True,
    "pointing": True,
    "pointing_dilated": True,
    "side_specificity": True,
    "deletion_auc": True,
    "insertion_auc": False,
    "seconds_per_map": False,
    "peak_rss_mb": False,
}


# --------------------------------------------------------------------------- model
def untrained_model(seed: int = 0):
    """A randomly initialised VGG3D with the shipped architecture and fabricated metadata (development only)."""
    from captum_smocam.models import VGG3D

    torch.manual_seed(seed)
    net = VGG3D(len(synth.STRUCTURE_NAMES), channels=(8, 16, 32, 64), convs_per_block=(1, 1, 2, 2)).eval()
    meta = {
        "output_names": list(synth.STRUCTURE_NAMES),
        "output_std": [1.0] * len(synth.STRUCTURE_NAMES),
        "default_layer": net.default_layer,
        "splits": {"train": [0, 480], "val": [10000, 10060], "test": [20000, 20100]},
        "lr_correlation": synth.DEFAULT_LR_CORRELATION,
        "intensity_normalization": "zscore_nonzero",
        "spacing_mm": synth.DEFAULT_SPACING,
    }
    return net, meta


def load_model(name: str):
    """``(model, metadata)`` for a shipped name, a checkpoint path or ``"untrained"``; eval mode."""
    from captum_smocam.models import load_checkpoint, load_default_model

    if name == "untrained":
        net, meta = untrained_model()
    elif os.path.exists(name):
        net, meta = load_checkpoint(name)
    else:
        net, meta = load_default_model(name)
    return net.eval(), meta


# --------------------------------------------------------------------------- data
_NAME_TO_LABEL = {name: value for value, name in synth.LABELS.items()}


def contralateral(name: str) -> Optional[str]:
    """The other side's structure name (``left_x`` <-> ``right_x``), or None if unpaired.

    Examples::

        >>> contralateral("left_hippocampus")
        'right_hippocampus'
    """
    for a, b in (("left_", "right_"), ("right_", "left_")):
        if name.startswith(a):
            return b + name[len(a):]
    return None


def load_subject(index: int, meta: dict, spacing: Optional[float] = None):
    """Generate one subject; returns ``(x tensor 1 x 1 x X x Y x Z, Subject)``."""
    kwargs = {"lr_correlation": float(meta["lr_correlation"])}
    spacing = spacing if spacing is not None else meta.get("spacing_mm")
    if spacing is not None:
        kwargs["spacing"] = float(np.atleast_1d(spacing)[0])
    subject = synth.generate_subject(int(index), **kwargs)
    img = normalize_intensity(subject.image, meta["intensity_normalization"])
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None], subject


def structure_mask(subject, name: str) -> np.ndarray:
    """Boolean mask of structure ``name`` on the subject's grid."""
    if name not in _NAME_TO_LABEL:
        raise ValueError(f"unknown structure {name!r}; expected one of {list(_NAME_TO_LABEL)}")
    return np.asarray(subject.labels) == _NAME_TO_LABEL[name]


def voxel_spacing(subject) -> tuple:
    """Voxel size in mm from the subject's affine."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(subject.affine)[:3, :3], axis=0))


def split_indices(meta: dict, split: str, n: Optional[int]) -> List[int]:
    """The first ``n`` subject indices of a split (all if ``n`` is None)."""
    if split not in meta["splits"]:
        raise ValueError(f"unknown split {split!r}; the checkpoint has {sorted(meta['splits'])}")
    start, stop = (int(v) for v in meta["splits"][split])
    idx = list(range(start, stop))
    if n is not None:
        if n < 1 or n > len(idx):
            raise ValueError(f"asked for {n} {split} subjects; the split has {len(idx)}")
        idx = idx[:n]
    return idx


# --------------------------------------------------------------------------- measuring
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak increase of the process's resident set size while the block runs, in MiB.

    Before the block, freed heap memory is returned to the OS (glibc
    ``malloc_trim(0)``) and the RSS is read from ``/proc/self/statm``; a thread
    then samples the RSS every ``interval`` seconds until the block ends.
    ``peak_mb`` is the largest sample minus the starting RSS: the extra memory
    the call needed (tensors, autograd graph, temporaries), sampled, so
    short-lived peaks shorter than ``interval`` may be missed. ``nan`` where
    ``/proc`` is missing (not Linux).
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak_mb = float("nan")

    def __enter__(self):
        try:
            _malloc_trim()
            self._base = _rss_bytes()
        except OSError:
            self._base = None
            return self
        self._peak = self._base
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, _rss_bytes())
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._base is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            self.peak_mb = (self._peak - self._base) / 2**20
        return False


def write_csv_atomic(df, path: Path) -> None:
    """Write a DataFrame to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, path)


def write_text_atomic(text: str, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- scoring
def localisation_scores(attr: np.ndarray, mask: np.ndarray, contra: Optional[np.ndarray],
                        margin_mm: float, spacing) -> Dict[str, float]:
    """Mass inside, dilated mass, AUROC, pointing games and side specificity of one map."""
    return {
        "mass_inside": metrics.mass_inside(attr, mask),
        "mass_dilated": metrics.mass_inside_dilated(attr, mask, margin_mm, spacing),
        "auroc": metrics.auroc(attr, mask),
        "pointing": float(metrics.pointing_game(attr, mask)),
        "pointing_dilated": float(metrics.pointing_game(attr, mask, margin_mm=margin_mm, spacing=spacing)),
        "side_specificity": (metrics.side_specificity(attr, mask, contra)
                             if contra is not None and contra.any() else float("nan")),
    }


def faithfulness_scores(model, x, attr, target: int, sigma: float, *, random_orderings: int = 0,
                        seed: int = 0, fractions=FRACTIONS) -> Dict[str, float]:
    """Deletion/insertion AUC (baseline = the background value), optionally with the random reference."""
    r = metrics.deletion_insertion(model, x, attr, target, baseline=float(x.min()), fractions=fractions,
                                   output_std=sigma, random_orderings=random_orderings, generator=seed)
    out = {"deletion_auc": r["deletion_auc"], "insertion_auc": r["insertion_auc"],
           "prediction": r["output"], "baseline_prediction": r["baseline_output"]}
    if random_orderings:
        out["random_deletion_auc"] = r["random_deletion_auc"]
        out["random_insertion_auc"] = r["random_insertion_auc"]
    return out


def compute_maps(method: str, model, x, targets: Sequence[int], *, layer, output_std,
                 smocam_kwargs=None, occlusion_window=DEFAULT_OCCLUSION_WINDOW,
                 occlusion_stride=DEFAULT_OCCLUSION_STRIDE):
    """Maps of one scan for several targets, with the wall time and peak memory of producing them.

    SMOCAM explains the K targets in one batch (the scan repeated K times, the
    prefix computed once: how :mod:`captum_smocam.pipeline` uses it); the other
    methods run once per target. Returns ``(maps K x X x Y x Z numpy,
    seconds per map, peak MiB of one call, maps per call)``.
    """
    kw = dict(layer=layer, output_std=output_std, smocam_kwargs=smocam_kwargs,
              occlusion_window=occlusion_window, occlusion_stride=occlusion_stride)
    if method == "smocam":
        xs = x.expand(len(targets), *x.shape[1:]).contiguous()
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            maps = attribute_map(method, model, xs, list(targets), **kw)
            seconds = time.perf_counter() - t0
        return maps[:, 0].numpy(), seconds / len(targets), mem.peak_mb, len(targets)
    out, seconds, peak = [], 0.0, 0.0
    for t in targets:
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            out.append(attribute_map(method, model, x, int(t), **kw)[0, 0].numpy())
            seconds += time.perf_counter() - t0
        peak = np.nanmax([peak, mem.peak_mb])
    return np.stack(out), seconds / len(targets), float(peak), 1


def warm_up(model, x, target: int, methods: Sequence[str], **method_kw) -> None:
    """One cheap, untimed call of each gradient-based method, so the first timed map pays no warm-up.

    The first autograd pass, torch.fx trace and thread-pool start-up of a process
    cost a few tenths of a second, which would otherwise land on whichever
    method or configuration happens to run first. SMOCAM runs 2 steps; Occlusion
    is warmed by a plain forward pass (it only runs forwards).
    """
    kw = dict(method_kw)
    kw["smocam_kwargs"] = dict(kw.get("smocam_kwargs") or {}, n_steps=2)
    with torch.no_grad():
        model(x)
    for m in methods:
        if m != "occlusion":
            attribute_map(m, model, x, int(target), **kw)


# --------------------------------------------------------------------------- summary
def summarise(df, methods: Sequence[str], targets: Sequence[str], columns: Sequence[str]) -> str:
    """Markdown table, mean ± sd over subjects, one row per target x method; best mean in bold."""
    lines = ["| target | method | " + " | ".join(columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for target in targets:
        sub = df[df["target"] == target]
        best = {}
        for c in columns:
            means = sub.groupby("method")[c].mean()
            if means.notna().any():
                best[c] = means.idxmax() if SCORES.get(c, True) else means.idxmin()
        for m in methods:
            rows = sub[sub["method"] == m]
            if rows.empty:
                continue
            cells = []
            for c in columns:
                v = rows[c].astype(float)
                n = int(v.notna().sum())
                s = "n/a" if n == 0 else (f"{v.mean():.3g} ± {v.std(ddof=1):.2g}" if n > 1 else f"{v.mean():.3g}")
                cells.append(f"**{s}**" if best.get(c) == m else s)
            lines.append(f"| {target} | {METHOD_LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summarise_randomization(df) -> str:
    """Markdown table of the cascading-randomisation Spearman, mean ± sd per method and step."""
    if df is None or df.empty:
        return ""
    lines = ["| method | randomised | Spearman (mean ± sd) | n | constant maps |", "|---|---|---|---|---|"]
    for (m, step), g in df.groupby(["method", "step_name"], sort=False):
        v = g["spearman"].astype(float)
        n = int(v.notna().sum())
        s = "n/a" if n == 0 else (f"{v.mean():.3f} ± {v.std(ddof=1):.2f}" if n > 1 else f"{v.mean():.3f}")
        n_const = int(g["map_constant"].sum()) if "map_constant" in g else 0
        lines.append(f"| {METHOD_LABELS.get(m, m)} | {step} | {s} | {n} | {n_const} of {len(g)} |")
    return "\n".join(lines) + "\n"


def cost_only(args, model, index, meta, target_idx, method_kw) -> int:
    """Time every method (and Occlusion at several windows) on one subject, twice; write method_cost.csv.

    With SMOCAM among the methods, it is also timed on its hook path
    (``smocam_hook``: ``fast=False``, the whole network every step), the path
    a model that torch.fx cannot trace gets.
    """
    import pandas as pd

    x, _ = load_subject(index, meta)
    settings = [(m, args.occlusion_window, args.occlusion_stride) for m in args.methods]
    if "smocam" in args.methods:
        settings.insert(args.methods.index("smocam") + 1, ("smocam_hook", 0, 0))
    for spec in args.cost_only:
        w, s = (int(v) for v in spec.split(":"))
        settings.append(("occlusion", w, s))
    rows = []
    for rep in range(2):
        for method, w, s in tqdm(settings, desc=f"cost, repeat {rep + 1}", file=sys.stdout):
            kw = dict(method_kw, occlusion_window=w, occlusion_stride=s)
            if method == "smocam_hook":
                kw["smocam_kwargs"] = dict(kw.get("smocam_kwargs") or {}, fast=False)
                _, sec, peak, per = compute_maps("smocam", model, x, target_idx, **kw)
            else:
                targets = target_idx if method == "smocam" else target_idx[:1]
                _, sec, peak, per = compute_maps(method, model, x, targets, **kw)
            rows.append({"repeat": rep + 1, "method": method, "window": w if method == "occlusion" else None,
                         "stride": s if method == "occlusion" else None,
                         "evaluations": occlusion_evaluations(tuple(x.shape[2:]), w, s) if method == "occlusion"
                         else None, "seconds_per_map": sec, "peak_rss_mb": peak, "maps_per_call": per})
    df = pd.DataFrame(rows)
    write_csv_atomic(df, Path(args.out_dir) / "method_cost.csv")
    print(df.to_string(index=False), flush=True)
    return 0


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg", help="shipped model name, checkpoint path, or 'untrained' (dev only)")
    p.add_argument("--n-subjects", type=int, default=20, help="test subjects (from the start of the split)")
    p.add_argument("--targets", nargs="+", default=list(DEFAULT_TARGETS))
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--layer", default=None, help="layer for SMOCAM and Grad-CAM (default: the checkpoint's)")
    p.add_argument("--margin-mm", type=float, default=6.0, help="dilation of the structure for mass_dilated")
    p.add_argument("--random-orderings", type=int, default=2, help="random deletion orders per subject x target")
    p.add_argument("--randomization-subjects", type=int, default=2,
                   help="subjects for the cascading randomisation check (0: skip)")
    p.add_argument("--randomization-targets", nargs="+", default=["right_lateral_ventricle", "right_hippocampus"])
    p.add_argument("--occlusion-window", type=int, default=DEFAULT_OCCLUSION_WINDOW)
    p.add_argument("--occlusion-stride", type=int, default=DEFAULT_OCCLUSION_STRIDE)
    p.add_argument("--smocam-steps", type=int, default=None, help="override SMOCAM's n_steps (default: library default)")
    p.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS),
                   help="deletion/insertion fractions (default: those of docs/metrics.md)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--figure", default=str(REPO / "docs" / "figures" / "comparison_right_lateral_ventricle.png"),
                   help="comparison figure (first subject, right lateral ventricle); '' to skip")
    p.add_argument("--cost-only", nargs="*", metavar="WINDOW:STRIDE", default=None,
                   help="only time every method on the first subject (all targets), plus Occlusion at each "
                        "WINDOW:STRIDE given; writes <out-dir>/method_cost.csv")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 subject, right lateral ventricle, cheap settings (< 2 min)")
    args = p.parse_args(argv)
    if args.quick:
        args.n_subjects = 1
        args.targets = ["right_lateral_ventricle"]
        args.random_orderings = 1
        args.fractions = [0.0, 0.1, 0.5, 1.0]
        args.randomization_subjects = 1
        args.randomization_targets = ["right_lateral_ventricle"]
        args.smocam_steps = args.smocam_steps or 10
        args.occlusion_window, args.occlusion_stride = 24, 24
    return args


def main(argv=None) -> int:
    import pandas as pd

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    model, meta = load_model(args.model)
    names = list(meta["output_names"])
    for t in args.targets + args.randomization_targets:
        if t not in names:
            raise SystemExit(f"error: unknown target {t!r}; the model predicts {names}")
    from captum_smocam.methods import METHODS

    for m in args.methods:
        if m not in METHODS:
            raise SystemExit(f"error: unknown method {m!r}; expected some of {METHODS}")
    layer_name = args.layer or meta["default_layer"]
    layer = model.get_submodule(layer_name)
    sigma_all = [float(s) for s in np.atleast_1d(meta["output_std"])]
    smocam_kwargs = {} if args.smocam_steps is None else {"n_steps": args.smocam_steps}
    method_kw = dict(layer=layer, output_std=sigma_all, smocam_kwargs=smocam_kwargs,
                     occlusion_window=args.occlusion_window, occlusion_stride=args.occlusion_stride)
    out_dir = Path(args.out_dir)
    suffix = "_quick" if args.quick else ""
    csv_path = out_dir / f"compare_methods{suffix}.csv"
    rnd_path = out_dir / f"compare_randomization{suffix}.csv"
    indices = split_indices(meta, "test", args.n_subjects)
    target_idx = [names.index(t) for t in args.targets]
    print(f"model {args.model}, layer {layer_name}, {len(indices)} test subjects {indices[0]}..{indices[-1]}, "
          f"targets {args.targets}, methods {args.methods}, torch {torch.__version__} threads "
          f"{torch.get_num_threads()}, {platform.processor() or platform.machine()}", flush=True)
    if "occlusion" in args.methods:
        print(f"occlusion: window {args.occlusion_window}, stride {args.occlusion_stride}", flush=True)

    if args.cost_only is not None:
        return cost_only(args, model, indices[0], meta, target_idx, method_kw)
    warm_up(model, load_subject(indices[0], meta)[0], target_idx[0], args.methods, **method_kw)
    rows, rnd_rows, figure_maps = [], [], None
    phase = {"maps": 0.0, "scores": 0.0, "randomisation": 0.0}
    for i_subj, index in enumerate(tqdm(indices, desc="subjects", unit="subj", file=sys.stdout, mininterval=5)):
        x, subject = load_subject(index, meta)
        spacing = voxel_spacing(subject)
        masks = {t: structure_mask(subject, t) for t in args.targets}
        contras = {t: (structure_mask(subject, contralateral(t)) if contralateral(t) else None) for t in args.targets}
        references = {}
        for method in args.methods:
            t0 = time.perf_counter()
            maps, sec, peak, per_call = compute_maps(method, model, x, target_idx, **method_kw)
            phase["maps"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if i_subj == 0 and "right_lateral_ventricle" in args.targets:
                figure_maps = figure_maps or {}
                figure_maps[method] = maps[args.targets.index("right_lateral_ventricle")]
            for k, (tname, tidx) in enumerate(zip(args.targets, target_idx)):
                row = {"subject": index, "target": tname, "method": method,
                       "true_volume": float(subject.volumes[tname])}
                row.update(localisation_scores(maps[k], masks[tname], contras[tname], args.margin_mm, spacing))
                need_ref = tname not in references
                faith = faithfulness_scores(model, x, maps[k], tidx, sigma_all[tidx],
                                            random_orderings=args.random_orderings if need_ref else 0,
                                            seed=args.seed + index, fractions=args.fractions)
                if need_ref:
                    references[tname] = {k2: faith.pop(k2) for k2 in ("random_deletion_auc", "random_insertion_auc")
                                         if k2 in faith}
                row.update(faith)
                row.update(references[tname])
                row.update({"seconds_per_map": sec, "peak_rss_mb": peak, "maps_per_call": per_call})
                rows.append(row)
            phase["scores"] += time.perf_counter() - t0
        write_csv_atomic(pd.DataFrame(rows), csv_path)

        t0 = time.perf_counter()
        if i_subj < args.randomization_subjects:
            for tname in args.randomization_targets:
                tidx = names.index(tname)
                head, features = "head", "features"
                for method in args.methods:
                    constant = []  # whether each map (original, then one per step) is constant

                    def fn(m, inp, tgt, _method=method, _constant=constant):
                        lay = m.get_submodule(layer_name)
                        kw = dict(method_kw, layer=lay)
                        a = attribute_map(_method, m, inp, tgt, **kw)[0, 0]
                        _constant.append(bool(a.max() == a.min()))
                        return a

                    df = metrics.cascading_randomization(model, fn, x, tidx, layers=[head, features],
                                                         seed=args.seed)
                    for _, r in df.iterrows():
                        rnd_rows.append({"subject": index, "target": tname, "method": method,
                                         "step": int(r["step"]),
                                         "step_name": "top (head)" if r["layer"] == head else "all layers",
                                         "layer": r["layer"], "spearman": float(r["spearman"]),
                                         "map_constant": constant[int(r["step"])]})
            write_csv_atomic(pd.DataFrame(rnd_rows), rnd_path)
        phase["randomisation"] += time.perf_counter() - t0
        tqdm.write(f"subject {index}: cumulative seconds " + ", ".join(f"{k} {v:.0f}" for k, v in phase.items()),
                   file=sys.stdout)

    df = pd.DataFrame(rows)
    elapsed = time.perf_counter() - t_start
    cols = ["mass_inside", "mass_dilated", "auroc", "pointing_dilated", "side_specificity",
            "deletion_auc", "insertion_auc", "seconds_per_map", "peak_rss_mb"]
    summary = (f"Command: `python benchmarks/compare_methods.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
               f"  \nWall time: {elapsed / 60:.1f} min with {torch.get_num_threads()} torch threads; "
               f"{len(indices)} test subjects; phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in phase.items()) +
               f"; margin {args.margin_mm:g} mm; layer {layer_name}; "
               f"occlusion window {args.occlusion_window} stride {args.occlusion_stride} "
               f"({occlusion_evaluations(tuple(x.shape[2:]), args.occlusion_window, args.occlusion_stride)} "
               f"evaluations)\n\n" + summarise(df, args.methods, args.targets, cols))
    ref = df.groupby("target")[["random_deletion_auc", "random_insertion_auc"]].mean() \
        if "random_deletion_auc" in df else None
    if ref is not None:
        summary += "\nRandom-order reference (mean over subjects):\n\n| target | deletion AUC | insertion AUC |\n|---|---|---|\n"
        summary += "".join(f"| {t} | {r.random_deletion_auc:.3g} | {r.random_insertion_auc:.3g} |\n"
                           for t, r in ref.iterrows())
    if rnd_rows:
        summary += "\nCascading randomisation (Spearman of |map| to the original):\n\n"
        summary += summarise_randomization(pd.DataFrame(rnd_rows))
    write_text_atomic(summary, out_dir / f"compare_summary{suffix}.md")
    print(summary, flush=True)

    if args.figure and figure_maps:
        from captum_smocam.plotting import plot_comparison

        x0, subject0 = load_subject(indices[0], meta)
        fig = plot_comparison({METHOD_LABELS[m]: v for m, v in figure_maps.items()}, x0[0, 0].numpy(),
                              outline=structure_mask(subject0, "right_lateral_ventricle"),
                              cut_coords=tuple(int(c) for c in np.round(np.argwhere(
                                  structure_mask(subject0, "right_lateral_ventricle")).mean(0))),
                              title=f"right lateral ventricle volume, test subject {indices[0]}")
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.figure).with_name(f".{Path(args.figure).stem}.{os.getpid()}.tmp.png")
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, args.figure)
        import matplotlib.pyplot as plt

        plt.close(fig)
        print(f"figure: {args.figure}", flush=True)
    print(f"done in {elapsed / 60:.1f} min; results in {csv_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
