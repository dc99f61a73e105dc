#!/usr/bin/env python3
"""Write OCI image layouts directly, with exact control over layer bytes.

Used by hack/bench (and usable by hand). Everything is deterministic: the same
arguments always give the same blobs and digests, so generated images can be
cached and re-pushed without changing.

Commands:
  bench-big    --out-tar L1 --out-gzip L2 --native-root R [--size BYTES]
               one layer holding /data/big.bin (uncompressed tar in L1, its gzip
               twin in L2); the same file is written to R/data/big.bin
  bench-small  --out L --native-root R [--files N] [--layers K]
               K gzip layers with N small files in total (0-64 KiB, nested dirs
               under /small); the same tree is written to R/small
  dir          --out L --src DIR --prefix PATH [--compression none|gzip]
               one layer holding the files of DIR under /PATH
Every command writes the layout with the tag given by --tag (default "latest")
and prints the manifest digest.
"""

import argparse
import hashlib
import io
import json
import os
import platform
import random
import shutil
import sys
import tarfile
import zlib

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {"none": "application/vnd.oci.image.layer.v1.tar",
            "gzip": "application/vnd.oci.image.layer.v1.tar+gzip"}
EPOCH = 1700000000  # fixed mtime for every entry: reproducible digests
CHUNK = 1 << 20


def goarch():
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}.get(m, m)


class BlobSink:
    """A binary writer that hashes what tar writes (the diff ID), optionally
    gzips it, and hashes and stores what ends up on disk (the blob digest).
    Several compressions of the same stream can be written in one pass."""

    def __init__(self, paths_by_compression, level=6):
        self.diff = hashlib.sha256()
        self.outs = []
        for comp, path in paths_by_compression.items():
            f = open(path, "wb")
            z = zlib.compressobj(level, zlib.DEFLATED, 31) if comp == "gzip" else None
            self.outs.append({"comp": comp, "path": path, "f": f, "z": z,
                              "h": hashlib.sha256(), "size": 0})
        self.usize = 0

    def write(self, b):
        b = bytes(b)
        self.diff.update(b)
        self.usize += len(b)
        for o in self.outs:
            data = o["z"].compress(b) if o["z"] else b
            if data:
                o["h"].update(data)
                o["f"].write(data)
                o["size"] += len(data)
        return len(b)

    def close(self):
        res = {}
        for o in self.outs:
            if o["z"]:
                data = o["z"].flush()
                o["h"].update(data)
                o["f"].write(data)
                o["size"] += len(data)
            o["f"].close()
            res[o["comp"]] = {"path": o["path"], "digest": "sha256:" + o["h"].hexdigest(),
                              "size": o["size"], "mediaType": MT_LAYER[o["comp"]]}
        return "sha256:" + self.diff.hexdigest(), res


class Layout:
    def __init__(self, root):
        self.root = root
        self.blobs = os.path.join(root, "blobs", "sha256")

    def create(self):
        if os.path.exists(self.root):
            shutil.rmtree(self.root)
        os.makedirs(self.blobs)
        with open(os.path.join(self.root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        return self

    def tmp(self, name):
        return os.path.join(self.root, ".tmp-" + name)

    def adopt(self, desc):
        """Move a finished temp blob into blobs/sha256/<hex>."""
        dst = os.path.join(self.blobs, desc["digest"].split(":", 1)[1])
        os.replace(desc["path"], dst)
        return {"mediaType": desc["mediaType"], "digest": desc["digest"], "size": desc["size"]}

    def put_json(self, obj, media_type):
        data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
        dig = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.blobs, dig), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + dig, "size": len(data)}

    def finish(self, layers, diff_ids, tag, history_note, labels=None):
        config = {
            "created": "2023-11-14T22:13:20Z",
            "architecture": goarch(),
            "os": "linux",
            "config": {"Labels": labels or {}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": history_note}
                        for _ in layers],
        }
        cdesc = self.put_json(config, MT_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST,
                    "config": cdesc, "layers": layers}
        mdesc = self.put_json(manifest, MT_MANIFEST)
        mdesc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        mdesc["platform"] = {"architecture": goarch(), "os": "linux"}
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [mdesc]}
        with open(os.path.join(self.root, "index.json"), "w") as f:
            json.dump(index, f, indent=1)
        return mdesc["digest"]


