#!/bin/bash
# Issue 19, round 3: the rule of benchmarks/tune_smocam.py's docstring ("Round 3"), written after round 2's run
# and committed before this one, on validation subjects no earlier round scored (positions 13-22 of each
# model's validation split). SmoothGrad is scored on the same maps for context only. Logs beside this file.
cd "$(dirname "$0")/../../.."
PY=${PY:-.venv/bin/python}
CONFIGS="current smooth1 smooth1.5 smooth2 smooth3 smooth1_area40"
MODELS="vgg_independent alexnet_independent monai_resnet_independent"
COMMON="--models $MODELS --configs $CONFIGS --first-subject 13 --n-subjects 10 --threads 2 --rule round3 --paired"
$PY benchmarks/tune_smocam.py $COMMON --references model --context-methods smoothgrad --tag round3_refs \
    > benchmarks/logs/tune/round3_refs.log 2>&1
