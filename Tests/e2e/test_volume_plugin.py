"""imgvol volume-plugin: the Docker/podman volume plugin API, directly and through podman.

Each test starts its own plugin (socket in a short temp dir, --root = the test's store)
and points podman at it with a containers.conf of its own ([engine.volume_plugins]).
podman itself uses the session's private storage (``podman_session``).  Teardown, pass or
fail: containers and volumes the test made are removed while the plugin still runs, the
plugin is stopped, and any FUSE mount it left is unmounted.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from support.mounts import (FSTYPE, imgvol_mounts_under, is_mounted, kill_pid, lazy_umount,
                            models_entries, mount_entry, pid_alive, proc_mounts, subtree,
                            wait_until)
from support.images import T0, pseudo_random
from support.oci_layout import Dir, File, Layer
from support.tree import assert_trees_equal, expected_tree, walk

PLUGIN_CT = "application/vnd.docker.plugins.v1.2+json"


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 120):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Plugin:
    def __init__(self, imgvol, root: str, log: Path):
        self.imgvol = imgvol
        self.root = root
        self.dir = tempfile.mkdtemp(prefix="imgvol-plug-", dir="/tmp")
        self.socket = os.path.join(self.dir, "imgvol.sock")
        self.log = log
        self.proc = None

    def start(self):
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            self.imgvol.argv("volume-plugin", "--socket", self.socket, "--log-level", "info"),
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=self.imgvol.env,
            start_new_session=True)
        logf.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"volume-plugin exited with {self.proc.returncode}:\n"
                                     + self.log_text())
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.socket)
                return True
            except OSError:
                return False

        wait_until(ready, 30, what="the volume plugin socket")
        return self

    def log_text(self) -> str:
        try:
            return Path(self.log).read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def api(self, endpoint: str, body: dict, timeout: float = 120):
        """POST /endpoint → (HTTP status, decoded JSON body)."""
        conn = _UnixHTTPConnection(self.socket, timeout)
        try:
            conn.request("POST", endpoint, json.dumps(body).encode(),
                         {"Content-Type": PLUGIN_CT, "Accept": PLUGIN_CT})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(data or b"{}")
        except ValueError:
            raise AssertionError(f"{endpoint}: not JSON: {data[:500]!r}")

    def ok(self, endpoint: str, body: dict, **kw) -> dict:
        st, data = self.api(endpoint, body, **kw)
        assert st == 200 and not data.get("Err"), (endpoint, body, st, data, self.log_text())
        return data

    def terminate(self, sig=signal.SIGTERM):
        """Stop only the plugin process (its socket dir, store and mounts stay)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        return self.proc.returncode

    def fuse_mounts(self):
        return imgvol_mounts_under(self.root)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        # mounts the plugin left: imgvol unmount --force, then umount -l, then their servers
        pids = []
        res = self.imgvol.run("mounts", "--format", "json", timeout=30)
        if res.rc == 0:
            try:
                pids = [p for m in json.loads(res.stdout) for p in (m.get("keeper"), m.get("pid"))
                        if isinstance(p, int)]
            except (ValueError, TypeError, KeyError):
                pass
        for e in reversed(self.fuse_mounts()):
            self.imgvol.run("unmount", e.target, "--force", timeout=30)
            lazy_umount(e.target)
        for pid in pids:
            if pid_alive(pid):
                kill_pid(pid)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def plugin(imgvol, root, tmp_path):
    p = Plugin(imgvol, str(root), tmp_path / "plugin.log").start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def ppm(podman, plugin):
    """podman (private storage) with this test's plugin registered as driver `imgvol`."""
    pm = podman.with_plugin(plugin.socket)
    pm.volumes = []
    yield pm
    pm.podman("rm", "-fa", "-t", "0", timeout=120)         # while the plugin still runs
    for v in pm.volumes:
        pm.podman("volume", "rm", "-f", v, timeout=120)


