#!/usr/bin/env bash
# Tiny Shakespeare in 3 minutes of training on a 2-core CPU (compile time excluded): a 2x256 LSTM with a
# high Adam learning rate that decays per epoch after the second. Target: val loss <= 1.60 nats/char.
#   bash scripts/recipe_3min.sh [CORPUS] [RUN_DIR]
set -euo pipefail
corpus=${1:-../shared/data/tinyshakespeare/input.txt}
out=${2:-runs/shakespeare-3min}
charrnn train "$corpus" --model lstm --layers 2 --hidden 256 --seq-length 100 --batch-size 50 \
  --lr 5e-3 --lr-decay 0.85 --lr-decay-after 2 --dropout 0 \
  --max-minutes 3 --eval-every 250 --print-every 50 --out "$out"
charrnn eval "$out" --split val
