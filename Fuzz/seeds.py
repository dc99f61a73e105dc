#!/usr/bin/env python3
"""Writes the seed corpora in Fuzz/corpus/<target>/ (deterministic; run again after a format change).

Seeds are small real-looking inputs; libFuzzer grows its own copy of them at run time."""
import gzip, io, json, os, shutil, struct, tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
D = lambda c: "sha256:" + c * 64


def put(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def references():
    for i, r in enumerate([
        "alpine", "alpine:3.20", "library/ubuntu:24.04", "docker.io/library/busybox:latest",
        "index.docker.io/nginx", "quay.io/prometheus/node-exporter:v1.8.2",
        "localhost:5000/models/llama@" + D("a"), "127.0.0.1:5000/x/y:tag@" + D("0"),
        "[::1]:5000/repo", "ghcr.io/org/team/app-name__x.y-z:1.0-rc_1", "Registry.Example.COM/a",
        "registry:5000/a/b/c",
    ]):
        put("reference", f"ref{i}", r)


def manifests():
    # The first byte picks the Content-Type (see Fuzz/Targets/manifest.swift): < 0x80 indexes
    # its table (0 none, 1 "", 2 ";", 7 OCI manifest, 8 OCI index, 9 Docker manifest, 10 list).
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D("b"), "size": 3208942}
    oci = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D("c"), "size": 581},
           "layers": [layer, dict(layer, digest=D("d"), size=32, urls=["https://example.com/x"])],
           "annotations": {"org.opencontainers.image.created": "2024-06-01T00:00:00Z"}}
    docker = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
              "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": D("e"), "size": 1472},
              "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": D("f"), "size": 2813316}]}
    entry = lambda arch, var=None, c="1": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D(c), "size": 1017,
                                           "platform": dict({"architecture": arch, "os": "linux"}, **({"variant": var} if var else {}))}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [entry("amd64"), entry("arm64", "v8", "2"), entry("arm", "v7", "3"),
                           {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D("4"), "size": 566,
                            "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}]}
    dlist = dict(index, mediaType="application/vnd.docker.distribution.manifest.list.v2+json")
    schema1 = {"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": []}
    config = {"created": "2024-06-01T00:00:00Z", "architecture": "amd64", "os": "linux",
              "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": [D("5"), D("6")]}}
    j = lambda o: json.dumps(o, separators=(",", ":")).encode()
    put("manifest", "oci-manifest", b"\x07" + j(oci))
    put("manifest", "oci-manifest-noheader", b"\x00" + j(oci))
    put("manifest", "docker-manifest", b"\x09" + j(docker))
    put("manifest", "oci-index-semicolon", b"\x02" + j(index))
    put("manifest", "docker-list-empty-header", b"\x01" + j(dlist))
    put("manifest", "schema1", b"\x0b" + j(schema1))
    put("manifest", "config", b"\x05" + j(config))
    ct = b"application/vnd.oci.image.index.v1+json ; charset=utf-8"
    put("manifest", "raw-header-index", bytes([0x80 | len(ct)]) + ct + j(index))


def challenges():
    for i, h in enumerate([
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
        'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:org/app:pull",error="insufficient_scope"',
        'Basic realm="Registry Realm"',
        'basic realm=registry',
        'Bearer realm="https://quay.io/v2/auth", service="quay.io", scope="repository:a/b:pull,push"',
        'Bearer realm="https://x/t\\"q\\\\",service=x',
        '  Bearer ',
    ]):
        put("authchallenge", f"challenge{i}", h)


def authfiles():
    # The first byte picks the registry asked for (see Fuzz/Targets/authfile.swift).
    import base64
    b = lambda s: base64.b64encode(s.encode()).decode()
    put("authfile", "podman", b"\x00" + json.dumps({"auths": {"docker.io": {"auth": b("user:pa:ss")},
                                                           "quay.io/org": {"auth": b("q:w")}}}).encode())
    put("authfile", "docker-url", b"\x00" + json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": b("u:p")}},
                                                               "credsStore": "desktop"}, indent="\t").encode())
    put("authfile", "nested", b"\x01" + json.dumps({"auths": {"quay.io/org/team/app": {"username": "a", "password": "b"},
                                                           "quay.io": {"identitytoken": "tok"}}}).encode())
    put("authfile", "port", b"\x02" + json.dumps({"auths": {"localhost:5000/": {"auth": b("x:y")}}}).encode())
    put("authfile", "bad-auth", b"\x03" + json.dumps({"auths": {"registry.example.com": {"auth": "!!notbase64"}}}).encode())
    put("authfile", "empty", b"\x05{}")


