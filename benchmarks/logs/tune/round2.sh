#!/bin/bash
# Issue 19, round 2: the rule of benchmarks/tune_smocam.py's docstring ("Round 2"), written and committed before
# this run, on validation subjects round 1 did not score (positions 3-12 of each model's validation split).
# SmoothGrad is scored on the same maps for context only. Logs beside this file.
cd "$(dirname "$0")/../../.."
PY=${PY:-.venv/bin/python}
CONFIGS="current smooth0.3 smooth1 smooth3 smooth10 smooth1_area40 smooth3_area10 smooth3_area40"
MODELS="vgg_independent alexnet_independent monai_resnet_independent"
COMMON="--models $MODELS --configs $CONFIGS --first-subject 3 --n-subjects 10 --threads 2 --rule round2 --paired"
$PY benchmarks/tune_smocam.py $COMMON --references model --context-methods smoothgrad --tag round2_refs \
    > benchmarks/logs/tune/round2_refs.log 2>&1
$PY benchmarks/tune_smocam.py $COMMON --references none --tag round2_none > benchmarks/logs/tune/round2_none.log 2>&1
