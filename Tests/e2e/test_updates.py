"""Digest-pinned updates: a tag moves to new content while the old content is mounted.

`imgvol pull REF` moves the reference to the new digest; a live mount keeps serving the
digest it was mounted with; a new mount serves the new one; `imgvol mounts` shows each
mount's digest; `prune` keeps the old content while it is mounted and frees it after the
unmount, and the new content stays.  For an image and for an artifact (raw layers).

Every mount is undone in teardown (the `mounter` fixture), pass or fail.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from support.artifacts import (MODEL_FILEPATH, MT_MODEL_CONFIG, MT_MODEL_MANIFEST,
                               MT_MODEL_WEIGHT_CONFIG_RAW, MT_MODEL_WEIGHT_RAW, Blob,
                               push_artifact, store_hits)
from support.images import T0, pseudo_random
from support.mounts import drop_cache, is_mounted, pid_alive, read_tree_digests
from support.oci_layout import Dir, File, Layer

REPO = "e2e/updates"
TAG = "latest"


def version(kind, n, registry, publish):
    """Push version n of the image or artifact under REPO:TAG.  Returns the reference, the
    manifest digest, {path: bytes} and the ids its layers may be stored under (digests and,
    for compressed layers, diff_ids)."""
    files = {"model/weights.bin": pseudo_random((2 << 20) + n, 100 + n),
             "model/version.txt": f"v{n}\n".encode()}
    if kind == "image":
        entries = [Dir("model", mtime=T0)] + [File(p, d, mtime=T0) for p, d in files.items()]
        info = publish.image(registry.host, REPO, TAG, [Layer(entries, "gzip")])
        return SimpleNamespace(ref=info.ref, digest=info.manifest_digest, files=files,
                               layer_ids=set(info.layer_digests) | set(info.diff_ids))
    layers = [Blob(MT_MODEL_WEIGHT_RAW if p.endswith(".bin") else MT_MODEL_WEIGHT_CONFIG_RAW,
                   d, {MODEL_FILEPATH: p}) for p, d in files.items()]
    pushed = push_artifact(registry, REPO, TAG, layers, config_media_type=MT_MODEL_CONFIG,
                           config={"descriptor": {"name": "upd", "version": f"v{n}"},
                                   "config": {"format": "raw"},
                                   "modelfs": {"type": "layers",
                                               "diffIds": [b.digest for b in layers]}},
                           artifact_type=MT_MODEL_MANIFEST)
    return SimpleNamespace(ref=pushed.reference, digest=pushed.manifest_digest, files=files,
                           layer_ids=set(pushed.layer_digests))


def assert_serves(mp, v, what):
    """Every file of version v, read through the mount with the page cache dropped."""
    for p in v.files:
        drop_cache(os.path.join(mp, p))
    want = {p: hashlib.sha256(d).hexdigest() for p, d in v.files.items()}
    got = read_tree_digests(mp)
    assert got == want, f"{what}: {mp} serves {sorted(got)} with other bytes than expected " \
        f"(version.txt: {Path(mp, 'model/version.txt').read_bytes()!r})"


@pytest.mark.parametrize("kind", ["image", "artifact"])
def test_digest_pinned_update(kind, imgvol, mounter, registry, publish, root, tmp_path):
    v1 = version(kind, 1, registry, publish)
    mnt1 = mounter.mount_ok(v1.ref)
    assert_serves(mnt1, v1, "MNT1 before the update")

    v2 = version(kind, 2, registry, publish)
    assert v2.ref == v1.ref and v2.digest != v1.digest
    assert not v1.layer_ids & v2.layer_ids

    assert imgvol.pull(v1.ref) == v2.digest
    im = imgvol.image(v1.ref)
    assert im is not None and im["digest"] == v2.digest, imgvol.images()
    assert_serves(mnt1, v1, "MNT1 after `pull` moved the reference")

    mnt2 = mounter.mount_ok(v1.ref)
    assert_serves(mnt2, v2, "MNT2, mounted after the update")
    mounts = {m["mountpoint"]: m for m in mounter.mounts()}
    assert set(mounts) == {mnt1, mnt2}, mounts
    for mp, v in ((mnt1, v1), (mnt2, v2)):
        m = mounts[mp]
        assert m["digest"] == v.digest, f"{mp}: mounts says {m['digest']}, mounted {v.digest}"
        assert m["reference"] == v1.ref, m
        assert isinstance(m["pid"], int) and pid_alive(m["pid"]), m
    assert mounts[mnt1]["pid"] != mounts[mnt2]["pid"]

    registry.stop()                       # from here on, everything must come from ROOT
    imgvol.prune_json()
    assert_serves(mnt1, v1, "MNT1 after prune (v1 is still mounted)")
    assert store_hits(root, v1.layer_ids), "prune removed v1's layer while MNT1 is mounted"

    res = mounter.unmount(mnt1)
    assert res.rc == 0, res.describe()
    assert not is_mounted(mnt1)
    freed = imgvol.prune_json()
    assert freed > 0, "prune freed nothing after the v1 mount went away"
    left = store_hits(root, v1.layer_ids)
    assert not left, "v1's layer is still in the store after unmount + prune:\n" + \
        "\n".join(left)
    assert store_hits(root, v2.layer_ids), "prune removed v2's layer"

    assert_serves(mnt2, v2, "MNT2 after prune")
    assert imgvol.image(v1.ref)["digest"] == v2.digest
    out = tmp_path / "v2-out"
    imgvol.unpack(v1.ref, out, "--pull", "never")
    assert read_tree_digests(out) == {p: hashlib.sha256(d).hexdigest()
                                      for p, d in v2.files.items()}
    assert [m["mountpoint"] for m in mounter.mounts()] == [mnt2]
