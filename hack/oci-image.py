#!/usr/bin/env python3
"""Build a single-layer OCI image-layout tarball (stdlib only).

The result can be imported with `ctr -n k8s.io images import FILE`.

Usage:
  oci-image.py --ref REF --out FILE.tar (--rootfs DIR | --binary FILE [--binary-path /name])
               [--entrypoint JSON-or-path] [--cmd JSON-or-word] [--user UID[:GID]]
               [--workdir DIR] [--env K=V ...]

--rootfs DIR      the layer is the content of DIR (a root filesystem).
--binary FILE     the layer is a minimal root filesystem holding FILE (default at
                  /<basename>), /etc/passwd and /etc/group with a `nonroot` user
                  (65532) and /tmp; the entrypoint defaults to the binary and the
                  user defaults to 65532:65532.
Entries are written sorted, owned by root, with mtime 0, so the same input gives the
same digests.
"""
import argparse
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import tempfile

LAYER_MT = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MT = "application/vnd.oci.image.config.v1+json"
MANIFEST_MT = "application/vnd.oci.image.manifest.v1+json"
INDEX_MT = "application/vnd.oci.image.index.v1+json"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"


def _info(name, typ, mode, size=0, linkname=""):
    ti = tarfile.TarInfo(name)
    ti.type = typ
    ti.mode = mode
    ti.size = size
    ti.linkname = linkname
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.mtime = 0
    return ti


def layer_from_rootfs(root, tf):
    root = os.path.abspath(root)
    entries = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for n in sorted(dirnames + filenames):
            entries.append(os.path.normpath(os.path.join(rel, n)))
    for rel in sorted(entries):
        full = os.path.join(root, rel)
        st = os.lstat(full)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            tf.addfile(_info(rel, tarfile.SYMTYPE, 0o777, linkname=os.readlink(full)))
        elif stat.S_ISDIR(st.st_mode):
            tf.addfile(_info(rel, tarfile.DIRTYPE, mode))
        elif stat.S_ISREG(st.st_mode):
            with open(full, "rb") as f:
                tf.addfile(_info(rel, tarfile.REGTYPE, mode, size=st.st_size), f)
        else:
            sys.stderr.write("oci-image: skipping special file %s\n" % rel)


def layer_from_binary(binary, dest, tf):
    dest = dest.lstrip("/")
    files = {
        "etc/passwd": PASSWD.encode(),
        "etc/group": GROUP.encode(),
    }
    dirs = {"etc": 0o755, "tmp": 0o1777, "home": 0o755, "home/nonroot": 0o755}
    parent = os.path.dirname(dest)
    while parent:
        dirs.setdefault(parent, 0o755)
        parent = os.path.dirname(parent)
    names = sorted(set(list(files) + list(dirs) + [dest]))
    for n in names:
        if n in dirs:
            ti = _info(n, tarfile.DIRTYPE, dirs[n])
            if n == "home/nonroot":
                ti.uid = ti.gid = 65532
            tf.addfile(ti)
        elif n in files:
            tf.addfile(_info(n, tarfile.REGTYPE, 0o644, size=len(files[n])), io.BytesIO(files[n]))
        else:
            size = os.path.getsize(binary)
            with open(binary, "rb") as f:
                tf.addfile(_info(n, tarfile.REGTYPE, 0o755, size=size), f)


def parse_list(value):
    if value is None:
        return None
    value = value.strip()
    if value.startswith("["):
        v = json.loads(value)
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise SystemExit("oci-image: expected a JSON list of strings: %r" % value)
        return v
    return [value]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest(), os.path.getsize(path)


def main():
    p = argparse.ArgumentParser(description="build an OCI image-layout tarball")
    p.add_argument("--ref", required=True, help="full image reference, e.g. docker.io/library/busybox:1.36")
    p.add_argument("--out", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--rootfs")
    src.add_argument("--binary")
    p.add_argument("--binary-path", help="path of the binary inside the image (default /<basename>)")
    p.add_argument("--entrypoint")
    p.add_argument("--cmd")
    p.add_argument("--user")
    p.add_argument("--workdir")
    p.add_argument("--env", action="append", default=[])
    a = p.parse_args()

    entrypoint = parse_list(a.entrypoint)
    cmd = parse_list(a.cmd)
    user = a.user
    if a.binary:
        dest = a.binary_path or "/" + os.path.basename(a.binary)
        if entrypoint is None:
            entrypoint = [dest]
        if user is None:
            user = "65532:65532"

    tag = a.ref.rsplit(":", 1)[1] if ":" in a.ref.rsplit("/", 1)[-1] else "latest"

    with tempfile.TemporaryDirectory() as tmp:
        layer_path = os.path.join(tmp, "layer.tar")
        with tarfile.open(layer_path, "w", format=tarfile.PAX_FORMAT) as tf:
            if a.rootfs:
                layer_from_rootfs(a.rootfs, tf)
            else:
                layer_from_binary(a.binary, dest, tf)
        layer_digest, layer_size = sha256_file(layer_path)

        env = list(a.env)
        if not any(e.startswith("PATH=") for e in env):
            env.insert(0, "PATH=" + DEFAULT_PATH)
        config = {
            "created": "1970-01-01T00:00:00Z",
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": env},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/oci-image.py"}],
        }
        if entrypoint is not None:
            config["config"]["Entrypoint"] = entrypoint
        if cmd is not None:
            config["config"]["Cmd"] = cmd
        if user:
            config["config"]["User"] = user
        if a.workdir:
            config["config"]["WorkingDir"] = a.workdir
        config_b = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_d = hashlib.sha256(config_b).hexdigest()

        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MT,
            "config": {"mediaType": CONFIG_MT, "digest": "sha256:" + config_d, "size": len(config_b)},
            "layers": [{"mediaType": LAYER_MT, "digest": "sha256:" + layer_digest, "size": layer_size}],
        }
        manifest_b = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        manifest_d = hashlib.sha256(manifest_b).hexdigest()

        index = {
            "schemaVersion": 2,
            "mediaType": INDEX_MT,
            "manifests": [{
                "mediaType": MANIFEST_MT,
                "digest": "sha256:" + manifest_d,
                "size": len(manifest_b),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": a.ref,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        }
        index_b = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
        layout_b = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()

        out_tmp = a.out + ".tmp"
        with tarfile.open(out_tmp, "w", format=tarfile.PAX_FORMAT) as out:
            out.addfile(_info("blobs", tarfile.DIRTYPE, 0o755))
            out.addfile(_info("blobs/sha256", tarfile.DIRTYPE, 0o755))
            for d, b in ((config_d, config_b), (manifest_d, manifest_b)):
                out.addfile(_info("blobs/sha256/" + d, tarfile.REGTYPE, 0o644, size=len(b)), io.BytesIO(b))
            with open(layer_path, "rb") as f:
                out.addfile(_info("blobs/sha256/" + layer_digest, tarfile.REGTYPE, 0o644, size=layer_size), f)
            out.addfile(_info("oci-layout", tarfile.REGTYPE, 0o644, size=len(layout_b)), io.BytesIO(layout_b))
            out.addfile(_info("index.json", tarfile.REGTYPE, 0o644, size=len(index_b)), io.BytesIO(index_b))
        os.replace(out_tmp, a.out)
    print("%s -> %s (manifest sha256:%s)" % (a.ref, a.out, manifest_d))


if __name__ == "__main__":
    main()