@pytest.fixture
def models(registry, publish):
    entries = models_entries()
    info = publish.image(registry.host, "e2e/models", "v1", [Layer(e, "gzip") for e in entries])
    info.entries = entries
    info.tree = expected_tree(entries)
    info.files = {p: n.sha256 for p, n in info.tree.items() if n.type == "file"}
    return info


def create_volume(ppm, name, *opts):
    ppm.volumes.append(name)
    args = ["volume", "create", "--driver", "imgvol"]
    for o in opts:
        args += ["--opt", o]
    return ppm.podman(*args, name, timeout=120)


SHA_SCRIPT = "cd /model && find . -type f | sort | xargs sha256sum"


def parse_sha(out: str) -> dict:
    got = {}
    for ln in out.splitlines():
        parts = ln.split(None, 1)
        if len(parts) == 2 and len(parts[0]) == 64:
            got[parts[1].strip()[2:]] = parts[0]
    return got


def volume_mounts(plugin, ref):
    return [e for e in plugin.fuse_mounts() if e.source == f"imgvol:{ref}"]


# -- the plugin API directly ----------------------------------------------------------------

def test_api_activate_and_capabilities(plugin):
    st, data = plugin.api("/Plugin.Activate", {})
    assert st == 200 and "VolumeDriver" in data.get("Implements", []), data
    st, data = plugin.api("/VolumeDriver.Capabilities", {})
    assert st == 200 and data.get("Capabilities", {}).get("Scope") == "local", data


def test_api_volume_lifecycle(plugin, imgvol, models):
    name = "apivol"
    plugin.ok("/VolumeDriver.Create", {"Name": name, "Opts": {"image": models.ref,
                                                              "tls-verify": "false"}})
    vols = plugin.ok("/VolumeDriver.List", {}).get("Volumes") or []
    assert name in [v.get("Name") for v in vols], vols
    got = plugin.ok("/VolumeDriver.Get", {"Name": name})
    assert got.get("Volume", {}).get("Name") == name, got
    assert plugin.fuse_mounts() == [], "Create must not mount"

    mp = plugin.ok("/VolumeDriver.Mount", {"Name": name, "ID": "c1"})["Mountpoint"]
    assert os.path.isabs(mp), mp
    e = mount_entry(mp)
    assert e is not None and e.fstype == FSTYPE and e.source == f"imgvol:{models.ref}", e
    assert e.has("ro") and e.has("nosuid") and e.has("nodev"), e
    assert_trees_equal(models.tree, walk(mp), "model", "volume")
    assert plugin.ok("/VolumeDriver.Path", {"Name": name}).get("Mountpoint") == mp

    # a second user of the same volume shares the mount; it stays until the last unmount
    mp2 = plugin.ok("/VolumeDriver.Mount", {"Name": name, "ID": "c2"})["Mountpoint"]
    assert mp2 == mp and len([x for x in proc_mounts() if x.target == mp]) == 1
    plugin.ok("/VolumeDriver.Unmount", {"Name": name, "ID": "c1"})
    assert is_mounted(mp), "unmounted while another container still uses the volume"
    assert Path(mp, "models/config.json").read_text() == '{"layers": 2}\n'
    plugin.ok("/VolumeDriver.Unmount", {"Name": name, "ID": "c2"})
    wait_until(lambda: not is_mounted(mp), 15, what="the volume to be unmounted")

    plugin.ok("/VolumeDriver.Remove", {"Name": name})
    vols = plugin.ok("/VolumeDriver.List", {}).get("Volumes") or []
    assert name not in [v.get("Name") for v in vols], vols
    st, data = plugin.api("/VolumeDriver.Get", {"Name": name})
    assert data.get("Err"), data


