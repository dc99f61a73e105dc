"""OCI artifacts: `pull`, `mount` and `unpack` present ONE directory tree for them too.

The artifacts are pushed straight over the distribution API (support.artifacts), byte for
byte as ORAS, modctl (ModelPack), KitOps, Docker Model Runner and Ollama lay them out.
The layer -> tree rules these tests pin down:

- tar layers (media type ending in `.tar`, `.tar+gzip`, `.tar+zstd`) are unpacked at the
  root, like image layers, unless ORAS named them;
- a layer with `org.opencontainers.image.title` is a raw file at that path, whatever its
  media type (ORAS pushes files as `application/vnd.oci.image.layer.v1.tar`), except with
  `io.deis.oras.content.unpack: "true"` (an ORAS directory: a tar unpacked at the root);
- ModelPack `*.raw` layers are raw files at `org.cncf.model.filepath` (else the title), with
  mode/uid/gid/mtime from `org.cncf.model.file.metadata+json`;
- Docker model and Ollama layers get fixed names by media type (`model.gguf`, `LICENSE`,
  `LICENSE-2`, `params.json`, ...), a title wins;
- an unnamed raw layer of an unknown type is a file named `sha256:<hex>`;
- raw files are 0644 root:root in directories 0755;
- a path that climbs out (`../x`), an absolute one, or two layers on one path: refused, with
  the title and the layer digest in the error, and nothing cached.

Every mount is undone in teardown (the `mounter` fixture), pass or fail.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from support.artifacts import (EMPTY_CONFIG, MODEL_FILE_METADATA, MODEL_FILEPATH,
                               MODEL_UNTESTED, MT_DOCKER_AI_CONFIG, MT_DOCKER_AI_GGUF,
                               MT_DOCKER_AI_LICENSE, MT_DOCKER_AI_MMPROJ,
                               MT_DOCKER_AI_SAFETENSORS, MT_DOCKER_AI_TEMPLATE, MT_EMPTY,
                               MT_KIT_CONFIG, MT_MODEL_CODE_RAW, MT_MODEL_CONFIG,
                               MT_MODEL_DATASET_RAW, MT_MODEL_DOC_RAW, MT_MODEL_DOC_TAR_GZIP,
                               MT_MODEL_MANIFEST, MT_MODEL_WEIGHT_CONFIG_RAW,
                               MT_MODEL_WEIGHT_CONFIG_TAR, MT_MODEL_WEIGHT_RAW, MT_OLLAMA,
                               ORAS_CONTENT_DIGEST, ORAS_UNPACK, TITLE, BigFile, Blob, Pattern,
                               kit_layer, model_metadata, push_artifact, push_image, raw_tree,
                               store_hits, tar_bytes, write_tar_file)
from support.cli import assert_error
from support.images import T0, pseudo_random
from support.mounts import (drop_cache, is_mounted, mount_entries, pids_mentioning, sha256_file,
                            wait_until)
from support.oci_layout import (MT_DOCKER_CONFIG, MT_DOCKER_MANIFEST, MT_OCI_LAYER,
                                MT_OCI_LAYER_GZIP, Dir, File, Hardlink, Layer, Symlink,
                                build_tar, sha256_digest)
from support.tree import assert_trees_equal, expected_tree, walk

GiB = 1 << 30


# -- helpers ---------------------------------------------------------------------------------

def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def epoch(rfc3339: str) -> int:
    return int(_dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp())


def check_tree(path, want: dict, label: str) -> dict:
    """walk(path) (no mtimes) equals the expected nodes exactly: paths, types, modes,
    owners, sizes, sha256 of contents, symlink targets."""
    got = walk(str(path), mtimes=False)
    assert_trees_equal(want, got, "expected", label)
    return got


def assert_pulled(imgvol, pushed) -> None:
    assert imgvol.pull(pushed.reference) == pushed.manifest_digest
    im = imgvol.image(pushed.reference)
    assert im is not None and im["digest"] == pushed.manifest_digest, imgvol.images()


def mount_and_unpack(imgvol, mounter, pushed, want: dict, tmp_path, pull_first: bool = True):
    """pull (or not: then mount pulls), mount, unpack --pull never; both trees == want."""
    if pull_first:
        assert_pulled(imgvol, pushed)
        mp = mounter.mount_ok(pushed.reference, None, "--pull", "never")
    else:
        mp = mounter.mount_ok(pushed.reference)
        im = imgvol.image(pushed.reference)
        assert im is not None and im["digest"] == pushed.manifest_digest, imgvol.images()
    check_tree(mp, want, "mount")
    listed = mounter.listed(mp)
    assert listed and listed["digest"] == pushed.manifest_digest, mounter.mounts()
    out = tmp_path / f"unpacked-{pushed.repo.replace('/', '-')}-{pushed.tag}"
    imgvol.unpack(pushed.reference, out, "--pull", "never")
    check_tree(out, want, "imgvol unpack")
    return mp, out


# -- ORAS ------------------------------------------------------------------------------------

ORAS_FLAVOURS = {
    # oras 1.x: artifactType on the manifest, the empty config
    "oras-1": dict(artifact_type="application/vnd.example.oras-files.v1", config=EMPTY_CONFIG,
                   config_media_type=MT_EMPTY),
    # oras 0.x: no artifactType, the "unknown" config type
    "oras-0": dict(config=EMPTY_CONFIG, config_media_type="application/vnd.unknown.config.v1+json"),
}


@pytest.mark.parametrize("flavour", sorted(ORAS_FLAVOURS))
def test_oras_files_are_raw_files(imgvol, registry, mounter, tmp_path, flavour):
    """Titles are paths; ORAS's default layer type `...layer.v1.tar` does not make a file a
    tar, not even when its bytes are a valid tar archive."""
    inner_tar = build_tar([File("inner.txt", "must not appear at the root\n", mtime=T0)])
    files = {
        "weights/model.bin": pseudo_random(300 * 1024 + 3, 1),
        "archive.tar": inner_tar,                            # a real tar, still one file
        "README.md": b"# an ORAS artifact\n",
        "sub/deeper/name.bin": pseudo_random(4097, 2),
        "empty.txt": b"",
    }
    types = {"README.md": "text/markdown", "sub/deeper/name.bin": "application/vnd.example.thing"}
    layers = [Blob(types.get(p, MT_OCI_LAYER), data, {TITLE: p}) for p, data in files.items()]
    pushed = push_artifact(registry, "e2e/oras", flavour, layers, **ORAS_FLAVOURS[flavour])

    mp, out = mount_and_unpack(imgvol, mounter, pushed, raw_tree(files), tmp_path,
                               pull_first=False)
    assert Path(mp, "archive.tar").read_bytes() == inner_tar
    assert not Path(mp, "inner.txt").exists() and not Path(out, "inner.txt").exists()
    for root in (mp, out):
        st = os.stat(os.path.join(root, "weights"))
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755, oct(st.st_mode)


def test_oras_directory_is_unpacked(imgvol, registry, mounter, tmp_path):
    """`oras push dir/`: title + io.deis.oras.content.unpack=true, a tar+gzip whose entries
    are dir/...: unpacked at the root with the tar's metadata, next to a plain ORAS file."""
    entries = [
        Dir("dataset", mode=0o750, uid=1000, gid=1000, mtime=T0),
        File("dataset/train.csv", "a,b\n1,2\n", mode=0o644, uid=1000, gid=1000, mtime=T0),
        Dir("dataset/images", mode=0o755, uid=1000, gid=1000, mtime=T0),
        File("dataset/images/0001.png", pseudo_random(20_000, 3), mode=0o600, uid=1000,
             gid=1000, mtime=T0),
        Symlink("dataset/latest.png", "images/0001.png", mtime=T0),
    ]
    tar = build_tar(entries)
    notes = b"plain file next to the directory\n"
    layers = [
        Blob(MT_OCI_LAYER_GZIP, tar_bytes(entries, "gzip"),
             {TITLE: "dataset", ORAS_UNPACK: "true", ORAS_CONTENT_DIGEST: sha256_digest(tar)}),
        Blob(MT_OCI_LAYER, notes, {TITLE: "notes.txt"}),
    ]
    pushed = push_artifact(registry, "e2e/oras-dir", "v1", layers,
                           artifact_type="application/vnd.example.oras-dir.v1")
    want = raw_tree({"notes.txt": notes}, base=expected_tree([entries], mtimes=False))
    mp, _ = mount_and_unpack(imgvol, mounter, pushed, want, tmp_path)
    assert not Path(mp, "dataset", "dataset").exists()
    assert Path(mp, "dataset/latest.png").read_bytes() == pseudo_random(20_000, 3)


