"""podman with private storage, for tests that run containers over imgvol mounts.

    pm = Podman.create(workdir)              # own graphroot/runroot/tmpdir/volume path
    pm.import_busybox()                      # localhost/imgvol-busybox:test
    res = pm.run_container("name", ["-v", f"{mp}:/model:ro"], "sh", "-c", "ls /model")
    pm2 = pm.with_plugin("/path/imgvol.sock")   # same storage, plugin `imgvol` registered
    pm.destroy()                             # rm containers/volumes/images, unmount, rmtree

Everything goes through CONTAINERS_CONF / CONTAINERS_STORAGE_CONF files under workdir,
so the machine's own podman state is never read or changed.  Containers run only as
``--runtime runc --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024``.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .cli import Result, run as _run
from .mounts import lazy_umount, mounts_under

BUSYBOX = "/bin/busybox"
BUSYBOX_IMAGE = "localhost/imgvol-busybox:test"
BUSYBOX_APPLETS = ("sh", "ls", "cat", "sha256sum", "find", "stat", "wc", "head", "test",
                   "touch", "mkdir", "rm", "mv", "ln", "chmod", "sleep", "sort", "echo",
                   "true", "false", "xargs", "grep", "tr", "cut")
RUN_FLAGS = ("--runtime", "runc", "--network", "none",
             "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")


def available() -> Optional[str]:
    """Why podman tests cannot run here, or None if they can."""
    for tool in ("podman", "runc"):
        if not shutil.which(tool):
            return f"{tool} not installed"
    if not os.path.isfile(BUSYBOX):
        return f"{BUSYBOX} missing (apt-get install busybox-static)"
    if os.geteuid() != 0:
        return "podman tests need root"
    return None


class Podman:
    def __init__(self, workdir: Path, env: Dict[str, str], driver: str):
        self.workdir = Path(workdir)
        self.env = env
        self.driver = driver
        self.names: List[str] = []

    # -- setup --------------------------------------------------------------------------
    @classmethod
    def create(cls, workdir, base_env: Dict[str, str]) -> "Podman":
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        last = None
        for driver in ("overlay", "vfs"):
            d = workdir / driver
            pm = cls(d, cls._write_conf(d, base_env, driver, None), driver)
            res = pm.podman("info", timeout=60)
            if res.rc == 0:
                return pm
            last = res
            pm.destroy()
        raise RuntimeError(f"podman does not work with private storage:\n{last.describe()}")

    @staticmethod
    def _write_conf(d: Path, base_env: Dict[str, str], driver: str,
                    plugin_socket: Optional[str], suffix: str = "") -> Dict[str, str]:
        d.mkdir(parents=True, exist_ok=True)
        storage = d / "storage.conf"
        if not storage.exists():
            storage.write_text(f'[storage]\ndriver = "{driver}"\n'
                               f'graphroot = "{d}/root"\nrunroot = "{d}/runroot"\n')
        conf = d / f"containers{suffix}.conf"
        text = ("[engine]\n"
                'cgroup_manager = "cgroupfs"\n'
                'events_logger = "file"\n'
                f'events_logfile_path = "{d}/events.log"\n'
                'runtime = "runc"\n'
                f'tmp_dir = "{d}/tmp"\n'
                f'volume_path = "{d}/volumes"\n'
                f'static_dir = "{d}/root/libpod"\n')
        if plugin_socket:
            text += f'\n[engine.volume_plugins]\nimgvol = "{plugin_socket}"\n'
        conf.write_text(text)
        env = dict(base_env)
        env["CONTAINERS_CONF"] = str(conf)
        env["CONTAINERS_STORAGE_CONF"] = str(storage)
        for k in ("CONTAINER_HOST", "CONTAINER_CONNECTION", "DOCKER_HOST"):
            env.pop(k, None)
        return env

    def with_plugin(self, socket_path: str) -> "Podman":
        """The same storage, with volume plugin `imgvol` served on socket_path."""
        env = self._write_conf(self.workdir, self.env, self.driver, socket_path,
                               suffix="-" + uuid.uuid4().hex[:8])
        pm = Podman(self.workdir, env, self.driver)
        pm.names = self.names                  # shared bookkeeping
        return pm

    def import_busybox(self) -> str:
        bb = self.workdir / "busybox-rootfs.tar"
        with tarfile.open(bb, "w") as tf:
            ti = tarfile.TarInfo("bin")
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
            with open(BUSYBOX, "rb") as f:
                ti = tarfile.TarInfo("bin/busybox")
                ti.mode, ti.size = 0o755, os.fstat(f.fileno()).st_size
                tf.addfile(ti, f)
            for applet in BUSYBOX_APPLETS:
                ti = tarfile.TarInfo(f"bin/{applet}")
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, "busybox", 0o777
                tf.addfile(ti)
        res = self.podman("import", str(bb), BUSYBOX_IMAGE, timeout=120)
        assert res.rc == 0, res.describe()
        return BUSYBOX_IMAGE

    # -- commands -----------------------------------------------------------------------
    def podman(self, *args, timeout: float = 120) -> Result:
        return _run(["podman", *[str(a) for a in args]], timeout=timeout, env=self.env)

    def unique(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        return name

    def run_container(self, name: str, run_args: Sequence[str], *cmd: str,
                      detach: bool = False, image: str = BUSYBOX_IMAGE,
                      timeout: float = 180) -> Result:
        """podman run --name NAME <our fixed flags> RUN_ARGS IMAGE CMD... (no --rm)."""
        if name not in self.names:
            self.names.append(name)
        args = ["run", "--name", name, *RUN_FLAGS, *(["-d"] if detach else []),
                *run_args, image, *cmd]
        return self.podman(*args, timeout=timeout)

    def container_state(self, name: str) -> str:
        res = self.podman("inspect", "--type", "container", "--format", "{{.State.Status}}",
                          name, timeout=60)
        return res.stdout.strip() if res.rc == 0 else ""

    # -- teardown -----------------------------------------------------------------------
    def remove_containers(self) -> None:
        self.podman("rm", "-fa", "-t", "0", timeout=120)

    def destroy(self) -> None:
        if shutil.which("podman") and (self.workdir / "storage.conf").exists():
            self.podman("rm", "-fa", "-t", "0", timeout=120)
            self.podman("volume", "rm", "-fa", timeout=120)
            self.podman("rmi", "-fa", timeout=120)
        for e in reversed(mounts_under(self.workdir)):
            lazy_umount(e.target)
        shutil.rmtree(self.workdir, ignore_errors=True)