def test_api_errors(plugin, models):
    st, data = plugin.api("/VolumeDriver.Create", {"Name": "noimage", "Opts": {}})
    assert data.get("Err") and "image" in data["Err"], data
    st, data = plugin.api("/VolumeDriver.Create", {"Name": "noopts"})
    assert data.get("Err") and "image" in data["Err"], data
    vols = plugin.ok("/VolumeDriver.List", {}).get("Volumes") or []
    assert "noimage" not in [v.get("Name") for v in vols]
    st, data = plugin.api("/VolumeDriver.Mount", {"Name": "ghost", "ID": "x"})
    assert data.get("Err"), data
    # a volume whose image cannot be pulled: Mount fails with an error, nothing mounted
    plugin.ok("/VolumeDriver.Create", {"Name": "unpullable", "Opts": {
        "image": models.ref.replace("e2e/models", "e2e/missing"), "tls-verify": "false"}})
    st, data = plugin.api("/VolumeDriver.Mount", {"Name": "unpullable", "ID": "x"})
    assert data.get("Err"), data
    assert plugin.fuse_mounts() == []
    plugin.ok("/VolumeDriver.Remove", {"Name": "unpullable"})


def test_api_subpath_option(plugin, models):
    plugin.ok("/VolumeDriver.Create", {"Name": "sub", "Opts": {
        "image": models.ref, "tls-verify": "false", "subpath": "models"}})
    mp = plugin.ok("/VolumeDriver.Mount", {"Name": "sub", "ID": "c1"})["Mountpoint"]
    assert_trees_equal(subtree(models.tree, "models"), walk(mp), "model of models/", "volume")
    plugin.ok("/VolumeDriver.Unmount", {"Name": "sub", "ID": "c1"})
    wait_until(lambda: not is_mounted(mp), 15, what="unmount")
    plugin.ok("/VolumeDriver.Remove", {"Name": "sub"})


def test_api_remove_unmounts(plugin, models):
    plugin.ok("/VolumeDriver.Create", {"Name": "busy", "Opts": {"image": models.ref,
                                                                "tls-verify": "false"}})
    mp = plugin.ok("/VolumeDriver.Mount", {"Name": "busy", "ID": "c1"})["Mountpoint"]
    assert is_mounted(mp)
    st, data = plugin.api("/VolumeDriver.Remove", {"Name": "busy"})
    # Either refuse (volume in use) and keep serving, or unmount and remove; never leave a
    # mount behind for a volume that no longer exists.
    vols = [v.get("Name") for v in plugin.ok("/VolumeDriver.List", {}).get("Volumes") or []]
    if data.get("Err"):
        assert "busy" in vols and is_mounted(mp), (data, vols)
    else:
        assert "busy" not in vols, vols
        wait_until(lambda: not is_mounted(mp), 15, what="Remove to unmount the volume")


# -- through podman -------------------------------------------------------------------------

def test_podman_volume_lifecycle(ppm, plugin, imgvol, models):
    """Pre-pulled image: create, ls, run (mounted while running, right content), stop →
    unmounted, rm, volume rm."""
    imgvol.pull(models.ref)
    vol = ppm.unique("vol")
    res = create_volume(ppm, vol, f"image={models.ref}", "tls-verify=false")
    assert res.rc == 0, res.describe() + plugin.log_text()
    ls = ppm.podman("volume", "ls", "--format", "{{.Driver}} {{.Name}}")
    assert f"imgvol {vol}" in ls.stdout.splitlines(), ls.describe()
    assert volume_mounts(plugin, models.ref) == [], "created volumes are not mounted yet"

    name = ppm.unique("c")
    res = ppm.run_container(name, ["-v", f"{vol}:/model:ro"], "sh", "-c",
                            SHA_SCRIPT + " && echo done && sleep 600", detach=True)
    assert res.rc == 0, res.describe() + plugin.log_text()
    wait_until(lambda: "done" in ppm.podman("logs", name).stdout, 60,
               what="the container to read the volume")
    logs = ppm.podman("logs", name).stdout
    assert parse_sha(logs) == models.files, logs
    ms = volume_mounts(plugin, models.ref)
    assert len(ms) == 1, f"expected one FUSE mount while the container runs: {ms}"
    mp = ms[0].target
    assert ms[0].has("ro"), ms[0]

    res = ppm.podman("stop", "-t", "0", name)
    assert res.rc == 0, res.describe()
    wait_until(lambda: not is_mounted(mp), 30, what="the volume to be unmounted after stop")
    assert ppm.podman("rm", name).rc == 0
    assert not is_mounted(mp)

    res = ppm.podman("volume", "rm", vol)
    assert res.rc == 0, res.describe() + plugin.log_text()
    ls = ppm.podman("volume", "ls", "--format", "{{.Name}}")
    assert vol not in ls.stdout.split(), ls.describe()
    assert volume_mounts(plugin, models.ref) == []


