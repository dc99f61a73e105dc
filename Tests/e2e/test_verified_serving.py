"""Wrong bytes are never served: every chunk a mount or `unpack` reads from the store is
checked against the sums recorded when it was pulled; passthrough only once a file checked good."""

import errno
import json
import os

import pytest

from support.cli import assert_error
from support.damage import flip
from support.images import T0
from support.oci_layout import File, Layer

BIG = 3 << 20


def image(registry, publish):
    big = os.urandom(BIG)
    small = "s\n" * 2000
    info = publish.image(registry.host, "e2e/verified", "v1",
                         [Layer([File("big.bin", big, mtime=T0)], "gzip"),
                          Layer([File("small.txt", small, mtime=T0), File("other.txt", "o\n", mtime=T0)], "gzip")])
    return info, big, small.encode()



def apart_file(root):
    files = [p for p in (root / "layers").rglob("*") if p.is_file() and p.parent.name.endswith(".files")]
    assert len(files) == 1, files
    return files[0]


def server_log(root) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((root / "mounts").glob("*.log")))


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def assert_serves(mounter, info, name, want):
    """A fresh mount of the cached image serves `name` whole and right."""
    mp = mounter.mount_ok(info.ref, None, "--pull", "never")
    assert read(os.path.join(mp, name)) == want
    assert mounter.unmount(mp).rc == 0


def expect_eio(path):
    with pytest.raises(OSError) as raised:
        read(path)
    assert raised.value.errno == errno.EIO, raised.value


def test_flipped_bit_in_a_big_file_is_eio_reported_and_repaired(imgvol, registry, publish, mounter, root):
    info, big, small = image(registry, publish)
    digest = imgvol.pull(info.ref)
    flip(apart_file(root), BIG - 1000)

    mp = mounter.mount_ok(info.ref, None, "--pull", "never")
    # A file that could pass through to the kernel is checked whole when first opened: the
    # bit near its end fails the open itself, and every open after it.
    expect_eio(os.path.join(mp, "big.bin"))
    expect_eio(os.path.join(mp, "big.bin"))
    assert read(os.path.join(mp, "small.txt")) == small
    log = server_log(root)
    assert "STORED CONTENT DAMAGED" in log and info.diff_ids[0] in log, log
    assert log.count("STORED CONTENT DAMAGED") == 1, "reported more than once"
    reports = list((root / "reports").glob("*.json"))
    assert [p.stem for p in reports] == [info.diff_ids[0].split(":")[1]], reports
    assert json.loads(reports[0].read_text())["image"] == digest
    assert mounter.unmount(mp).rc == 0

    res = imgvol.run("check", "--format", "json")
    assert res.rc == 1, res.describe()
    damage = json.loads(res.stdout)["checked"]["damage"]
    assert [(d["part"], d["digest"]) for d in damage] == [("layer", info.diff_ids[0])], damage

    res = imgvol.run("check", "--repair", "--tls-verify=false")
    assert res.rc == 0, res.describe()
    assert not list((root / "reports").glob("*.json"))
    assert_serves(mounter, info, "big.bin", big)


def test_without_passthrough_reads_are_checked_chunk_by_chunk(imgvol, registry, publish, mounter, root):
    info, big, _ = image(registry, publish)
    imgvol.pull(info.ref)
    flip(apart_file(root), BIG - 1000)
    mp = mounter.mountpoint()
    res = imgvol.run("mount", "--tls-verify=false", "--pull", "never", info.ref, mp,
                     extra_env={"IMGVOL_FUSE_PASSTHROUGH": "0"})
    assert res.rc == 0, res.describe()
    # Served by the server: what lies before the bad chunk reads, the bad chunk does not,
    # and once it is known bad the whole file is refused.
    with open(os.path.join(mp, "big.bin"), "rb") as f:
        assert f.read(4096) == big[:4096]
        with pytest.raises(OSError) as raised:
            f.read()
        assert raised.value.errno == errno.EIO
    expect_eio(os.path.join(mp, "big.bin"))
    assert server_log(root).count("STORED CONTENT DAMAGED") == 1, server_log(root)
    assert mounter.unmount(mp).rc == 0


def test_flipped_bit_in_a_small_file_of_a_tar_is_eio(imgvol, registry, publish, mounter, root, tmp_path):
    info, big, small = image(registry, publish)
    imgvol.pull(info.ref)
    tar = root / "layers" / (info.diff_ids[1].split(":")[1] + ".tar")
    at = tar.read_bytes().index(small)
    flip(tar, at + 100)

    mp = mounter.mount_ok(info.ref, None, "--pull", "never")
    expect_eio(os.path.join(mp, "small.txt"))
    # Another file in the same (bad) chunk is refused too; the other layer is served.
    expect_eio(os.path.join(mp, "other.txt"))
    assert read(os.path.join(mp, "big.bin")) == big
    assert mounter.unmount(mp).rc == 0

    # Nothing damaged leaves the store through `unpack` either.
    res = imgvol.run("unpack", info.ref, str(tmp_path / "out"))
    assert_error(res, "damaged", "imgvol check --repair")

    # A pull fetches again what a mount found damaged (and only that layer).
    res = imgvol.run("pull", "--tls-verify=false", info.ref)
    assert res.rc == 0, res.describe()
    assert not list((root / "reports").glob("*.json"))
    damaged = [p.name for p in (root / "damaged").iterdir()]
    assert damaged and all(info.diff_ids[1].split(":")[1] in n for n in damaged), damaged
    assert_serves(mounter, info, "small.txt", small)


def test_passthrough_once_the_file_checked_good(imgvol, registry, publish, mounter, root):
    info, big, _ = image(registry, publish)
    imgvol.pull(info.ref)
    mp = mounter.mount_ok(info.ref, None, "--pull", "never", "--log-level", "info")
    assert "FUSE passthrough on" not in server_log(root)
    # Checked whole when first opened (a damaged one fails that open: see above), then
    # handed to the kernel.
    assert read(os.path.join(mp, "big.bin")) == big
    assert "FUSE passthrough on" in server_log(root), server_log(root)
    assert read(os.path.join(mp, "big.bin")) == big
    assert mounter.unmount(mp).rc == 0


def test_layer_without_sums_is_refused_then_recorded_offline(imgvol, registry, publish, mounter, root):
    info, big, _ = image(registry, publish)
    imgvol.pull(info.ref)
    for sums in (root / "layers").glob("*.sums"):
        sums.unlink()
    res = mounter.mount(info.ref, None, "--pull", "never")
    assert_error(res, "no chunk checksums", "imgvol check --repair")

    registry.stop()
    res = imgvol.run("check", "--format", "json")
    assert res.rc == 1, res.describe()
    parts = {d["part"] for d in json.loads(res.stdout)["checked"]["damage"]}
    assert parts == {"layer-sums"}, res.stdout
    res = imgvol.run("check", "--repair")
    assert res.rc == 0, res.describe()
    assert imgvol.run("check").rc == 0
    assert_serves(mounter, info, "big.bin", big)


def test_damaged_sums_file_is_refused(imgvol, registry, publish, mounter, root):
    info, _, _ = image(registry, publish)
    imgvol.pull(info.ref)
    sums = root / "layers" / (info.diff_ids[0].split(":")[1] + ".sums")
    flip(sums, 20)
    res = mounter.mount(info.ref, None, "--pull", "never")
    assert_error(res, "chunk checksums", "damaged", "imgvol check --repair")
    res = imgvol.run("check", "--repair")
    assert res.rc == 0, res.describe()
