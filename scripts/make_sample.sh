#!/bin/sh
# Regenerates the sample image bundled with imgscope (imgscope/data/sample.qcow2):
# a small qcow2 v3 with a backing-free history of three internal snapshots,
# compressed and zero clusters, a persistent bitmap and one leaked cluster.
set -e
OUT=${1:-imgscope/data/sample.qcow2}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
I="$TMP/sample.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=4096,lazy_refcounts=on "$I" 8M
qemu-io -f qcow2 -c "write -P 0x11 0 64k" -c "write -P 0x12 1M 16k" -c "write -z 2M 8k" "$I" >/dev/null
qemu-img snapshot -c installed "$I"
qemu-io -f qcow2 -c "write -P 0x21 0 8k" -c "write -c -P 0x22 3M 16k" "$I" >/dev/null
qemu-img snapshot -c updated "$I"
qemu-io -f qcow2 -c "write -P 0x31 4k 4k" -c "write -P 0x32 5M 32k" "$I" >/dev/null
qemu-img bitmap --add "$I" backup0
qemu-io -f qcow2 -c "write -P 0x41 6M 12k" "$I" >/dev/null
qemu-img snapshot -c before-upgrade "$I"
qemu-io -f qcow2 -c "write -P 0x51 7M 4k" "$I" >/dev/null
mkdir -p "$(dirname "$OUT")"
cp "$I" "$OUT"
# one leaked cluster, as an aborted allocation leaves it: a cluster appended to the
# file whose refcount was raised but that no table references
python3 - "$OUT" <<'PY'
import struct, sys
p = sys.argv[1]
with open(p, "r+b") as f:
    h = f.read(104)
    cs = 1 << struct.unpack(">I", h[20:24])[0]
    rt = struct.unpack(">Q", h[48:56])[0]
    size = f.seek(0, 2)
    n = -(-size // cs)
    f.truncate((n + 1) * cs)
    f.seek(rt); rb = struct.unpack(">Q", f.read(8))[0]
    f.seek(rb + 2 * n); f.write(struct.pack(">H", 1))
PY
echo "sample written to $OUT"