def test_podman_run_then_rm(ppm, plugin, imgvol, models):
    """A container that exits by itself (podman run without -d, then podman rm)."""
    imgvol.pull(models.ref)
    vol = ppm.unique("vol")
    assert create_volume(ppm, vol, f"image={models.ref}", "tls-verify=false").rc == 0
    name = ppm.unique("c")
    res = ppm.run_container(name, ["-v", f"{vol}:/model:ro"], "sh", "-c",
                            SHA_SCRIPT + " && grep -c ' /model fuse' /proc/self/mounts")
    assert res.rc == 0, res.describe() + plugin.log_text()
    assert parse_sha(res.stdout) == models.files, res.stdout
    assert res.stdout.strip().splitlines()[-1] == "1", "/model should be a FUSE mount inside"
    assert ppm.podman("rm", name).rc == 0
    wait_until(lambda: volume_mounts(plugin, models.ref) == [], 30,
               what="the volume to be unmounted after the container exited and was removed")


def test_podman_two_containers(ppm, plugin, imgvol, models):
    """One mount for two running containers; it goes when the last one stops."""
    imgvol.pull(models.ref)
    vol = ppm.unique("vol")
    assert create_volume(ppm, vol, f"image={models.ref}", "tls-verify=false").rc == 0
    a, b = ppm.unique("a"), ppm.unique("b")
    for n in (a, b):
        res = ppm.run_container(n, ["-v", f"{vol}:/model:ro"], "sh", "-c",
                                "echo started && sleep 600", detach=True)
        assert res.rc == 0, res.describe() + plugin.log_text()
    ms = volume_mounts(plugin, models.ref)
    assert len(ms) == 1, ms
    mp = ms[0].target
    assert ppm.podman("stop", "-t", "0", a).rc == 0
    time.sleep(1)
    assert is_mounted(mp), "unmounted although container b still runs"
    res = ppm.podman("exec", b, "cat", "/model/models/config.json")
    assert res.rc == 0 and res.stdout == '{"layers": 2}\n', res.describe()
    assert ppm.podman("stop", "-t", "0", b).rc == 0
    wait_until(lambda: not is_mounted(mp), 30, what="unmount after the last container")


def test_podman_volume_rm_unmounts(ppm, plugin, imgvol, models):
    """A volume still mounted (here: by a direct Mount call) is unmounted by `volume rm`."""
    imgvol.pull(models.ref)
    vol = ppm.unique("vol")
    assert create_volume(ppm, vol, f"image={models.ref}", "tls-verify=false").rc == 0
    mp = plugin.ok("/VolumeDriver.Mount", {"Name": vol, "ID": "outside-podman"})["Mountpoint"]
    assert is_mounted(mp)
    res = ppm.podman("volume", "rm", vol)
    assert res.rc == 0, res.describe() + plugin.log_text()
    wait_until(lambda: not is_mounted(mp), 30, what="`podman volume rm` to unmount")
    assert vol not in ppm.podman("volume", "ls", "--format", "{{.Name}}").stdout.split()


def test_podman_volume_without_image_fails(ppm, plugin):
    vol = ppm.unique("noimg")
    res = create_volume(ppm, vol)
    assert res.rc != 0, res.describe()
    assert "image" in res.stderr, res.describe()
    assert vol not in ppm.podman("volume", "ls", "--format", "{{.Name}}").stdout.split()