def open_tar(sink):
    tar = tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK)
    tar.copybufsize = CHUNK  # file data in 1 MiB pieces rather than 16 KiB
    return tar


def tinfo(name, type_=tarfile.REGTYPE, size=0, mode=0o644, linkname=""):
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.size = size
    ti.mode = mode
    ti.mtime = EPOCH
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.linkname = linkname
    return ti


def add_dirs(tar, seen, path):
    """Add the parent directory entries of path (once each)."""
    parts = path.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d not in seen:
            seen.add(d)
            tar.addfile(tinfo(d + "/", tarfile.DIRTYPE, mode=0o755))


class PRNGReader:
    """File-like object yielding `size` pseudo-random (incompressible) bytes
    and teeing them to an optional native copy."""

    def __init__(self, size, seed, tee=None):
        self.left = size
        self.rng = random.Random(seed)
        self.tee = tee

    def read(self, n=-1):
        if n < 0 or n > self.left:
            n = self.left
        # Generate in whole chunks for speed; tarfile asks for its bufsize.
        out = self.rng.randbytes(n)
        self.left -= n
        if self.tee:
            self.tee.write(out)
        return out


def cmd_bench_big(a):
    l1 = Layout(a.out_tar).create()
    l2 = Layout(a.out_gzip).create()
    sink = BlobSink({"none": l1.tmp("layer"), "gzip": l2.tmp("layer")}, level=a.gzip_level)
    name = "data/big.bin"
    npath = os.path.join(a.native_root, name)
    os.makedirs(os.path.dirname(npath), exist_ok=True)
    with open(npath + ".tmp", "wb") as native:
        tar = open_tar(sink)
        seen = set()
        add_dirs(tar, seen, name)
        tar.addfile(tinfo(name, size=a.size), PRNGReader(a.size, a.seed, tee=native))
        tar.close()
    os.replace(npath + ".tmp", npath)
    diff_id, res = sink.close()
    out = []
    for lay, comp in ((l1, "none"), (l2, "gzip")):
        desc = lay.adopt(res[comp])
        out.append(lay.finish([desc], [diff_id], a.tag, "bench-big %d bytes (%s)" % (a.size, comp)))
    print("\n".join(out))


TEXT_WORDS = ("model weight tensor layer float bias attention embedding token vocab "
              "config shard index offset the of and to in is for on with as by at "
              "import return def class self value key name data path file").split()