def registries_confs():
    put("registriesconf", "mirrors", '''unqualified-search-registries = ["docker.io"]

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "mirror.local:5000"
insecure = true

[[registry.mirror]]
location = "spegel.local:30020"
pull-from-mirror = "digest-only"
''')
    put("registriesconf", "wildcard", '''[[registry]]
prefix = "*.example.com"
location = "cache.internal/example"
blocked = false
mirror-by-digest-only = true

[[registry]]
location = "quay.io/org"
blocked = true
''')
    put("registriesconf", "rewrite", '''[[registry]]
prefix = "localhost:5000/x"
location = "registry.example.com/ns/repo"
mirror = [{ location = "m1.local" }, { location = "m2.local", pull-from-mirror = "tag-only" }]
''')
    put("registriesconf", "type-error", '[[registry]]\nprefix = "a"\ninsecure = "yes"\n')
    put("registriesconf", "v1", '[registries.search]\nregistries = ["docker.io"]\n# comment\nshort-name-mode = "enforcing"\n')


def tar_bytes(fmt, members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for info, data in members:
            info.mtime = 1700000000
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    # tarfile pads to a 10 KiB record: keep the two end-of-archive blocks only.
    data = buf.getvalue().rstrip(b"\0")
    return data + b"\0" * (-len(data) % 512 + 1024)


def ti(name, kind=tarfile.REGTYPE, size=0, **kw):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def tars():
    small, big = b"hello\n", bytes(range(256)) * 3  # 768 bytes: stored apart at the target's 512 threshold
    members = [
        (ti("etc/", tarfile.DIRTYPE, mode=0o755), None),
        (ti("etc/hostname", size=len(small)), small),
        (ti("usr/lib/model.bin", size=len(big), mode=0o644, uid=1000, gid=1000), big),
        (ti("usr/lib/link", tarfile.SYMTYPE, linkname="model.bin"), None),
        (ti("usr/lib/hard", tarfile.LNKTYPE, linkname="usr/lib/model.bin"), None),
        (ti("var/.wh.cache"), b""),
        (ti("opt/.wh..wh..opq"), b""),
        (ti("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), None),
        (ti("run/fifo", tarfile.FIFOTYPE), None),
    ]
    put("tar", "ustar", tar_bytes(tarfile.USTAR_FORMAT, members))
    put("tar", "gnu-longname", tar_bytes(tarfile.GNU_FORMAT, [(ti("d/" + "n" * 120, size=len(big)), big), (ti("./a/../b", size=2), b"ok")]))
    pax = ti("xattr-file", size=len(small), pax_headers={"SCHILY.xattr.user.k": "v", "SCHILY.xattr.security.capability": "\x01\x00"})
    put("tar", "pax", tar_bytes(tarfile.PAX_FORMAT, [(pax, small), (ti("big-pax", size=len(big), pax_headers={"mtime": "1.5"}), big)]))
    put("tar", "hostile", tar_bytes(tarfile.USTAR_FORMAT, [(ti("../escape", size=1), b"x")]))
    whole = tar_bytes(tarfile.USTAR_FORMAT, [(ti("f", size=700), b"z" * 700)])
    put("tar", "truncated-padding", whole[:512 + 700 + 100])
    put("tar", "empty", b"\0" * 1024)


def gzips():
    # The first byte picks how the stream is cut into reads (see Fuzz/Targets/gzip.swift).
    data = b"layer bytes " * 40 + bytes(range(256))
    one = gzip.compress(data, mtime=0)
    put("gzip", "one-member", b"\x00" + one)
    put("gzip", "two-members", b"\x01" + one + gzip.compress(b"second", mtime=0))
    put("gzip", "zero-padding", b"\x02" + one + b"\0" * 37)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="layer.tar", mode="wb", fileobj=buf, mtime=1700000000) as g:
        g.write(data)
    put("gzip", "fname-header", b"\x03" + buf.getvalue())
    put("gzip", "stored-block", b"\x04" + gzip.compress(data, compresslevel=0, mtime=0))
    put("gzip", "not-gzip", b"\x05" + tar_bytes(tarfile.USTAR_FORMAT, [(ti("a", size=3), b"abc")])[:600])
    put("gzip", "truncated", b"\x00" + one[:len(one) // 2])


class W:
    def __init__(self): self.b = bytearray()
    def u8(self, v): self.b += struct.pack("<B", v)
    def u32(self, v): self.b += struct.pack("<I", v)
    def i64(self, v): self.b += struct.pack("<q", v)
    def s(self, v): v = v.encode(); self.u32(len(v)); self.b += v
    def xattrs(self, xs):
        self.u32(len(xs))
        for n, v in xs: self.s(n); self.u32(len(v)); self.b += v


def layer_index(entries, v2=True):
    w = W()
    w.b += b"IMGVOL-LAYER-INDEX-2\n" if v2 else b"IMGVOL-LAYER-INDEX-1\n"
    w.b += struct.pack("<Q", len(entries))
    for path, kind, size, offset, link, xs in entries:
        w.s(path); w.u8(kind); w.u32(0o644); w.u32(0); w.u32(0); w.i64(1700000000); w.u32(5); w.i64(size); w.i64(offset)
        if v2: w.u8(1 if size >= 1 << 20 else 0)
        w.s(link); w.u32(0); w.u32(0); w.xattrs(xs)
    return bytes(w.b)


def layer_indexes():
    entries = [("etc", 1, 0, 0, "", []), ("etc/hostname", 0, 6, 1024, "", [("user.k", b"v")]),
               ("usr/lib/model.bin", 0, 1 << 21, 2048, "", []), ("usr/lib/link", 2, 9, 0, "model.bin", []),
               ("usr/lib/hard", 3, 0, 0, "usr/lib/model.bin", []), ("var/cache", 8, 0, 0, "", []), ("opt", 9, 0, 0, "", [])]
    put("layerindex", "v2", layer_index(entries))
    put("layerindex", "v1", layer_index(entries[:3], v2=False))
    put("layerindex", "empty", layer_index([]))


def image_tree():
    # root (dir) → etc (dir) → hostname (file); root → link (symlink)
    nodes = [
        dict(kind=1, size=0, layer=-1, link="", parent=0, children=[("etc", 1), ("link", 3)]),
        dict(kind=1, size=0, layer=0, link="", parent=0, children=[("hostname", 2)]),
        dict(kind=0, size=6, layer=0, link="", parent=1, children=[], xattrs=[("user.k", b"v")]),
        dict(kind=2, size=12, layer=1, link="etc/hostname", parent=0, children=[]),
    ]
    w = W()
    w.b += b"IMGVOL-TREE-2\n"
    w.u32(len(nodes))
    for n in nodes:
        w.u8(n["kind"]); w.u32(0o755); w.u32(0); w.u32(0); w.i64(1700000000); w.u32(0); w.i64(n["size"])
        w.u32(n["layer"] & 0xffffffff); w.i64(1536 if n["kind"] == 0 else 0); w.u8(0); w.s(n["link"]); w.u32(0); w.u32(0)
        w.xattrs(n.get("xattrs", [])); w.u32(1); w.u32(n["parent"]); w.u32(len(n["children"]))
        for name, inode in n["children"]: w.s(name); w.u32(inode)
    put("imagetree", "small", bytes(w.b))
    put("imagetree", "magic-only", b"IMGVOL-TREE-2\n")


if __name__ == "__main__":
    shutil.rmtree(CORPUS, ignore_errors=True)
    for f in (references, manifests, challenges, authfiles, registries_confs, tars, gzips, layer_indexes, image_tree):
        f()
