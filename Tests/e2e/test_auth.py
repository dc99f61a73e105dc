"""Registry authentication: htpasswd (Basic) and the Docker token protocol (Bearer)."""

import base64
import json

import pytest

from support.cli import assert_error
from support.images import small_layers


def write_authfile(path, host, user, password, style="auth"):
    if style == "auth":
        entry = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    else:
        entry = {"username": user, "password": password}
    path.write_text(json.dumps({"auths": {host: entry}}))
    return path


@pytest.fixture
def basic_image(auth_registry, publish):
    return publish.image(auth_registry.host, "e2e/private", "v1", small_layers(),
                         creds="alice:secret")


# -- htpasswd ----------------------------------------------------------------------------

def test_basic_without_creds_fails(imgvol, basic_image):
    res = imgvol.run("pull", basic_image.ref, "--tls-verify=false")
    assert_error(res, "auth", ignore_case=True)
    assert "e2e/private" in res.stderr, res.describe()
    assert imgvol.images() == []


def test_basic_wrong_password_fails(imgvol, basic_image):
    res = imgvol.run("pull", basic_image.ref, "--tls-verify=false", "--creds", "alice:wrong")
    assert_error(res, "refused the credentials", "--creds")
    assert "log in with" not in res.stderr, res.describe()
    assert "wrong" not in res.stderr, f"the password must not be echoed\n{res.describe()}"


def test_basic_with_creds(imgvol, basic_image):
    assert imgvol.pull(basic_image.ref, "--creds", "alice:secret") == basic_image.manifest_digest


def test_basic_creds_are_not_stored_in_root(imgvol, basic_image, root):
    imgvol.pull(basic_image.ref, "--creds", "alice:secret")
    for path in root.rglob("*"):
        if path.is_file() and path.stat().st_size < (1 << 20):
            data = path.read_bytes()
            assert b"secret" not in data, f"password found in {path}"
            assert base64.b64encode(b"alice:secret") not in data, f"credentials found in {path}"


def test_basic_with_authfile(imgvol, basic_image, auth_registry, tmp_path):
    af = write_authfile(tmp_path / "auth.json", auth_registry.host, "alice", "secret")
    assert imgvol.pull(basic_image.ref, "--authfile", af) == basic_image.manifest_digest


def test_basic_with_registry_auth_file_env(imgvol, basic_image, auth_registry, tmp_path):
    af = write_authfile(tmp_path / "auth.json", auth_registry.host, "alice", "secret")
    d = imgvol.pull(basic_image.ref, extra_env={"REGISTRY_AUTH_FILE": str(af)})
    assert d == basic_image.manifest_digest


def test_authfile_for_other_host_does_not_help(imgvol, basic_image, tmp_path):
    af = write_authfile(tmp_path / "auth.json", "127.0.0.1:1", "alice", "secret")
    res = imgvol.run("pull", basic_image.ref, "--tls-verify=false", "--authfile", af)
    assert_error(res, "auth", ignore_case=True)


def test_missing_authfile_is_an_error(imgvol, basic_image, tmp_path):
    missing = tmp_path / "nope" / "auth.json"
    res = imgvol.run("pull", basic_image.ref, "--tls-verify=false", "--authfile", missing)
    assert_error(res, str(missing))


def test_malformed_authfile_is_an_error(imgvol, basic_image, tmp_path):
    af = tmp_path / "auth.json"
    af.write_text("{not json")
    res = imgvol.run("pull", basic_image.ref, "--tls-verify=false", "--authfile", af)
    assert_error(res, str(af))


def test_creds_flag_wins_over_authfile(imgvol, basic_image, auth_registry, tmp_path):
    af = write_authfile(tmp_path / "auth.json", auth_registry.host, "alice", "wrong")
    d = imgvol.pull(basic_image.ref, "--authfile", af, "--creds", "alice:secret")
    assert d == basic_image.manifest_digest


def test_unpack_with_creds(imgvol, basic_image, tmp_path):
    out = tmp_path / "out"
    imgvol.unpack(basic_image.ref, out, "--creds", "alice:secret")
    assert (out / "etc" / "os-release").exists()


# -- token ---------------------------------------------------------------------------------

@pytest.fixture
def token_image(token_registry, publish):
    info = publish.image(token_registry.host, "e2e/tokened", "v1", small_layers(),
                         creds="alice:secret")
    token_registry.token_issuer.clear()
    return info


def test_token_anonymous_refused(imgvol, token_image, token_registry):
    res = imgvol.run("pull", token_image.ref, "--tls-verify=false")
    assert_error(res, "auth", ignore_case=True)
    assert token_registry.token_issuer.requests, "imgvol never asked the token endpoint"
    assert imgvol.images() == []


def test_token_with_creds(imgvol, token_image, token_registry):
    assert imgvol.pull(token_image.ref, "--creds", "alice:secret") == \
        token_image.manifest_digest
    reqs = token_registry.token_issuer.requests
    ok = [r for r in reqs if r["status"] == 200]
    assert ok, reqs
    assert all(r["user"] == "alice" for r in ok), reqs
    assert all(r["service"] == token_registry.service for r in ok), reqs
    scopes = token_registry.token_issuer.seen_scopes()
    assert "repository:e2e/tokened:pull" in scopes, scopes
    assert not any("push" in s for s in scopes), f"a pull must only ask for pull: {scopes}"


def test_token_wrong_password(imgvol, token_image):
    res = imgvol.run("pull", token_image.ref, "--tls-verify=false", "--creds", "alice:nope")
    assert_error(res, "refused the credentials", "--creds")
    assert "nope" not in res.stderr, f"the password must not be echoed\n{res.describe()}"


@pytest.mark.parametrize("content", [None, "{not json"])
def test_explicit_authfile_is_checked_for_an_anonymous_registry(imgvol, registry, publish, tmp_path, content):
    """podman fails at once on a bad --authfile; so does imgvol, even when no auth is asked."""
    info = publish.image(registry.host, "e2e/anon", "v1", small_layers())
    af = tmp_path / "auth.json"
    if content is not None:
        af.write_text(content)
    res = imgvol.run("pull", info.ref, "--tls-verify=false", "--authfile", af)
    assert_error(res, str(af), "auth file")
    assert imgvol.images() == []


def test_token_with_authfile(imgvol, token_image, token_registry, tmp_path):
    af = write_authfile(tmp_path / "auth.json", token_registry.host, "alice", "secret")
    assert imgvol.pull(token_image.ref, "--authfile", af) == token_image.manifest_digest


def test_token_anonymous_pull_allowed(imgvol, make_registry, publish):
    reg = make_registry(auth="token", users={"alice": "secret"}, anonymous_pull=True)
    info = publish.image(reg.host, "e2e/public", "v1", small_layers(), creds="alice:secret")
    reg.token_issuer.clear()
    assert imgvol.pull(info.ref) == info.manifest_digest
    ok = [r for r in reg.token_issuer.requests if r["status"] == 200]
    assert ok and all(r["user"] is None for r in ok), reg.token_issuer.requests


def test_token_es256(imgvol, make_registry, publish):
    reg = make_registry(auth="token", users={"alice": "secret"}, token_alg="ES256")
    info = publish.image(reg.host, "e2e/es", "v1", small_layers(), creds="alice:secret")
    assert imgvol.pull(info.ref, "--creds", "alice:secret") == info.manifest_digest
