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
# Every wheel is pinned by name and SHA-256; a second run finds them and touches no network.
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

if [[ -f $dest/.complete ]]; then
  echo "$dest"
  exit 0
fi
[[ $(uname -m) == x86_64 ]] || { echo "fetch-libtorch: the pinned wheels are for x86_64, this is $(uname -m)" >&2; exit 1; }

# verify <file> <sha256>: hashes the file once.
verify() { [[ $(sha256sum "$1" | cut -d' ' -f1) == "$2" ]]; }

mkdir -p "$wheels"
for pin in "${pins[@]}"; do
  read -r req file sha <<<"$pin"
  if [[ -f $wheels/$file ]]; then
    verify "$wheels/$file" "$sha" ||
      { echo "fetch-libtorch: cached $wheels/$file does not match its pin; delete it and rerun" >&2; exit 1; }
    continue
  fi
  echo "fetch-libtorch: downloading $file from PyPI" >&2
  # The wheel is the same libtorch for every Python; cp311 is pinned so one file is cached.
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_25_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --dest "$wheels.part" "$req" >&2
  mv "$wheels.part/$file" "$wheels/$file.part"
  rm -rf "$wheels.part"
  if ! verify "$wheels/$file.part" "$sha"; then
    rm -f "$wheels/$file.part"
    echo "fetch-libtorch: the downloaded $file does not have SHA-256 $sha (not used)" >&2
    exit 1
  fi
  mv "$wheels/$file.part" "$wheels/$file"
done

# Unpack into a fresh folder and rename it into place: an interrupted run leaves no half tree.
rm -rf "$dest.part"
mkdir -p "$dest.part"
echo "fetch-libtorch: unpacking libtorch into $dest" >&2
python3 - "$wheels" "$dest.part" "${pins[@]}" <<'EOF'
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
EOF
touch "$dest.part/.complete"
rm -rf "$dest"
mv "$dest.part" "$dest"
echo "$dest"
