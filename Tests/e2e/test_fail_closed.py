"""Damaged store state fails closed: an error naming the file, and nothing deleted or
rewritten on its strength. Mountpoints are resolved once and refused where a mount would
stack, hide the store or land in the kernel's trees. Lock files and mount logs do not pile up."""

import json
import os

from support.cli import assert_error
from support.images import T0, base_layer
from support.oci_layout import File, Layer


def two_images(registry, publish):
    a = publish.image(registry.host, "e2e/fc-a", "v1",
                      [base_layer(size=64 * 1024), Layer([File("a.txt", "a\n" * 500, mtime=T0)], "gzip")])
    b = publish.image(registry.host, "e2e/fc-b", "v1",
                      [Layer([File("b.txt", "b\n" * 500, mtime=T0)], "gzip")])
    return a, b


def store_files(root):
    return sorted(str(p.relative_to(root)) for p in (root / "layers").rglob("*")) + \
        sorted(str(p.relative_to(root)) for p in (root / "blobs").rglob("*"))


def test_damaged_refs_is_an_error_and_nothing_is_lost(imgvol, registry, publish, root):
    a, b = two_images(registry, publish)
    imgvol.pull(a.ref)
    before = store_files(root)
    (root / "refs.json").write_text("{")

    assert_error(imgvol.run("images"), "refs.json", "damaged")
    assert_error(imgvol.run("prune"), "refs.json")
    assert store_files(root) == before, "prune removed files on the strength of an unreadable refs.json"
    # A pull must not rewrite the names with only its own.
    assert_error(imgvol.run("pull", "--tls-verify=false", b.ref), "refs.json")
    assert (root / "refs.json").read_text() == "{"

    # The repair the message names: move it aside, pull again.
    os.rename(root / "refs.json", root / "refs.json.damaged")
    imgvol.pull(a.ref)
    assert [im["reference"] for im in imgvol.images()] == [a.ref]


def test_damaged_image_record_blocks_prune_until_repaired(imgvol, registry, publish, root):
    a, b = two_images(registry, publish)
    digest_a = imgvol.pull(a.ref)
    imgvol.pull(b.ref)
    record = root / "images" / (digest_a.split(":")[1] + ".json")
    record.write_text('{"digest": 1')
    before = store_files(root)

    res = imgvol.run("images", "--format", "json")
    assert res.rc != 0 and str(record) in res.stderr, res.describe()
    assert [im["reference"] for im in json.loads(res.stdout)] == [b.ref], "the intact image is still listed"

    assert_error(imgvol.run("prune"), "damaged", str(record))
    assert store_files(root) == before, "prune removed files although a named record is unreadable"

    # A pull of the damaged image rewrites its record; then prune runs.
    imgvol.pull(a.ref)
    assert json.loads(record.read_text())["digest"] == digest_a
    imgvol.ok("prune")
    assert sorted(im["reference"] for im in imgvol.images()) == sorted([a.ref, b.ref])


def test_rm_drops_an_image_whose_record_is_damaged(imgvol, registry, publish, root):
    a, _ = two_images(registry, publish)
    digest_a = imgvol.pull(a.ref)
    (root / "images" / (digest_a.split(":")[1] + ".json")).write_text("")
    imgvol.ok("rm", a.ref)
    assert imgvol.images() == []
    assert not (root / "images" / (digest_a.split(":")[1] + ".json")).exists()


def test_mountpoints_refused(imgvol, registry, publish, mounter, root, tmp_path, imgvol_bin, base_env):
    a, _ = two_images(registry, publish)
    imgvol.pull(a.ref)
    assert_error(mounter.mount(a.ref, "/proc/self/fd"), "/proc")
    assert_error(mounter.mount(a.ref, str(root / "layers")), "store")
    link = tmp_path / "link-to-store"
    link.symlink_to(root / "images")
    assert_error(mounter.mount(a.ref, str(link)), "store")

    # The same directory from a second store: refused, not stacked.
    mp = mounter.mount_ok(a.ref)
    from support.cli import Imgvol
    other = Imgvol(imgvol_bin, str(tmp_path / "other-root"), base_env)
    other.pull(a.ref)
    res = other.run("mount", "--tls-verify=false", a.ref, mp)
    assert_error(res, "already a mount point")
    assert sum(1 for line in open("/proc/self/mountinfo") if f" {mp} " in line) == 1
    assert mounter.unmount(mp).rc == 0


