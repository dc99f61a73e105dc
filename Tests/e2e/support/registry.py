"""A throwaway docker-registry (distribution 2.8) on a loopback port, for tests.

Usage::

    from support.registry import Registry, push_layout

    with Registry() as reg:                       # plain, anonymous
        push_layout("/tmp/layout", "v1", reg.host, "demo/app", "v1")

    with Registry(auth="htpasswd", users={"alice": "secret"}) as reg:
        push_layout(..., creds="alice:secret")

    with Registry(auth="token", users={"alice": "secret"}, anonymous_pull=True) as reg:
        ...
        reg.token_issuer.requests      # what the token endpoint saw

Everything listens on 127.0.0.1 only.  ``stop()`` (and ``__exit__``) kills the
registry by PID (SIGTERM, then SIGKILL) and removes the temp directory; an
``atexit`` hook does the same for registries a crashed test left behind.

Only the standard library, ``cryptography`` (token mode) and the
``docker-registry``, ``htpasswd`` and ``skopeo`` binaries are needed.
"""

from __future__ import annotations

import atexit
import base64
import datetime as _dt
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import weakref
from typing import Dict, List, Optional

DOCKER_REGISTRY = os.environ.get("DOCKER_REGISTRY_BIN", "docker-registry")
SKOPEO = os.environ.get("SKOPEO_BIN", "skopeo")

_LIVE: "weakref.WeakSet[Registry]" = weakref.WeakSet()


def _cleanup_all() -> None:
    for reg in list(_LIVE):
        try:
            reg.stop()
        except Exception:
            pass


