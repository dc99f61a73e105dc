"""Write OCI image layouts from Python, byte for byte under the test's control.

A layer is a list of tar entries::

    from support.oci_layout import *

    base = Layer([
        Dir("etc", mode=0o755),
        File("etc/hostname", b"box\\n", mode=0o644, uid=0, gid=0, mtime=1700000000),
        File("usr/bin/su", b"#!", mode=0o4755),
        Symlink("bin", "usr/bin"),
        Hardlink("usr/bin/su2", "usr/bin/su"),
        Fifo("run/fifo"), CharDev("dev/null", 1, 3),
        File("x", b"", xattrs={"user.k": b"v"}),
    ], compression="gzip")
    top = Layer([Whiteout("etc/hostname"), Opaque("usr/bin")], compression="zstd")

    img = write_image("/tmp/layout", "v1", [base, top])
    img.manifest_digest, img.config_digest, img.layer_digests, img.diff_ids

    idx = write_index("/tmp/layout", "multi", [
        Platform("linux", "amd64", layers=[base]),
        Platform("linux", "arm64", "v8", layers=[base, top]),
    ])
    idx.index_digest, idx.images[1].manifest_digest

Hostile entries are written as given (tarfile does not sanitise on write):
``File("../escape", b"x")``, ``File("/abs/path", b"x")``,
``Hardlink("h", "../outside")``, ``Symlink("evil", "/etc")`` followed by
``File("evil/passwd", b"x")``.  ``Raw(tarinfo, data)`` writes any TarInfo.

Corruption: ``write_image(..., diff_ids_override=[...])`` writes a config whose
diff_ids lie; ``corrupt_blob(layout, digest)`` changes a blob's bytes after the
fact; ``Layer.from_blob(b"garbage", ...)`` is a layer whose digest is right but
whose bytes are not an archive.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

# Media types -----------------------------------------------------------------------------
OCI_LAYOUT_VERSION = "1.0.0"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"

OCI_LAYER_TYPES = {"none": MT_OCI_LAYER, "gzip": MT_OCI_LAYER_GZIP, "zstd": MT_OCI_LAYER_ZSTD}
DOCKER_LAYER_TYPES = {"none": MT_DOCKER_LAYER, "gzip": MT_DOCKER_LAYER_GZIP,
                      "zstd": MT_DOCKER_LAYER_ZSTD}

REF_NAME = "org.opencontainers.image.ref.name"
DEFAULT_MTIME = 1700000000  # 2023-11-14T22:13:20Z
DEFAULT_CREATED = "2024-01-02T03:04:05Z"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


# Tar entries -----------------------------------------------------------------------------

@dataclass
class Entry:
    """One tar entry.  ``kind``: file, dir, symlink, hardlink, fifo, char, block."""
    name: str
    kind: str = "file"
    content: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = DEFAULT_MTIME
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: Dict[str, bytes] = field(default_factory=dict)
    uname: str = ""
    gname: str = ""
    pax: Dict[str, str] = field(default_factory=dict)

    _TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
              "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "char": tarfile.CHRTYPE,
              "block": tarfile.BLKTYPE}

    def tarinfo(self):
        ti = tarfile.TarInfo(self.name)
        ti.type = self._TYPES[self.kind]
        ti.mode = self.mode & 0o7777
        ti.uid, ti.gid = self.uid, self.gid
        ti.uname, ti.gname = self.uname, self.gname
        ti.mtime = self.mtime
        ti.linkname = self.linkname
        ti.devmajor, ti.devminor = self.devmajor, self.devminor
        data = None
        if self.kind == "file":
            ti.size = len(self.content)
            data = self.content
        pax = dict(self.pax)
        for k, v in self.xattrs.items():
            if isinstance(v, str):
                v = v.encode("utf-8")
            pax["SCHILY.xattr." + k] = v.decode("utf-8", "surrogateescape")
        ti.pax_headers = pax
        return ti, data


def File(name, content: bytes = b"", mode=0o644, **kw) -> Entry:
    if isinstance(content, str):
        content = content.encode("utf-8")
    return Entry(name, "file", content=content, mode=mode, **kw)


def Dir(name, mode=0o755, **kw) -> Entry:
    return Entry(name, "dir", mode=mode, **kw)


def Symlink(name, target, mode=0o777, **kw) -> Entry:
    return Entry(name, "symlink", linkname=target, mode=mode, **kw)


def Hardlink(name, target, mode=0o644, **kw) -> Entry:
    return Entry(name, "hardlink", linkname=target, mode=mode, **kw)


def Fifo(name, mode=0o644, **kw) -> Entry:
    return Entry(name, "fifo", mode=mode, **kw)


def CharDev(name, major, minor, mode=0o666, **kw) -> Entry:
    return Entry(name, "char", devmajor=major, devminor=minor, mode=mode, **kw)


def BlockDev(name, major, minor, mode=0o660, **kw) -> Entry:
    return Entry(name, "block", devmajor=major, devminor=minor, mode=mode, **kw)


def Whiteout(path, **kw) -> Entry:
    """Delete `path` from lower layers: an empty file `dir/.wh.base`."""
    d, b = os.path.split(path.rstrip("/"))
    return Entry(os.path.join(d, ".wh." + b), "file", mode=0o644, **kw)


def Opaque(dirpath, **kw) -> Entry:
    """Hide everything lower layers put in `dirpath`: `dirpath/.wh..wh..opq`."""
    return Entry(os.path.join(dirpath.rstrip("/"), ".wh..wh..opq"), "file", mode=0o644, **kw)


class Raw:
    """Any TarInfo plus data, written verbatim."""

    def __init__(self, tarinfo: tarfile.TarInfo, data: Optional[bytes] = None):
        self.ti, self.data = tarinfo, data
        self.name = tarinfo.name

    def tarinfo(self):
        return self.ti, self.data


def build_tar(entries: Iterable) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      encoding="utf-8") as tf:
        for e in entries:
            ti, data = e.tarinfo()
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


# Compression -----------------------------------------------------------------------------

def compress(data: bytes, compression: str) -> bytes:
    if compression == "none":
        return data
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        try:
            import zstandard
            return zstandard.ZstdCompressor(level=3, write_content_size=True).compress(data)
        except ImportError:
            return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, check=True,
                                  capture_output=True).stdout
    raise ValueError(f"unknown compression {compression!r}")


def decompress(blob: bytes, compression: str) -> bytes:
    if compression == "none":
        return blob
    if compression == "gzip":
        return gzip.decompress(blob)
    if compression == "zstd":
        try:
            import zstandard
            return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
        except ImportError:
            return subprocess.run(["zstd", "-q", "-d", "-c"], input=blob, check=True,
                                  capture_output=True).stdout
    raise ValueError(compression)


# Layers ------------------------------------------------------------------------------------

class Layer:
    """A layer blob.  ``tar``: uncompressed bytes; ``blob``: what is stored/pushed."""

    def __init__(self, entries: Sequence = (), compression: str = "gzip",
                 media_type: Optional[str] = None):
        self.entries = list(entries)
        self.compression = compression
        self.tar = build_tar(self.entries)
        self.blob = compress(self.tar, compression)
        self._media_type = media_type
        self.diff_id = sha256_digest(self.tar)

    @classmethod
    def from_blob(cls, blob: bytes, compression: str = "gzip", diff_id: Optional[str] = None,
                  media_type: Optional[str] = None) -> "Layer":
        """A layer with arbitrary bytes (e.g. garbage); its digest is correct for them."""
        self = cls.__new__(cls)
        self.entries = []
        self.compression = compression
        self.tar = None
        self.blob = blob
        self._media_type = media_type
        self.diff_id = diff_id or sha256_digest(blob)
        return self

    @classmethod
    def from_tar(cls, tar: bytes, compression: str = "gzip") -> "Layer":
        self = cls.__new__(cls)
        self.entries = []
        self.compression = compression
        self.tar = tar
        self.blob = compress(tar, compression)
        self._media_type = None
        self.diff_id = sha256_digest(tar)
        return self

    def media_type(self, docker: bool = False) -> str:
        if self._media_type:
            return self._media_type
        return (DOCKER_LAYER_TYPES if docker else OCI_LAYER_TYPES)[self.compression]

    @property
    def digest(self) -> str:
        return sha256_digest(self.blob)

    @property
    def size(self) -> int:
        return len(self.blob)


# Layout ----------------------------------------------------------------------------------

@dataclass
class ImageInfo:
    manifest_digest: str
    config_digest: str
    layer_digests: List[str]
    diff_ids: List[str]
    manifest: dict
    config: dict
    manifest_bytes: bytes
    config_bytes: bytes
    manifest_media_type: str
    platform: dict
    layers: List[Layer] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Sum of manifest, config and layer blob sizes."""
        return (len(self.manifest_bytes) + len(self.config_bytes) +
                sum(layer.size for layer in self.layers))


