#!/usr/bin/env bash
# Every GPU measurement of experiments/results/*gpu*, in one run of at most
# 15 minutes (the stages' time limits added up; each stage is cut there, and the benchmarks save
# what they finished, so a cut-short stage still leaves its rows):
#
#     bash experiments/run_gpu.sh [results dir]     # default experiments/results
#
# 1. training throughput, JAX vs PyTorch eager and torch.compile
#    (bench_throughput.py --device=gpu): gpu.json, gpu.md, gpu.png
# 2. `python -m lm_jax.train` with the default config: train_gpu.log
# 3. LSTM training throughput against cuDNN's nn.LSTM: lstm_gpu.md
# 4. generation speed (bench_generate.py): generate_gpu.md
# 5. configs/char_tf.py:shakespeare (nanoGPT's GPU setting with the recipe)
#    on tinyshakespeare, val every 250 steps: shakespeare_gpu.log (the
#    issue's goal: val 1.47 within 60 s of wall time)
set -u
cd "$(dirname "$0")/.."
out=$(realpath "${1:-experiments/results}")
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
note=${NOTE:-"one GPU, no other jobs"}

stage() {  # stage SECONDS COMMAND...: run with a time limit, report the exit
  local limit=$1 start=$SECONDS
  shift
  echo "== $* (limit ${limit}s)"
  timeout -k 10 "$limit" "$@"
  echo "== exit $? after $((SECONDS - start)) s"
  pkill -f experiments.bench_runners || true  # workers of a cut-short run
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$py" -c 'import jax, flax, optax, orbax.checkpoint as o, torch
print("jax", jax.__version__, "flax", flax.__version__, "optax",
      optax.__version__, "orbax", o.__version__, "torch", torch.__version__)
print(jax.devices())'

stage 340 "$py" experiments/bench_throughput.py --device=gpu --no-ablations \
  --concurrent-compile --configs=baby,gpt6,gpt6_drop,default --out="$out" \
  --note="$note"
stage 100 bash -c "'$py' -m lm_jax.train --workdir=/tmp/run_gpu_train \
  2>&1 | tee '$out/train_gpu.log'"
stage 70 "$py" -m experiments.bench_lstm --device=gpu --hidden=256,512 \
  --repeats=3 --out="$out/lstm_gpu.md"
stage 170 "$py" experiments/bench_generate.py --out="$out/generate_gpu.md" \
  --note="$note"
data=$(realpath -q "${DATA:-../shared/data/tinyshakespeare.txt}") || true
if [ -f "$data" ]; then
  stage 200 bash -c "'$py' -m lm_jax.train --workdir=/tmp/run_gpu_shakespeare \
    --config=configs/char_tf.py:shakespeare --config.data.path='$data' \
    --config.train.eval_every=250 2>&1 | tee '$out/shakespeare_gpu.log'"
else
  echo "== skipped configs/char_tf.py:shakespeare: no tinyshakespeare.txt" \
       "(set DATA=path)"
fi
ls -la "$out"
