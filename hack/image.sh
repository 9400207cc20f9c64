#!/usr/bin/env bash
# Builds the operator image from the release binary, with no Docker engine: a root
# filesystem holding the binary and the shared libraries it links (from this machine's
# glibc), turned into an OCI image and imported into the local cluster's containerd.
#   hack/image.sh [image-ref]      (default loopservice-operator:dev)
set -euo pipefail
cd "$(dirname "$0")/.."
ref="${1:-loopservice-operator:dev}"
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release/loopservice-operator"
[[ -x "$bin" ]] || cargo build --release --bin loopservice-operator

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
install -D -m 0755 "$bin" "$root/usr/local/bin/loopservice-operator"
# Every shared library the binary loads, at the path the loader looks for it.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u | while read -r lib; do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
mkdir -p "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"

hack/cluster.sh import-image "$root" "$ref" \
  --entrypoint '["/usr/local/bin/loopservice-operator"]' --user 65532:65532
