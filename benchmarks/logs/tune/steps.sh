#!/bin/bash
# Issue 23 item 4: fewer steps, or a stopping rule, at equal scores? Validation subjects of the three r = 0 models.
cd "$(dirname "$0")/../../.."
PY=${PY:-.venv/bin/python}
$PY benchmarks/tune_smocam.py --models vgg_independent alexnet_independent monai_resnet_independent \
    --references model --configs current steps40 steps60 steps80 steps100 tol0.001 tol0.01 \
    --n-subjects 10 --threads 1 --tag steps --paired > benchmarks/logs/tune/steps.log 2>&1
# second run (after the first showed that fewer steps at the same step size lose mass): the step size scaled up
$PY benchmarks/tune_smocam.py --models vgg_independent alexnet_independent monai_resnet_independent \
    --references model --configs current steps60_lr0.5 steps80_lr0.375 steps100_lr0.3 \
    --n-subjects 10 --threads 1 --tag steps_lr --paired > benchmarks/logs/tune/steps_lr.log 2>&1
