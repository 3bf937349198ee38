#!/usr/bin/env bash
# Training throughput of the C++ trainer vs a plain PyTorch eager implementation of the same
# model (bench/pytorch_eager.py, Debian's python3-torch, the same ATen 1.13), and MoE vs dense,
# printed as ratios. The two implementations are run alternately, three rounds each, and the
# medians compared, so drifts in machine speed hit both.
#   bench/throughput.sh [--threads N] [--steps N]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
threads=1 steps=20
while (($#)); do
  case $1 in
    --threads) threads=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    *) echo "usage: $0 [--threads N] [--steps N]" >&2; exit 2 ;;
  esac
done
"$root/scripts/setup.sh" >/dev/null
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  if [[ $(id -u) -eq 0 ]]; then apt-get install -y -q --no-install-recommends python3-torch >/dev/null
  else echo "bench: needs Debian's python3-torch: sudo apt-get install python3-torch" >&2; exit 1; fi
fi
bin=${BUILD_DIR:-$root/build}/bench/bench_throughput
cpp=() py=()
for round in 1 2 3; do
  cpp+=("$("$bin" --json --steps "$steps" --threads "$threads")")
  # OpenBLAS reads its thread count at load time (torch.set_num_threads does not reach it).
  py+=("$(OPENBLAS_NUM_THREADS=$threads /usr/bin/python3 "$root/bench/pytorch_eager.py" --json --steps "$steps" --threads "$threads")")
done
/usr/bin/python3 - "$threads" "${cpp[@]}" "${py[@]}" <<'PY'
import json, statistics, sys
threads = sys.argv[1]
runs = [json.loads(s) for s in sys.argv[2:]]
cpp, py = runs[:3], runs[3:]
moe = statistics.median(r["moe_tokens_per_s"] for r in cpp)
dense = statistics.median(r["dense_tokens_per_s"] for r in cpp)
eager = statistics.median(r["tokens_per_s"] for r in py)
print(f"model: 4 layers, d_model 128, 8 experts top-2 (F 256), batch 8x128, {threads} thread(s)")
print(f"moe-train MoE      : {moe:8.1f} tokens/s")
print(f"moe-train dense    : {dense:8.1f} tokens/s (same active parameters)")
print(f"PyTorch eager MoE  : {eager:8.1f} tokens/s (torch {py[0]['torch']})")
print(f"MoE / dense                  : {moe / dense:.3f}")
print(f"moe-train / PyTorch eager    : {moe / eager:.3f}  (target >= 1.2)")
PY
