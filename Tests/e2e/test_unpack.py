"""imgvol unpack: the merged tree, compared with a model of the layers and with umoci."""

import os

import pytest

from conftest import umoci_unpack
from support import oci_layout
from support.cli import assert_error
from support.images import rich_entries, whiteout_entries
from support.oci_layout import Layer
from support.tree import (assert_trees_equal, expected_tree, filter_tree, format_tree,
                          hardlink_groups, walk)

DEVICE_TYPES = ("char", "block")


@pytest.fixture
def rich(registry, publish):
    """The rich image: layers gzip, zstd, uncompressed."""
    entries = rich_entries()
    layers = [Layer(e, c) for e, c in zip(entries, ("gzip", "zstd", "none"))]
    info = publish.image(registry.host, "e2e/rich", "v1", layers)
    info.entries = entries
    return info


def test_unpack_rich_matches_model(imgvol, rich, tmp_path):
    out = tmp_path / "out"
    res = imgvol.unpack(rich.ref, out)
    expected = expected_tree(rich.entries)
    got = walk(str(out))
    devices = {p for p, n in expected.items() if n.type in DEVICE_TYPES}
    assert devices == {"dev/null", "dev/loop9"}
    for p in devices:
        assert p not in got, f"device node {p} must be skipped by unpack"
        assert p not in res.stdout, f"unpack must print nothing on stdout for {p}"
    assert_trees_equal(filter_tree(expected, exclude_types=DEVICE_TYPES), got, "model", "imgvol")
    assert hardlink_groups(str(out)) == [{"etc/passwd", "etc/passwd-link"},
                                         {"usr/bin/tool", "usr/bin/tool-link"}]


def test_unpack_matches_umoci(imgvol, rich, tmp_path, umoci):
    # umoci 0.4.7 cannot read zstd layers: give it the same tars, gzip-compressed.
    # The diff_ids (uncompressed digests) are identical, only the blobs differ.
    layout = str(tmp_path / "umoci-layout")
    layers = [Layer(e, c) for e, c in zip(rich.entries, ("gzip", "gzip", "none"))]
    umoci_info = oci_layout.write_image(layout, "v1", layers)
    assert umoci_info.diff_ids == rich.diff_ids
    theirs = umoci_unpack(layout, "v1", str(tmp_path / "bundle"))
    ours = tmp_path / "out"
    imgvol.unpack(rich.ref, ours)
    a = walk(str(ours))
    b = filter_tree(walk(theirs), exclude_types=DEVICE_TYPES)   # umoci mknods as root
    assert_trees_equal(a, b, "imgvol", "umoci")
    assert hardlink_groups(str(ours)) == hardlink_groups(theirs)


def test_unpack_whiteouts_and_opaque_dirs(imgvol, registry, publish, tmp_path):
    entries = whiteout_entries()
    info = publish.image(registry.host, "e2e/whiteouts", "v1",
                         [Layer(e, "gzip") for e in entries])
    out = tmp_path / "out"
    imgvol.unpack(info.ref, out)
    got = walk(str(out))
    assert_trees_equal(expected_tree(entries), got, "model", "imgvol")
    assert not any(".wh." in p for p in got), format_tree(got)
    assert sorted(got) == ["a", "a/2", "a/sub", "b", "b/keep", "c", "c/upper"], format_tree(got)


def test_unpack_into_empty_existing_dir(imgvol, registry, publish, tmp_path):
    entries = whiteout_entries()
    info = publish.image(registry.host, "e2e/whiteouts", "v1",
                         [Layer(e, "gzip") for e in entries])
    out = tmp_path / "empty"
    out.mkdir()
    imgvol.unpack(info.ref, out)
    assert (out / "c" / "upper").read_text() == "u"


def test_unpack_refuses_non_empty_dir(imgvol, registry, publish, tmp_path):
    entries = whiteout_entries()
    info = publish.image(registry.host, "e2e/whiteouts", "v1",
                         [Layer(e, "gzip") for e in entries])
    out = tmp_path / "busy"
    out.mkdir()
    (out / "precious").write_text("keep me")
    res = imgvol.run("unpack", info.ref, out, "--tls-verify=false")
    assert_error(res, str(out))
    assert sorted(os.listdir(out)) == ["precious"]
    assert (out / "precious").read_text() == "keep me"


def test_unpack_dest_is_a_file(imgvol, registry, publish, tmp_path):
    info = publish.image(registry.host, "e2e/whiteouts", "v1",
                         [Layer(e, "gzip") for e in whiteout_entries()])
    f = tmp_path / "afile"
    f.write_text("x")
    res = imgvol.run("unpack", info.ref, f, "--tls-verify=false")
    assert_error(res)
    assert f.read_text() == "x"


def test_unpack_pull_policies(imgvol, registry, publish, make_proxy, tmp_path):
    px = make_proxy(registry.host)
    entries = whiteout_entries()
    layers = [Layer(e, "gzip") for e in entries]
    publish.image(px.host, "e2e/policy", "v1", layers)
    ref = f"{px.host}/e2e/policy:v1"

    # never, not cached: fails without touching the registry
    px.reset()
    res = imgvol.run("unpack", ref, tmp_path / "o0", "--pull", "never", "--tls-verify=false")
    assert_error(res)
    px.settle()
    assert px.snapshot() == [], "--pull never must not contact the registry"

    # missing (default), not cached: pulls
    imgvol.unpack(ref, tmp_path / "o1")
    px.settle()
    assert px.blob_gets(), "the first unpack had to fetch blobs"
    assert imgvol.image(ref) is not None, "unpack --pull missing should leave the image cached"

    # missing, cached: no registry traffic at all
    px.reset()
    imgvol.unpack(ref, tmp_path / "o2", "--pull", "missing")
    px.settle()
    assert px.snapshot() == [], [(r.method, r.path) for r in px.snapshot()]

    # always: at least asks for the manifest again; blobs are already cached
    px.reset()
    imgvol.unpack(ref, tmp_path / "o3", "--pull", "always")
    px.settle()
    assert px.manifest_requests(), "--pull always must re-resolve the reference"
    assert not px.blob_gets(), "cached blobs must not be downloaded again"

    # never, cached: works with the registry gone
    registry.stop()
    imgvol.unpack(ref, tmp_path / "o4", "--pull", "never")
    for d in ("o1", "o2", "o3", "o4"):
        assert_trees_equal(expected_tree(entries), walk(str(tmp_path / d)), "model", d)


def test_unpack_bad_pull_policy(imgvol, registry, publish, tmp_path):
    info = publish.image(registry.host, "e2e/whiteouts", "v1",
                         [Layer(e, "gzip") for e in whiteout_entries()])
    res = imgvol.run("unpack", info.ref, tmp_path / "o", "--pull", "sometimes",
                     "--tls-verify=false")
    assert res.rc != 0, res.describe()
    assert "sometimes" in res.stderr, res.describe()


def test_unpack_is_independent_of_cache(imgvol, rich, tmp_path):
    """Changing the unpacked tree must not change the cache: a second unpack is pristine."""
    a = tmp_path / "a"
    imgvol.unpack(rich.ref, a)
    (a / "etc" / "passwd").write_text("tampered")
    os.chmod(a / "usr" / "bin" / "tool", 0o777)
    b = tmp_path / "b"
    imgvol.unpack(rich.ref, b, "--pull", "never")
    expected = filter_tree(expected_tree(rich.entries), exclude_types=DEVICE_TYPES)
    assert_trees_equal(expected, walk(str(b)), "model", "second unpack")
