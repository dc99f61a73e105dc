"""images / rm / prune: reference bookkeeping and garbage collection."""

import hashlib
import json
import re

from support.cli import assert_error
from support.images import T0, base_layer
from support.oci_layout import File, Layer
from support.tree import assert_trees_equal, walk


def digests_on_disk(path) -> set:
    """sha256 digests of every regular file under path."""
    out = set()
    for f in path.rglob("*"):
        if f.is_file() and not f.is_symlink():
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            out.add("sha256:" + h.hexdigest())
    return out


def two_images(registry, publish):
    shared = base_layer(size=256 * 1024)
    a = publish.image(registry.host, "e2e/a", "v1",
                      [shared, Layer([File("a.txt", "only in a\n" * 1000, mtime=T0)], "gzip")])
    b = publish.image(registry.host, "e2e/b", "v1",
                      [shared, Layer([File("b.txt", "only in b\n" * 1000, mtime=T0)], "gzip")])
    assert a.layer_digests[0] == b.layer_digests[0]
    return shared, a, b


def test_rm_keeps_shared_layer(imgvol, registry, publish, tmp_path, root):
    shared, a, b = two_images(registry, publish)
    imgvol.pull(a.ref)
    imgvol.pull(b.ref)
    refs = sorted(im["reference"] for im in imgvol.images())
    assert refs == sorted([a.ref, b.ref])

    imgvol.ok("rm", a.ref)
    assert [im["reference"] for im in imgvol.images()] == [b.ref]
    assert imgvol.run("inspect", a.ref).rc != 0

    # rm frees what only a used (as podman rmi does); the shared layer stays for b
    left = digests_on_disk(root)
    for what, d in [("a's config", a.config_digest), ("a's manifest", a.manifest_digest),
                    ("a's own layer", a.diff_ids[1])]:
        assert d not in left, f"{what} {d} is still on disk after rm"
    assert shared.diff_id in left, "the layer b shares was removed"
    assert imgvol.prune_json() == 0, "rm already freed everything only a used"

    out = tmp_path / "b-out"
    imgvol.unpack(b.ref, out, "--pull", "never")
    assert (out / "shared" / "blob.bin").stat().st_size == 256 * 1024
    assert (out / "b.txt").exists() and not (out / "a.txt").exists()

    # a can no longer be unpacked offline
    res = imgvol.run("unpack", a.ref, tmp_path / "a-out", "--pull", "never")
    assert_error(res)

    imgvol.ok("rm", b.ref)
    assert imgvol.images() == []
    assert imgvol.prune_json() == 0
    left = digests_on_disk(root)
    for what, d in [("shared layer", shared.digest), ("shared diff_id", shared.diff_id),
                    ("b's config", b.config_digest), ("b's manifest", b.manifest_digest),
                    ("b's layer", b.layer_digests[1])]:
        assert d not in left, f"{what} {d} is still on disk after rm"


def test_rm_unknown_fails_and_changes_nothing(imgvol, registry, publish):
    shared, a, b = two_images(registry, publish)
    imgvol.pull(a.ref)
    before = imgvol.images()
    res = imgvol.run("rm", f"{registry.host}/e2e/a:nope")
    assert_error(res, "e2e/a:nope")
    assert imgvol.images() == before
    imgvol.ok("rm", a.ref)
    assert_error(imgvol.run("rm", a.ref), "e2e/a")


def test_two_tags_one_digest(imgvol, registry, publish, tmp_path):
    from support.images import small_layers
    layers = small_layers("same")
    v1 = publish.image(registry.host, "e2e/same", "v1", layers)
    v2 = publish.image(registry.host, "e2e/same", "v2", layers, layout=v1.layout)
    assert v1.manifest_digest == v2.manifest_digest
    imgvol.pull(v1.ref)
    imgvol.pull(v2.ref)
    images = imgvol.images()
    assert sorted(im["reference"] for im in images) == sorted([v1.ref, v2.ref])
    assert {im["digest"] for im in images} == {v1.manifest_digest}
    imgvol.ok("rm", v1.ref)
    assert imgvol.prune_json() == 0, "v2 still needs everything"
    imgvol.unpack(v2.ref, tmp_path / "out", "--pull", "never")


def test_prune_text_output(imgvol, registry, publish, root):
    shared, a, b = two_images(registry, publish)
    imgvol.pull(a.ref)
    # what an interrupted pull leaves behind: a partial download nobody is writing
    partial = root / "tmp" / (("0" * 64) + ".partial")
    partial.write_bytes(b"x" * 100_000)
    res = imgvol.ok("prune")
    assert not partial.exists(), "prune left a stale partial download"
    nums = [int(n) for n in re.findall(r"\d+", res.stdout)]
    assert nums and max(nums) > 0, f"prune should print the bytes freed\n{res.describe()}"


def test_prune_keeps_referenced(imgvol, registry, publish, tmp_path):
    shared, a, b = two_images(registry, publish)
    imgvol.pull(a.ref)
    before = imgvol.images()
    assert imgvol.prune_json() == 0
    assert imgvol.images() == before
    imgvol.unpack(a.ref, tmp_path / "out", "--pull", "never")


def test_images_size_is_plausible(imgvol, registry, publish):
    shared, a, b = two_images(registry, publish)
    imgvol.pull(a.ref)
    im = imgvol.images()[0]
    compressed = sum(layer.size for layer in a.layers)
    # bytes on disk: at least the compressed layers' worth of data (or their uncompressed
    # form), not absurdly more than everything uncompressed plus metadata
    uncompressed = sum(len(layer.tar) for layer in a.layers)
    assert im["size"] >= min(compressed, uncompressed) * 0.9, (im, compressed, uncompressed)
    assert im["size"] <= (compressed + uncompressed) * 3 + (1 << 20), (im, compressed, uncompressed)


def test_images_json_is_stable_json(imgvol, registry, publish):
    shared, a, b = two_images(registry, publish)
    imgvol.pull(a.ref)
    imgvol.pull(b.ref)
    res = imgvol.ok("images", "--format", "json")
    data = json.loads(res.stdout)
    for im in data:
        assert set(im) >= {"reference", "digest", "size", "created"}, im
        assert isinstance(im["reference"], str) and isinstance(im["digest"], str)
    res_text = imgvol.ok("images")
    for ref in (a.ref, b.ref):
        assert ref.rsplit(":", 1)[0] in res_text.stdout, res_text.describe()