atexit.register(_cleanup_all)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (racy by nature; callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def clean_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """os.environ without HTTP proxy settings (all traffic stays on loopback)."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    if extra:
        env.update(extra)
    return env


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key) -> str:
    """The libtrust key ID docker-registry derives from a public key (used as JWT `kid`)."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(b32[i:i + 4] for i in range(0, len(b32), 4))


# --------------------------------------------------------------------------------------
# Token issuer (Docker registry token protocol)
# --------------------------------------------------------------------------------------

class TokenIssuer:
    """Docker token endpoint on 127.0.0.1:<port>/token, signing RS256 or ES256 JWTs.

    ``requests`` records every request seen: dicts with keys ``method``, ``path``,
    ``service``, ``scopes`` (list of requested scope strings), ``user`` (None when
    anonymous), ``status`` (HTTP status answered) and ``access`` (the granted
    access claim).
    """

    def __init__(self, users: Dict[str, str], service: str, issuer: str,
                 anonymous_pull: bool = False, alg: str = "RS256",
                 workdir: Optional[str] = None, expires_in: int = 300):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.x509.oid import NameOID

        if alg not in ("RS256", "ES256"):
            raise ValueError("alg must be RS256 or ES256")
        self.users = dict(users)
        self.service = service
        self.issuer = issuer
        self.anonymous_pull = anonymous_pull
        self.alg = alg
        self.expires_in = expires_in
        self.requests: List[dict] = []
        self._lock = threading.Lock()

        if alg == "RS256":
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imgvol-e2e-token-issuer")])
        now = _dt.datetime.now(_dt.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(days=1))
            .not_valid_after(now + _dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self._cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.kid = libtrust_key_id(self._key.public_key())
        self.cert_path: Optional[str] = None
        if workdir:
            self.cert_path = os.path.join(workdir, "token-root.pem")
            with open(self.cert_path, "wb") as f:
                f.write(self.cert_pem)

        self.port: Optional[int] = None
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- JWT ---------------------------------------------------------------------------
    def _sign(self, signing_input: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        if self.alg == "RS256":
            return self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        der = self._key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def make_token(self, subject: str, access: List[dict], expires_in: Optional[int] = None) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": self.alg, "kid": self.kid,
                  "x5c": [base64.b64encode(self._cert_der).decode("ascii")]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + (self.expires_in if expires_in is None else expires_in),
            "nbf": now - 60,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         _b64url(json.dumps(claims, separators=(",", ":")).encode())).encode()
        return signing_input.decode() + "." + _b64url(self._sign(signing_input))

    # -- policy --------------------------------------------------------------------------
    @staticmethod
    def parse_scope(scope: str):
        """'repository:a/b:pull,push' -> ('repository', 'a/b', ['pull', 'push'])."""
        # The name may itself contain ':' (registry:catalog:*); type is first, actions last.
        typ, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        return typ, name, [a for a in actions.split(",") if a]

    def grant(self, user: Optional[str], scopes: List[str]) -> List[dict]:
        access = []
        for scope in scopes:
            for one in scope.split(" "):
                if not one:
                    continue
                typ, name, actions = self.parse_scope(one)
                if user is None:
                    allowed = [a for a in actions if a == "pull"] if typ == "repository" else []
                else:
                    allowed = actions
                if allowed:
                    access.append({"type": typ, "name": name, "actions": allowed})
        return access

    # -- HTTP server ---------------------------------------------------------------------
    def start(self) -> None:
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # quiet
                pass

            def _answer(self, status: int, body: dict, extra_headers=None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra_headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, params: Dict[str, List[str]]):
                url = urllib.parse.urlsplit(self.path)
                record = {"method": self.command, "path": url.path,
                          "service": (params.get("service") or [None])[0],
                          "scopes": list(params.get("scope", [])),
                          "user": None, "status": None, "access": None,
                          "time": time.time()}
                # recorded before answering, so a client that got the answer sees it
                with issuer._lock:
                    issuer.requests.append(record)
                if url.path != "/token":
                    record["status"] = 404
                    return self._answer(404, {"errors": [{"code": "NOT_FOUND"}]})
                user = None
                authz = self.headers.get("Authorization", "")
                if authz.lower().startswith("basic "):
                    try:
                        raw = base64.b64decode(authz[6:].strip()).decode("utf-8")
                        u, _, p = raw.partition(":")
                    except Exception:
                        u, p = None, None
                    if u is None or issuer.users.get(u) != p:
                        record["status"] = 401
                        return self._answer(401, {"errors": [{"code": "UNAUTHORIZED",
                                                              "message": "bad credentials"}]},
                                            {"WWW-Authenticate": 'Basic realm="imgvol-e2e"'})
                    user = u
                elif self.command == "POST" and params.get("grant_type") == ["password"]:
                    u = (params.get("username") or [""])[0]
                    p = (params.get("password") or [""])[0]
                    if issuer.users.get(u) != p:
                        record["status"] = 401
                        return self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                    user = u
                record["user"] = user
                if user is None and not issuer.anonymous_pull:
                    record["status"] = 401
                    return self._answer(401, {"errors": [{"code": "UNAUTHORIZED",
                                                          "message": "authentication required"}]},
                                        {"WWW-Authenticate": 'Basic realm="imgvol-e2e"'})
                if record["service"] not in (None, issuer.service):
                    record["status"] = 400
                    return self._answer(400, {"errors": [{"code": "INVALID_SERVICE"}]})
                access = issuer.grant(user, record["scopes"])
                record["access"] = access
                token = issuer.make_token(user or "", access)
                record["status"] = 200
                now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                return self._answer(200, {"token": token, "access_token": token,
                                          "expires_in": issuer.expires_in, "issued_at": now})

            def do_GET(self):
                self._handle(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
                params = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                for k, v in urllib.parse.parse_qs(body).items():
                    params.setdefault(k, []).extend(v)
                self._handle(params)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="token-issuer", daemon=True)
        self._thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def seen_scopes(self) -> List[str]:
        with self._lock:
            return [s for r in self.requests for s in r["scopes"]]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()


# --------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------

class Registry:
    """A docker-registry process on 127.0.0.1:<free port> with filesystem storage.

    auth: None (anonymous read/write), "htpasswd" (Basic, bcrypt) or "token"
    (Bearer tokens from a TokenIssuer in this process).
    users: {name: password}; default {"alice": "secret"}.
    tmpdir: parent directory for the registry's own temp dir (config, htpasswd, token
    certificate, log, storage); default: the system temp dir.  Removed by stop().
    anonymous_pull (token only): anonymous token requests get pull-only tokens instead
    of 401.  token_alg: "RS256" or "ES256".
    """

    def __init__(self, auth: Optional[str] = None, users: Optional[Dict[str, str]] = None,
                 tmpdir: Optional[str] = None, anonymous_pull: bool = False,
                 token_alg: str = "RS256", log_level: str = "warn",
                 service: str = "imgvol-e2e-registry", issuer: str = "imgvol-e2e-issuer",
                 start_timeout: float = 20.0):
        if auth not in (None, "htpasswd", "token"):
            raise ValueError(f"unknown auth mode {auth!r}")
        self.auth = auth
        self.users = dict(users) if users is not None else {"alice": "secret"}
        self.anonymous_pull = anonymous_pull
        self.token_alg = token_alg
        self.log_level = log_level
        self.service = service
        self.issuer = issuer
        self.start_timeout = start_timeout
        self._parent_tmp = tmpdir
        self.workdir: Optional[str] = None
        self.storage_dir: Optional[str] = None
        self.config_path: Optional[str] = None
        self.log_path: Optional[str] = None
        self.port: Optional[int] = None
        self.host: Optional[str] = None
        self.pid: Optional[int] = None
        self.token_issuer: Optional[TokenIssuer] = None
        self._proc: Optional[subprocess.Popen] = None
        self._log_file = None

    # -- convenience ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def creds(self) -> Optional[str]:
        """'user:pass' of the first configured user (None for auth=None)."""
        if self.auth is None or not self.users:
            return None
        u, p = next(iter(self.users.items()))
        return f"{u}:{p}"

    def __enter__(self) -> "Registry":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Registry {self.host} auth={self.auth} pid={self.pid}>"

    # -- lifecycle -----------------------------------------------------------------------
    def _write_config(self) -> None:
        lines = [
            "version: 0.1",
            "log:",
            f"  level: {self.log_level}",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage_dir}",
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            f"  secret: {uuid.uuid4().hex}",
        ]
        if self.auth == "htpasswd":
            htpasswd_path = os.path.join(self.workdir, "htpasswd")
            with open(htpasswd_path, "w") as f:
                for user, password in self.users.items():
                    out = subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                                         capture_output=True, text=True).stdout
                    f.write(out.strip() + "\n")
            lines += ["auth:", "  htpasswd:", "    realm: imgvol-e2e",
                      f"    path: {htpasswd_path}"]
        elif self.auth == "token":
            assert self.token_issuer is not None
            lines += ["auth:", "  token:",
                      f"    realm: {self.token_issuer.realm}",
                      f"    service: {self.service}",
                      f"    issuer: {self.issuer}",
                      f"    rootcertbundle: {self.token_issuer.cert_path}"]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self) -> "Registry":
        if self._proc is not None:
            return self
        self.workdir = tempfile.mkdtemp(prefix="imgvol-registry-", dir=self._parent_tmp)
        self.storage_dir = os.path.join(self.workdir, "storage")
        os.makedirs(self.storage_dir)
        self.config_path = os.path.join(self.workdir, "config.yml")
        self.log_path = os.path.join(self.workdir, "registry.log")
        _LIVE.add(self)
        try:
            if self.auth == "token":
                self.token_issuer = TokenIssuer(self.users, self.service, self.issuer,
                                                anonymous_pull=self.anonymous_pull,
                                                alg=self.token_alg, workdir=self.workdir)
                self.token_issuer.start()
            last_err = None
            for _attempt in range(5):
                self.port = free_port()
                self.host = f"127.0.0.1:{self.port}"
                self._write_config()
                self._log_file = open(self.log_path, "ab")
                self._proc = subprocess.Popen([DOCKER_REGISTRY, "serve", self.config_path],
                                              stdin=subprocess.DEVNULL, stdout=self._log_file,
                                              stderr=subprocess.STDOUT, env=clean_env(),
                                              start_new_session=True)
                self.pid = self._proc.pid
                try:
                    self._wait_ready()
                    return self
                except Exception as e:  # port raced away, or a real failure
                    last_err = e
                    self._kill_proc()
            raise RuntimeError(f"docker-registry did not start: {last_err}\n--- log ---\n{self.log()}")
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        opener = _no_proxy_opener()
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self._proc.returncode}")
            try:
                with opener.open(f"http://{self.host}/v2/", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"docker-registry on {self.host} not ready after {self.start_timeout}s")

    def _kill_proc(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self, keep_dir: bool = False) -> None:
        self._kill_proc()
        if self.token_issuer is not None:
            self.token_issuer.stop()
        if self.workdir and not keep_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        _LIVE.discard(self)

    def log(self) -> str:
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    # -- storage helpers -----------------------------------------------------------------
    def blob_path(self, digest: str) -> str:
        """The on-disk path of a blob in the registry's filesystem storage."""
        algo, _, hexd = digest.partition(":")
        return os.path.join(self.storage_dir, "docker", "registry", "v2", "blobs", algo,
                            hexd[:2], hexd, "data")

    def replace_blob(self, digest: str, data: bytes) -> None:
        """Overwrite a stored blob's bytes (registry serves them without re-verifying)."""
        path = self.blob_path(digest)
        if not os.path.exists(path):
            raise FileNotFoundError(f"blob {digest} not in registry storage ({path})")
        with open(path, "wb") as f:
            f.write(data)

    def corrupt_blob(self, digest: str) -> bytes:
        """Flip one byte in the middle of a stored blob (same size); returns the new bytes."""
        path = self.blob_path(digest)
        with open(path, "rb") as f:
            data = bytearray(f.read())
        i = len(data) // 2
        data[i] ^= 0xFF
        with open(path, "wb") as f:
            f.write(bytes(data))
        return bytes(data)

    # -- tiny HTTP client (assertions) -----------------------------------------------------
    def request(self, method: str, path: str, headers: Optional[Dict[str, str]] = None,
                creds: Optional[str] = None, data: Optional[bytes] = None, timeout: float = 10):
        """Plain request to the registry; returns (status, headers, body). No auth dance
        except Basic credentials when given."""
        req = urllib.request.Request(f"http://{self.host}{path}", method=method, data=data,
                                     headers=dict(headers or {}))
        if creds:
            req.add_header("Authorization",
                           "Basic " + base64.b64encode(creds.encode()).decode())
        try:
            with _no_proxy_opener().open(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()


# --------------------------------------------------------------------------------------
# Pushing with skopeo
# --------------------------------------------------------------------------------------

def _skopeo_copy(args: List[str], timeout: float) -> subprocess.CompletedProcess:
    cmd = [SKOPEO, "--insecure-policy", "copy", "--quiet", "--retry-times", "0"] + args
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean_env(
        {"REGISTRY_AUTH_FILE": os.devnull}))
    if proc.returncode != 0:
        raise RuntimeError(f"skopeo failed ({proc.returncode}): {' '.join(cmd)}\n"
                           f"{proc.stdout}\n{proc.stderr}")
    return proc


