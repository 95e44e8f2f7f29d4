#!/bin/bash
# Issue 19: the current default SMOCAM against the other methods on TEST subjects of the three models trained on
# the left/right-independent cohort, with the model's references, none (the fallback) and 8 references built by
# `smocam references` from validation scans (benchmarks/runs/refscans_r0: subjects 10042-10049, written by
# captum_smocam.synth.files.write_subject with lr_correlation=0). Logs beside this file.
cd "$(dirname "$0")/../../.."
PY=${PY:-.venv/bin/python}
for m in vgg_independent alexnet_independent monai_resnet_independent; do
  methods=""
  # Captum's DeepLIFT refuses MONAI's ResNet: its blocks call one ReLU module twice.
  [ $m = monai_resnet_independent ] && methods="--methods smocam smocam_poster gradcam occlusion saliency smoothgrad integrated_gradients"
  $PY benchmarks/compare_methods.py --model $m --n-subjects 5 --threads 2 --randomization-subjects 0 $methods \
      --smocam-references model none scans:benchmarks/runs/refscans_r0 \
      --out-dir benchmarks/results/compare_r0/$m --figure '' > benchmarks/logs/compare_r0/$m.log 2>&1
done
$PY benchmarks/summarise_r0.py benchmarks/results/compare_r0 > benchmarks/results/compare_r0/summary.md
