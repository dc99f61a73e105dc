"""Content verification: corrupt blobs, lying configs, malformed archives."""

import gzip
import io

import pytest

from support.cli import assert_error, pull_then_unpack
from support.images import T0, pseudo_random, small_layers
from support.oci_layout import Dir, File, Layer, build_tar, compress, sha256_digest
from support.tree import assert_trees_equal, expected_tree, walk


GOOD_ENTRIES = [[Dir("good", mtime=T0), File("good/file", "fine\n", mtime=T0)]]


@pytest.fixture
def good(imgvol, registry, publish):
    """An image pulled before the bad things happen."""
    info = publish.image(registry.host, "e2e/good", "v1", [Layer(GOOD_ENTRIES[0], "gzip")])
    imgvol.pull(info.ref)
    return info


def assert_good_still_fine(imgvol, good, images_before, tmp_path):
    assert imgvol.images() == images_before
    out = tmp_path / "good-out"
    imgvol.unpack(good.ref, out, "--pull", "never")
    assert_trees_equal(expected_tree(GOOD_ENTRIES), walk(str(out)), "model", "imgvol")


def test_corrupt_layer_blob(imgvol, registry, publish, good, tmp_path):
    layers = [Layer([File("a", pseudo_random(50_000, 11), mtime=T0)], "gzip"),
              Layer([File("b", pseudo_random(50_000, 12), mtime=T0)], "gzip")]
    bad = publish.image(registry.host, "e2e/bad", "v1", layers)
    victim = bad.layer_digests[1]
    original = open(registry.blob_path(victim), "rb").read()
    actual = sha256_digest(registry.corrupt_blob(victim))
    before = imgvol.images()

    res = imgvol.run("pull", bad.ref, "--tls-verify=false")
    assert_error(res, victim, actual)
    assert_good_still_fine(imgvol, good, before, tmp_path)
    assert imgvol.run("inspect", bad.ref).rc != 0

    # the registry is fixed: the next pull works (nothing bad was cached)
    registry.replace_blob(victim, original)
    assert imgvol.pull(bad.ref) == bad.manifest_digest


def test_corrupt_config_blob(imgvol, registry, publish, good, tmp_path):
    bad = publish.image(registry.host, "e2e/badconfig", "v1", small_layers("cfg"))
    registry.replace_blob(bad.config_digest, bad.config_bytes.replace(b"amd64", b"AMD64"))
    before = imgvol.images()
    res = imgvol.run("pull", bad.ref, "--tls-verify=false")
    assert_error(res, bad.config_digest)
    assert_good_still_fine(imgvol, good, before, tmp_path)


def test_corrupt_manifest_pulled_by_digest(imgvol, registry, publish, good, tmp_path):
    bad = publish.image(registry.host, "e2e/badmanifest", "v1", small_layers("mf"))
    tampered = bad.manifest_bytes.replace(b'"schemaVersion":2', b'"schemaVersion": 2')
    assert tampered != bad.manifest_bytes
    registry.replace_blob(bad.manifest_digest, tampered)
    before = imgvol.images()
    res = imgvol.run("pull", f"{registry.host}/e2e/badmanifest@{bad.manifest_digest}",
                     "--tls-verify=false")
    assert_error(res, bad.manifest_digest)
    assert_good_still_fine(imgvol, good, before, tmp_path)


def test_config_diff_id_mismatch(imgvol, registry, publish, good, tmp_path):
    layer = Layer([File("a", "a\n", mtime=T0)], "gzip")
    bogus = "sha256:" + "0" * 64
    bad = publish.image(registry.host, "e2e/badiff", "v1", [layer], diff_ids_override=[bogus])
    before = imgvol.images()
    res = pull_then_unpack(imgvol, bad.ref, tmp_path / "out")
    assert_error(res)
    assert bogus in res.stderr or layer.diff_id in res.stderr or layer.digest in res.stderr, \
        f"the error should name the layer or its diff_id\n{res.describe()}"
    if res.cmd[1] == "pull":
        assert_good_still_fine(imgvol, good, before, tmp_path)


def test_config_diff_id_count_mismatch(imgvol, registry, publish, tmp_path):
    layers = [Layer([File("a", "a", mtime=T0)], "gzip"), Layer([File("b", "b", mtime=T0)], "gzip")]
    bad = publish.image(registry.host, "e2e/fewdiffs", "v1", layers,
                        diff_ids_override=[layers[0].diff_id])
    res = pull_then_unpack(imgvol, bad.ref, tmp_path / "out")
    assert_error(res)


def _truncated_gzip():
    tar = build_tar([File("x", pseudo_random(200_000, 5), mtime=T0)])
    blob = gzip.compress(tar, mtime=0)
    return blob[: len(blob) // 2]


MALFORMED = {
    "gzip-garbage": lambda: Layer.from_blob(b"this is not gzip at all\n" * 20, "gzip"),
    "zstd-garbage": lambda: Layer.from_blob(b"this is not zstd at all\n" * 20, "zstd"),
    "tar-garbage": lambda: Layer.from_blob(pseudo_random(4096, 9), "none"),
    "gzip-truncated": lambda: Layer.from_blob(_truncated_gzip(), "gzip"),
    "gzip-of-garbage": lambda: Layer.from_blob(gzip.compress(pseudo_random(8192, 4), mtime=0),
                                               "gzip"),
    "zstd-of-garbage": lambda: Layer.from_blob(compress(pseudo_random(8192, 4), "zstd"), "zstd"),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_archive(imgvol, registry, publish, good, tmp_path, kind):
    layer = MALFORMED[kind]()
    bad = publish.image(registry.host, f"e2e/malformed-{kind}", "v1", [layer])
    before = imgvol.images()
    res = pull_then_unpack(imgvol, bad.ref, tmp_path / "out")
    assert_error(res, layer.digest)
    if res.cmd[1] == "pull":
        assert_good_still_fine(imgvol, good, before, tmp_path)


def test_unknown_layer_media_type_is_a_file_named_by_digest(imgvol, registry, publish, tmp_path):
    """A layer whose media type is not a tar is an artifact file: nothing to unpack, so it is
    served as it is, named by its digest (README, "Artifacts")."""
    layer = Layer([File("a", "a", mtime=T0)], "gzip",
                  media_type="application/vnd.example.not-a-layer")
    odd = publish.image(registry.host, "e2e/oddtype", "v1", [layer])
    out = tmp_path / "out"
    res = pull_then_unpack(imgvol, odd.ref, out)
    assert res.rc == 0, res.describe()
    assert [p.name for p in out.iterdir()] == [layer.digest]
    assert (out / layer.digest).read_bytes() == layer.blob