_DOCKER_TYPES = ("application/vnd.docker.distribution.manifest.v2+json",
                 "application/vnd.docker.distribution.manifest.list.v2+json")


def _layout_descriptor(layout_dir: str, tag: str) -> dict:
    with open(os.path.join(layout_dir, "index.json")) as f:
        index = json.load(f)
    for d in index.get("manifests", []):
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return d
    raise KeyError(f"tag {tag!r} not in {layout_dir}/index.json")


def _layout_to_dir_transport(layout_dir: str, tag: str, out: str) -> None:
    """skopeo's oci: transport ignores descriptors with Docker media types, so Docker
    schema2 images are pushed from a `dir:` copy (same bytes, blobs hardlinked)."""
    desc = _layout_descriptor(layout_dir, tag)
    blobs = os.path.join(layout_dir, "blobs", "sha256")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(blobs):
        try:
            os.link(os.path.join(blobs, name), os.path.join(out, name))
        except OSError:
            shutil.copyfile(os.path.join(blobs, name), os.path.join(out, name))
    top_hex = desc["digest"].split(":", 1)[1]
    with open(os.path.join(blobs, top_hex), "rb") as f:
        top = f.read()
    with open(os.path.join(out, "manifest.json"), "wb") as f:
        f.write(top)
    for child in json.loads(top).get("manifests", []):
        hexd = child["digest"].split(":", 1)[1]
        shutil.copyfile(os.path.join(blobs, hexd), os.path.join(out, hexd + ".manifest.json"))
    with open(os.path.join(out, "version"), "w") as f:
        f.write("Directory Transport Version: 1.1\n")


