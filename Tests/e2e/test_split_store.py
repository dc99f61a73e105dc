"""Big files stored apart: a layer's regular files of 1 MiB or more are written to files of
their own (`layers/<diff_id>.files/<offset>`) while the layer is decompressed, and the tar
keeps a hole where they were; the mount hands those files to the kernel (FUSE passthrough)
so reads run at native speed.  Uncompressed layers of 64 MiB or more are split too; smaller
ones stay the registry blob.

These tests check the layout in the store, that the mount, `unpack` and the server's own
read path (passthrough off) all give the image's bytes, and that `rm` takes the files away.
"""

from __future__ import annotations

import glob
import hashlib
import os
import platform
import random

import pytest

from support.artifacts import Pattern
from support.images import T0, pseudo_random
from support.mounts import wait_until
from support.oci_layout import Dir, File, Hardlink, Layer, Symlink
from support.tree import assert_trees_equal, expected_tree, walk

MiB = 1 << 20


def _kernel_has_passthrough() -> bool:
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    return (major, minor) >= (6, 9)


@pytest.fixture
def split_image(registry, publish):
    l1 = [Dir("d", mtime=T0),
          File("d/small", pseudo_random(1000, 1), mtime=T0),
          File("d/under", pseudo_random(MiB - 1, 2), mtime=T0),
          File("d/exact", pseudo_random(MiB, 3), mode=0o600, uid=1000, gid=1000, mtime=T0),
          File("d/big", pseudo_random(3 * MiB + 7, 4), mtime=T0),
          Hardlink("d/hard", "d/big"),
          Symlink("d/link", "big", mtime=T0),
          File("d/replaced", pseudo_random(2 * MiB, 5), mtime=T0)]
    l2 = [Dir("top", mtime=T0),
          File("top/huge", Pattern(64 * MiB + 3, 6).bytes(), mtime=T0),
          File("d/replaced", "small now\n", mtime=T0 + 1)]
    info = publish.image(registry.host, "e2e/split", "v1", [Layer(l1, "gzip"), Layer(l2, "none")])
    files = {e.name: e.content for e in l1 + l2 if e.kind == "file"}
    files["d/hard"] = files["d/big"]
    files["d/replaced"] = b"small now\n"
    info.files = {k: v if isinstance(v, bytes) else v.encode() for k, v in files.items()}
    info.want = expected_tree([l1, l2])
    return info


def _apart(root, diff_id: str):
    hexd = diff_id.split(":", 1)[1]
    d = os.path.join(root, "layers", hexd + ".files")
    return {int(n): os.path.getsize(os.path.join(d, n)) for n in os.listdir(d)} if os.path.isdir(d) else {}


def test_big_files_are_stored_apart_and_served(imgvol, root, split_image, mounter, tmp_path):
    imgvol.pull(split_image.ref)
    gz, raw = split_image.diff_ids
    # Layer 1 (gzip): d/exact, d/big and the first d/replaced; d/under (1 MiB - 1) stays.
    assert sorted(_apart(root, gz).values()) == [MiB, 2 * MiB, 3 * MiB + 7]
    # Layer 2 (uncompressed, over 64 MiB): top/huge, and the tar keeps only a hole for it.
    assert list(_apart(root, raw).values()) == [64 * MiB + 3]
    tar = os.path.join(root, "layers", raw.split(":", 1)[1] + ".tar")
    assert os.path.getsize(tar) > 64 * MiB
    assert os.stat(tar).st_blocks * 512 < MiB, "the tar still holds the big file's bytes"

    mp = mounter.mount_ok(split_image.ref, None, "--pull", "never", "--log-level", "notice")
    ours = walk(mp)
    assert_trees_equal(split_image.want, ours, "model", "mount")
    assert os.stat(os.path.join(mp, "d/hard")).st_ino == os.stat(os.path.join(mp, "d/big")).st_ino
    rnd = random.Random(7)
    for name in ("d/big", "d/exact", "top/huge"):
        data = split_image.files[name]
        with open(os.path.join(mp, name), "rb") as f:
            for _ in range(30):
                off = rnd.randrange(0, len(data))
                n = rnd.choice([1, 4096, 300_000, MiB])
                f.seek(off)
                assert f.read(n) == data[off:off + n], (name, off, n)
    if _kernel_has_passthrough():
        logs = glob.glob(os.path.join(root, "mounts", "*.log"))
        assert wait_until(lambda: any("FUSE passthrough on" in open(p).read() for p in logs), timeout=5), \
            "the server did not hand the big files to the kernel: " + " | ".join(open(p).read() for p in logs)

    out = tmp_path / "unpacked"
    imgvol.unpack(split_image.ref, out, "--pull", "never")
    assert_trees_equal(ours, walk(str(out)), "mount", "imgvol unpack")

    assert mounter.unmount(mp).rc == 0
    imgvol.ok("rm", split_image.ref)
    assert not glob.glob(os.path.join(root, "layers", "*.files")), os.listdir(os.path.join(root, "layers"))


def test_the_server_reads_files_stored_apart_without_passthrough(imgvol, split_image, mounter):
    imgvol.pull(split_image.ref)
    mp = mounter.mountpoint()
    res = imgvol.run("mount", "--tls-verify=false", "--pull", "never", split_image.ref, mp,
                     extra_env={"IMGVOL_FUSE_PASSTHROUGH": "0"})
    assert res.rc == 0, res.describe()
    for name, data in split_image.files.items():
        with open(os.path.join(mp, name), "rb") as f:
            got = f.read()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest(), name


def test_a_small_uncompressed_layer_stays_the_registry_blob(imgvol, root, registry, publish):
    info = publish.image(registry.host, "e2e/split-small", "v1",
                         [Layer([File("w.bin", pseudo_random(2 * MiB, 8), mtime=T0)], "none")])
    imgvol.pull(info.ref)
    assert _apart(root, info.diff_ids[0]) == {}
    tar = os.path.join(root, "layers", info.diff_ids[0].split(":", 1)[1] + ".tar")
    with open(tar, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == info.layer_digests[0].split(":", 1)[1]
