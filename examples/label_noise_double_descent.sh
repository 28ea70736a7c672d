#!/usr/bin/env bash
# Sparse double descent on CPU: LeNet-300-100 on 10% of MNIST with 20% symmetric label noise, pruned
# iteratively with learning-rate rewinding down to 0.03% of the prunable weights, against the same runs on
# clean labels; 2 seeds. Ends with `ticketlab report`, which prints the table and writes the accuracy-vs-
# density plot (both noise rates on one figure) to $RUNS/report/accuracy_vs_density.{png,svg}.
#
# Measured run time: 15 min 22 s wall (12 min 13 s of CPU), on one thread (OMP_NUM_THREADS=1,
# --threads 1) of a 2-core x86 VM that other jobs were also using; about 3 min 50 s per lottery run
# of 19 levels. Result and reading of the curve: examples/README.md. Re-running the script with the same
# settings reuses the finished runs and only prints the report.
#
# Settings, and why:
# - mnist_lenet_300_100: OpenLTH's LeNet-300-100 recipe, which Sparse Double Descent uses for MNIST (there
#   for 160 epochs): SGD lr 0.1, no momentum, constant rate, batch 128; global magnitude pruning, output
#   layer kept dense.
# - --data.subset 0.1 (5,500 training images; the 5,000 validation and 10,000 test images are clean and
#   complete) and 100 epochs: the dense net fits the noisy training labels (99.7% at epoch 60, 100%
#   from epoch 80), i.e. it memorises the noise, as the effect needs, at 1/10 of the cost of the full set.
# - --retrain lr-rewind: each level keeps the previous level's final weights and replays the full schedule,
#   one of the paper's retraining modes. With the recipe's constant learning rate it is the same as the
#   paper's MNIST fine-tuning defaults (lr 0.1 for the full length). Starting from the previous weights,
#   each level fits the noise again as long as it still has the capacity to.
# - --prune.fraction 0.36 (= two 20% steps per level: density 0.64^k = 0.8^(2k)) for 18 levels: reaches
#   0.64^18 = 0.03% of the prunable weights in half the levels that fraction 0.2 would need. The
#   densities in the report count the dense output layer (1,000 weights) too, so the last levels bunch up
#   near 0.4% there although the hidden layers keep only 0.08%..0.03% of their weights.
# - Two seeds: initialisation, batch order and which labels are flipped change; the 10% subset does not.
#
# Usage: examples/label_noise_double_descent.sh   (from anywhere; paths are relative to the repo root)
#   DATA_ROOT  folder with the four MNIST IDX files        (default ../shared/data/mnist)
#   RUNS       runs directory                               (default runs/label_noise)
#   SEEDS      replicate seeds                              (default "0 1")
#   LEVELS     pruning levels after the dense level 0       (default 18)
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_ROOT=${DATA_ROOT:-../shared/data/mnist}
RUNS=${RUNS:-runs/label_noise}
SEEDS=${SEEDS:-"0 1"}
LEVELS=${LEVELS:-18}
TICKETLAB=${TICKETLAB:-$( [ -x .venv/bin/ticketlab ] && echo .venv/bin/ticketlab || echo ticketlab )}
export OMP_NUM_THREADS=1

COMMON=(--preset mnist_lenet_300_100 --data.root "$DATA_ROOT" --data.subset 0.1
        --train.steps 100ep --train.eval_every 10ep
        --retrain lr-rewind --prune.fraction 0.36 --levels "$LEVELS"
        --runs-dir "$RUNS" --threads 1 --progress none)

start=$SECONDS
for seed in $SEEDS; do
  for noise in "--data.noise symmetric --data.noise_rate 0.2" "--data.noise none"; do
    echo "seed $seed, $noise: training levels 0..$LEVELS ($(( (SECONDS - start) / 60 )) min so far)" >&2
    # shellcheck disable=SC2086  # $noise holds two flags
    "$TICKETLAB" lottery "${COMMON[@]}" --seed "$seed" $noise > /dev/null
  done
done
echo "training took $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s" >&2

"$TICKETLAB" report "$RUNS"
