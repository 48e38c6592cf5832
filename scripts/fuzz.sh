#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, with clang, in $FUZZ_BUILD_DIR),
# makes their seed corpus and runs each fuzzer for a bounded time. Exits
# non-zero on any finding; the inputs that caused one are kept in
# $FUZZ_BUILD_DIR/findings/ and named in the output.
#
# Usage: scripts/fuzz.sh [SECONDS]
#   SECONDS          time per fuzzer (default $FUZZ_SECONDS, else 30);
#                    `scripts/fuzz.sh 600` for a longer run
# Environment:
#   P2BMIG           the project's binary, used to write real streams as seeds
#                    (default: build/p2bmig or build-lead/p2bmig if present)
#   FUZZ_BUILD_DIR   where to build and keep corpus and findings (build-fuzz)
#
# To replay a finding: P2BMIG_FUZZ_DISK=$FUZZ_BUILD_DIR/disk.img \
#   P2BMIG_FUZZ_VERBOSE=1 $FUZZ_BUILD_DIR/fuzz_resolver FILE
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-${FUZZ_SECONDS:-30}}
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
p2bmig=${P2BMIG:-}
if [ -z "$p2bmig" ]; then
  for candidate in "$root/build/p2bmig" "$root/build-lead/p2bmig"; do
    if [ -x "$candidate" ]; then
      p2bmig=$candidate
      break
    fi
  done
fi

# Build.
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
mkdir -p "$build"
if [ ! -f "$build/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S "$root/tests/fuzz" -B "$build" "${generator[@]}" \
    >"$build/build.log" 2>&1 || { cat "$build/build.log"; exit 1; }
fi
cmake --build "$build" -j2 >"$build/build.log" 2>&1 || { cat "$build/build.log"; exit 1; }

# Seeds, and a working corpus per fuzzer that grows from run to run.
bash "$root/tests/fuzz/make_corpus.sh" "$build" "$build/make_fuzz_seeds" "$p2bmig"
mkdir -p "$build/findings"
# Findings of earlier runs stay where they are; only new ones fail this run.
stamp=$build/findings/.run-start
touch "$stamp"

# ASan's quarantine would otherwise hold 256 MiB of freed memory, counted
# against -rss_limit_mb.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=32:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export P2BMIG_FUZZ_DISK=$build/disk.img

status=0
for fuzzer in fuzz_stream_reader fuzz_resolver; do
  corpus=$build/corpus/$fuzzer
  log=$build/$fuzzer.log
  mkdir -p "$corpus"
  echo "fuzz: $fuzzer for ${seconds}s (log $log)"
  rc=0
  "$build/$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=512 \
    -malloc_limit_mb=256 -max_len=300000 -print_final_stats=1 \
    -artifact_prefix="$build/findings/$fuzzer-" "$corpus" "$build/seeds" >"$log" 2>&1 || rc=$?
  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" |
    sed 's/^/  /' || true
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "fuzz: $fuzzer FAILED (exit $rc):"
    grep -E 'ERROR: |FINDING: |SUMMARY: |runtime error:' "$log" | head -5 | sed 's/^/  /' || true
    grep -E 'Test unit written to' "$log" | sed 's/^/  /' || true
  fi
done

found=$(find "$build/findings" -type f -newer "$stamp" | sort)
if [ -n "$found" ]; then
  echo "fuzz: new findings kept in $build/findings:"
  echo "$found" | sed 's/^/  /'
  status=1
fi
[ "$status" -eq 0 ] && echo "fuzz: no findings"
exit "$status"
