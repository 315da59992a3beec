#!/usr/bin/env bash
# Install what is needed, build, and start mqchat with working defaults.
# Today the stack is the durable store: this runs the store demo against a
# store kept in .run/ (run it again: seqs continue). The broker plugin,
# Redis and pushd join here as their issues land.
# Usage: scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
mkdir -p .run
./build/offline-queue/mqstore-demo .run/store
