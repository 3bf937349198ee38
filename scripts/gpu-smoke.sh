#!/usr/bin/env bash
# The one-GPU smoke test (docs/gpu.md). On a machine with an NVIDIA GPU: builds the CUDA
# configuration against the machine's own PyTorch 2.11 libtorch (torch.utils.cmake_prefix_path),
# or the wheel scripts/fetch-libtorch.sh fetches; runs NcclCommunicator's tests on one rank; trains
# 10 fp32 steps on the CPU and on the GPU and compares the losses; trains configs/smoke-gpu.yaml
# (bf16), stopping half-way with a checkpoint and resuming to the end; prints loss, tokens/s and
# MFU. Exits non-zero on any failure, and 77 ("skipped: no GPU") where there is no GPU.
#   scripts/gpu-smoke.sh                         # build into build-cuda/, then test
#   scripts/gpu-smoke.sh --build-dir build --no-build
#   MOE_GPU_DEBS=dir scripts/gpu-smoke.sh        # unpack Debian packages the machine lacks from dir
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$root/build-cuda
do_build=1
while (($#)); do
  case $1 in
    --build-dir) build=$(realpath -m "$2"); shift 2 ;;
    --no-build) do_build=0; shift ;;
    *) echo "gpu-smoke: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
fail() { echo "gpu-smoke: FAILED: $*" >&2; exit 1; }

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L 2>/dev/null | grep -q "^GPU"; then
  echo "skipped: no GPU (nvidia-smi lists none)"
  exit 77
fi
nvidia-smi -L

# --- Dependencies the machine lacks: unpacked from carried .debs (a GPU machine may reach no archive).
if [[ -n ${MOE_GPU_DEBS:-} ]]; then
  deps=$root/.cache/gpu-deps
  mkdir -p "$deps"
  for d in "$MOE_GPU_DEBS"/*.deb; do dpkg -x "$d" "$deps"; done
  export CMAKE_PREFIX_PATH=$deps/usr:${CMAKE_PREFIX_PATH:-}
  export PATH=$deps/usr/bin:$PATH LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  export OPAL_PREFIX=$deps/usr/lib/x86_64-linux-gnu/openmpi
fi
missing=()
for tool in cmake mpirun; do command -v "$tool" >/dev/null || missing+=("$tool"); done
((${#missing[@]} == 0)) || fail "missing ${missing[*]}: install them (scripts/setup.sh --no-build as root) or carry Debian's .debs in MOE_GPU_DEBS"

if ((do_build)); then
  # The machine's own libtorch when it is PyTorch 2.11 (same ABI as the wheel of record), else the wheel.
  site=$(python3 -c 'import torch, os; assert torch.__version__.startswith("2.11"); print(os.path.dirname(os.path.dirname(torch.__file__)))' 2>/dev/null) ||
    site=$("$root/scripts/fetch-libtorch.sh" --nccl)
  echo "gpu-smoke: libtorch from $site"
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DMOE_WITH_CUDA=ON -DMOE_LIBTORCH_DIR="$site" \
    -DMOE_BUILD_BENCH=OFF
  cmake --build "$build" -j "$(nproc)" --target moe-train moe-eval test_gpu
fi
train=$build/moe-train
[[ -x $train ]] || fail "$train was not built"
grep -q "MOE_WITH_CUDA:BOOL=ON" "$build/CMakeCache.txt" || fail "$build is not a CUDA build (-DMOE_WITH_CUDA=ON)"
mpi=(mpirun -np 1)
[[ $(id -u) -ne 0 ]] || mpi+=(--allow-run-as-root)
work=$(mktemp -d /tmp/moe_gpu_smoke.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== NcclCommunicator on one rank"
"${mpi[@]}" "$build/tests/test_gpu" || fail "NcclCommunicator tests"

echo "== 10 fp32 steps on the CPU and on the GPU (relative loss difference <= 1e-3 per step)"
small=("$root/configs/tiny.yaml" --set train.steps=10 --set train.eval_every=0 --set checkpoint.save_final=false)
"$train" "${small[@]}" --set train.device=cpu --run-dir "$work/cpu" >"$work/log" 2>&1 || { cat "$work/log"; fail "CPU run"; }
"$train" "${small[@]}" --set train.device=cuda --run-dir "$work/cuda" >"$work/log" 2>&1 || { cat "$work/log"; fail "CUDA run"; }
grep -q "^device: cuda" "$work/cuda/record.yaml" || fail "the CUDA run's record names no CUDA device"
paste -d, <(cut -d, -f2 "$work/cpu/metrics.csv") <(cut -d, -f2 "$work/cuda/metrics.csv") | awk -F, '
  NR > 1 { rel = ($1 - $2) / $1; if (rel < 0) rel = -rel; if (rel > worst) worst = rel; n++ }
  END { printf "10 steps: largest relative loss difference CPU vs CUDA %.2e\n", worst; exit !(n == 10 && worst <= 1e-3) }' ||
  fail "CUDA losses differ from the CPU's"

echo "== configs/smoke-gpu.yaml (bf16): stop at step 100 with a checkpoint, resume to 200"
smoke=("$root/configs/smoke-gpu.yaml" --run-dir "$work/smoke" --progress plain)
"$train" "${smoke[@]}" --stop-after 100 || fail "the first half of the smoke run"
[[ -f $work/smoke/checkpoints/step-00000100/manifest.yaml ]] || fail "no checkpoint at step 100"
"$train" "${smoke[@]}" || fail "the resumed smoke run"
grep -q "status: completed" "$work/smoke/record.yaml" || fail "the smoke run's record is not completed"
"$build/moe-eval" verify "$work/smoke/checkpoints" || fail "moe-eval verify of the smoke run's checkpoints"
summary() { sed -nE "s/^  $1: (.*)$/\1/p" "$work/smoke/record.yaml" | head -1; }
echo "gpu-smoke: device $(sed -nE 's/^device: (.*)$/\1/p' "$work/smoke/record.yaml")"
echo "gpu-smoke: final eval loss $(summary final_eval_loss), tokens/s $(summary tokens_per_s) (resumed half)," \
     "model FLOPs/token $(summary model_flops_per_token), MFU $(summary mfu) (of the bf16 dense peak)"
echo "gpu-smoke: passed"
