#!/usr/bin/env bash
# The project's Python environment: .cache/venv with PyTorch 2.11.0 (the wheel scripts/fetch-libtorch.sh
# pinned and cached, so the peers run the very libtorch moe-train links) and
# scripts/python-requirements.txt (transformers for the export cross-check, numpy).
#   scripts/python-env.sh                 # make it if missing; print its python
#   scripts/python-env.sh python ARGS...  # run its python
#
# torch's Python module loads libtorch_cuda even on a CPU machine, so every CUDA library it names
# must resolve. Where the CUDA 13 toolkit is installed (ldconfig knows cuBLAS, cuDNN and NCCL)
# only the three it lacks are added (cuFile, cuSPARSELt, NVSHMEM: ~230 MB); elsewhere pip installs
# torch's full CUDA dependency set (~2.6 GB).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${MOE_CACHE_DIR:-$root/.cache}
venv=$cache/venv
requirements=$root/scripts/python-requirements.txt
export PIP_CACHE_DIR=$cache/pip PIP_DISABLE_PIP_VERSION_CHECK=1

"$root/scripts/fetch-libtorch.sh" >/dev/null
torch_wheel=$(ls "$cache"/wheels/torch-2.11.0-*.whl)
stamp=$venv/.moe-complete
want=$(cat "$requirements" "$0" | sha256sum | cut -d' ' -f1)

if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  py=$(command -v python3)
  ver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  if [[ $ver != 3.11 ]]; then
    echo "python-env: $py is Python $ver; the pinned torch wheel is for 3.11 (Debian 12's python3)" >&2
    exit 1
  fi
  echo "python-env: making $venv (PyTorch 2.11.0, transformers)" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  pip=("$venv/bin/python" -m pip install --quiet)
  if ldconfig -p | grep -q 'libcublas\.so\.13 ' && ldconfig -p | grep -q 'libcudnn\.so\.9 ' &&
     ldconfig -p | grep -q 'libnccl\.so\.2 '; then
    "${pip[@]}" --no-deps "$torch_wheel"
    "${pip[@]}" nvidia-cufile==1.15.1.6 nvidia-cusparselt-cu13==0.8.0 nvidia-nvshmem-cu13==3.4.5
  else
    "${pip[@]}" "$torch_wheel"
  fi
  "${pip[@]}" -r "$requirements"
  "$venv/bin/python" -c 'import torch, transformers' 2>/dev/null ||
    { echo "python-env: torch or transformers does not import in $venv" >&2; exit 1; }
  echo "$want" >"$stamp"
fi

if [[ ${1:-} == python ]]; then
  shift
  exec "$venv/bin/python" "$@"
fi
echo "$venv/bin/python"
