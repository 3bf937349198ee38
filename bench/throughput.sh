#!/usr/bin/env bash
# Training throughput of moe-train vs its peers on the same model, batch and data shape:
# PyTorch 2.11 eager and the same module under torch.compile (bench/pytorch_peer.py, in the
# project's venv: the very torch wheel moe-train links), in fp32 and under bf16 autocast; and
# moe-train's MoE vs a dense model with the same active parameters. Every contender is pinned to
# the same thread count and they run alternately, `rounds` times, so drifts in machine speed hit
# all; medians are compared. Steady state only: warm-up steps (and torch.compile's compilation,
# reported apart, cold on the first round: a fresh inductor cache) are not timed. The peers use
# scaled_dot_product_attention, as moe-train does; "eager fp32, scores materialised" is the eager
# peer with q k^T, mask, softmax and @ v written out, to show what the fused attention buys.
#   bench/throughput.sh [--threads N] [--steps N] [--rounds N]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
threads=1 steps=20 rounds=3
while (($#)); do
  case $1 in
    --threads) threads=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--threads N] [--steps N] [--rounds N]" >&2; exit 2 ;;
  esac
done
"$root/scripts/setup.sh" bench_throughput >/dev/null
py=$("$root/scripts/python-env.sh")
bin=${BUILD_DIR:-$root/build}/bench/bench_throughput
inductor_cache=$(mktemp -d)
trap 'rm -rf "$inductor_cache"' EXIT
export TORCHINDUCTOR_CACHE_DIR=$inductor_cache OMP_NUM_THREADS=$threads
peer() { "$py" "$root/bench/pytorch_peer.py" --json --repeats 1 --steps "$steps" --threads "$threads" "$@" 2>/dev/null; }
results=()
for ((round = 1; round <= rounds; ++round)); do
  results+=("moe-train $("$bin" --json --steps "$steps" --threads "$threads")")
  results+=("eager $(peer)")
  results+=("eager-manual $(peer --manual-attention)")
  results+=("compile $(peer --compile)")
  results+=("eager-bf16 $(peer --bf16)")
  results+=("compile-bf16 $(peer --compile --bf16)")
  echo "bench: round $round of $rounds done" >&2
done
"$py" - "$threads" "$steps" "${results[@]}" <<'PY'
import json, statistics, sys
threads, steps = sys.argv[1], sys.argv[2]
runs = {}
for arg in sys.argv[3:]:
    name, text = arg.split(" ", 1)
    runs.setdefault(name, []).append(json.loads(text))
med = lambda name, key="tokens_per_s": statistics.median(r[key] for r in runs[name])
moe, dense = med("moe-train", "moe_tokens_per_s"), med("moe-train", "dense_tokens_per_s")
torch_version = runs["eager"][0]["torch"]
print(f"model: 4 layers, d_model 128, 8 experts top-2 (F 256), vocab 256, batch 8x128; {threads} thread(s); "
      f"{steps} timed steps after 3 warm-up steps; medians of {len(runs['eager'])} alternating rounds")
print(f"{'contender':34s} {'tokens/s':>9s}  {'moe-train / it':>14s}")
print(f"{'moe-train MoE (fp32)':34s} {moe:9.1f}")
for name, label in [("eager", "PyTorch eager fp32"), ("eager-manual", "eager fp32, scores materialised"),
                    ("compile", "torch.compile fp32"),
                    ("eager-bf16", "PyTorch eager bf16 autocast"), ("compile-bf16", "torch.compile bf16 autocast")]:
    tps = med(name)
    print(f"{label + ' (' + torch_version + ')':34s} {tps:9.1f}  {moe / tps:14.3f}")
print(f"compile warm-up (3 steps, cold cache): fp32 {runs['compile'][0]['warmup_s']:.1f} s, "
      f"bf16 {runs['compile-bf16'][0]['warmup_s']:.1f} s")
print(f"moe-train dense (same active parameters): {dense:.1f} tokens/s; MoE step time / dense step time: "
      f"{dense / moe:.3f} (target <= 1.15)")
print(f"moe-train / eager fp32: {moe / med('eager'):.3f} (target >= 1.3); "
      f"moe-train / torch.compile fp32: {moe / med('compile'):.3f} (target >= 1.0)")
PY
