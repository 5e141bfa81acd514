"""A Debian bookworm root made with debootstrap, cached: what the provisioning tests
(tests/test_provision.py) and the fleet test (tests/test_fleet.py) provision.

Built once (about 1.5 min, needs root, debootstrap and deb.debian.org) into
work/debootstrap-cache/bookworm-ARCH (gitignored), of the host's architecture: a chroot
runs its programs natively. Each test provisions a copy (:func:`fresh_root`), with a
Raspberry Pi OS style /boot/firmware (config.txt, cmdline.txt).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "work" / "debootstrap-cache"
MIRROR = "http://deb.debian.org/debian"

CONFIG_TXT = """\
# For more options and information see
# http://rptl.io/configtxt
dtparam=audio=on
camera_auto_detect=1
display_auto_detect=1
auto_initramfs=1
dtoverlay=vc4-kms-v3d
max_framebuffers=2
arm_64bit=1

[cm4]
otg_mode=1

[all]
"""
CMDLINE_TXT = ("console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 "
               "fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n")


def host_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def debian_root():
    """A cached minbase bookworm root; built the first time (about 1.5 min)."""
    if os.geteuid() != 0:
        pytest.skip("provisioning a root needs root (chroot, useradd --root)")
    for tool in ("debootstrap", "chroot", "mount"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed: scripts/install.sh --dev installs debootstrap")
    root = CACHE / f"bookworm-{host_arch()}"
    if not (root / "etc/os-release").exists():
        tmp = root.with_name(root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        p = subprocess.run(["debootstrap", "--variant=minbase", "--include=ca-certificates",
                            "bookworm", str(tmp), MIRROR], capture_output=True, text=True, timeout=1200)
        if p.returncode != 0:
            pytest.fail(f"debootstrap failed:\n{p.stdout[-3000:]}\n{p.stderr[-2000:]}")
        tmp.rename(root)
    return root


def fresh_root(debian_root: Path, dest: Path) -> Path:
    """A copy of the cached root with a Raspberry Pi OS style boot partition."""
    subprocess.run(["cp", "-a", str(debian_root), str(dest)], check=True)
    boot = dest / "boot/firmware"
    boot.mkdir(parents=True)
    (boot / "config.txt").write_text(CONFIG_TXT)
    (boot / "cmdline.txt").write_text(CMDLINE_TXT)
    return dest
