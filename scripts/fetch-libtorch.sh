#!/usr/bin/env bash
# Puts libtorch 2.11.0 (the libtorch of record, DESIGN section 9) into .cache/libtorch-2.11.0/,
# unpacked from PyPI's torch wheel (CUDA 13.0 build, C++17, CXX11 ABI), and prints that folder.
#
# The wheel's libtorch_cpu.so needs two CUDA runtime libraries even on a CPU-only machine
# (readelf -d: libcudart.so.13, libcupti.so.13; everything else it needs is in the wheel). Their
# small wheels, at the versions torch 2.11.0 pins, are unpacked beside it as nvidia/cu13/lib, the
# place torch's own RPATH ($ORIGIN/../../nvidia/cu13/lib) looks first, so the binaries resolve them
# without LD_LIBRARY_PATH whether or not a CUDA toolkit is installed.
#
# With --nccl it also unpacks NCCL 2.28.9 (the version torch 2.11.0 pins; a 196 MB wheel) as
# nvidia/nccl/{include,lib} beside it, for the CUDA build (scripts/setup.sh passes it). The build
# links that copy, not a toolkit's: some machines with nvcc carry nccl.h but no libnccl, and this
# is the NCCL that libtorch_cuda.so's RPATH ($ORIGIN/../../nvidia/nccl/lib) finds.
#
# Every wheel is pinned by name and SHA-256; a second run finds them and touches no network.
#   scripts/fetch-libtorch.sh [--nccl]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${MOE_CACHE_DIR:-$root/.cache}
dest=$cache/libtorch-2.11.0
wheels=$cache/wheels

# name==version  file  sha256
pins=(
  "torch==2.11.0 torch-2.11.0-cp311-cp311-manylinux_2_28_x86_64.whl 7aa2f9bbc6d4595ba72138026b2074be1233186150e9292865e04b7a63b8c67a"
  "nvidia-cuda-runtime==13.0.96 nvidia_cuda_runtime-13.0.96-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl 7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
  "nvidia-cuda-cupti==13.0.85 nvidia_cuda_cupti-13.0.85-py3-none-manylinux_2_25_x86_64.whl 4eb01c08e859bf924d222250d2e8f8b8ff6d3db4721288cf35d14252a4d933c8"
)
nccl_pin="nvidia-nccl-cu13==2.28.9 nvidia_nccl_cu13-2.28.9-py3-none-manylinux_2_18_x86_64.whl e4553a30f34195f3fa1da02a6da3d6337d28f2003943aa0a3d247bbc25fefc42"

want_nccl=0
case ${1:-} in
  --nccl) want_nccl=1 ;;
  "") ;;
  *) echo "fetch-libtorch: unknown argument '$1' (usage: $0 [--nccl])" >&2; exit 2 ;;
esac
nccl_dest=$dest/nvidia/nccl

if [[ -f $dest/.complete ]] && { ((!want_nccl)) || [[ -f $nccl_dest/.complete ]]; }; then
  echo "$dest"
  exit 0
fi
[[ $(uname -m) == x86_64 ]] || { echo "fetch-libtorch: the pinned wheels are for x86_64, this is $(uname -m)" >&2; exit 1; }

# verify <file> <sha256>: hashes the file once.
verify() { [[ $(sha256sum "$1" | cut -d' ' -f1) == "$2" ]]; }

# download "<name==version> <file> <sha256>": into $wheels unless it is there (and verified).
download() {
  local req file sha
  read -r req file sha <<<"$1"
  if [[ -f $wheels/$file ]]; then
    verify "$wheels/$file" "$sha" ||
      { echo "fetch-libtorch: cached $wheels/$file does not match its pin; delete it and rerun" >&2; exit 1; }
    return 0
  fi
  echo "fetch-libtorch: downloading $file from PyPI" >&2
  # The wheel is the same libtorch for every Python; cp311 is pinned so one file is cached.
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 --platform manylinux_2_18_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --dest "$wheels.part" "$req" >&2
  mv "$wheels.part/$file" "$wheels/$file.part"
  rm -rf "$wheels.part"
  if ! verify "$wheels/$file.part" "$sha"; then
    rm -f "$wheels/$file.part"
    echo "fetch-libtorch: the downloaded $file does not have SHA-256 $sha (not used)" >&2
    exit 1
  fi
  mv "$wheels/$file.part" "$wheels/$file"
}

mkdir -p "$wheels"
if [[ ! -f $dest/.complete ]]; then
  for pin in "${pins[@]}"; do download "$pin"; done
  # Unpack into a fresh folder and rename it into place: an interrupted run leaves no half tree.
  rm -rf "$dest.part"
  mkdir -p "$dest.part"
  echo "fetch-libtorch: unpacking libtorch into $dest" >&2
  python3 - "$wheels" "$dest.part" "${pins[@]}" <<'PY'
import os, sys, zipfile
wheels, out, pins = sys.argv[1], sys.argv[2], sys.argv[3:]
# From torch: the C++ libraries (not the Python bindings), headers and CMake files.
keep_torch = ("torch/include/", "torch/share/cmake/", "torch/version.py")
skip_libs = ("libtorch_python.so", "libshm", "libshm_windows")
for pin in pins:
    _, name, _ = pin.split()
    with zipfile.ZipFile(os.path.join(wheels, name)) as z:
        for info in z.infolist():
            n = info.filename
            if name.startswith("torch-"):
                if n.startswith("torch/lib/"):
                    if n.endswith("/") or any(n[len("torch/lib/"):].startswith(s) for s in skip_libs):
                        continue
                elif not n.startswith(keep_torch):
                    continue
            elif not n.startswith("nvidia/cu13/lib/"):
                continue
            z.extract(info, out)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(os.path.join(out, n), mode)
PY
  touch "$dest.part/.complete"
  rm -rf "$dest"
  mv "$dest.part" "$dest"
fi

if ((want_nccl)); then
  download "$nccl_pin"
  read -r _ file _ <<<"$nccl_pin"
  rm -rf "$nccl_dest.part"
  echo "fetch-libtorch: unpacking NCCL into $nccl_dest" >&2
  python3 - "$wheels/$file" "$nccl_dest.part" <<'PY'
import os, shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
prefix = "nvidia/nccl/"
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        n = info.filename
        if not n.startswith(prefix) or n.endswith("/"):
            continue
        target = os.path.join(out, n[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(target, mode)
PY
  # The wheel has only the soname; the linker looks for libnccl.so.
  ln -sf libnccl.so.2 "$nccl_dest.part/lib/libnccl.so"
  touch "$nccl_dest.part/.complete"
  rm -rf "$nccl_dest"
  mv "$nccl_dest.part" "$nccl_dest"
fi
echo "$dest"
