#!/usr/bin/env bash
# Fuzzes the two parsers that read untrusted bytes, the YAML config with --set overrides and the
# checkpoint reader, with libFuzzer (clang from Debian) under AddressSanitizer and UBSan, for a
# bounded time each; new findings land in tests/fuzz/findings/ (fix them, then keep the input
# in tests/fuzz/corpus/<target>/, whose replay is a ctest test of every build).
#   tests/fuzz/run.sh [seconds per target, default 120]
set -euo pipefail
seconds=${1:-120}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
"$root/scripts/setup.sh" moe-train >/dev/null   # the Debian packages the project needs
need=()
command -v clang++ >/dev/null || need+=(clang)
compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null || need+=(libclang-rt-dev)
if ((${#need[@]})); then
  [[ $(id -u) -eq 0 ]] || { echo "run: sudo apt-get install -y ${need[*]}" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
build=$root/build-fuzz
if [[ ! -f $build/CMakeCache.txt ]]; then
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOE_FUZZ=ON \
    -DMOE_BUILD_BENCH=OFF -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
fi
cmake --build "$build" -j "${FUZZ_JOBS:-$(nproc)}" --target fuzz_config fuzz_checkpoint
work=$(mktemp -d /tmp/moe_fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$root/tests/fuzz/findings"
status=0
for target in config checkpoint; do
  # The kept corpus seeds the run; what the run adds stays in $work (the repo keeps only seeds and findings).
  mkdir -p "$work/$target"
  cp "$root/tests/fuzz/corpus/$target"/* "$work/$target/"
  echo "fuzzing $target for $seconds s"
  ASAN_OPTIONS=detect_leaks=0 "$build/tests/fuzz_$target" "$work/$target" -max_total_time="$seconds" -max_len=131072 \
    -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$root/tests/fuzz/findings/$target-" -print_final_stats=1 \
    >"$work/$target.log" 2>&1 || status=1
  grep -E "^stat::number_of_executed_units|^stat::new_units_added|ERROR|==ABORTING|escaped|SUMMARY" "$work/$target.log" | head -20
done
((status == 0)) && echo "no findings" || echo "findings in tests/fuzz/findings/ (see above)"
exit $status
