"""Pulling into the cache: by tag, by digest, media types, platforms, images/inspect."""

import platform

import pytest

from support.cli import DIGEST_RE, assert_error, parse_rfc3339
from support.images import T0, small_layers
from support.oci_layout import (MT_DOCKER_MANIFEST, MT_OCI_MANIFEST, Dir, File, Layer, Platform,
                                Symlink)
from support.tree import expected_tree, walk


def _entry(images, reference):
    for im in images:
        if im.get("reference") == reference:
            return im
    raise AssertionError(f"{reference} not in images: {images}")


def test_pull_by_tag(imgvol, registry, publish):
    info = publish.image(registry.host, "e2e/small", "v1", small_layers())
    res = imgvol.ok("pull", info.ref, "--tls-verify=false")
    assert res.last_line == info.manifest_digest, res.describe()
    images = imgvol.images()
    assert len(images) == 1, images
    im = _entry(images, info.ref)
    assert set(im) >= {"reference", "digest", "size", "created"}, im
    assert im["digest"] == info.manifest_digest
    assert isinstance(im["size"], int) and not isinstance(im["size"], bool) and im["size"] > 0, im
    assert parse_rfc3339(im["created"]) == parse_rfc3339(info.config["created"]), im


def test_pull_twice_is_idempotent(imgvol, registry, publish):
    info = publish.image(registry.host, "e2e/small", "v1", small_layers())
    d1 = imgvol.pull(info.ref)
    before = imgvol.images()
    d2 = imgvol.pull(info.ref)
    assert d1 == d2 == info.manifest_digest
    assert imgvol.images() == before


def test_pull_by_digest(imgvol, registry, publish):
    info = publish.image(registry.host, "e2e/small", "v1", small_layers())
    ref = f"{registry.host}/e2e/small@{info.manifest_digest}"
    assert imgvol.pull(ref) == info.manifest_digest
    images = imgvol.images()
    assert [im["digest"] for im in images] == [info.manifest_digest], images
    assert info.manifest_digest in images[0]["reference"], images
    assert imgvol.inspect(ref)["digest"] == info.manifest_digest


def test_pull_tag_and_digest_digest_wins(imgvol, registry, publish):
    a = publish.image(registry.host, "e2e/small", "a", small_layers("a"))
    publish.image(registry.host, "e2e/small", "b", small_layers("b"))
    # tag b but digest of a: the digest decides what is pulled
    ref = f"{registry.host}/e2e/small:b@{a.manifest_digest}"
    assert imgvol.pull(ref) == a.manifest_digest


def test_pull_unknown_digest(imgvol, registry, publish):
    publish.image(registry.host, "e2e/small", "v1", small_layers())
    missing = "sha256:" + "ab" * 32
    res = imgvol.run("pull", f"{registry.host}/e2e/small@{missing}", "--tls-verify=false")
    assert_error(res, missing)


def test_tag_moves(imgvol, registry, publish):
    v1 = publish.image(registry.host, "e2e/moving", "latest", small_layers("one"))
    assert imgvol.pull(v1.ref) == v1.manifest_digest
    v2 = publish.image(registry.host, "e2e/moving", "latest", small_layers("two"))
    assert v2.manifest_digest != v1.manifest_digest
    assert imgvol.pull(v2.ref) == v2.manifest_digest
    images = imgvol.images()
    assert len(images) == 1 and images[0]["digest"] == v2.manifest_digest, images
    assert imgvol.prune_json() > 0, "the old image's blobs should be unreferenced now"


def test_inspect(imgvol, registry, publish):
    info = publish.image(registry.host, "e2e/small", "v1", small_layers())
    imgvol.pull(info.ref)
    data = imgvol.inspect(info.ref)
    assert data["reference"] == info.ref
    assert data["digest"] == info.manifest_digest
    assert data["manifest"] == info.manifest
    assert data["config"] == info.config


def test_created_missing_is_empty_string(imgvol, registry, publish):
    info = publish.image(registry.host, "e2e/nocreated", "v1", small_layers(), created=None)
    assert "created" not in info.config
    imgvol.pull(info.ref)
    assert _entry(imgvol.images(), info.ref)["created"] == ""


def test_default_tag_is_latest(imgvol, registry, publish):
    info = publish.image(registry.host, "e2e/small", "latest", small_layers())
    bare = f"{registry.host}/e2e/small"
    assert imgvol.pull(bare) == info.manifest_digest
    assert [im["reference"] for im in imgvol.images()] == [f"{bare}:latest"]
    assert imgvol.inspect(bare)["digest"] == info.manifest_digest
    assert imgvol.inspect(f"{bare}:latest")["digest"] == info.manifest_digest


def test_short_name_means_docker_hub(imgvol):
    """`alpine` is docker.io/library/alpine:latest, which is not cached here."""
    res = imgvol.run("inspect", "alpine", timeout=30)
    assert_error(res, "alpine")


