#!/bin/bash
# GPU PLAN (not run: no GPU was lent when it was written). The papers' own settings on
# the full 64x64 dSprites, 3 seeds each, for issue 21's goal figures:
#   beta-TCVAE (Chen et al. 2018, their vae_quant.py defaults): batch 2048, Adam lr 1e-3,
#     50 epochs (about 16,000 steps on vaelab's 663,552-image train split), beta 6;
#   FactorVAE (Kim & Mnih 2018): batch 64, Adam lr 1e-4, gamma 35, about 300,000 steps
#     (29 epochs of the train split);
#   beta-VAE beta 4 with FactorVAE's settings (their comparison).
# Resumable: a killed run restarts from its folder; scores land in RUNS/MODEL-sSEED.
# Then: python benchmarks/disentangle_report.py --runs "$RUNS/chen" (and "$RUNS/kim") --dataset dsprites
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/disentangle_papers}
PY=${PY:-.venv/bin/python}
common=(--dataset dsprites --device cuda --seeds 3 --pool 10000 --votes 5000)
$PY benchmarks/disentangle_zoo.py "${common[@]}" --models beta_tcvae --batch-size 2048 \
    --lr 1e-3 --epochs 50 --runs "$RUNS/chen" --out "$RUNS/chen.json"
$PY benchmarks/disentangle_zoo.py "${common[@]}" --models factor_vae,beta_vae --batch-size 64 \
    --lr 1e-4 --epochs 29 --runs "$RUNS/kim" --out "$RUNS/kim.json"