def _push(layout_dir: str, tag: str, registry_host: str, repo: str, dest_tag: str,
          creds: Optional[str], all_images: bool, timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="imgvol-push-") as td:
        src = f"oci:{os.path.abspath(layout_dir)}:{tag}"
        if _layout_descriptor(layout_dir, tag).get("mediaType") in _DOCKER_TYPES:
            _layout_to_dir_transport(layout_dir, tag, os.path.join(td, "dir"))
            src = f"dir:{os.path.join(td, 'dir')}"
        digestfile = os.path.join(td, "digest")
        args = ["--dest-tls-verify=false", "--preserve-digests",
                "--digestfile", digestfile]
        if all_images:
            args.append("--all")
        if creds:
            args += ["--dest-creds", creds]
        else:
            args.append("--dest-no-creds")
        args += [src, f"docker://{registry_host}/{repo}:{dest_tag}"]
        _skopeo_copy(args, timeout)
        with open(digestfile) as f:
            return f.read().strip()


def push_layout(layout_dir: str, tag: str, registry_host: str, repo: str, dest_tag: str,
                creds: Optional[str] = None, timeout: float = 120) -> str:
    """Push the image tagged `tag` in an OCI layout to docker://HOST/REPO:DEST_TAG,
    byte for byte (--preserve-digests: no recompression, no manifest rewrite).
    Returns the manifest digest the registry now holds."""
    return _push(layout_dir, tag, registry_host, repo, dest_tag, creds, False, timeout)


def push_index(layout_dir: str, tag: str, registry_host: str, repo: str, dest_tag: str,
               creds: Optional[str] = None, timeout: float = 180) -> str:
    """Push a multi-arch image index (and all its manifests) unchanged (--all).
    Returns the index digest."""
    return _push(layout_dir, tag, registry_host, repo, dest_tag, creds, True, timeout)


def copy_image(src: str, dst: str, src_creds: Optional[str] = None,
               dst_creds: Optional[str] = None, all_images: bool = False,
               timeout: float = 120) -> None:
    """Generic skopeo copy between transports (e.g. docker:// -> oci:), loopback only."""
    args = ["--src-tls-verify=false", "--dest-tls-verify=false", "--preserve-digests"]
    if all_images:
        args.append("--all")
    args += ["--src-creds", src_creds] if src_creds else ["--src-no-creds"]
    args += ["--dest-creds", dst_creds] if dst_creds else ["--dest-no-creds"]
    _skopeo_copy(args + [src, dst], timeout)
