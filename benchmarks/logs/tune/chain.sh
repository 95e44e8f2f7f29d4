#!/bin/bash
# The validation runs of issue 19's tuning, one after another (logs beside this file).
cd "$(dirname "$0")/../../.."
PY=${PY:-.venv/bin/python}
NONE="current/shift current/minimum current/minimum+shift current/blur current/zero current_effect/shift current_effect/minimum+shift smooth1_effect/minimum+shift"
REFS="current smooth1 smooth3 smooth1_area40 smooth1_fid smooth3_fid smooth1_area40_fid"
A=benchmarks/runs/v3/alexnet3d_independent.pt
$PY benchmarks/tune_smocam.py --models vgg_independent --references none --configs $NONE --n-subjects 3 --tag none_vgg > benchmarks/logs/tune/none_vgg.log 2>&1
until [ -f $A ]; do sleep 20; done
$PY benchmarks/tune_smocam.py --models $A --references model --configs $REFS --n-subjects 3 --tag refs_alexnet > benchmarks/logs/tune/refs_alexnet.log 2>&1
$PY benchmarks/tune_smocam.py --models $A --references none --configs $NONE --n-subjects 3 --tag none_alexnet > benchmarks/logs/tune/none_alexnet.log 2>&1
M=benchmarks/runs/v3/monai_resnet_independent.pt  # benchmarks/train.py --arch monai_resnet (docs/models.md)
$PY benchmarks/tune_smocam.py --models $M --references model --configs $REFS --n-subjects 3 --tag refs_monai > benchmarks/logs/tune/refs_monai.log 2>&1
$PY benchmarks/tune_smocam.py --models $M --references none --configs $NONE --n-subjects 3 --tag none_monai > benchmarks/logs/tune/none_monai.log 2>&1
# the tables over all three models
$PY benchmarks/tune_smocam.py --summary benchmarks/results/tune/tune_refs_{vgg,alexnet,monai}.csv --tag refs_all
$PY benchmarks/tune_smocam.py --summary benchmarks/results/tune/tune_none_{vgg,alexnet,monai}.csv --tag none_all --max-cost 100