def test_podman_subpath_volume(ppm, plugin, imgvol, models):
    imgvol.pull(models.ref)
    vol = ppm.unique("vol")
    assert create_volume(ppm, vol, f"image={models.ref}", "tls-verify=false",
                         "subpath=models").rc == 0
    name = ppm.unique("c")
    res = ppm.run_container(name, ["-v", f"{vol}:/model:ro"], "sh", "-c", SHA_SCRIPT)
    assert res.rc == 0, res.describe() + plugin.log_text()
    want = {p[len("models/"):]: d for p, d in models.files.items() if p.startswith("models/")}
    assert parse_sha(res.stdout) == want


def test_podman_container_cannot_write_volume(ppm, plugin, imgvol, models):
    imgvol.pull(models.ref)
    vol = ppm.unique("vol")
    assert create_volume(ppm, vol, f"image={models.ref}", "tls-verify=false").rc == 0
    name = ppm.unique("c")
    res = ppm.run_container(name, ["-v", f"{vol}:/model"], "sh", "-c",
                            "touch /model/x 2>&1; echo rc=$?; echo y > /model/README 2>&1; "
                            "echo rc=$?")
    assert res.rc == 0, res.describe()
    assert "rc=0" not in res.stdout and "Read-only file system" in res.stdout, res.stdout


@pytest.mark.slow
def test_podman_first_use_pulls(ppm, plugin, models):
    """Cold store: the first `podman run` pulls the image through the plugin's Mount
    (podman gives a plugin request 5 seconds by default)."""
    vol = ppm.unique("vol")
    assert create_volume(ppm, vol, f"image={models.ref}", "tls-verify=false").rc == 0
    name = ppm.unique("c")
    res = ppm.run_container(name, ["-v", f"{vol}:/model:ro"], "sh", "-c", SHA_SCRIPT)
    assert res.rc == 0, res.describe() + "\n--- plugin log ---\n" + plugin.log_text()
    assert parse_sha(res.stdout) == models.files
    assert ppm.podman("rm", name).rc == 0
    wait_until(lambda: volume_mounts(plugin, models.ref) == [], 30, what="unmount")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_plugin_restart_keeps_volumes(ppm, plugin, imgvol, models, sig):
    """Volumes podman knows about keep working after the plugin is restarted (a service
    restart, or a crash that leaves a stale socket file)."""
    imgvol.pull(models.ref)
    vol = ppm.unique("vol")
    assert create_volume(ppm, vol, f"image={models.ref}", "tls-verify=false").rc == 0
    rc = plugin.terminate(sig)
    if sig == signal.SIGTERM:      # clean exit or the default action; not a crash
        assert rc in (0, -signal.SIGTERM), f"volume-plugin exited {rc}\n" + plugin.log_text()
    plugin.start()
    name = ppm.unique("c")
    res = ppm.run_container(name, ["-v", f"{vol}:/model:ro"], "sh", "-c", SHA_SCRIPT)
    assert res.rc == 0, res.describe() + "\n--- plugin log ---\n" + plugin.log_text()
    assert parse_sha(res.stdout) == models.files
    assert ppm.podman("rm", name).rc == 0
    wait_until(lambda: volume_mounts(plugin, models.ref) == [], 30, what="unmount")
    res = ppm.podman("volume", "rm", vol)
    assert res.rc == 0, res.describe() + plugin.log_text()