def cmd_bench_small(a):
    rng = random.Random(a.seed)
    # A pool of compressible text; files take slices of it at random offsets.
    text = " ".join(rng.choice(TEXT_WORDS) for _ in range(400_000)).encode()
    lay = Layout(a.out).create()
    if os.path.exists(os.path.join(a.native_root, "small")):
        shutil.rmtree(os.path.join(a.native_root, "small"))
    per = [a.files // a.layers + (1 if i < a.files % a.layers else 0) for i in range(a.layers)]
    layers, diff_ids = [], []
    total_bytes = 0
    count = 0
    for li, n in enumerate(per):
        sink = BlobSink({"gzip": lay.tmp("layer%d" % li)}, level=a.gzip_level)
        tar = open_tar(sink)
        seen = set()
        for i in range(n):
            depth = rng.randint(1, 4)
            dirs = ["l%d" % li] + ["d%02d" % rng.randrange(12) for _ in range(depth - 1)]
            name = "small/" + "/".join(dirs) + "/f%06d.%s" % (count, rng.choice(["bin", "txt", "json", "py"]))
            count += 1
            r = rng.random()
            if r < 0.05:
                size = 0
            else:
                size = min(65536, int(2 ** rng.uniform(0, 16)))
            if rng.random() < 0.5:
                data = rng.randbytes(size)
            else:
                off = rng.randrange(len(text) - 65536)
                data = text[off:off + size]
            mode = 0o755 if rng.random() < 0.1 else 0o644
            add_dirs(tar, seen, name)
            tar.addfile(tinfo(name, size=size, mode=mode), io.BytesIO(data))
            npath = os.path.join(a.native_root, name)
            os.makedirs(os.path.dirname(npath), exist_ok=True)
            with open(npath, "wb") as f:
                f.write(data)
            os.chmod(npath, mode)
            total_bytes += size
            # A few relative symlinks next to the regular files.
            if rng.random() < 0.01:
                lname = name + ".link"
                target = os.path.basename(name)
                tar.addfile(tinfo(lname, tarfile.SYMTYPE, linkname=target, mode=0o777))
                os.symlink(target, os.path.join(a.native_root, lname))
        tar.close()
        diff_id, res = sink.close()
        layers.append(lay.adopt(res["gzip"]))
        diff_ids.append(diff_id)
    dig = lay.finish(layers, diff_ids, a.tag,
                     "bench-small %d files in %d layers" % (a.files, a.layers))
    print(dig)
    print("small files: %d files, %d bytes" % (count, total_bytes), file=sys.stderr)


def cmd_dir(a):
    lay = Layout(a.out).create()
    sink = BlobSink({a.compression: lay.tmp("layer")}, level=a.gzip_level)
    tar = open_tar(sink)
    prefix = a.prefix.strip("/")
    seen = set()
    add_dirs(tar, seen, prefix + "/x")
    for dirpath, dirnames, filenames in os.walk(a.src):
        dirnames.sort()
        rel = os.path.relpath(dirpath, a.src)
        for d in dirnames:
            name = os.path.normpath(os.path.join(prefix, rel, d))
            if os.path.islink(os.path.join(dirpath, d)):
                continue
            seen.add(name)
            tar.addfile(tinfo(name + "/", tarfile.DIRTYPE, mode=0o755))
        for fn in sorted(filenames):
            p = os.path.join(dirpath, fn)
            name = os.path.normpath(os.path.join(prefix, rel, fn))
            if os.path.islink(p):
                tar.addfile(tinfo(name, tarfile.SYMTYPE, linkname=os.readlink(p), mode=0o777))
                continue
            st = os.stat(p)
            with open(p, "rb") as f:
                tar.addfile(tinfo(name, size=st.st_size, mode=st.st_mode & 0o7777 or 0o644), f)
    tar.close()
    diff_id, res = sink.close()
    desc = lay.adopt(res[a.compression])
    print(lay.finish([desc], [diff_id], a.tag, "files of %s under /%s" % (a.src, prefix)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench-big")
    b.add_argument("--out-tar", required=True)
    b.add_argument("--out-gzip", required=True)
    b.add_argument("--native-root", required=True)
    b.add_argument("--size", type=int, default=1 << 30)
    b.add_argument("--seed", type=int, default=1)
    s = sub.add_parser("bench-small")
    s.add_argument("--out", required=True)
    s.add_argument("--native-root", required=True)
    s.add_argument("--files", type=int, default=21000)
    s.add_argument("--layers", type=int, default=3)
    s.add_argument("--seed", type=int, default=2)
    d = sub.add_parser("dir")
    d.add_argument("--out", required=True)
    d.add_argument("--src", required=True)
    d.add_argument("--prefix", required=True)
    d.add_argument("--compression", choices=("none", "gzip"), default="gzip")
    for x in (b, s, d):
        x.add_argument("--tag", default="latest")
        x.add_argument("--gzip-level", type=int, default=6)
    a = p.parse_args()
    {"bench-big": cmd_bench_big, "bench-small": cmd_bench_small, "dir": cmd_dir}[a.cmd](a)


if __name__ == "__main__":
    main()