COMPRESSIONS = ["none", "gzip", "zstd"]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_layer_compression(imgvol, registry, publish, tmp_path, compression):
    entries = [[Dir("data", mtime=T0), File("data/hello", "hello " + compression, mtime=T0 + 1),
                File("data/zeros", b"\0" * 200_000, mtime=T0 + 2),
                Symlink("data/link", "hello", mtime=T0)],
               [File("data/top", "top", mtime=T0 + 3)]]
    layers = [Layer(e, compression) for e in entries]
    info = publish.image(registry.host, f"e2e/{compression}", "v1", layers)
    assert imgvol.pull(info.ref) == info.manifest_digest
    assert imgvol.inspect(info.ref)["manifest"]["layers"][0]["mediaType"] == \
        layers[0].media_type()
    out = tmp_path / "out"
    imgvol.unpack(info.ref, out, "--pull", "never")
    expected = expected_tree(entries)
    got = walk(str(out))
    from support.tree import assert_trees_equal
    assert_trees_equal(expected, {p: n for p, n in got.items() if p in expected}, "model",
                       "imgvol")


def test_mixed_compressions_in_one_image(imgvol, registry, publish, tmp_path):
    entries = [[File(f"f-{c}", c, mtime=T0)] for c in COMPRESSIONS]
    layers = [Layer(e, c) for e, c in zip(entries, COMPRESSIONS)]
    info = publish.image(registry.host, "e2e/mixed", "v1", layers)
    assert imgvol.pull(info.ref) == info.manifest_digest
    out = tmp_path / "out"
    imgvol.unpack(info.ref, out, "--pull", "never")
    assert sorted(p.name for p in out.iterdir()) == ["f-gzip", "f-none", "f-zstd"]


def test_docker_schema2_media_types(imgvol, registry, publish, tmp_path):
    entries = [[Dir("etc", mtime=T0), File("etc/docker", "schema2\n", mtime=T0)]]
    info = publish.image(registry.host, "e2e/docker", "v1", [Layer(entries[0], "gzip")],
                         docker=True)
    assert info.manifest_media_type == MT_DOCKER_MANIFEST
    assert imgvol.pull(info.ref) == info.manifest_digest
    data = imgvol.inspect(info.ref)
    assert data["manifest"]["mediaType"] == MT_DOCKER_MANIFEST
    assert data["config"] == info.config
    out = tmp_path / "out"
    imgvol.unpack(info.ref, out, "--pull", "never")
    assert (out / "etc" / "docker").read_text() == "schema2\n"


# -- multi-platform ---------------------------------------------------------------------

def _platform_layers(tag):
    return [Layer([File("arch", tag + "\n", mtime=T0)], "gzip")]


PLATFORMS = [("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7"),
             ("linux", "ppc64le", None)]


@pytest.fixture
def multiarch(registry, publish):
    return publish.index(registry.host, "e2e/multi", "v1",
                         [Platform(o, a, v, layers=_platform_layers(f"{o}/{a}/{v}"))
                          for o, a, v in PLATFORMS])


@pytest.fixture
def docker_multiarch(registry, publish):
    return publish.index(registry.host, "e2e/dmulti", "v1",
                         [Platform(o, a, v, layers=_platform_layers(f"{o}/{a}/{v}"))
                          for o, a, v in PLATFORMS], docker=True)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                    reason="default platform test assumes a linux/amd64 host")
@pytest.mark.parametrize("which", ["oci", "docker"])
def test_index_default_platform_is_host(imgvol, multiarch, docker_multiarch, which):
    idx = multiarch if which == "oci" else docker_multiarch
    expected = idx.for_platform("linux", "amd64")
    assert imgvol.pull(idx.ref) == expected.manifest_digest
    assert imgvol.inspect(idx.ref)["config"]["architecture"] == "amd64"


@pytest.mark.parametrize("plat,key", [
    ("linux/arm64/v8", ("linux", "arm64", "v8")),
    ("linux/arm/v7", ("linux", "arm", "v7")),
    ("linux/ppc64le", ("linux", "ppc64le", None)),
    ("linux/amd64", ("linux", "amd64", None)),
])
def test_index_explicit_platform(imgvol, multiarch, tmp_path, plat, key):
    expected = multiarch.for_platform(*key)
    assert imgvol.pull(multiarch.ref, "--platform", plat) == expected.manifest_digest
    out = tmp_path / "out"
    imgvol.unpack(multiarch.ref, out, "--platform", plat, "--pull", "never")
    assert (out / "arch").read_text() == "{}/{}/{}\n".format(*key)


def test_docker_manifest_list_platform(imgvol, docker_multiarch):
    expected = docker_multiarch.for_platform("linux", "arm64", "v8")
    assert imgvol.pull(docker_multiarch.ref, "--platform", "linux/arm64/v8") == \
        expected.manifest_digest


def test_index_by_digest_with_platform(imgvol, registry, multiarch):
    ref = f"{registry.host}/e2e/multi@{multiarch.index_digest}"
    expected = multiarch.for_platform("linux", "arm64", "v8")
    assert imgvol.pull(ref, "--platform", "linux/arm64/v8") == expected.manifest_digest


def test_index_missing_platform(imgvol, multiarch):
    res = imgvol.run("pull", multiarch.ref, "--platform", "linux/s390x", "--tls-verify=false")
    assert_error(res, "s390x")
    assert imgvol.images() == []


@pytest.mark.parametrize("bad", ["linux", "linux/", "/amd64", "linux/arm64/v8/extra"])
def test_invalid_platform_flag(imgvol, multiarch, bad):
    res = imgvol.run("pull", multiarch.ref, "--platform", bad, "--tls-verify=false")
    assert_error(res)
