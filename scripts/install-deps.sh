#!/usr/bin/env bash
# Install every Debian package mqchat needs to build, test and run.
# Idempotent: prints nothing and touches nothing when everything is there.
# Usage: scripts/install-deps.sh   (as root, or with sudo available)
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
  # wire format, store, crypto, JSON
  protobuf-c-compiler libprotobuf-c-dev librocksdb-dev libssl-dev libcjson-dev uthash-dev
  # broker and its plugin API, clients
  mosquitto mosquitto-dev libmosquitto-dev mosquitto-clients libpaho-mqtt-dev
  # the device SDK's local state; mqchat-cli's line editor (tmux drives it in the tests)
  libsqlite3-dev libreadline-dev tmux
  # presence and push
  redis-server libhiredis-dev libcurl4-openssl-dev
  # metrics: the HTTP endpoint; promtool (in prometheus) checks its text in the tests
  libmicrohttpd-dev prometheus
  # tests
  libcmocka-dev openssl procps nodejs
  python3 python3-pytest python3-paho-mqtt python3-protobuf protobuf-compiler python3-cryptography
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
