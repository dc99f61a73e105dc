"""`imgvol mount --lazy REF MNT`: mounted as soon as the manifest and the file index are
known; file contents come from the registry with HTTP Range requests on demand (with
read-ahead) while the rest is fetched in the background; each blob's digest is checked when
it is complete, and once everything is verified the image is recorded in the cache as if
pulled.  Compressed tar layers are pulled fully before the mount (the fallback).

Bytes served before a blob's digest check are an accepted, documented trade-off: a corrupt
blob is only guaranteed to fail reads (EIO) once its download is complete and checked.

Every mount is undone in teardown (the `mounter` fixture), pass or fail.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import random
import threading
import time
from types import SimpleNamespace

import pytest

from support.artifacts import (MT_MODEL_WEIGHT_RAW, TITLE, Blob, Pattern, push_artifact,
                               raw_tree, store_hits)
from support.cli import assert_error
from support.images import T0, pseudo_random
from support.mounts import (FSTYPE, errname, is_mounted, mount_entries, mount_entry,
                            pids_mentioning, read_tree_digests, wait_until)
from support.oci_layout import MT_OCI_LAYER, Dir, File, Hardlink, Layer, Symlink
from support.tree import assert_trees_equal, expected_tree, walk

MiB = 1 << 20
READERS = 4


# -- test data -------------------------------------------------------------------------------

def raw_artifact(registry, repo: str = "e2e/lazy-raw", big_size: int = 64 * MiB, seed: int = 1):
    """ORAS-style artifact: a big raw file plus small ones (raw layers = byte-addressable)."""
    files = {
        "weights/big.bin": Pattern(big_size, seed).bytes(),
        "config.json": b'{"hidden": 64}\n',
        "README.md": b"# lazy\n",
        "tokenizer/vocab.txt": pseudo_random(100_003, seed + 1),
        "empty": b"",
    }
    layers = [Blob(MT_MODEL_WEIGHT_RAW if p == "weights/big.bin" else MT_OCI_LAYER, data,
                   {TITLE: p}) for p, data in files.items()]
    pushed = push_artifact(registry, repo, "v1", layers,
                           artifact_type="application/vnd.example.lazy.v1")
    return SimpleNamespace(ref=pushed.reference, digest=pushed.manifest_digest, files=files,
                           want=raw_tree(files), mtimes=False, pushed=pushed,
                           big=layers[0])


def tar_image(registry, publish, repo: str = "e2e/lazy-tar"):
    """An image of uncompressed tar layers: files of several sizes (empty, < 1 page, 1 MiB+1,
    > 8 MiB), a symlink, a hardlink, nested directories, and a file replaced by the upper
    layer."""
    l1 = [Dir("d", mtime=T0),
          File("d/empty", b"", mtime=T0),
          File("d/one", b"1", mtime=T0),
          File("d/odd", pseudo_random(4095, 1), mtime=T0),
          File("d/mib1", pseudo_random(MiB + 1, 2), mode=0o600, uid=1000, gid=1000, mtime=T0),
          File("d/big9", pseudo_random(9 * MiB + 3, 3), mtime=T0),
          Dir("d/a", mtime=T0), Dir("d/a/b", mtime=T0), Dir("d/a/b/c", mode=0o750, mtime=T0),
          File("d/a/b/c/deep.txt", "deep\n", mtime=T0),
          Symlink("d/link", "big9", mtime=T0),
          Hardlink("d/hard", "d/mib1", mode=0o600, uid=1000, gid=1000),
          File("d/replaced", "old\n", mtime=T0)]
    l2 = [Dir("top", mtime=T0),
          File("top/huge", pseudo_random(24 * MiB + 5, 4), mtime=T0),
          File("d/replaced", "new\n", mtime=T0 + 1)]
    info = publish.image(registry.host, repo, "v1", [Layer(l1, "none"), Layer(l2, "none")])
    files = {}
    for e in l1 + l2:
        if e.kind == "file":
            files[e.name] = e.content
    files["d/hard"] = files["d/mib1"]
    return SimpleNamespace(ref=info.ref, digest=info.manifest_digest, files=files,
                           want=expected_tree([l1, l2]), mtimes=True, info=info)


def _first_diff(got: bytes, want: bytes):
    return next((i for i, (x, y) in enumerate(zip(got, want)) if x != y),
                min(len(got), len(want)))


def random_preads(mp, files, rnd, per_file: int = 40):
    """Random-offset preads of every non-empty file, checked against the source bytes."""
    bad = []
    for name, data in sorted(files.items()):
        if not data:
            continue
        size = len(data)
        fd = os.open(os.path.join(mp, name), os.O_RDONLY)
        try:
            cases = [(size - 1, 1), (0, 1), (size // 2, 4096), (size, 10)]
            cases += [(rnd.randrange(0, size), rnd.choice([1, 511, 4096, 65536, 300_000, MiB]))
                      for _ in range(per_file)]
            for off, n in cases:
                got = os.pread(fd, n, off)
                want = data[off:off + n]
                if got != want:
                    bad.append(f"{name}: pread({n}, {off}) -> {len(got)} bytes, want "
                               f"{len(want)}, first difference at +{_first_diff(got, want)}")
        finally:
            os.close(fd)
    assert not bad, f"{len(bad)} wrong preads:\n" + "\n".join(bad[:20])


def concurrent_readers(mp, files, n: int = READERS):
    """n threads at once, each with its own descriptors: random preads of the biggest file
    and a full sequential read + sha256 of every file."""
    big = max(files, key=lambda k: len(files[k]))
    data = files[big]
    errors = []

    def reader(i):
        rnd = random.Random(1000 + i)
        try:
            fd = os.open(os.path.join(mp, big), os.O_RDONLY)
            try:
                for _ in range(50):
                    off = rnd.randrange(0, len(data))
                    k = rnd.choice([4096, 131072, MiB, 3 * MiB])
                    if os.pread(fd, k, off) != data[off:off + k]:
                        errors.append(f"reader {i}: wrong bytes at {big}+{off} ({k})")
            finally:
                os.close(fd)
            names = sorted(files)
            for name in names[i % len(names):] + names[:i % len(names)]:   # rotated per thread
                h = hashlib.sha256()
                with open(os.path.join(mp, name), "rb") as f:
                    for block in iter(lambda: f.read((1 << 20) + 17 * i), b""):
                        h.update(block)
                if h.hexdigest() != hashlib.sha256(files[name]).hexdigest():
                    errors.append(f"reader {i}: sha256 of {name} differs")
        except OSError as e:
            errors.append(f"reader {i}: {e!r}")

    threads = [threading.Thread(target=reader, args=(i,), name=f"reader-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not any(t.is_alive() for t in threads), "a reader thread hung on the lazy mount"
    assert not errors, "\n".join(errors[:20])


def wait_recorded(imgvol, ref, digest, timeout: float = 60):
    """Poll `imgvol images --format json` until ref is listed with digest."""
    def listed():
        im = imgvol.image(ref)
        return im if im and im.get("digest") == digest else None
    return wait_until(listed, timeout, interval=0.25,
                      what=f"`imgvol images` to list {ref} @ {digest} after the lazy mount "
                           f"fetched everything")


def assert_nothing_mounted(mounter, mp):
    assert not is_mounted(mp), f"{mp} is mounted after a failed mount: {mount_entries(mp)}"
    assert all(m.get("mountpoint") != str(mp) for m in mounter.mounts())
    wait_until(lambda: pids_mentioning(str(mp)) == [], 10,
               what=f"no process serving {mp} after a failed mount")


# -- 1. lazy mounts serve the right bytes, then the image is cached ------------------------

@pytest.fixture(params=["raw-artifact", "uncompressed-image"])
def lazy_src(request, registry, publish):
    if request.param == "raw-artifact":
        return raw_artifact(registry)
    return tar_image(registry, publish)


def test_lazy_mount_reads_then_caches(lazy_src, imgvol, mounter, registry, tmp_path):
    src = lazy_src
    mp = mounter.mount_ok(src.ref, None, "--lazy")
    e = mount_entry(mp)
    assert e.fstype == FSTYPE and e.has("ro"), e
    listed = mounter.listed(mp)
    assert listed and listed["digest"] == src.digest, mounter.mounts()

    # random reads first, while (most of) the content may still be remote
    random_preads(mp, src.files, random.Random(7))
    concurrent_readers(mp, src.files)
    got = walk(mp, mtimes=src.mtimes)
    assert_trees_equal(src.want, got, "expected", "lazy mount")

    wait_recorded(imgvol, src.ref, src.digest)
    assert mounter.unmount(mp).rc == 0
    assert not is_mounted(mp)

    # everything is local now: the registry is not needed any more
    registry.stop()
    mp2 = mounter.mount_ok(src.ref, None, "--pull", "never")
    want_digests = {p: hashlib.sha256(d).hexdigest() for p, d in src.files.items()}
    assert read_tree_digests(mp2) == want_digests
    assert_trees_equal(src.want, walk(mp2, mtimes=src.mtimes), "expected", "cached mount")
    out = tmp_path / "unpacked"
    imgvol.unpack(src.ref, out, "--pull", "never")
    assert read_tree_digests(out) == want_digests


@pytest.mark.slow
def test_lazy_mount_ready_before_download(mounter, imgvol, registry, make_proxy):
    """Behind a 1 MiB/s link the 64 MiB blob takes > 60 s: the lazy mount must be ready,
    and a read near the end answered (by a Range request), long before that."""
    src = raw_artifact(registry, "e2e/lazy-slow", seed=5)
    px = make_proxy(registry.host)
    big = src.big.digest
    px.set_faults(throttle=1 * MiB, only=[big])
    ref = src.ref.replace(registry.host, px.host)
    t0 = time.monotonic()
    mp = mounter.mount_ok(ref, None, "--lazy", timeout=60)
    t_mount = time.monotonic() - t0
    assert t_mount < 20, f"--lazy mount took {t_mount:.1f}s: it waited for the download?"
    data = src.files["weights/big.bin"]
    off = len(data) - 100_000
    fd = os.open(os.path.join(mp, "weights/big.bin"), os.O_RDONLY)
    try:
        got = os.pread(fd, 4096, off)
    finally:
        os.close(fd)
    t_read = time.monotonic() - t0
    assert got == data[off:off + 4096]
    assert t_read < 40, f"a 4 KiB read near the end took until {t_read:.1f}s"
    ranged = [r for r in px.blob_gets(big) if r.range]
    assert any(r.status == 206 for r in ranged), \
        ("no Range request (206) for the big blob: " +
         repr([(r.status, r.range, r.bytes_sent) for r in px.blob_gets(big)]))
    res = mounter.unmount(mp, timeout=60)
    assert res.rc == 0, f"unmount during the background download failed\n{res.describe()}"
    assert not is_mounted(mp)


# -- 2. fallback: compressed layers -------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gzip", "mixed"])
def test_lazy_compressed_layers_fall_back(kind, imgvol, mounter, registry, publish):
    l1 = [Dir("z", mtime=T0), File("z/a.bin", pseudo_random(3 * MiB, 21), mtime=T0),
          Symlink("z/a", "a.bin", mtime=T0)]
    l2 = [File("z/b.txt", "b\n" * 10000, mode=0o600, uid=3, gid=4, mtime=T0 + 1),
          Dir("y", mtime=T0), File("y/raw.bin", pseudo_random(2 * MiB + 1, 22), mtime=T0)]
    l3 = [File("z/c.txt", "c\n", mtime=T0 + 2)]
    comps = ("gzip", "gzip", "gzip") if kind == "gzip" else ("gzip", "none", "zstd")
    info = publish.image(registry.host, f"e2e/lazy-{kind}", "v1",
                         [Layer(l, c) for l, c in zip((l1, l2, l3), comps)])
    mp = mounter.mount_ok(info.ref, None, "--lazy")
    assert_trees_equal(expected_tree([l1, l2, l3]), walk(mp), "model", "lazy mount")
    fd = os.open(os.path.join(mp, "y/raw.bin"), os.O_RDONLY)
    try:
        assert os.pread(fd, 1000, MiB - 10) == pseudo_random(2 * MiB + 1, 22)[MiB - 10:MiB + 990]
    finally:
        os.close(fd)
    wait_recorded(imgvol, info.ref, info.manifest_digest)
    assert mounter.unmount(mp).rc == 0
    registry.stop()
    mp2 = mounter.mount_ok(info.ref, None, "--pull", "never")
    assert_trees_equal(expected_tree([l1, l2, l3]), walk(mp2), "model", "cached mount")


# -- 3. a corrupt blob --------------------------------------------------------------------------

def mount_logs(root) -> str:
    text = []
    for p in sorted(glob.glob(os.path.join(str(root), "mounts", "*.log"))):
        with open(p, errors="replace") as f:
            text.append(f"== {p}\n{f.read()}")
    return "\n".join(text)


def test_lazy_corrupt_blob_fails_reads(imgvol, mounter, registry, root):
    size = 32 * MiB
    good = Pattern(size, seed=31).bytes()
    evil = Pattern(size, seed=32).bytes()
    layers = [Blob(MT_OCI_LAYER, good, {TITLE: "weights/big.bin"}),
              Blob(MT_OCI_LAYER, b"small and fine\n", {TITLE: "small.txt"})]
    pushed = push_artifact(registry, "e2e/lazy-corrupt", "v1", layers,
                           artifact_type="application/vnd.example.lazy.v1")
    victim = layers[0].digest
    registry.replace_blob(victim, evil)
    actual = "sha256:" + hashlib.sha256(evil).hexdigest()
    assert actual != victim and len(evil) == len(good)

    mp = mounter.mount_ok(pushed.reference, None, "--lazy")
    path = os.path.join(mp, "weights/big.bin")
    assert os.stat(path).st_size == size

    outcomes = []

    def read_all_fails_with_eio():
        # a fresh open each time; the kernel's page cache for the file is dropped first so
        # the read reaches the server (bytes served before the check may be cached)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            outcomes.append(f"open: {errname(e.errno)}")
            return e.errno == errno.EIO
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            h = hashlib.sha256()
            n = 0
            while True:
                block = os.read(fd, MiB)
                if not block:
                    break
                h.update(block)
                n += len(block)
        except OSError as e:
            outcomes.append(f"read: {errname(e.errno)}")
            if e.errno != errno.EIO:
                raise AssertionError(f"reading the corrupt file failed with {errname(e.errno)}, "
                                     f"expected EIO ({outcomes})")
            return True
        finally:
            os.close(fd)
        got = "sha256:" + h.hexdigest()
        outcomes.append(f"read {n} bytes, {got[:19]}...")
        assert got == actual, (f"a read that succeeded returned bytes other than the "
                               f"registry's (corrupt) blob: {got}; so far: {outcomes}")
        return False

    try:
        wait_until(read_all_fails_with_eio, 60, interval=0.2,
                   what=f"reads of the corrupt blob {victim} to fail with EIO")
    except AssertionError as e:
        raise AssertionError(f"{e}\nattempts: {outcomes[:5]} ... {outcomes[-5:]}\n"
                             f"{mount_logs(root)[-3000:]}") from None
    wait_until(lambda: victim in mount_logs(root), 10,
               what=f"a mount log under {root}/mounts to name the expected digest {victim}")
    hits = store_hits(root, [victim, actual])
    assert not hits, "the corrupt blob (or a file claiming its digest) is in the store:\n" + \
        "\n".join(hits)
    assert imgvol.image(pushed.reference) is None, imgvol.images()
    assert imgvol.images() == []
    res = mounter.unmount(mp)
    assert res.rc == 0, res.describe()
    assert not is_mounted(mp), mount_entries(mp)
    assert all(m.get("mountpoint") != mp for m in mounter.mounts())


# -- 4. bad input -------------------------------------------------------------------------------

def test_lazy_with_pull_never_uncached(imgvol, mounter, registry, publish):
    src = tar_image(registry, publish, "e2e/lazy-never")
    mp = mounter.mountpoint()
    res = mounter.mount(src.ref, mp, "--lazy", "--pull", "never")
    assert_error(res)
    assert_nothing_mounted(mounter, mp)
    assert os.listdir(mp) == []
    assert imgvol.images() == []
