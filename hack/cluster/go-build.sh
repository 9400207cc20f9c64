#!/usr/bin/env bash
# Build commands of a Go module whose own go.mod replaces its in-repo modules with local
# paths (k8s.io/kubernetes and its staging modules, etcd and its sub-modules), so that
# `go install MODULE/cmd@VERSION` refuses it. A throwaway wrapper module requires MODULE at
# VERSION and replaces each locally-replaced module with its published version.
#
#   hack/cluster/go-build.sh MODULE VERSION LOCAL_VERSION OUT_DIR LDFLAGS PKG...
#
# LOCAL_VERSION is the published version of the in-repo modules (k8s.io/api v0.37.2 for
# k8s.io/kubernetes v1.37.2; the same version for etcd). Each PKG is an import path, or
# NAME=IMPORT_PATH; its binary lands in OUT_DIR as NAME or the path's last element.
set -euo pipefail
module="$1" version="$2" local_version="$3" out="$4" ldflags="$5"; shift 5
command -v go >/dev/null || { echo "go-build: no Go toolchain on PATH" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS=-mod=mod GOTOOLCHAIN=local

gomod="$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
go_directive="$(awk '$1=="go"{print $2; exit}' "$gomod")"
{
  echo "module loops.dev/cluster-build"
  echo
  echo "go $go_directive"
  echo
  echo "require $module $version"
  echo
  # every module the upstream go.mod replaces with a directory of its own repository
  go mod edit -json "$gomod" | python3 -c '
import json, sys
v = sys.argv[1]
for r in json.load(sys.stdin).get("Replace") or []:
    new = r["New"]["Path"]
    if (new.startswith("./") or new.startswith("../")) and "FORBIDDEN" not in new:
        print("replace %s => %s %s" % (r["Old"]["Path"], r["Old"]["Path"], v))
' "$local_version"
} >go.mod
# a package of the wrapper that imports nothing lets `go get` resolve the graph
echo 'package build' >build.go
go get "$module@$version" >/dev/null 2>&1 || go get "$module@$version"
mkdir -p "$out"
for spec in "$@"; do
  pkg="${spec#*=}" name="${spec%%=*}"
  [[ "$spec" == *=* ]] || name="${pkg##*/}"
  echo "go-build: $pkg -> $out/$name" >&2
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$name.tmp" "$pkg"
  mv "$out/$name.tmp" "$out/$name"
done
