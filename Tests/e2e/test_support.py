"""Self-tests of the harness (no imgvol needed): if these fail, the other failures are
the harness's fault, not imgvol's."""

import base64
import json
import os
import subprocess
import tempfile
import urllib.request

import pytest

from conftest import umoci_unpack
from support import oci_layout
from support.images import rich_entries, whiteout_entries
from support.oci_layout import MT_OCI_LAYER_ZSTD, File, Layer, Platform, sha256_digest
from support.registry import copy_image
from support.tree import assert_trees_equal, expected_tree, filter_tree, walk


def test_registry_roundtrip_preserves_digests(registry, publish):
    layers = [Layer([File("a", "a")], "gzip"), Layer([File("b", "b")], "zstd"),
              Layer([File("c", "c")], "none")]
    info = publish.image(registry.host, "self/rt", "v1", layers)
    st, h, body = registry.request("GET", "/v2/self/rt/manifests/v1",
                                   {"Accept": oci_layout.MT_OCI_MANIFEST})
    assert st == 200 and sha256_digest(body) == info.manifest_digest
    assert json.loads(body)["layers"][1]["mediaType"] == MT_OCI_LAYER_ZSTD
    for layer in layers:
        st, h, body = registry.request("GET", f"/v2/self/rt/blobs/{layer.digest}")
        assert st == 200 and body == layer.blob


def test_docker_schema2_and_index_roundtrip(registry, publish):
    d = publish.image(registry.host, "self/docker", "v1", [Layer([File("a", "a")])], docker=True)
    st, h, body = registry.request("GET", "/v2/self/docker/manifests/v1",
                                   {"Accept": oci_layout.MT_DOCKER_MANIFEST})
    assert h["Content-Type"] == oci_layout.MT_DOCKER_MANIFEST
    assert sha256_digest(body) == d.manifest_digest
    idx = publish.index(registry.host, "self/idx", "v1",
                        [Platform("linux", "amd64", layers=[Layer([File("x", "1")])]),
                         Platform("linux", "arm64", "v8", layers=[Layer([File("x", "2")])])])
    st, h, body = registry.request("GET", "/v2/self/idx/manifests/v1",
                                   {"Accept": oci_layout.MT_OCI_INDEX})
    assert sha256_digest(body) == idx.index_digest


def test_htpasswd_registry(auth_registry, publish):
    publish.image(auth_registry.host, "self/p", "v1", [Layer([File("a", "a")])],
                  creds="alice:secret")
    assert auth_registry.request("GET", "/v2/self/p/tags/list")[0] == 401
    st, _, body = auth_registry.request("GET", "/v2/self/p/tags/list", creds="alice:secret")
    assert st == 200 and json.loads(body)["tags"] == ["v1"]


def test_token_registry_rejects_forged_tokens(token_registry, make_registry, publish):
    publish.image(token_registry.host, "self/t", "v1", [Layer([File("a", "a")])],
                  creds="alice:secret")
    st, h, _ = token_registry.request("GET", "/v2/self/t/manifests/v1")
    assert st == 401 and h["Www-Authenticate"].startswith("Bearer ")
    assert f'realm="{token_registry.token_issuer.realm}"' in h["Www-Authenticate"]
    good = token_registry.token_issuer.make_token(
        "alice", [{"type": "repository", "name": "self/t", "actions": ["pull"]}])
    accept = {"Accept": oci_layout.MT_OCI_MANIFEST}
    st, _, _ = token_registry.request("GET", "/v2/self/t/manifests/v1",
                                      {**accept, "Authorization": f"Bearer {good}"})
    assert st == 200
    # a token from another issuer key, and one for another repository, are refused
    other = make_registry(auth="token")
    forged = other.token_issuer.make_token(
        "alice", [{"type": "repository", "name": "self/t", "actions": ["pull"]}])
    st, _, _ = token_registry.request("GET", "/v2/self/t/manifests/v1",
                                      {**accept, "Authorization": f"Bearer {forged}"})
    assert st == 401
    wrong_repo = token_registry.token_issuer.make_token(
        "alice", [{"type": "repository", "name": "self/other", "actions": ["pull"]}])
    st, _, _ = token_registry.request("GET", "/v2/self/t/manifests/v1",
                                      {**accept, "Authorization": f"Bearer {wrong_repo}"})
    assert st == 401
    expired = token_registry.token_issuer.make_token(
        "alice", [{"type": "repository", "name": "self/t", "actions": ["pull"]}], expires_in=-600)
    st, _, _ = token_registry.request("GET", "/v2/self/t/manifests/v1",
                                      {**accept, "Authorization": f"Bearer {expired}"})
    assert st == 401


