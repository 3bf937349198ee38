#!/usr/bin/env bash
# Installs what moe-train needs on Debian 12 (only what is missing), fetches libtorch 2.11.0 from
# PyPI's torch wheel into .cache/ (scripts/fetch-libtorch.sh: 541 MB, SHA-256 pinned), then
# configures and builds it in Release into build/. Idempotent and, once the wheels are cached,
# offline: a second run installs and downloads nothing and rebuilds only what changed.
#   scripts/setup.sh                      # install + build everything (apps, tests, benchmarks)
#   scripts/setup.sh moe-train moe-eval   # install + build only these targets (what the demo needs)
#   scripts/setup.sh --no-build           # install packages and fetch libtorch only
#   BUILD_DIR=out scripts/setup.sh
#   MOE_WITH_CUDA=OFF scripts/setup.sh    # a CPU-only build even where a CUDA toolkit is
# Where a CUDA 13 toolkit is (nvcc on PATH or in /usr/local/cuda), the build is the CUDA build
# (-DMOE_WITH_CUDA=ON): the same binary runs on CPUs, and on a GPU where one is (docs/gpu.md).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build}

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  python3-pip python3-venv                     # fetching the torch wheel (libtorch); the venv
  libopenmpi-dev openmpi-bin                   # MPI
  libyaml-cpp-dev libhdf5-dev libcli11-dev libfmt-dev doctest-dev libssl-dev
  python3 python3-numpy python3-h5py           # the h5py cross-check of checkpoints
  openssh-server openssh-client dnsmasq-base bind9-dnsutils   # fly/ and its simulated Fly (tests/fly/)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then missing+=("$p"); fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${#missing[@]} missing package(s): ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "setup: not root. Run this, then re-run $0:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

nvcc=$(command -v nvcc || true)
[[ -z $nvcc && -x /usr/local/cuda/bin/nvcc ]] && nvcc=/usr/local/cuda/bin/nvcc
with_cuda=${MOE_WITH_CUDA:-$([[ -n $nvcc ]] && echo ON || echo OFF)}
# The CUDA build links the NCCL torch 2.11 pins, fetched beside libtorch (fetch-libtorch.sh says why).
libtorch=$("$root/scripts/fetch-libtorch.sh" $([[ $with_cuda == ON ]] && echo --nccl))
if [[ ${1:-} == --no-build ]]; then exit 0; fi

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
# configure ON|OFF: a fresh build folder, or one configured before libtorch 2.11 (Debian's 1.13)
# or with the other CUDA choice.
configure() {
  local flags=(-DMOE_WITH_CUDA="$1")
  [[ $1 == ON && -n $nvcc ]] && flags+=(-DCUDAToolkit_ROOT="$(dirname "$(dirname "$nvcc")")")
  cmake -S "$root" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DMOE_LIBTORCH_DIR="$libtorch" "${flags[@]}"
}
if [[ ! -f $build_dir/CMakeCache.txt ]] ||
   ! grep -q "^MOE_LIBTORCH_DIR:PATH=$libtorch\$" "$build_dir/CMakeCache.txt" ||
   ! grep -q "^MOE_WITH_CUDA:BOOL=$with_cuda\$" "$build_dir/CMakeCache.txt"; then
  if ! configure "$with_cuda"; then
    # Chosen because nvcc is here, not asked for: a toolkit without what the build links (the
    # message above names it) leaves the CPU build, which runs everything but the GPU tests.
    [[ $with_cuda == ON && -z ${MOE_WITH_CUDA:-} ]] || exit 1
    echo "setup: WARNING: the CUDA build could not be configured (above); building for CPUs only." \
         "MOE_WITH_CUDA=ON $0 makes this an error." >&2
    with_cuda=OFF
    configure OFF
  fi
fi
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build "$build_dir" -j "$(nproc)" "${targets[@]}"
