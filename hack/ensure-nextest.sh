#!/usr/bin/env bash
# Installs the pinned cargo-nextest when it is missing or another version (it is built from
# crates.io, about 3 minutes on 2 cores; later runs find it in ~/.cargo/bin).
set -euo pipefail
NEXTEST_VERSION="0.9.128"
if [[ "$(cargo nextest --version 2>/dev/null | awk 'NR==1{print $2}')" == "$NEXTEST_VERSION" ]]; then
  exit 0
fi
echo "installing cargo-nextest $NEXTEST_VERSION" >&2
cargo install --locked --quiet cargo-nextest --version "$NEXTEST_VERSION"