def test_token_issuer_policy(token_registry):
    iss = token_registry.token_issuer
    url = f"{iss.realm}?service={token_registry.service}&scope=repository:x/y:pull"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(url, timeout=5)
    assert e.value.code == 401
    req = urllib.request.Request(url, headers={
        "Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()})
    with opener.open(req, timeout=5) as resp:
        data = json.loads(resp.read())
    assert data["token"] == data["access_token"] and data["expires_in"] == 300
    header = json.loads(base64.urlsafe_b64decode(data["token"].split(".")[0] + "=="))
    assert header["alg"] == "RS256" and header["x5c"]
    assert [r["user"] for r in iss.requests] == [None, "alice"]
    assert iss.seen_scopes() == ["repository:x/y:pull", "repository:x/y:pull"]


def test_skopeo_pull_through_token_auth(token_registry, publish, tmp_path):
    publish.image(token_registry.host, "self/s", "v1", [Layer([File("a", "a")])],
                  creds="alice:secret")
    copy_image(f"docker://{token_registry.host}/self/s:v1", f"oci:{tmp_path}/o:v1",
               src_creds="alice:secret")
    with pytest.raises(RuntimeError):
        copy_image(f"docker://{token_registry.host}/self/s:v1", f"oci:{tmp_path}/o2:v1")


def test_proxy_drop_and_range(registry, publish, make_proxy, tmp_path):
    px = make_proxy(registry.host)
    layer = Layer([File("big", os.urandom(300_000))], "none")
    publish.image(px.host, "self/px", "v1", [layer])
    px.reset()
    px.set_faults(drop_after=1000, drop_first=1)
    url = f"http://{px.host}/v2/self/px/blobs/{layer.digest}"
    r1 = subprocess.run(["curl", "-sS", "-o", str(tmp_path / "a"), url], capture_output=True)
    assert r1.returncode != 0
    r2 = subprocess.run(["curl", "-sS", "-H", "Range: bytes=1000-", "-o", str(tmp_path / "b"),
                         url], capture_output=True)
    assert r2.returncode == 0
    data = (tmp_path / "a").read_bytes() + (tmp_path / "b").read_bytes()
    assert sha256_digest(data) == layer.digest
    px.settle()
    assert [r.dropped for r in px.blob_gets(layer.digest)] == [True, False]
    assert [r.status for r in px.range_requests()] == [206]
    assert px.full_blob_gets(layer.digest) == []


def test_model_matches_umoci(tmp_path, umoci):
    for name, entries in (("rich", rich_entries()), ("wh", whiteout_entries())):
        layout = str(tmp_path / f"layout-{name}")
        oci_layout.write_image(layout, "v1", [Layer(e, "gzip") for e in entries])
        rootfs = umoci_unpack(layout, "v1", str(tmp_path / f"bundle-{name}"))
        assert_trees_equal(expected_tree(entries), walk(rootfs), "model", "umoci")


def test_artifact_push_roundtrip(registry, tmp_path):
    """support.artifacts: chunked and monolithic uploads, OCI artifact and Docker schema2
    (Ollama) manifests read back byte for byte; a streamed tar is a valid tar."""
    import hashlib
    import tarfile
    from support.artifacts import (MT_OLLAMA, TITLE, BigFile, Blob, Pattern, push_artifact,
                                   push_blob, write_tar_file)
    pat = Pattern((3 << 20) + 12345, seed=3)
    path = tmp_path / "big.bin"
    digest = pat.write(path)
    big = Blob.from_file("application/vnd.example.raw", str(path), {TITLE: "big.bin"})
    assert big.digest == digest                                   # hashed from the file
    assert push_blob(registry, "self/art", big, chunk=1 << 20) == digest   # 4 PATCHes
    st, h, body = registry.request("GET", f"/v2/self/art/blobs/{digest}", timeout=60)
    assert st == 200 and body == pat.bytes()
    assert pat.read_at((1 << 20) - 3, 10) == body[(1 << 20) - 3:(1 << 20) + 7]

    small = Blob("application/vnd.oci.image.layer.v1.tar", b"not a tar", {TITLE: "a/b.bin"})
    art = push_artifact(registry, "self/art", "v1", [big, small],
                        artifact_type="application/vnd.example.art")
    st, h, body = registry.request("GET", f"/v2/self/art/manifests/{art.manifest_digest}",
                                   {"Accept": oci_layout.MT_OCI_MANIFEST})
    assert st == 200 and body == art.manifest_bytes
    m = json.loads(body)
    assert m["artifactType"] == "application/vnd.example.art"
    assert [l["annotations"][TITLE] for l in m["layers"]] == ["big.bin", "a/b.bin"]
    assert art.reference == f"{registry.host}/self/art:v1"

    ollama = push_artifact(registry, "self/ollama", "v1",
                           [Blob(MT_OLLAMA + "template; name=x", b"{{ .Prompt }}")],
                           config_media_type=oci_layout.MT_DOCKER_CONFIG,
                           config={"model_format": "gguf"},
                           manifest_media_type=oci_layout.MT_DOCKER_MANIFEST)
    st, h, body = registry.request("GET", "/v2/self/ollama/manifests/v1",
                                   {"Accept": oci_layout.MT_DOCKER_MANIFEST})
    assert st == 200 and body == ollama.manifest_bytes
    assert h["Content-Type"] == oci_layout.MT_DOCKER_MANIFEST

    tar_path = tmp_path / "layer.tar"
    blob_digest, diff_id = write_tar_file(tar_path, [BigFile("d/big.bin", pat)])
    assert blob_digest == diff_id == "sha256:" + hashlib.sha256(tar_path.read_bytes()).hexdigest()
    with tarfile.open(tar_path) as tf:
        assert tf.extractfile("d/big.bin").read() == pat.bytes()
