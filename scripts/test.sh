#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite (unit and multi-rank tests)
# with ctest. Extra arguments go to ctest, e.g. scripts/test.sh -R moe
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv_log=$(mktemp)
# The Python environment (PyTorch 2.11 + transformers, for the export cross-check) is mostly
# download and unpacking: made while the build compiles.
"$root/scripts/setup.sh" --no-build
"$root/scripts/python-env.sh" >"$venv_log" 2>&1 &
venv_pid=$!
"$root/scripts/setup.sh"
if ! wait "$venv_pid"; then
  cat "$venv_log" >&2
  echo "test: the Python environment could not be made (above); the hf_transformers test will fail" >&2
fi
rm -f "$venv_log"
# Multi-rank tests start mpirun; as root Open MPI needs explicit permission.
if [[ $(id -u) -eq 0 ]]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1
cd "${BUILD_DIR:-$root/build}"
ctest --output-on-failure -j "$(nproc)" "$@"