@dataclass
class IndexInfo:
    index_digest: str
    index: dict
    index_bytes: bytes
    images: List[ImageInfo]

    def for_platform(self, os_, arch, variant=None) -> ImageInfo:
        for im in self.images:
            p = im.platform
            if p["os"] == os_ and p["architecture"] == arch and p.get("variant") == variant:
                return im
        raise KeyError((os_, arch, variant))


@dataclass
class Platform:
    os: str
    architecture: str
    variant: Optional[str] = None
    layers: List[Layer] = field(default_factory=list)
    config_overrides: dict = field(default_factory=dict)


def init_layout(layout_dir: str) -> None:
    os.makedirs(os.path.join(layout_dir, "blobs", "sha256"), exist_ok=True)
    p = os.path.join(layout_dir, "oci-layout")
    if not os.path.exists(p):
        with open(p, "w") as f:
            json.dump({"imageLayoutVersion": OCI_LAYOUT_VERSION}, f)
    p = os.path.join(layout_dir, "index.json")
    if not os.path.exists(p):
        with open(p, "wb") as f:
            f.write(canonical_json({"schemaVersion": 2, "mediaType": MT_OCI_INDEX,
                                    "manifests": []}))


def blob_path(layout_dir: str, digest: str) -> str:
    algo, _, hexd = digest.partition(":")
    return os.path.join(layout_dir, "blobs", algo, hexd)


