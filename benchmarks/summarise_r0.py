"""Issue 19's criteria over the comparisons on the left/right-independent models, as one Markdown table.

Reads ``<dir>/<model>/compare_verdicts.csv``, ``compare_compactness.csv`` and ``compare_methods.csv`` written by
``benchmarks/logs/compare_r0/run.sh`` (``compare_methods.py`` per model) and prints, per model and SMOCAM row
(model's references, none, references built from scans): targets where it is best or tied (paired 95 %
interval) on mass within 6 mm AND on AUROC, on each alone, whether it beats Grad-CAM on both scores for every
target, the share of maps whose maximum lies within 6 mm of the structure, and the median number of pieces
above half the maximum.

Usage::

    python benchmarks/summarise_r0.py benchmarks/results/compare_r0 > benchmarks/results/compare_r0/summary.md
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from captum_smocam.benchmarking.io import markdown_table

ROWS = {"smocam": "model's references", "smocam_norefs": "none (fallback)", "smocam_scanrefs": "8 built from scans"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="the --out-dir parent of the per-model comparisons")
    args = p.parse_args(argv)
    out = []
    for model_dir in sorted(Path(args.folder).iterdir()):
        if not (model_dir / "compare_verdicts.csv").is_file():
            continue
        verdicts = pd.read_csv(model_dir / "compare_verdicts.csv")
        compact = pd.read_csv(model_dir / "compare_compactness.csv").set_index("method")
        maps = pd.read_csv(model_dir / "compare_methods.csv")
        means = maps.groupby(["method", "target"])[["mass_dilated", "auroc"]].mean()
        for row, label in ROWS.items():
            v = verdicts[verdicts.smocam == row]
            if v.empty:
                continue
            ok = v.assign(ok=v.verdict.isin(["best", "tied"])).pivot(index="target", columns="score", values="ok")
            targets = list(ok.index)
            beats_gradcam = all(
                means.loc[(row, t), s] > means.loc[("gradcam", t), s] for t in targets for s in ("mass_dilated", "auroc"))
            out.append({
                "model": model_dir.name, "references": label,
                "mass AND auroc best/tied": f"{int((ok.mass_dilated & ok.auroc).sum())}/{len(targets)}",
                "mass best/tied": f"{int(ok.mass_dilated.sum())}/{len(targets)}",
                "auroc best/tied": f"{int(ok.auroc.sum())}/{len(targets)}",
                "beats Grad-CAM on both, every target": "yes" if beats_gradcam else "no",
                "max within 6 mm": compact.loc[row, "max_within_mm"],
                "median pieces": compact.loc[row, "median_n_components"],
            })
    print(markdown_table(pd.DataFrame(out), float_format="{:.2f}"))


if __name__ == "__main__":
    main()
