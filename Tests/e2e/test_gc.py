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


def disk_usage(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def blob_ids(info, layer_index=None):
    """The digests (compressed) and diff_ids (uncompressed) of an image's layers: a store
    may keep either form on disk."""
    idx = range(len(info.layers)) if layer_index is None else [layer_index]
    return {d for i in idx for d in (info.layer_digests[i], info.diff_ids[i])}


def test_rm_keeps_shared_layer(imgvol, registry, publish, tmp_path, root):
    """rm removes the reference and (right away or at the next prune) what nothing else
    needs; the layer b shares survives."""
    shared, a, b = two_images(registry, publish)
    imgvol.pull(a.ref)
    imgvol.pull(b.ref)
    refs = sorted(im["reference"] for im in imgvol.images())
    assert refs == sorted([a.ref, b.ref])
    on_disk = digests_on_disk(root)
    assert blob_ids(a, 1) & on_disk, "a's own layer is not on disk in either form?"
    usage_before = disk_usage(root)

    imgvol.ok("rm", a.ref)
    assert [im["reference"] for im in imgvol.images()] == [b.ref]
    assert imgvol.run("inspect", a.ref).rc != 0
    imgvol.prune_json()
    assert imgvol.prune_json() == 0, "a second prune has nothing left to free"

    on_disk = digests_on_disk(root)
    for what, ids in [("a's own layer", blob_ids(a, 1)), ("a's config", {a.config_digest}),
                      ("a's manifest", {a.manifest_digest})]:
        assert not ids & on_disk, f"{what} is still on disk after rm + prune"
    assert blob_ids(b, 0) & on_disk, "the layer shared with b was removed"
    freed = usage_before - disk_usage(root)
    assert freed >= min(a.layers[1].size, len(a.layers[1].tar)), f"only {freed} bytes freed"

    out = tmp_path / "b-out"
    imgvol.unpack(b.ref, out, "--pull", "never")
    assert (out / "shared" / "blob.bin").stat().st_size == 256 * 1024
    assert (out / "b.txt").exists() and not (out / "a.txt").exists()

    # a can no longer be unpacked offline
    res = imgvol.run("unpack", a.ref, tmp_path / "a-out", "--pull", "never")
    assert_error(res)

    imgvol.ok("rm", b.ref)
    assert imgvol.images() == []
    imgvol.prune_json()
    left = digests_on_disk(root)
    for what, ids in [("shared layer", blob_ids(b, 0)), ("b's layer", blob_ids(b, 1)),
                      ("b's config", {b.config_digest}), ("b's manifest", {b.manifest_digest})]:
        assert not ids & left, f"{what} is still on disk after removing every image"


def test_prune_frees_unreferenced(imgvol, registry, publish, root):
    """A moved tag leaves the old image unreferenced: prune frees it (bytes > 0)."""
    shared, a, b = two_images(registry, publish)
    imgvol.pull(a.ref)
    # move e2e/a:v1 to b's content
    moved = publish.image(registry.host, "e2e/a", "v1", b.layers)
    assert imgvol.pull(moved.ref) == b.manifest_digest
    freed = imgvol.prune_json()
    assert freed > 0, "the old image behind the moved tag should have been freed"
    assert not blob_ids(a, 1) & digests_on_disk(root)
    assert imgvol.prune_json() == 0


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


def test_prune_text_output(imgvol, registry, publish):
    shared, a, b = two_images(registry, publish)
    imgvol.pull(a.ref)
    publish.image(registry.host, "e2e/a", "v1", b.layers)      # the tag moves
    imgvol.pull(a.ref)
    res = imgvol.ok("prune")
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