def write_blob(layout_dir: str, data: bytes, digest: Optional[str] = None) -> str:
    digest = digest or sha256_digest(data)
    path = blob_path(layout_dir, digest)
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
    return digest


def corrupt_blob(layout_dir: str, digest: str, new_bytes: Optional[bytes] = None) -> None:
    """Replace the bytes of a blob in the layout without renaming it (digest now lies)."""
    path = blob_path(layout_dir, digest)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if new_bytes is None:
        data[len(data) // 2] ^= 0xFF
        new_bytes = bytes(data)
    with open(path, "wb") as f:
        f.write(new_bytes)


def tag_in_layout(layout_dir: str, tag: str, descriptor: dict) -> None:
    path = os.path.join(layout_dir, "index.json")
    with open(path) as f:
        index = json.load(f)
    manifests = [m for m in index.get("manifests", [])
                 if m.get("annotations", {}).get(REF_NAME) != tag]
    d = copy.deepcopy(descriptor)
    d.setdefault("annotations", {})[REF_NAME] = tag
    manifests.append(d)
    index["manifests"] = manifests
    with open(path, "wb") as f:
        f.write(canonical_json(index))


def make_config(layers: Sequence[Layer], os_="linux", arch="amd64", variant=None,
                created: Optional[str] = DEFAULT_CREATED, overrides: Optional[dict] = None,
                diff_ids_override: Optional[List[str]] = None) -> dict:
    cfg = {
        "architecture": arch,
        "os": os_,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers",
                   "diff_ids": list(diff_ids_override) if diff_ids_override is not None
                   else [layer.diff_id for layer in layers]},
        "history": [{"created": created or DEFAULT_CREATED, "created_by": f"imgvol-e2e layer {i}"}
                    for i in range(len(layers))],
    }
    if created is not None:
        cfg["created"] = created
    if variant:
        cfg["variant"] = variant
    for k, v in (overrides or {}).items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return cfg