# -- ModelPack -------------------------------------------------------------------------------

MTIME_A = "2025-03-15T14:30:00Z"
MTIME_B = "2024-12-01T08:00:00Z"


def test_modelpack(imgvol, registry, mounter, tmp_path):
    """Raw layers at org.cncf.model.filepath (else the title) with mode/uid/gid/mtime from
    the file metadata annotation; tar layers unpacked at the root."""
    weights = pseudo_random(512 * 1024 + 11, 10)
    shard = pseudo_random(100_000, 11)
    cfg = b'{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64}\n'
    readme = b"# tiny model\n"
    code = b"#!/usr/bin/env python3\nprint('infer')\n"
    data = b'{"q": "1+1", "a": "2"}\n'

    def meta_layer(mt, path, content, mode, uid, gid, mtime, title=None):
        ann = {MODEL_FILEPATH: path, MODEL_UNTESTED: "false",
               MODEL_FILE_METADATA: model_metadata(os.path.basename(path), len(content), mode,
                                                   uid, gid, mtime)}
        if title:
            ann[TITLE] = title
        return Blob(mt, content, ann)

    tok_entries = [Dir("tokenizer", mode=0o750, uid=1000, gid=1000, mtime=T0),
                   File("tokenizer/tokenizer.json", '{"vocab": {}}\n', uid=1000, gid=1000,
                        mtime=T0),
                   File("tokenizer/merges.txt", "a b\n", mode=0o600, uid=1000, gid=1000,
                        mtime=T0)]
    doc_entries = [Dir("licenses", mtime=T0),
                   File("licenses/LICENSE", "Apache-2.0\n", mtime=T0),
                   Symlink("licenses/COPYING", "LICENSE", mtime=T0)]
    layers = [
        meta_layer(MT_MODEL_WEIGHT_RAW, "model.safetensors", weights, 420, 1000, 1000, MTIME_A,
                   title="model.safetensors"),
        meta_layer(MT_MODEL_WEIGHT_RAW, "weights/shard-00001.safetensors", shard, 0o644,
                   1000, 1000, MTIME_A, title="shard-00001.safetensors"),   # filepath wins
        meta_layer(MT_MODEL_WEIGHT_CONFIG_RAW, "config.json", cfg, 384, 0, 0, MTIME_B),
        Blob(MT_MODEL_DOC_RAW, readme, {TITLE: "docs/README.md"}),          # title fallback
        meta_layer(MT_MODEL_CODE_RAW, "src/infer.py", code, 0o755, 0, 0, MTIME_B),
        meta_layer(MT_MODEL_DATASET_RAW, "data/eval.jsonl", data, 0o640, 1000, 100, MTIME_A),
        Blob(MT_MODEL_WEIGHT_CONFIG_TAR, tar_bytes(tok_entries, "none"),
             {MODEL_FILEPATH: "tokenizer"}),
        Blob(MT_MODEL_DOC_TAR_GZIP, tar_bytes(doc_entries, "gzip"), {MODEL_FILEPATH: "licenses"}),
    ]
    diff_ids = [b.digest for b in layers[:-1]] + [sha256_digest(build_tar(doc_entries))]
    config = {"descriptor": {"createdAt": MTIME_A, "family": "qwen2", "name": "tiny"},
              "config": {"architecture": "transformer", "format": "safetensors",
                         "paramSize": "0.5b", "precision": "bfloat16"},
              "modelfs": {"type": "layers", "diffIds": diff_ids}}
    pushed = push_artifact(registry, "e2e/modelpack", "v1", layers,
                           config_media_type=MT_MODEL_CONFIG, config=config,
                           artifact_type=MT_MODEL_MANIFEST,
                           annotations={"org.cncf.model.name": "tiny"})

    want = raw_tree({
        "model.safetensors": (weights, 0o644, 1000, 1000),
        "weights/shard-00001.safetensors": (shard, 0o644, 1000, 1000),
        "config.json": (cfg, 0o600, 0, 0),
        "docs/README.md": readme,
        "src/infer.py": (code, 0o755, 0, 0),
        "data/eval.jsonl": (data, 0o640, 1000, 100),
    }, base=expected_tree([tok_entries, doc_entries], mtimes=False))
    mp, out = mount_and_unpack(imgvol, mounter, pushed, want, tmp_path)

    mtimes = {"model.safetensors": MTIME_A, "weights/shard-00001.safetensors": MTIME_A,
              "config.json": MTIME_B, "src/infer.py": MTIME_B, "data/eval.jsonl": MTIME_A}
    for root, label in ((mp, "mount"), (out, "unpack")):
        for p, when in mtimes.items():
            got = os.stat(os.path.join(root, p)).st_mtime_ns
            assert got == epoch(when) * 10 ** 9, \
                f"{label}: {p}: st_mtime {got / 1e9} != {when} ({epoch(when)})"
        assert not os.path.exists(os.path.join(root, "shard-00001.safetensors")), \
            f"{label}: the title was used although org.cncf.model.filepath is set"
    assert epoch(MTIME_A) == 1742049000


