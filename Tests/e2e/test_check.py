"""`imgvol check [--repair]`: every stored byte against the digest that names it."""

import json
import os

from support.cli import assert_error
from support.damage import flip
from support.images import T0
from support.oci_layout import File, Layer


def big_image(registry, publish):
    big = os.urandom(3 << 20)
    small = Layer([File("small.txt", "s\n" * 200, mtime=T0)], "gzip")
    info = publish.image(registry.host, "e2e/check", "v1",
                         [Layer([File("big.bin", big, mtime=T0)], "gzip"), small])
    return info, big



def check_json(imgvol, *args):
    res = imgvol.run("check", "--format", "json", "--tls-verify=false", *args)
    return res, json.loads(res.stdout)


def test_check_finds_and_repairs_flipped_bits(imgvol, registry, publish, mounter, root):
    info, big = big_image(registry, publish)
    digest = imgvol.pull(info.ref)
    res, out = check_json(imgvol)
    assert res.rc == 0, res.describe()
    assert out["checked"]["damage"] == [] and out["checked"]["layers"] == 2

    # One bit in a big file stored apart, one in the config blob.
    apart = [p for p in (root / "layers").rglob("*") if p.is_file() and p.parent.name.endswith(".files")]
    assert apart, "the big file was expected to be stored apart"
    flip(apart[0], 12345)
    flip(root / "blobs" / "sha256" / info.config_digest.split(":")[1], 3)

    res, out = check_json(imgvol)
    assert res.rc == 1 and "imgvol check --repair" in res.stderr, res.describe()
    damaged = {(d["part"], d["digest"]) for d in out["checked"]["damage"]}
    assert damaged == {("layer", info.diff_ids[0]), ("blob", info.config_digest)}, out
    assert all(d["images"] == [digest] for d in out["checked"]["damage"])
    assert_error(imgvol.run("check", info.ref), "damaged part")

    res, out = check_json(imgvol, "--repair")
    assert res.rc == 0, res.describe()
    assert out["repulled"] == [info.ref] and out["afterRepair"]["damage"] == []
    assert any((root / "damaged").iterdir()), "the damaged parts were not kept aside"
    assert imgvol.run("check").rc == 0

    mp = mounter.mount_ok(info.ref, None, "--pull", "never")
    with open(os.path.join(mp, "big.bin"), "rb") as f:
        assert f.read() == big
    assert mounter.unmount(mp).rc == 0


def test_check_repair_without_registry_keeps_failing(imgvol, registry, publish, root):
    info, _ = big_image(registry, publish)
    imgvol.pull(info.ref)
    # A header byte (in a split tar, file bytes sit in holes nobody reads).
    tar = next((root / "layers").glob("*.tar"))
    flip(tar, 10)
    registry.stop()
    res, out = check_json(imgvol, "--repair")
    assert res.rc == 1, res.describe()
    assert out["afterRepair"]["damage"], out
    assert out["repairErrors"] and info.ref in out["repairErrors"][0]