def write_manifest(layout_dir: str, layers: Sequence[Layer], *, os_="linux", arch="amd64",
                   variant=None, docker: bool = False, created: Optional[str] = DEFAULT_CREATED,
                   config_overrides: Optional[dict] = None,
                   diff_ids_override: Optional[List[str]] = None,
                   annotations: Optional[dict] = None) -> ImageInfo:
    """Write config, layers and manifest blobs (no tag). Returns ImageInfo."""
    init_layout(layout_dir)
    config = make_config(layers, os_, arch, variant, created, config_overrides,
                         diff_ids_override)
    config_bytes = canonical_json(config)
    config_digest = write_blob(layout_dir, config_bytes)
    for layer in layers:
        write_blob(layout_dir, layer.blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_DOCKER_MANIFEST if docker else MT_OCI_MANIFEST,
        "config": {"mediaType": MT_DOCKER_CONFIG if docker else MT_OCI_CONFIG,
                   "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": layer.media_type(docker), "digest": layer.digest,
                    "size": layer.size} for layer in layers],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    manifest_bytes = canonical_json(manifest)
    manifest_digest = write_blob(layout_dir, manifest_bytes)
    platform = {"architecture": arch, "os": os_}
    if variant:
        platform["variant"] = variant
    return ImageInfo(manifest_digest, config_digest, [layer.digest for layer in layers],
                     list(config["rootfs"]["diff_ids"]), manifest, config, manifest_bytes,
                     config_bytes, manifest["mediaType"], platform, list(layers))


def write_image(layout_dir: str, tag: str, layers: Sequence[Layer], **kw) -> ImageInfo:
    """Write a single-platform image and tag it `tag` in the layout's index.json.

    Keyword arguments: os_, arch, variant, docker (schema2 media types), created
    (None = no `created` field), config_overrides, diff_ids_override, annotations.
    """
    info = write_manifest(layout_dir, layers, **kw)
    tag_in_layout(layout_dir, tag, {"mediaType": info.manifest_media_type,
                                    "digest": info.manifest_digest,
                                    "size": len(info.manifest_bytes)})
    return info


def write_index(layout_dir: str, tag: str, platforms: Sequence[Platform],
                docker: bool = False) -> IndexInfo:
    """Write a multi-platform image index (OCI, or Docker manifest list) tagged `tag`."""
    images = []
    for p in platforms:
        images.append(write_manifest(layout_dir, p.layers, os_=p.os, arch=p.architecture,
                                     variant=p.variant, docker=docker,
                                     config_overrides=p.config_overrides))
    index = {
        "schemaVersion": 2,
        "mediaType": MT_DOCKER_LIST if docker else MT_OCI_INDEX,
        "manifests": [{"mediaType": im.manifest_media_type, "digest": im.manifest_digest,
                       "size": len(im.manifest_bytes), "platform": im.platform}
                      for im in images],
    }
    index_bytes = canonical_json(index)
    index_digest = write_blob(layout_dir, index_bytes)
    tag_in_layout(layout_dir, tag, {"mediaType": index["mediaType"], "digest": index_digest,
                                    "size": len(index_bytes)})
    return IndexInfo(index_digest, index, index_bytes, images)


def remove_layout(layout_dir: str) -> None:
    shutil.rmtree(layout_dir, ignore_errors=True)