# -- KitOps ------------------------------------------------------------------------------------

def test_kitops_modelkit(imgvol, registry, mounter, tmp_path):
    """A ModelKit: every layer is a tar (plain, gzip, zstd) unpacked at the root.  Unpacked
    without a pull first (unpack pulls), then mounted from the cache."""
    model = pseudo_random(200 * 1024, 20)
    groups = {
        ("model", "gzip"): [File("model.gguf", model, mtime=T0)],
        ("modelpart", "none"): [Dir("tokenizer", mtime=T0),
                                File("tokenizer/tokenizer.json", '{"v": 1}\n', mtime=T0)],
        ("dataset", "zstd"): [Dir("data", mtime=T0),
                              File("data/train.csv", "x,y\n" * 1000, mtime=T0),
                              File("data/test.csv", "x,y\n1,2\n", mode=0o600, uid=1000,
                                   gid=1000, mtime=T0)],
        ("code", "none"): [Dir("src", mode=0o750, mtime=T0),
                           File("src/train.py", "print('train')\n", mode=0o755, mtime=T0),
                           Symlink("src/latest.py", "train.py", mtime=T0),
                           Hardlink("src/train-copy.py", "src/train.py", mode=0o755)],
        ("docs", "gzip"): [File("README.md", "# kit\n", mtime=T0)],
    }
    layers = [Blob(kit_layer(kind, comp), tar_bytes(entries, comp))
              for (kind, comp), entries in groups.items()]
    kitfile = {"manifestVersion": "1.0.0",
               "package": {"name": "tiny", "version": "1.0.0", "authors": ["e2e"]},
               "model": {"name": "tiny", "path": "model.gguf", "parts": [{"path": "tokenizer"}]},
               "datasets": [{"name": "train", "path": "data"}],
               "code": [{"path": "src"}], "docs": [{"path": "README.md"}]}
    pushed = push_artifact(registry, "e2e/kit", "v1", layers, config_media_type=MT_KIT_CONFIG,
                           config=kitfile,
                           artifact_type="application/vnd.kitops.modelkit.manifest.v1+json")
    want = expected_tree(list(groups.values()), mtimes=False)

    out = tmp_path / "kit-unpacked"
    imgvol.unpack(pushed.reference, out)
    check_tree(out, want, "imgvol unpack")
    assert imgvol.image(pushed.reference)["digest"] == pushed.manifest_digest
    mp = mounter.mount_ok(pushed.reference, None, "--pull", "never")
    check_tree(mp, want, "mount")
    a, b = (os.lstat(os.path.join(mp, p)) for p in ("src/train.py", "src/train-copy.py"))
    assert a.st_ino == b.st_ino and a.st_nlink == 2, "hardlinks inside a ModelKit layer"


