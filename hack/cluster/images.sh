# Container images without a registry: OCI image-layout tarballs made by hack/oci-image.py and
# imported into the node's containerd. The pause (sandbox) image is compiled from the
# Kubernetes source's pause.c; busybox comes from Debian's busybox-static.

IMAGES_DIR="$CACHE_DIR/images"
PAUSE_IMAGE="k8s.gcr.io/pause:3.2"
BUSYBOX_IMAGE="docker.io/library/busybox:1.36"

# compile_pause SOURCE OUT: a static pause binary from the Kubernetes tree's pause.c
compile_pause() {
  local src="$1" out="$2"
  [[ -f "$src" ]] || die "pause source not found: $src"
  mkdir -p "$(dirname "$out")"
  log "compiling pause from build/pause/linux/pause.c"
  gcc -Os -static -o "$out.tmp" "$src" -DVERSION=3.2 || die "compiling pause failed"
  strip "$out.tmp" 2>/dev/null || true
  mv "$out.tmp" "$out"
}

busybox_image_tar() {
  local ver; ver="$(dpkg-query -W -f='${Version}' busybox-static | tr -c 'A-Za-z0-9._-' '_')"
  echo "$IMAGES_DIR/busybox-1.36-deb-$ver.tar"
}

ensure_image_tarballs() {
  mkdir -p "$IMAGES_DIR"
  local pause_tar="$IMAGES_DIR/pause-3.2.tar"
  if [[ ! -f "$pause_tar" ]]; then
    python3 "$HACK_DIR/oci-image.py" --ref "$PAUSE_IMAGE" --out "$pause_tar" \
      --binary "$K8S_CACHE/pause/pause" --binary-path /pause --entrypoint '["/pause"]' --user 65535:65535 >&2
  fi
  local bb_tar; bb_tar="$(busybox_image_tar)"
  if [[ ! -f "$bb_tar" ]]; then
    local root; root="$(mktemp -d)"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,var,dev,proc,sys}
    install -d -m 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    local a
    for a in $(/bin/busybox --list); do
      [[ "$a" == busybox ]] || ln -sf busybox "$root/bin/$a"
    done
    ln -sf ../../bin/env "$root/usr/bin/env"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\nnonroot:x:65532:65532:nonroot:/home:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
    python3 "$HACK_DIR/oci-image.py" --ref "$BUSYBOX_IMAGE" --out "$bb_tar" --rootfs "$root" --cmd '["sh"]' >&2
    rm -rf "$root"
  fi
}

import_base_images() {
  local refs
  refs="$(ctr --address "$CTRD_SOCK" -n k8s.io images ls -q 2>/dev/null || true)"
  if ! grep -qx "$PAUSE_IMAGE" <<<"$refs"; then
    log "importing $PAUSE_IMAGE"
    ctr --address "$CTRD_SOCK" -n k8s.io images import "$IMAGES_DIR/pause-3.2.tar" >/dev/null ||
      fail_component containerd "importing $PAUSE_IMAGE"
  fi
  if ! grep -qx "$BUSYBOX_IMAGE" <<<"$refs"; then
    log "importing $BUSYBOX_IMAGE"
    ctr --address "$CTRD_SOCK" -n k8s.io images import "$(busybox_image_tar)" >/dev/null ||
      fail_component containerd "importing $BUSYBOX_IMAGE"
  fi
}

cmd_import_image() {
  (($# >= 2)) || die "usage: hack/cluster.sh import-image <dir-or-static-binary> <image-ref> [--entrypoint X] [--cmd X] [--user U] [--workdir D] [--env K=V]"
  local src="$1" ref="$2"; shift 2
  case "$ref" in
    */*/*) ;;
    */*) [[ "${ref%%/*}" == *.* || "${ref%%/*}" == *:* || "${ref%%/*}" == localhost ]] || ref="docker.io/$ref" ;;
    *) ref="docker.io/library/$ref" ;;
  esac
  [[ "${ref##*/}" == *:* || "$ref" == *@* ]] || ref="$ref:latest"
  local kind
  if [[ -d "$src" ]]; then kind=--rootfs
  elif [[ -f "$src" ]]; then kind=--binary
  else die "import-image: $src is neither a directory nor a file"; fi
  alive containerd && [[ -S "$CTRD_SOCK" ]] || die "containerd is not running (hack/cluster.sh up)"
  local tmp; tmp="$(mktemp -d)"
  python3 "$HACK_DIR/oci-image.py" --ref "$ref" --out "$tmp/image.tar" "$kind" "$src" "$@" >&2 ||
    { rm -rf "$tmp"; die "building the OCI image failed"; }
  ctr --address "$CTRD_SOCK" -n k8s.io images import "$tmp/image.tar" >&2 ||
    { rm -rf "$tmp"; die "ctr images import failed"; }
  rm -rf "$tmp"
  log "imported $ref"
  echo "$ref"
}
