#!/usr/bin/env bash
# Install what is needed, build, and run every test twice: once in a normal
# build and once under AddressSanitizer + UndefinedBehaviorSanitizer.
# Usage: scripts/test.sh   (env: JOBS=N to change build parallelism)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

JOBS=${JOBS:-$(nproc)}
run_suite() { # name build-dir cmake-args...
  local name=$1 dir=$2; shift 2
  echo "== $name build ($dir)"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS" >/dev/null
  echo "== $name tests"
  ctest --test-dir "$dir" --output-on-failure --timeout 600 -j 1
}

# Sanitizer runs: fail on the first report; leaks count as failures.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_suite normal build
# The sanitizer build also takes the SDK's portable OS calls (pipe, arc4random, a
# realtime-clock wait: what iOS compiles, clients/c-sdk/src/platform.h).
run_suite "asan+ubsan" build-asan -DMQCHAT_SANITIZE=ON -DMQCHAT_SDK_PORTABLE=ON
echo "all suites passed"
