#!/usr/bin/env bash
# The unit and integration tests (GoogleTest) under sanitizers, as CI runs
# them from scripts/test.sh:
#   * AddressSanitizer + UndefinedBehaviorSanitizer (and LeakSanitizer at
#     exit): every GoogleTest test but one speed comparison (p2bmig vs
#     baseline link bytes, which the sanitizer's slowdown skews), the soak
#     shortened to 20 s, the stress test to 8 seeds;
#   * ThreadSanitizer: the concurrency-heavy tests (fetch queue, resolver,
#     transports and TLS, block stores, whole migrations, lazy restore and
#     userfaultfd, the randomized
#     stress test with 6 seeds).
# Any report fails the run. Usage: scripts/test-sanitizers.sh [asan|tsan]...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
which=("$@")
[ ${#which[@]} -gt 0 ] || which=(asan tsan)
jobs=$(nproc)
for s in "${which[@]}"; do
  start=$(date +%s)
  [ -f "build-$s/build.ninja" ] || cmake --preset "$s" >/dev/null
  cmake --build "build-$s" -j"$jobs" --target p2bmig_tests p2bmig
  case $s in
    asan)
      ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1 \
      UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      P2BMIG_SOAK_SECONDS=20 P2BMIG_STRESS_RUNS=8 \
        "build-$s/tests/p2bmig_tests" --gtest_brief=1 \
        --gtest_filter='-Migration.NoPageCacheIsNoWorseThanBaseline'
      ;;
    tsan)
      TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp" \
      P2BMIG_STRESS_RUNS=6 \
        "build-$s/tests/p2bmig_tests" --gtest_brief=1 \
        --gtest_filter='*FetchQueue*:*Resolver*:*Transport*:*Tls*:*ReceiveBudget*:*BlockStore*:*Migration*:*Lazy*:*Uffd*-Migration.NoPageCacheIsNoWorseThanBaseline'
      ;;
    *) echo "unknown sanitizer $s" >&2; exit 2 ;;
  esac
  echo "sanitizers: $s passed in $(( $(date +%s) - start )) s"
done