def test_podman_run_with_unpullable_image_fails_cleanly(ppm, plugin, registry):
    ref = f"{registry.host}/e2e/missing:v1"
    vol = ppm.unique("vol")
    assert create_volume(ppm, vol, f"image={ref}", "tls-verify=false").rc == 0
    name = ppm.unique("c")
    res = ppm.run_container(name, ["-v", f"{vol}:/model:ro"], "sh", "-c", "ls /model")
    assert res.rc != 0, res.describe()
    assert "e2e/missing" in res.stderr, res.describe() + plugin.log_text()
    assert volume_mounts(plugin, ref) == [] and plugin.fuse_mounts() == []


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".", "..", "/abs", "x\x00y"])
def test_api_rejects_bad_volume_names(plugin, models, name):
    """Names become directories under the store: nothing may be created or mounted outside
    it, whatever the caller sends."""
    root = Path(plugin.root)
    before = set(p for p in root.parent.rglob("*") if "escape" in p.name)
    st, data = plugin.api("/VolumeDriver.Create", {"Name": name, "Opts": {
        "image": models.ref, "tls-verify": "false"}})
    assert data.get("Err"), f"Create accepted the volume name {name!r}: {data}"
    st, data = plugin.api("/VolumeDriver.Mount", {"Name": name, "ID": "x"})
    assert data.get("Err"), f"Mount accepted the volume name {name!r}: {data}"
    assert plugin.fuse_mounts() == []
    assert [e for e in proc_mounts() if e.fstype == FSTYPE and
            e.source == f"imgvol:{models.ref}"] == []
    after = set(p for p in root.parent.rglob("*") if "escape" in p.name)
    assert after == before, f"created {after - before}"
    vols = plugin.ok("/VolumeDriver.List", {}).get("Volumes") or []
    assert vols == [], vols


@pytest.mark.parametrize("sub", ["../..", "models/../..", "nope", "etc/hostname"])
def test_api_bad_subpath_option(plugin, imgvol, models, sub):
    """A bad subpath fails at Create or at Mount with an error, and nothing is mounted."""
    imgvol.pull(models.ref)
    st, data = plugin.api("/VolumeDriver.Create", {"Name": "badsub", "Opts": {
        "image": models.ref, "tls-verify": "false", "subpath": sub}})
    if not data.get("Err"):
        t0 = time.monotonic()
        st, data = plugin.api("/VolumeDriver.Mount", {"Name": "badsub", "ID": "x"})
        assert data.get("Err"), f"subpath {sub!r} was mounted: {data}"
        assert time.monotonic() - t0 < 5, "a bad subpath should fail fast (podman waits 5 s)"
    assert sub in data["Err"], data
    assert plugin.fuse_mounts() == []


def test_podman_lazy_volume(ppm, plugin, imgvol, registry, publish):
    """--opt lazy=true: the first Mount serves before the image has arrived, so a big image
    is not pulled inside podman's 5-second plugin call; the blobs are verified and the image
    recorded afterwards."""
    entries = [Dir("weights", mtime=T0), File("weights/w.bin", pseudo_random(40 << 20, 41), mtime=T0),
               File("README", "lazy\n", mtime=T0)]
    info = publish.image(registry.host, "e2e/lazy-vol", "v1", [Layer(entries, "none")])
    want = {p: n.sha256 for p, n in expected_tree([entries]).items() if n.type == "file"}
    vol = ppm.unique("vol")
    assert create_volume(ppm, vol, f"image={info.ref}", "tls-verify=false", "lazy=true").rc == 0
    name = ppm.unique("c")
    res = ppm.run_container(name, ["-v", f"{vol}:/model:ro"], "sh", "-c", SHA_SCRIPT)
    assert res.rc == 0, res.describe() + "\n--- plugin log ---\n" + plugin.log_text()
    assert parse_sha(res.stdout) == want
    wait_until(lambda: any(i.get("digest") == info.manifest_digest for i in imgvol.images()), 60,
               what="the lazily mounted image recorded in the store")
    assert ppm.podman("rm", name).rc == 0


def test_api_bad_lazy_option(plugin, models):
    st, data = plugin.api("/VolumeDriver.Create",
                          {"Name": "lz", "Opts": {"image": models.ref, "lazy": "maybe"}})
    assert "lazy" in (data.get("Err") or ""), data