# -- tar media types ----------------------------------------------------------------------------

TAR_TYPES = {
    "application/vnd.cncf.model.weight.config.v1.tar": (MT_MODEL_CONFIG, MT_MODEL_MANIFEST),
    "application/vnd.cncf.model.doc.v1.tar+gzip": (MT_MODEL_CONFIG, MT_MODEL_MANIFEST),
    "application/vnd.kitops.modelkit.model.v1.tar+gzip": (MT_KIT_CONFIG, None),
    "application/vnd.kitops.modelkit.dataset.v1.tar+zstd": (MT_KIT_CONFIG, None),
    "application/vnd.kitops.modelkit.code.v1.tar": (MT_KIT_CONFIG, None),
    "application/vnd.example.stuff.v1.tar+zstd": (MT_EMPTY, "application/vnd.example.stuff"),
    MT_OCI_LAYER_GZIP: (MT_EMPTY, "application/vnd.example.untitled-layer"),
}


def _compression_of(media_type: str) -> str:
    return {"+gzip": "gzip", "+zstd": "zstd"}.get(media_type[-5:], "none")


@pytest.mark.parametrize("media_type", sorted(TAR_TYPES))
def test_tar_media_types_unpacked_at_root(imgvol, registry, mounter, tmp_path, media_type):
    config_type, artifact_type = TAR_TYPES[media_type]
    entries = [Dir("t", mode=0o750, uid=7, gid=8, mtime=T0),
               File("t/file", pseudo_random(70_000, 30), mode=0o640, uid=7, gid=8, mtime=T0),
               File("t/empty", b"", mtime=T0),
               Symlink("t/link", "file", mtime=T0),
               Dir("t/sub", mtime=T0), File("t/sub/x", "x\n", mode=0o600, mtime=T0)]
    comp = _compression_of(media_type)
    config = {"manifestVersion": "1.0.0"} if config_type == MT_KIT_CONFIG else \
        ({"descriptor": {"name": "t"}, "config": {}, "modelfs": {"type": "layers",
                                                                 "diffIds": []}}
         if config_type == MT_MODEL_CONFIG else EMPTY_CONFIG)
    pushed = push_artifact(registry, "e2e/tartype", "v1",
                           [Blob(media_type, tar_bytes(entries, comp))],
                           config_media_type=config_type, config=config,
                           artifact_type=artifact_type)
    mount_and_unpack(imgvol, mounter, pushed, expected_tree([entries], mtimes=False), tmp_path)


