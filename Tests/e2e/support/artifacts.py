"""Push OCI artifacts (and hand-made images) straight to a registry over the distribution API.

    from support.artifacts import Blob, push_artifact, tar_bytes, TITLE

    pushed = push_artifact(registry, "e2e/model", "v1", [
        Blob("application/vnd.oci.image.layer.v1.tar", b"weights", {TITLE: "w/model.bin"}),
        Blob("application/vnd.kitops.modelkit.code.v1.tar+gzip",
             tar_bytes([File("src/x.py", "print(1)\\n")], "gzip")),
        Blob.from_file("application/vnd.cncf.model.weight.v1.raw", "/tmp/big.bin"),
    ], artifact_type="application/vnd.example.thing")
    pushed.reference, pushed.manifest_digest, pushed.layer_digests

No skopeo: blobs go up with ``POST /v2/<repo>/blobs/uploads/`` and then either one
``PUT ?digest=`` with the body (small blobs) or ``PATCH`` chunks read from a file (big
blobs: at most ``CHUNK`` bytes in memory) and an empty ``PUT ?digest=``; the manifest with
``PUT /v2/<repo>/manifests/<tag>`` and ``Content-Type`` = its ``mediaType``.  After the
push the manifest is fetched back (``GET`` with that type in ``Accept``) and compared byte
for byte, so a registry that rewrote or refused it fails loudly (``RegistryRejected`` with
the registry's status and body).

Big test data without big memory: ``Pattern(size, seed)`` is ``size`` bytes made of one
1 MiB random block repeated with a counter in front of each copy (so no two MiB are equal
and gzip cannot shrink it), generated at disk speed; any slice can be recomputed with
``read_at``.  ``write_tar_file`` streams a tar (entries and ``BigFile``s) to disk.

Only the standard library (plus ``zstandard`` for zstd) and loopback HTTP without proxies
(``Registry.request``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import struct
import tarfile
import urllib.parse
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .oci_layout import (MT_DOCKER_CONFIG, MT_DOCKER_MANIFEST, MT_OCI_CONFIG, MT_OCI_LAYER,
                         MT_OCI_LAYER_GZIP, MT_OCI_LAYER_ZSTD, MT_OCI_MANIFEST, build_tar,
                         canonical_json, compress, make_config, sha256_digest)

# -- media types and annotations -----------------------------------------------------------

MT_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"

TITLE = "org.opencontainers.image.title"
ORAS_UNPACK = "io.deis.oras.content.unpack"
ORAS_CONTENT_DIGEST = "io.deis.oras.content.digest"

# ModelPack (CNCF model-spec)
MT_MODEL_MANIFEST = "application/vnd.cncf.model.manifest.v1+json"      # artifactType
MT_MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
MT_MODEL_WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
MT_MODEL_WEIGHT_CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw"
MT_MODEL_DOC_RAW = "application/vnd.cncf.model.doc.v1.raw"
MT_MODEL_CODE_RAW = "application/vnd.cncf.model.code.v1.raw"
MT_MODEL_DATASET_RAW = "application/vnd.cncf.model.dataset.v1.raw"
MT_MODEL_WEIGHT_TAR = "application/vnd.cncf.model.weight.v1.tar"
MT_MODEL_WEIGHT_CONFIG_TAR = "application/vnd.cncf.model.weight.config.v1.tar"
MT_MODEL_DOC_TAR_GZIP = "application/vnd.cncf.model.doc.v1.tar+gzip"
MODEL_FILEPATH = "org.cncf.model.filepath"
MODEL_FILE_METADATA = "org.cncf.model.file.metadata+json"
MODEL_UNTESTED = "org.cncf.model.file.mediatype.untested"

# KitOps ModelKit
MT_KIT_CONFIG = "application/vnd.kitops.modelkit.config.v1+json"


def kit_layer(kind: str, compression: str = "none") -> str:
    """application/vnd.kitops.modelkit.<kind>.v1.tar[+gzip|+zstd] (kind: model, modelpart,
    dataset, code, docs)."""
    return f"application/vnd.kitops.modelkit.{kind}.v1.tar" + _SUFFIX[compression]


# Docker Model Runner
MT_DOCKER_AI_CONFIG = "application/vnd.docker.ai.model.config.v0.1+json"
MT_DOCKER_AI_GGUF = "application/vnd.docker.ai.gguf.v3"
MT_DOCKER_AI_SAFETENSORS = "application/vnd.docker.ai.safetensors"
MT_DOCKER_AI_LICENSE = "application/vnd.docker.ai.license"
MT_DOCKER_AI_MMPROJ = "application/vnd.docker.ai.mmproj"
MT_DOCKER_AI_TEMPLATE = "application/vnd.docker.ai.chat.template.jinja"

# Ollama
MT_OLLAMA = "application/vnd.ollama.image."          # + model, template, system, params, ...

_SUFFIX = {"none": "", "gzip": "+gzip", "zstd": "+zstd"}
_OCI_LAYER_BY_COMPRESSION = {"none": MT_OCI_LAYER, "gzip": MT_OCI_LAYER_GZIP,
                             "zstd": MT_OCI_LAYER_ZSTD}

CHUNK = 32 << 20          # bytes per PATCH (and the largest blob sent in one PUT)


class RegistryRejected(RuntimeError):
    """The registry refused (or mangled) what we pushed; .status and .body say how."""

    def __init__(self, what: str, status: int, body: bytes, headers: Optional[dict] = None):
        self.status, self.body, self.headers = status, body, headers or {}
        super().__init__(f"registry rejected {what}: HTTP {status}: "
                         f"{body[:2000].decode('utf-8', 'replace')}")


# -- blobs ---------------------------------------------------------------------------------

@dataclass
class Blob:
    """One blob to push: bytes in memory (``data``) or a file streamed in chunks (``path``)."""
    media_type: str
    data: Optional[bytes] = None
    annotations: Dict[str, str] = field(default_factory=dict)
    path: Optional[str] = None
    known_digest: Optional[str] = None       # for path blobs: skip re-hashing a big file

    def __post_init__(self):
        if isinstance(self.data, str):
            self.data = self.data.encode("utf-8")
        if (self.data is None) == (self.path is None):
            raise ValueError("a Blob needs exactly one of data= and path=")
        self._digest = self.known_digest
        self.annotations = dict(self.annotations or {})

    @classmethod
    def from_file(cls, media_type: str, path: str, annotations: Optional[dict] = None,
                  digest: Optional[str] = None) -> "Blob":
        return cls(media_type, None, dict(annotations or {}), path=str(path), known_digest=digest)

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else os.path.getsize(self.path)

    @property
    def digest(self) -> str:
        if self._digest is None:
            if self.data is not None:
                self._digest = sha256_digest(self.data)
            else:
                h = hashlib.sha256()
                with open(self.path, "rb") as f:
                    for block in iter(lambda: f.read(CHUNK), b""):
                        h.update(block)
                self._digest = "sha256:" + h.hexdigest()
        return self._digest

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    def descriptor(self) -> dict:
        d = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    def chunks(self, size: int = CHUNK) -> Iterable[bytes]:
        if self.data is not None:
            for i in range(0, max(len(self.data), 1), size):
                yield self.data[i:i + size]
            return
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(size), b""):
                yield block


@dataclass
class Pushed:
    host: str
    repo: str
    tag: str
    manifest_digest: str
    manifest: dict
    manifest_bytes: bytes
    media_type: str
    config_digest: str
    config_bytes: bytes
    layers: List[Blob]

    @property
    def layer_digests(self) -> List[str]:
        return [b.digest for b in self.layers]

    @property
    def reference(self) -> str:
        return f"{self.host}/{self.repo}:{self.tag}"

    ref = reference          # the name conftest.Publisher's ImageInfo uses

    @property
    def by_digest(self) -> str:
        return f"{self.host}/{self.repo}@{self.manifest_digest}"


# -- HTTP ----------------------------------------------------------------------------------

def _path_of(location: str) -> str:
    """A Location header (absolute or relative URL) as path?query for Registry.request."""
    u = urllib.parse.urlsplit(location)
    return u.path + (("?" + u.query) if u.query else "")


def _with_query(path: str, **params) -> str:
    sep = "&" if "?" in path else "?"
    return path + sep + urllib.parse.urlencode(params)


def push_blob(registry, repo: str, blob: Blob, creds: Optional[str] = None,
              chunk: int = CHUNK, timeout: float = 300) -> str:
    """Upload one blob (skipped when the registry has it already); returns its digest."""
    creds = creds or getattr(registry, "creds", None)
    digest = blob.digest
    status, headers, _ = registry.request("HEAD", f"/v2/{repo}/blobs/{digest}", creds=creds)
    if status == 200:
        return digest
    status, headers, body = registry.request("POST", f"/v2/{repo}/blobs/uploads/",
                                             headers={"Content-Length": "0"}, data=b"",
                                             creds=creds)
    if status != 202 or not headers.get("Location"):
        raise RegistryRejected(f"upload start for {digest}", status, body, headers)
    location = _path_of(headers["Location"])
    octet = {"Content-Type": "application/octet-stream"}
    if blob.size <= chunk:                                   # monolithic: POST + PUT
        data = blob.data if blob.data is not None else next(iter(blob.chunks(chunk)), b"")
        status, headers, body = registry.request("PUT", _with_query(location, digest=digest),
                                                 headers=octet, data=data, creds=creds,
                                                 timeout=timeout)
    else:                                                    # chunked: PATCH... + PUT
        offset = 0
        for part in blob.chunks(chunk):
            hdrs = dict(octet, **{"Content-Range": f"{offset}-{offset + len(part) - 1}"})
            status, headers, body = registry.request("PATCH", location, headers=hdrs, data=part,
                                                     creds=creds, timeout=timeout)
            if status != 202 or not headers.get("Location"):
                raise RegistryRejected(f"chunk at {offset} of {digest}", status, body, headers)
            location = _path_of(headers["Location"])
            offset += len(part)
        if offset != blob.size:
            raise RuntimeError(f"{blob.path} changed while uploading ({offset} != {blob.size})")
        status, headers, body = registry.request("PUT", _with_query(location, digest=digest),
                                                 headers=octet, data=b"", creds=creds,
                                                 timeout=timeout)
    if status != 201:
        raise RegistryRejected(f"blob {digest} ({blob.media_type})", status, body, headers)
    status, headers, body = registry.request("HEAD", f"/v2/{repo}/blobs/{digest}", creds=creds)
    if status != 200 or int(headers.get("Content-Length", -1)) != blob.size:
        raise RegistryRejected(f"blob {digest} (HEAD after upload)", status, body, headers)
    return digest


ALL_MANIFEST_TYPES = ", ".join([MT_OCI_MANIFEST, MT_DOCKER_MANIFEST,
                                "application/vnd.oci.image.index.v1+json",
                                "application/vnd.docker.distribution.manifest.list.v2+json"])


def get_manifest(registry, repo: str, ref: str, accept: str = ALL_MANIFEST_TYPES,
                 creds: Optional[str] = None) -> Tuple[int, dict, bytes]:
    return registry.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": accept},
                            creds=creds or getattr(registry, "creds", None))


def push_manifest(registry, repo: str, tag: str, manifest_bytes: bytes, media_type: str,
                  creds: Optional[str] = None) -> str:
    """PUT a manifest under a tag, then GET it back (by tag and by digest) and check that the
    registry serves the same bytes with the same type.  Returns its digest."""
    creds = creds or getattr(registry, "creds", None)
    digest = sha256_digest(manifest_bytes)
    status, headers, body = registry.request("PUT", f"/v2/{repo}/manifests/{tag}",
                                             headers={"Content-Type": media_type},
                                             data=manifest_bytes, creds=creds)
    if status != 201:
        raise RegistryRejected(f"manifest {repo}:{tag} ({media_type})", status, body, headers)
    if headers.get("Docker-Content-Digest", digest) != digest:
        raise RegistryRejected(f"manifest {repo}:{tag}: stored as "
                               f"{headers.get('Docker-Content-Digest')}, pushed {digest}",
                               status, body, headers)
    for ref in (tag, digest):
        status, headers, body = get_manifest(registry, repo, ref, accept=media_type, creds=creds)
        ctype = headers.get("Content-Type", "")
        if status != 200 or body != manifest_bytes or ctype != media_type:
            raise RegistryRejected(f"manifest {repo}:{ref} read back (Content-Type {ctype!r}, "
                                   f"{'same' if body == manifest_bytes else 'other'} bytes)",
                                   status, body, headers)
    return digest


def push_artifact(registry, repo: str, tag: str, layers: Sequence[Blob], *,
                  config_media_type: str = MT_EMPTY, config: Union[bytes, dict] = EMPTY_CONFIG,
                  artifact_type: Optional[str] = None,
                  manifest_media_type: str = MT_OCI_MANIFEST,
                  annotations: Optional[dict] = None, creds: Optional[str] = None,
                  extra_fields: Optional[dict] = None) -> Pushed:
    """Push the layers and config, then a manifest (OCI by default, or Docker schema2 with
    ``manifest_media_type=MT_DOCKER_MANIFEST``) tagged ``tag``.  ``config`` may be a dict
    (serialised as canonical JSON).  ``extra_fields`` are merged into the manifest verbatim."""
    if isinstance(config, dict):
        config = canonical_json(config)
    config_blob = Blob(config_media_type, config)
    for blob in list(layers) + [config_blob]:
        push_blob(registry, repo, blob, creds=creds)
    manifest = {"schemaVersion": 2, "mediaType": manifest_media_type,
                "config": config_blob.descriptor(),
                "layers": [b.descriptor() for b in layers]}
    if artifact_type:
        manifest["artifactType"] = artifact_type
    if annotations:
        manifest["annotations"] = dict(annotations)
    manifest.update(extra_fields or {})
    manifest_bytes = canonical_json(manifest)
    digest = push_manifest(registry, repo, tag, manifest_bytes, manifest_media_type, creds=creds)
    return Pushed(registry.host, repo, tag, digest, manifest, manifest_bytes, manifest_media_type,
                  config_blob.digest, config, list(layers))


def push_image(registry, repo: str, tag: str, layers: Sequence[Blob],
               diff_ids: Optional[Sequence[str]] = None, docker: bool = False,
               creds: Optional[str] = None, **config_kw) -> Pushed:
    """A plain image (image config with rootfs.diff_ids) from blobs, e.g. a streamed 1 GiB
    tar.  ``diff_ids`` default to the layer digests (right for uncompressed layers)."""
    diff_ids = list(diff_ids) if diff_ids is not None else [b.digest for b in layers]
    cfg = make_config([SimpleNamespace(diff_id=d) for d in diff_ids], **config_kw)
    return push_artifact(registry, repo, tag, layers,
                         config_media_type=MT_DOCKER_CONFIG if docker else MT_OCI_CONFIG,
                         config=canonical_json(cfg),
                         manifest_media_type=MT_DOCKER_MANIFEST if docker else MT_OCI_MANIFEST,
                         creds=creds)


# -- layer contents ------------------------------------------------------------------------

def tar_bytes(entries: Sequence, compression: str = "none") -> bytes:
    """A tar of oci_layout entries (File, Dir, Symlink, ...), compressed as asked."""
    return compress(build_tar(entries), compression)


def oci_layer_type(compression: str) -> str:
    return _OCI_LAYER_BY_COMPRESSION[compression]


def model_metadata(name: str, size: int, mode: int = 0o644, uid: int = 0, gid: int = 0,
                   mtime: str = "2025-03-15T14:30:00Z", typeflag: int = 0) -> str:
    """The org.cncf.model.file.metadata+json annotation value (mode as a decimal number)."""
    return json.dumps({"name": name, "mode": mode, "uid": uid, "gid": gid, "size": size,
                       "mtime": mtime, "typeflag": typeflag}, separators=(",", ":"))


class Pattern:
    """``size`` bytes: a 1 MiB random block (from ``seed``) repeated, each copy starting
    with its 8-byte little-endian index.  Cheap to produce at disk speed, not compressible
    by gzip (32 KiB window), and any slice can be recomputed without keeping it."""

    BLOCK = 1 << 20

    def __init__(self, size: int, seed: int = 0):
        import random
        self.size = size
        self.seed = seed
        self._block = random.Random(seed).randbytes(self.BLOCK)
        self._sha = None

    def chunk(self, i: int) -> bytes:
        """The i-th MiB (shorter at the end)."""
        full = struct.pack("<Q", i) + self._block[8:]
        return full[:max(0, min(self.BLOCK, self.size - i * self.BLOCK))]

    def read_at(self, offset: int, n: int) -> bytes:
        end = min(self.size, offset + n)
        out = bytearray()
        while offset < end:
            i, within = divmod(offset, self.BLOCK)
            if within == 0 and end - offset >= self.BLOCK:
                piece = self.chunk(i)
            else:
                piece = self.chunk(i)[within:within + (end - offset)]
            out += piece
            offset += len(piece)
        return bytes(out)

    def chunks(self) -> Iterable[bytes]:
        for i in range((self.size + self.BLOCK - 1) // self.BLOCK):
            yield self.chunk(i)

    def bytes(self) -> bytes:
        """All of it in memory (only for modest sizes)."""
        return b"".join(self.chunks())

    def reader(self) -> io.RawIOBase:
        return _PatternReader(self)

    def sha256(self) -> str:
        if self._sha is None:
            h = hashlib.sha256()
            for c in self.chunks():
                h.update(c)
            self._sha = h.hexdigest()
        return self._sha

    def write(self, path) -> str:
        """Write to path; returns the digest ("sha256:...")."""
        h = hashlib.sha256()
        with open(path, "wb") as f:
            for c in self.chunks():
                h.update(c)
                f.write(c)
        self._sha = h.hexdigest()
        return "sha256:" + self._sha


class _PatternReader(io.RawIOBase):
    def __init__(self, pattern: Pattern):
        self.p, self.pos = pattern, 0

    def readable(self):
        return True

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.p.size - self.pos
        data = self.p.read_at(self.pos, n)
        self.pos += len(data)
        return data


@dataclass
class BigFile:
    """A tar entry whose content is a Pattern, streamed (for write_tar_file)."""
    name: str
    pattern: Pattern
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: float = 1700000000


class _HashingWriter(io.RawIOBase):
    def __init__(self, inner):
        self.inner, self.h, self.n = inner, hashlib.sha256(), 0

    def writable(self):
        return True

    def write(self, b):
        self.h.update(b)
        self.inner.write(b)
        self.n += len(b)
        return len(b)


def write_tar_file(path, entries: Sequence, compression: str = "none") -> Tuple[str, str]:
    """Stream a PAX tar of entries (oci_layout entries and BigFile) to path, compressed as
    asked, never holding a big file in memory.  Returns (blob digest, diff_id)."""
    with open(path, "wb") as out:
        blob_hw = _HashingWriter(out)
        if compression == "none":
            sink, closer = blob_hw, None
        elif compression == "gzip":
            sink = closer = gzip.GzipFile(fileobj=blob_hw, mode="wb", compresslevel=1, mtime=0)
        elif compression == "zstd":
            import zstandard
            sink = closer = zstandard.ZstdCompressor(level=1).stream_writer(blob_hw,
                                                                             closefd=False)
        else:
            raise ValueError(compression)
        tar_hw = _HashingWriter(sink)
        with tarfile.open(fileobj=tar_hw, mode="w|", format=tarfile.PAX_FORMAT,
                          bufsize=1 << 20, encoding="utf-8") as tf:
            tf.copybufsize = Pattern.BLOCK           # whole MiBs from BigFile readers
            for e in entries:
                if isinstance(e, BigFile):
                    ti = tarfile.TarInfo(e.name)
                    ti.size, ti.mode, ti.uid, ti.gid, ti.mtime = (e.pattern.size, e.mode, e.uid,
                                                                  e.gid, e.mtime)
                    tf.addfile(ti, e.pattern.reader())
                else:
                    ti, data = e.tarinfo()
                    tf.addfile(ti, io.BytesIO(data) if data is not None else None)
        if closer is not None:
            closer.close()
    return "sha256:" + blob_hw.h.hexdigest(), "sha256:" + tar_hw.h.hexdigest()


# -- expectations and store checks -----------------------------------------------------------

def raw_tree(files: Dict[str, object], base: Optional[dict] = None) -> dict:
    """The ``tree.walk(..., mtimes=False)`` nodes raw files should produce, merged into
    ``base`` (e.g. ``expected_tree(tar_layers, mtimes=False)``).  ``files`` maps a path to
    its bytes (mode 0644, uid 0, gid 0) or to ``(bytes, mode, uid, gid)``.  Parent
    directories missing from ``base`` are added as directories 0755 owned by 0:0."""
    from .tree import Node
    out = dict(base or {})
    for path, spec in files.items():
        if isinstance(spec, (bytes, bytearray)):
            data, mode, uid, gid = bytes(spec), 0o644, 0, 0
        else:
            data, mode, uid, gid = spec
        parts = path.split("/")
        for i in range(1, len(parts)):
            out.setdefault("/".join(parts[:i]), Node("dir", 0o755, 0, 0))
        out[path] = Node("file", mode, uid, gid, len(data), hashlib.sha256(data).hexdigest())
    return out


def store_hits(root, digests: Iterable[str],
               dirs: Sequence[str] = ("blobs", "layers")) -> List[str]:
    """Files under ROOT/<dirs> that hold one of these digests: named after its hex
    (blobs/sha256/<hex>, layers/<hex>.tar, ...) or with that sha256 as content."""
    want = {d.split(":", 1)[1] for d in digests}
    hits = []
    for sub in dirs:
        base = os.path.join(str(root), sub)
        for dirpath, _, filenames in os.walk(base):
            for n in filenames:
                full = os.path.join(dirpath, n)
                if os.path.islink(full) or not os.path.isfile(full):
                    continue
                if any(h in n for h in want):
                    hits.append(f"{os.path.relpath(full, str(root))} (named after the digest)")
                    continue
                h = hashlib.sha256()
                with open(full, "rb") as f:
                    for block in iter(lambda: f.read(CHUNK), b""):
                        h.update(block)
                if h.hexdigest() in want:
                    hits.append(f"{os.path.relpath(full, str(root))} (content sha256:"
                                f"{h.hexdigest()[:12]}...)")
    return hits