def test_locks_and_mount_logs_do_not_pile_up(imgvol, registry, publish, mounter, root):
    a, b = two_images(registry, publish)
    imgvol.pull(a.ref)
    imgvol.pull(b.ref)
    # Per-blob and per-layer locks go with their holder; only the shared GC lock may stay.
    assert set(os.listdir(root / "locks")) <= {"gc.lock"}
    for _ in range(3):
        mp = mounter.mount_ok(a.ref)
        assert mounter.unmount(mp).rc == 0
    assert os.listdir(root / "mounts") == [], "a clean unmount leaves its record and log behind"

    # Left by an older version or a killed process: prune clears them.
    (root / "locks" / "blob-0123.lock").write_text("")
    (root / "mounts" / "0123456789abcdef01234567.json").write_text(json.dumps(
        {"mountpoint": "/nonexistent/x", "pid": 2 ** 22 + 1, "digest": "sha256:" + "0" * 64,
         "reference": "x", "started": "2026-01-01T00:00:00Z"}))
    (root / "mounts" / "0123456789abcdef01234567.log").write_text("old\n")
    imgvol.ok("prune")
    assert set(os.listdir(root / "locks")) <= {"gc.lock"}
    assert os.listdir(root / "mounts") == []


def test_pull_repairs_a_torn_index_and_tree(imgvol, registry, publish, mounter, root):
    a, _ = two_images(registry, publish)
    digest = imgvol.pull(a.ref)
    indexes = sorted((root / "layers").glob("*.idx"))
    assert indexes
    for path in indexes + [root / "images" / (digest.split(":")[1] + ".tree")]:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    assert_error(mounter.mount(a.ref, None, "--pull", "never"), "damaged", "pull the image again")

    # What the message says works: the torn parts are moved aside and fetched again.
    assert imgvol.pull(a.ref) == digest
    assert any(p.name.startswith(indexes[0].name) for p in (root / "damaged").iterdir())
    mp = mounter.mount_ok(a.ref, None, "--pull", "never")
    assert (open(os.path.join(mp, "a.txt")).read()) == "a\n" * 500
    assert mounter.unmount(mp).rc == 0
    imgvol.ok("prune")
    assert not (root / "damaged").exists() or list((root / "damaged").iterdir()) == []


def test_platform_named_but_not_offered(imgvol, registry, publish):
    a, _ = two_images(registry, publish)
    res = imgvol.run("pull", "--tls-verify=false", "--platform", "linux/s390x", a.ref)
    assert_error(res, "linux/s390x", "built for", single_line=True)
    assert imgvol.images() == []


def test_read_only_store_serves(imgvol, registry, publish, mounter, root, tmp_path, imgvol_bin, base_env):
    """A store pre-seeded on read-only media: listing, checking, unpacking and mounting a
    cached image work; writers fail with a clear error."""
    import subprocess
    from support.cli import Imgvol
    a, b = two_images(registry, publish)
    imgvol.pull(a.ref)
    ro = tmp_path / "ro-root"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(root), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        store = Imgvol(imgvol_bin, str(ro), base_env)
        assert [im["reference"] for im in store.images()] == [a.ref]
        store.ok("check")
        mp = mounter.mountpoint()
        res = store.run("mount", "--pull", "never", a.ref, mp)
        assert res.rc == 0, res.describe()
        try:
            assert open(os.path.join(mp, "a.txt")).read() == "a\n" * 500
            assert [m["mountpoint"] for m in json.loads(store.ok("mounts", "--format", "json").stdout)] == [mp]
        finally:
            assert store.run("unmount", mp).rc == 0
        res = store.run("pull", "--tls-verify=false", b.ref)
        assert res.rc != 0 and "Error:" in res.stderr, res.describe()
    finally:
        subprocess.run(["umount", "-l", str(ro)])