# -- Docker model ------------------------------------------------------------------------------

def test_docker_model(imgvol, registry, mounter, tmp_path):
    """Names by media type, `-2` for a second unnamed layer of a kind, a title wins."""
    gguf1 = b"GGUF" + pseudo_random(150_000, 40)
    gguf2 = b"GGUF" + pseudo_random(70_000, 41)
    lic1, lic2 = b"MIT License\n", b"Apache License 2.0\n"
    mmproj = b"GGUF" + pseudo_random(30_000, 42)
    template = b"{% for m in messages %}{{ m.content }}{% endfor %}\n"
    shard = pseudo_random(50_000, 43)
    safet = pseudo_random(40_000, 44)
    layers = [
        Blob(MT_DOCKER_AI_GGUF, gguf1),
        Blob(MT_DOCKER_AI_GGUF, gguf2),
        Blob(MT_DOCKER_AI_LICENSE, lic1),
        Blob(MT_DOCKER_AI_LICENSE, lic2),
        Blob(MT_DOCKER_AI_MMPROJ, mmproj),
        Blob(MT_DOCKER_AI_TEMPLATE, template),
        Blob(MT_DOCKER_AI_SAFETENSORS, shard, {TITLE: "shards/model-00001-of-00002.safetensors"}),
        Blob(MT_DOCKER_AI_SAFETENSORS, safet),
    ]
    config = {"config": {"format": "gguf", "quantization": "Q4_K_M", "parameters": "8.03 B",
                         "architecture": "llama", "size": "300 KiB"},
              "descriptor": {"created": MTIME_A},
              "rootfs": {"type": "rootfs", "diff_ids": [b.digest for b in layers]}}
    pushed = push_artifact(registry, "ai/smollm2", "latest", layers,
                           config_media_type=MT_DOCKER_AI_CONFIG, config=config)
    want = raw_tree({"model.gguf": gguf1, "model-2.gguf": gguf2, "LICENSE": lic1,
                     "LICENSE-2": lic2, "model.mmproj": mmproj, "template.jinja": template,
                     "shards/model-00001-of-00002.safetensors": shard,
                     "model.safetensors": safet})
    mount_and_unpack(imgvol, mounter, pushed, want, tmp_path)


# -- Ollama ------------------------------------------------------------------------------------

def test_ollama(imgvol, registry, mounter, tmp_path):
    """Docker schema2 manifest, Docker image config type with Ollama's fields (and rootfs
    diff_ids = the layer digests, as `ollama push` writes them); one media type carries a
    parameter."""
    contents = {
        "model": (b"GGUF" + pseudo_random(200_000, 50), "model.gguf"),
        "template; name=x": (b"{{ .System }}\n{{ .Prompt }}\n", "template"),
        "system": (b"You are a test.\n", "system"),
        "params": (b'{"stop": ["<|eot|>"], "temperature": 0.2}\n', "params.json"),
        "license": (b"LLAMA 3 COMMUNITY LICENSE\n", "LICENSE"),
        "adapter": (b"GGUF" + pseudo_random(20_000, 51), "adapter.gguf"),
        "projector": (b"GGUF" + pseudo_random(30_000, 52), "projector.gguf"),
        "messages": (b'[{"role": "user", "content": "hi"}]\n', "messages.json"),
    }
    layers = [Blob(MT_OLLAMA + kind, data) for kind, (data, _) in contents.items()]
    config = {"model_format": "gguf", "model_family": "llama", "model_families": ["llama"],
              "model_type": "8.0B", "file_type": "Q4_0", "architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [b.digest for b in layers]}}
    pushed = push_artifact(registry, "library/llama3", "8b", layers,
                           config_media_type=MT_DOCKER_CONFIG, config=config,
                           manifest_media_type=MT_DOCKER_MANIFEST)
    want = raw_tree({name: data for data, name in contents.values()})
    mount_and_unpack(imgvol, mounter, pushed, want, tmp_path)


# -- unknown media types -------------------------------------------------------------------------

def test_unknown_raw_layer_named_by_digest(imgvol, registry, mounter, tmp_path):
    a = Blob("application/vnd.example.blob", pseudo_random(5000, 60))
    b = Blob("application/octet-stream", b"second unnamed blob\n")
    named = Blob("application/vnd.example.blob", b"has a name\n", {TITLE: "named.txt"})
    pushed = push_artifact(registry, "e2e/unknown", "v1", [a, b, named],
                           artifact_type="application/vnd.example.unknown")
    want = raw_tree({a.digest: a.data, b.digest: b.data, "named.txt": named.data})
    mp, _ = mount_and_unpack(imgvol, mounter, pushed, want, tmp_path)
    assert sorted(os.listdir(mp)) == sorted([a.digest, b.digest, "named.txt"])
    assert a.digest.startswith("sha256:") and len(a.digest) == 71


# -- refused -------------------------------------------------------------------------------------

def _refused_layers(case):
    """(layers, the title/path the error must name)."""
    x, y = pseudo_random(3000, 70), pseudo_random(3000, 71)
    if case == "dotdot":
        return [Blob(MT_OCI_LAYER, x, {TITLE: "../escape.bin"})], "../escape.bin"
    if case == "nested-dotdot":
        return [Blob(MT_OCI_LAYER, b"ok\n", {TITLE: "fine.txt"}),
                Blob(MT_OCI_LAYER, x, {TITLE: "a/../../escape.bin"})], "a/../../escape.bin"
    if case == "absolute":
        return [Blob(MT_OCI_LAYER, x, {TITLE: "/etc/passwd"})], "/etc/passwd"
    if case == "modelpack-filepath":
        return [Blob(MT_MODEL_WEIGHT_RAW, x, {MODEL_FILEPATH: "../escape.bin"})], "../escape.bin"
    if case == "duplicate":
        return [Blob(MT_OCI_LAYER, x, {TITLE: "dup/same.bin"}),
                Blob(MT_OCI_LAYER, y, {TITLE: "dup/same.bin"})], "dup/same.bin"
    raise ValueError(case)


def _etc_passwd_state():
    st = os.stat("/etc/passwd")
    return st.st_mtime_ns, st.st_size, sha256_file("/etc/passwd")


@pytest.mark.parametrize("case", ["dotdot", "nested-dotdot", "absolute", "modelpack-filepath",
                                  "duplicate"])
def test_refused(imgvol, registry, mounter, root, tmp_path, case):
    passwd = _etc_passwd_state()
    layers, title = _refused_layers(case)
    pushed = push_artifact(registry, f"e2e/refused-{case}", "v1", layers,
                           artifact_type="application/vnd.example.hostile")
    bad = [b.digest for b in layers if title in json.dumps(b.annotations)]

    res = imgvol.run("pull", pushed.reference, "--tls-verify=false")
    assert_error(res, title)
    assert any(d in res.stderr for d in bad), \
        f"the error should name the layer digest ({' or '.join(bad)})\n{res.describe()}"

    def nothing_cached(after):
        assert imgvol.image(pushed.reference) is None, f"{after}: {imgvol.images()}"
        assert imgvol.images() == [], f"{after}: {imgvol.images()}"
        hits = store_hits(root, [b.digest for b in layers])
        assert not hits, f"{after}: layer blobs of a refused artifact are in the store:\n" + \
            "\n".join(hits)

    nothing_cached("after pull")

    mp = mounter.mountpoint()
    res = mounter.mount(pushed.reference, mp)
    assert_error(res, title)
    assert not is_mounted(mp), mount_entries(mp)
    assert mounter.mounts() == []
    wait_until(lambda: pids_mentioning(str(mp)) == [], 10,
               what=f"no process serving {mp} after a refused mount")
    assert os.listdir(mp) == []
    nothing_cached("after mount")

    dest = tmp_path / "out" / "inner"
    dest.parent.mkdir()
    res = imgvol.run("unpack", pushed.reference, dest, "--tls-verify=false")
    assert_error(res, title)
    assert not (tmp_path / "out" / "escape.bin").exists()
    assert not (tmp_path / "escape.bin").exists()
    assert os.listdir(tmp_path / "out") in ([], ["inner"])
    if (tmp_path / "out" / "inner").exists():
        assert not any(f for _, _, f in os.walk(tmp_path / "out" / "inner")), \
            "a refused unpack left files behind"
    nothing_cached("after unpack")
    assert _etc_passwd_state() == passwd, "/etc/passwd changed!"


# -- images still work -------------------------------------------------------------------------

def test_image_regression(imgvol, mounter, registry, publish, tmp_path):
    """A plain OCI image (gzip, uncompressed and zstd layers, whiteout) is unchanged: mtimes
    too, and a title-less image layer never becomes a raw file."""
    from support.oci_layout import Whiteout
    l1 = [Dir("etc", mtime=T0), File("etc/os-release", "ID=e2e\n", mtime=T0 + 1),
          Dir("usr", mtime=T0), File("usr/tool", "#!/bin/sh\n", mode=0o4755, mtime=T0 + 2),
          File("gone", "x", mtime=T0)]
    l2 = [Whiteout("gone"), File("data.bin", pseudo_random(100_000, 80), uid=5, gid=6,
                                 mtime=T0 + 3)]
    l3 = [Symlink("bin", "usr", mtime=T0 + 4)]
    layers = [Layer(l1, "gzip"), Layer(l2, "none"), Layer(l3, "zstd")]
    info = publish.image(registry.host, "e2e/plain", "v1", layers)
    assert imgvol.pull(info.ref) == info.manifest_digest
    want = expected_tree([l1, l2, l3])
    mp = mounter.mount_ok(info.ref, None, "--pull", "never")
    assert_trees_equal(want, walk(mp), "model", "mount")
    out = tmp_path / "plain-out"
    imgvol.unpack(info.ref, out, "--pull", "never")
    assert_trees_equal(want, walk(str(out)), "model", "imgvol unpack")


# -- zero copy ---------------------------------------------------------------------------------

def _du(path, *flags) -> int:
    r = subprocess.run(["du", "-s", *flags, str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[0])


def assert_about_one_copy(root, what: str) -> None:
    """Allocated bytes are what a copy costs. The apparent size may count a big file twice:
    a split layer's tar keeps a hole (no blocks) where the file it stores apart was."""
    apparent, allocated = _du(root, "-b"), _du(root, "-B1")
    limit = int(1.05 * GiB)
    detail = f"du -sb {apparent / GiB:.3f} GiB, du -sB1 {allocated / GiB:.3f} GiB"
    assert allocated <= limit, f"{what}: the store allocates more than one copy ({detail})"
    assert allocated >= GiB, f"{what}: the store is smaller than the data? ({detail})"


def pull_and_read_once(imgvol, mounter, root, pushed, relpath, pat):
    """Pulls `pushed`, mounts it and reads the 1 GiB file at `relpath` cold, checking that
    the store holds about one copy of it before and after; returns the mountpoint."""
    assert imgvol.pull(pushed.reference, timeout=900) == pushed.manifest_digest
    assert_about_one_copy(root, "after pull")
    mp = mounter.mount_ok(pushed.reference, None, "--pull", "never")
    path = os.path.join(mp, relpath)
    assert os.stat(path).st_size == GiB
    drop_cache(path)
    assert sha256_file(path) == pat.sha256()
    assert_about_one_copy(root, "after reading it through the mount")
    return mp


@pytest.mark.slow
def test_zero_copy_raw_layer(imgvol, registry, mounter, root, tmp_path):
    """A 1 GiB raw layer costs 1 GiB in the store, not 2."""
    pat = Pattern(GiB, seed=90)
    src = tmp_path / "weights.bin"
    digest = pat.write(src)
    try:
        pushed = push_artifact(registry, "e2e/zc-raw", "v1", [
            Blob.from_file(MT_MODEL_WEIGHT_RAW, src, {MODEL_FILEPATH: "model.safetensors"},
                           digest=digest)],
            config_media_type=MT_MODEL_CONFIG,
            config={"descriptor": {"name": "big"}, "config": {"format": "safetensors"},
                    "modelfs": {"type": "layers", "diffIds": [digest]}},
            artifact_type=MT_MODEL_MANIFEST)
    finally:
        src.unlink()
    pull_and_read_once(imgvol, mounter, root, pushed, "model.safetensors", pat)


@pytest.mark.slow
def test_zero_copy_uncompressed_tar_layer(imgvol, registry, mounter, root, tmp_path):
    """An image with one uncompressed 1 GiB-file layer costs 1 GiB in the store, not 2."""
    pat = Pattern(GiB, seed=91)
    src = tmp_path / "layer.tar"
    blob_digest, diff_id = write_tar_file(src, [Dir("data", mtime=T0),
                                                BigFile("data/big.bin", pat, mtime=T0),
                                                File("data/small.txt", "small\n", mtime=T0)])
    assert blob_digest == diff_id
    try:
        pushed = push_image(registry, "e2e/zc-tar", "v1",
                            [Blob.from_file(MT_OCI_LAYER, src, digest=blob_digest)])
    finally:
        src.unlink()
    mp = pull_and_read_once(imgvol, mounter, root, pushed, "data/big.bin", pat)
    assert Path(mp, "data/small.txt").read_text() == "small\n"
