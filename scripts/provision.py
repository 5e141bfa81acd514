#!/usr/bin/env python3
"""Provision Raspberry Pi OS Lite (arm64, bookworm or trixie) for pi-synth — on the Pi, or a mounted image.

    sudo scripts/provision.sh [--hat NAME] [--no-onboard-audio] [--read-only]
    sudo scripts/provision.sh --root /mnt/img --skip-apt    # an image: installs finish on first boot
    sudo scripts/provision.sh --dry-run                     # print what would change, change nothing

What it does (each step checks first, so a second run prints "no changes"):

* apt packages (python3, venv, gcc + libasound2-dev for pyalsaaudio, alsa-utils, python3-lgpio
  where the archive has it); the ``pisynth`` system user in audio, gpio, spi, i2c, dialout, and
  the ``pisynth-web`` user of the web page (in no group); /var/lib/pi-synth owned by pisynth and
  its models/ folder (uploads) by pisynth-web;
* a copy of this checkout in /opt/pi-synth/src, installed (with its models) into the venv
  /opt/pi-synth/venv (``--system-site-packages``, for the distribution's lgpio);
* /boot/firmware/config.txt: SPI, I2C, the PL011 UART on GPIO 14/15 at MIDI's 31250 baud
  (``disable-bt`` + ``midi-uart0``), the audio HAT overlay, onboard audio off if asked —
  in one marked block at the end, rewritten on each run; cmdline.txt: the serial console removed;
* CPU governor ``performance`` at boot (pi-synth-governor.service), rtprio/memlock limits for
  the audio group, journald in RAM, /var/log on tmpfs;
* /boot/firmware/pi-synth.toml from the commented template, if absent (never overwritten);
* pi-synth.service installed and enabled (symlinks, so it works on an image too);
  pi-synth-web.service installed, not enabled (the web page is off until asked for);
* ``--read-only``: the overlay root of raspi-config (on the Pi, or on first boot for an image);
* ``--set SECTION.KEY=VALUE`` (repeatable): that key of pi-synth.toml set, the rest of the
  file (comments, every other key) left as it is; checked against pi-synth's own config schema;
* ``--hostname NAME``: /etc/hostname and /etc/hosts' 127.0.1.1 line (a room of boxes flashed
  from one image gets one name each: NAME.local).

``--json`` prints one JSON object on stdout at the end (``changed``, ``changes``, ``pending``,
``reboot_needed``), the progress lines on stderr: what ``ansible/`` reads for its "changed".
``--pack OUT.tar.gz`` writes the files this script copies to the Pi (a deterministic tarball:
the same checkout gives the same bytes) and exits: how ``ansible/`` ships a checkout to a room.

With ``--root DIR`` nothing runs on the host's system: files are written under DIR (and the
boot partition's under ``--boot BOOTDIR`` if given, else DIR/boot/firmware), and
programs (apt, pip) run inside DIR with chroot (same architecture, as root) or
``proot -q qemu-ARCH-static``; with ``--skip-apt`` (or when neither is possible) the apt
and venv steps are left to pi-synth-firstboot.service, which runs this script on the Pi's
first boot with network. Exit: 0 done, 2 bad arguments or not a Pi OS root, 1 a step failed.
Standard library only: the host may be any Linux with python3.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import platform
import shutil
import subprocess
import re
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = "/opt/pi-synth/venv"
SRC = "/opt/pi-synth/src"
STATE = "/var/lib/pi-synth"
PENDING = "/var/lib/pi-synth-provision/pending.json"
USER = "pisynth"
GROUPS = ("audio", "gpio", "spi", "i2c", "dialout")
WEB_USER = "pisynth-web"  # the web page's unit (pi-synth-web.service): no device groups
WEB_STATE = "/var/lib/pi-synth-web"
UPLOADS = f"{STATE}/models"  # models uploaded through the web page: written by WEB_USER only
APT = ("python3", "python3-venv", "python3-dev", "gcc", "libasound2-dev", "alsa-utils",
       "ca-certificates")
APT_IF_AVAILABLE = ("python3-lgpio",)
# --hat: (config.txt overlay, ALSA card id)
HATS = {
    "hifiberry-dac": ("hifiberry-dac", "sndrpihifiberry"),
    "hifiberry-dacplus": ("hifiberry-dacplus", "sndrpihifiberry"),
    "iqaudio-dacplus": ("iqaudio-dacplus", "IQaudIODAC"),
    "pisound": ("pisound", "pisound"),
    "usb": (None, None),
    "none": (None, None),
}
BEGIN = "# --- pi-synth: managed by scripts/provision.sh; edits inside this block are replaced ---"
END = "# --- end pi-synth ---"
OFF_MARK = "  # pi-synth: onboard audio off"
SERIAL_CONSOLES = ("console=serial0", "console=ttyAMA0", "console=ttyS0", "console=ttyAMA10")
FSTAB_LOG = "tmpfs /var/log tmpfs defaults,noatime,nosuid,nodev,mode=0755,size=32m 0 0  # pi-synth"
HOST_CA = "/run/pi-synth-host-ca.pem"  # the build host's PIP_CERT, while pip runs in the target
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "arm"}


class Failed(Exception):
    """A step failed: exit 1 with this line."""


class BadInput(Exception):
    """Bad arguments or a root that is not Raspberry Pi OS: exit 2 with this line."""


# -- pure text edits (the same on the Pi and on an image) ------------------------------


def edit_config_txt(text: str, hat: str, no_onboard: bool) -> str:
    """config.txt with our block at the end (old block removed) and onboard audio handled."""
    out, inside = [], False
    for line in text.splitlines():
        if line.strip() == BEGIN:
            inside = True
            continue
        if inside:
            inside = line.strip() != END
            continue
        if line.endswith(OFF_MARK):  # our earlier --no-onboard-audio edit: back to the stock line
            line = line[: -len(OFF_MARK)]
            line = (line[1:] if line.startswith("#") else line).replace(",noaudio", "")
        bare = line.split("#", 1)[0].strip()
        if no_onboard and bare == "dtparam=audio=on":
            line = "#" + line + OFF_MARK
        elif no_onboard and bare in ("dtoverlay=vc4-kms-v3d", "dtoverlay=vc4-fkms-v3d"):
            line = line.replace(bare, bare + ",noaudio") + OFF_MARK
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    overlay = HATS[hat][0]
    block = [BEGIN, "[all]",
             "dtparam=spi=on",
             "dtparam=i2c_arm=on",
             "# MIDI in/out on GPIO 15/14: the PL011 UART (Bluetooth moved off it), clocked for 31250 baud",
             "enable_uart=1",
             "dtoverlay=disable-bt",
             "dtoverlay=midi-uart0"]
    if overlay:
        block.append(f"dtoverlay={overlay}")
    if no_onboard:
        block.append("dtparam=audio=off")
    block.append(END)
    return "\n".join(out + [""] + block) + "\n"


def edit_cmdline_txt(text: str, read_only: bool = False) -> str:
    """One line: the serial console removed (the UART is for MIDI)."""
    words = [w for w in text.split() if not w.startswith(SERIAL_CONSOLES)]
    return " ".join(words) + "\n"


def edit_fstab(text: str) -> str:
    lines = [l for l in text.splitlines() if not l.rstrip().endswith("# pi-synth")]
    return "\n".join(lines + [FSTAB_LOG]) + "\n"


def template_toml() -> str:
    return (REPO / "src/pi_synth/data/pi-synth.toml").read_text(encoding="utf-8")


def toml_from_template(template: str, hat: str) -> str:
    card = HATS[hat][1]
    if card:
        template = template.replace('device = "default"', f'device = "plughw:CARD={card}"', 1)
    return template


def toml_value(raw: str):
    """A --set value: a TOML literal (3, true, "x", [0, 1]) or else the bare text as a string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def toml_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]\s*(#.*)?$")
_ARRAY = re.compile(r"^\s*\[\[")


def edit_toml(text: str, settings: list[tuple[str, str, object]]) -> str:
    """``text`` with each (section, key, value) set: the key's line rewritten where it is, or
    added at the end of its section (the section added at the end of the file if missing).
    Every other line, comments included, stays as it was."""
    lines = text.splitlines()
    for section, key, value in settings:
        line = f"{key} = {toml_literal(value)}"
        key_re = re.compile(rf"^\s*{re.escape(key)}\s*=")
        current, start, last, found = None, None, None, None
        for i, l in enumerate(lines):
            m = _TABLE.match(l)
            if m or _ARRAY.match(l):
                current = m.group(1) if m else None
                if current == section:
                    start = last = i
                continue
            if current == section and key_re.match(l):
                found = i
                break
            if current == section and l.strip() and not l.lstrip().startswith("#"):
                last = i
        if found is not None:
            indent = lines[found][: len(lines[found]) - len(lines[found].lstrip())]
            lines[found] = indent + line
        elif start is not None:
            lines.insert(last + 1, line)
        else:
            while lines and not lines[-1].strip():
                lines.pop()
            lines += ["", f"[{section}]", line]
    return "\n".join(lines) + "\n"


def parse_settings(items: list[str]) -> list[tuple[str, str, object]]:
    out = []
    for item in items:
        name, eq, raw = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not eq or not dot or not re.fullmatch(r"[A-Za-z0-9_-]+", section) \
                or not re.fullmatch(r"[A-Za-z0-9_-]+", key):
            raise BadInput(f"--set {item!r}: use SECTION.KEY=VALUE, e.g. --set midi.channel=2")
        out.append((section, key, toml_value(raw.strip())))
    return out


def check_settings(settings) -> None:
    """Each --set key and value checked against pi-synth's own config schema (the checkout's
    ``pi_synth.config.SCHEMA``), before anything changes: a typo or a bad value stops here,
    not the service on the Pi. Runs with the system python3 (no venv, no gpiozero): a choice
    that depends on what is installed there (the ADC chips, the audio backends) is left to
    pi-synth, which names the file, line and key if it is wrong."""
    sys.path.insert(0, str(REPO / "src"))
    try:
        from pi_synth.config import SCHEMA
    except ImportError:  # a checkout without the package: nothing to check against
        return
    finally:
        sys.path.pop(0)
    for section, key, value in settings:
        if section not in SCHEMA:
            raise BadInput(f"--set {section}.{key}: not a pi-synth setting (no section [{section}]; "
                           f"known: {', '.join(SCHEMA)})")
        spec = SCHEMA[section].get(key)
        if spec is None:
            raise BadInput(f"--set {section}.{key}: not a pi-synth setting "
                           f"(known in [{section}]: {', '.join(SCHEMA[section])})")
        try:
            why = spec.check(value)
        except ImportError:
            why = None
        if why:
            raise BadInput(f"--set: key '{section}.{key}' {why}")


def edit_hosts(text: str, name: str) -> str:
    """/etc/hosts with the 127.0.1.1 line naming this machine (Debian's convention)."""
    lines = [l for l in text.splitlines() if not l.split("#", 1)[0].split()[:1] == ["127.0.1.1"]]
    return "\n".join(lines + [f"127.0.1.1\t{name}"]) + "\n"


def limits_conf() -> str:
    return ("# pi-synth (scripts/provision.sh): real-time audio for the audio group, e.g. a\n"
            "# 'pi-synth run' from a shell. The service gets the same from LimitRTPRIO/LimitMEMLOCK.\n"
            "@audio   -  rtprio   95\n"
            "@audio   -  memlock  unlimited\n")


def journald_conf() -> str:
    return ("# pi-synth (scripts/provision.sh): the journal lives in RAM. No SD card wear, and a\n"
            "# power cut mid-performance cannot corrupt it. 'journalctl -b' still works.\n"
            "[Journal]\nStorage=volatile\nRuntimeMaxUse=16M\n")


def asound_conf(hat: str) -> str | None:
    card = HATS[hat][1]
    if not card:
        return None
    return (f"# pi-synth (scripts/provision.sh --hat {hat}): the HAT is the default sound card\n"
            f"defaults.pcm.card {card}\ndefaults.ctl.card {card}\n")


# -- the target: / or a mounted image --------------------------------------------------


class Target:
    def __init__(self, root: str, dry_run: bool, boot: str | None = None):
        self.root = Path(root).resolve()
        self.boot_host = Path(boot).resolve() if boot else None  # --boot: the boot partition elsewhere
        self.live = str(self.root) == "/"
        self.dry_run = dry_run
        self.changes: list[str] = []
        self.reboot_needed = False
        self.config_changed = False  # pi-synth.toml only: the service reloads it without a gap
        self.quiet = False

    def p(self, path: str) -> Path:
        if self.boot_host and (path == "/boot/firmware" or path.startswith("/boot/firmware/")):
            return self.boot_host / path[len("/boot/firmware"):].lstrip("/")
        return self.root / path.lstrip("/")

    def change(self, what: str) -> None:
        self.changes.append(what)
        if not self.quiet:
            print(("  would " if self.dry_run else "  ") + what, flush=True)

    # files --------------------------------------------------------------------------

    def read(self, path: str) -> str | None:
        try:
            return self.p(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def write(self, path: str, content: str | bytes, mode: int = 0o644) -> bool:
        data = content.encode() if isinstance(content, str) else content
        dest = self.p(path)
        try:
            same = dest.read_bytes() == data and (dest.stat().st_mode & 0o7777) == mode
        except (FileNotFoundError, IsADirectoryError):
            same = False
        if same:
            return False
        self.change(("update " if dest.exists() else "create ") + path)
        if not self.dry_run:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                os.chmod(tmp, mode)
            except PermissionError:  # FAT (the boot partition) has no modes to set
                pass
            os.replace(tmp, dest)
        return True

    def symlink(self, path: str, target: str) -> bool:
        link = self.p(path)
        if link.is_symlink() and os.readlink(link) == target:
            return False
        self.change(f"link {path} -> {target}")
        if not self.dry_run:
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(target, link)
        return True

    def mkdir(self, path: str, mode: int = 0o755) -> bool:
        if self.p(path).is_dir():
            return False
        self.change(f"create {path}/")
        if not self.dry_run:
            self.p(path).mkdir(parents=True, mode=mode, exist_ok=True)
        return True

    def remove(self, path: str) -> bool:
        if not (self.p(path).exists() or self.p(path).is_symlink()):
            return False
        self.change(f"remove {path}")
        if not self.dry_run:
            self.p(path).unlink()
        return True

    # programs -----------------------------------------------------------------------

    def arch(self) -> str:
        for exe in ("usr/bin/true", "bin/true", "usr/bin/dpkg"):
            try:
                head = (self.root / exe).read_bytes()[:20]
            except OSError:
                continue
            if head[:4] == b"\x7fELF":
                return ELF_MACHINES.get(int.from_bytes(head[18:20], "little"), "unknown")
        return "unknown"

    def runner(self) -> list[str] | None:
        """argv prefix that runs a program inside the target, or None if impossible here."""
        if self.live:
            return []
        arch, host = self.arch(), platform.machine()
        if arch == host and os.geteuid() == 0:
            return ["chroot", str(self.root)]
        qemu = shutil.which(f"qemu-{arch}-static") or shutil.which(f"qemu-{arch}")
        if shutil.which("proot") and (arch == host or qemu):
            argv = ["proot", "-0", "-r", str(self.root), "-b", "/dev", "-b", "/proc", "-b", "/sys",
                    "-w", "/"]
            return argv + (["-q", qemu] if arch != host else [])
        return None

    def run(self, argv: list[str], what: str) -> None:
        prefix = self.runner()
        if prefix is None:
            raise Failed(f"cannot run programs inside {self.root} ({self.arch()} on {platform.machine()}): "
                         "install proot and qemu-user-static, or pass --skip-apt")
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
        if self.live:
            env = {**{k: v for k, v in os.environ.items()}, **env, "HOME": os.environ.get("HOME", "/root")}
        else:  # a build host behind a proxy or mirror: its pip settings carry over
            for k in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_DEFAULT_TIMEOUT", "HTTP_PROXY",
                      "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy"):
                v = os.environ.get(k, "")
                if v and "file:" not in v:
                    env[k] = v
            if os.path.isfile(os.environ.get("PIP_CERT", "")):
                env["PIP_CERT"] = HOST_CA
        print(f"  … {what}", flush=True)
        with self._inside():
            p = subprocess.run(prefix + argv, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        if p.returncode != 0:
            tail = "\n".join(p.stdout.splitlines()[-25:])
            raise Failed(f"{what} failed (exit {p.returncode}):\n{tail}")

    def _inside(self):
        if self.live:
            return _Nothing()
        return _Inside(self) if self.runner()[:1] == ["chroot"] else _HostCA(self)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _HostCA:
    """The build host's PIP_CERT copied into the target while a command runs (proot)."""

    def __init__(self, t: Target):
        self.ca = t.p(HOST_CA) if os.path.isfile(os.environ.get("PIP_CERT", "")) else None

    def __enter__(self):
        if self.ca:
            self.ca.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(os.environ["PIP_CERT"], self.ca)
        return self

    def __exit__(self, *exc):
        if self.ca:
            self.ca.unlink(missing_ok=True)
        return False


class _Inside(_HostCA):
    """chroot plumbing for the duration of one command: /proc, /sys, /dev, DNS, no service starts."""

    def __init__(self, t: Target):
        super().__init__(t)
        self.t = t
        self.mounted: list[Path] = []
        self.saved_resolv: tuple | None = None

    def __enter__(self):
        r = self.t.root
        for src, dst, args in (("proc", "proc", ["-t", "proc"]), ("/sys", "sys", ["--bind"]),
                               ("/dev", "dev", ["--bind"]), ("/dev/pts", "dev/pts", ["--bind"])):
            d = r / dst
            d.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", *args, src, str(d)], check=True)
            self.mounted.append(d)
        resolv = r / "etc/resolv.conf"
        if resolv.is_symlink():
            self.saved_resolv = ("link", os.readlink(resolv))
        elif resolv.exists():
            self.saved_resolv = ("file", resolv.read_bytes(), resolv.stat().st_mode & 0o7777)
        if resolv.is_symlink() or resolv.exists():
            resolv.unlink()
        shutil.copyfile("/etc/resolv.conf", resolv)
        policy = r / "usr/sbin/policy-rc.d"
        self.policy_was_there = policy.exists()
        if not self.policy_was_there:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        return super().__enter__()

    def __exit__(self, *exc):
        r = self.t.root
        if not self.policy_was_there:
            (r / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
        resolv = r / "etc/resolv.conf"
        resolv.unlink(missing_ok=True)
        if self.saved_resolv and self.saved_resolv[0] == "link":
            os.symlink(self.saved_resolv[1], resolv)
        elif self.saved_resolv:
            resolv.write_bytes(self.saved_resolv[1])
            resolv.chmod(self.saved_resolv[2])
        for d in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(d)], check=False)
        return super().__exit__(*exc)


# -- reading the target's state --------------------------------------------------------


def installed_packages(t: Target) -> set[str]:
    text = t.read("/var/lib/dpkg/status") or ""
    out = set()
    for para in text.split("\n\n"):
        fields = dict(l.split(": ", 1) for l in para.splitlines() if ": " in l and not l.startswith(" "))
        if fields.get("Status") == "install ok installed" and "Package" in fields:
            out.add(fields["Package"])
    return out


def archive_has(t: Target, package: str) -> bool:
    lists = t.p("/var/lib/apt/lists")
    needle = f"Package: {package}\n".encode()
    for f in lists.glob("*_Packages") if lists.is_dir() else ():
        if needle in f.read_bytes():
            return True
    return False


def group_members(t: Target) -> dict[str, set[str]]:
    out = {}
    for line in (t.read("/etc/group") or "").splitlines():
        parts = line.split(":")
        if len(parts) >= 4:
            out[parts[0]] = set(filter(None, parts[3].split(",")))
    return out


def has_user(t: Target, name: str) -> bool:
    return any(l.split(":", 1)[0] == name for l in (t.read("/etc/passwd") or "").splitlines())


def source_files() -> list[tuple[str, Path]]:
    """(relative path, file) of what the Pi needs from this checkout: the package (models
    included, symlinks followed), its metadata, the unit files and this provisioner."""
    out = []
    for top in ("pyproject.toml", "README.md", "LICENSE", "docs/raspberry-pi.md"):
        if (REPO / top).is_file():
            out.append((top, REPO / top))
    for top in ("src", "systemd", "scripts/provision", "scripts/provision.py", "scripts/provision.sh"):
        base = REPO / top
        if base.is_file():
            out.append((top, base))
            continue
        for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.endswith(".egg-info"))
            for f in sorted(filenames):
                if f.endswith((".pyc", ".pyo")):
                    continue
                full = Path(dirpath) / f
                if not full.is_file():  # a dangling symlink (e.g. models/ with no models yet)
                    continue
                out.append((str(full.relative_to(REPO)), full))
    return out


# -- the steps -------------------------------------------------------------------------


def step_apt(t: Target, a) -> bool:
    """True when the packages are there (or will be, on first boot)."""
    have = installed_packages(t)
    missing = [p for p in APT if p not in have]
    optional = [p for p in APT_IF_AVAILABLE if p not in have]
    if not missing and not [p for p in optional if archive_has(t, p)]:
        return True
    if a.skip_apt or (not t.live and t.runner() is None):
        return False
    if t.dry_run:
        t.change(f"apt-get install {' '.join(missing + [p for p in optional if archive_has(t, p)])}")
        return True
    t.change(f"apt-get install {' '.join(missing + [p for p in optional if archive_has(t, p)])}")
    t.run(["apt-get", "update", "-qq"], "apt-get update")
    optional = [p for p in optional if archive_has(t, p)]
    t.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, *optional],
          "apt-get install " + " ".join(missing + optional))
    return True


def step_source(t: Target) -> str:
    """Copy the checkout to /opt/pi-synth/src; returns its fingerprint."""
    h = hashlib.sha256()
    wanted = set()
    before, t.quiet = len(t.changes), True
    for rel, full in source_files():
        data = full.read_bytes()
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        mode = 0o755 if os.access(full, os.X_OK) else 0o644
        t.write(f"{SRC}/{rel}", data, mode)
        wanted.add(rel)
    base = t.p(SRC)
    if base.is_dir():
        for dirpath, _, filenames in os.walk(base):
            for f in filenames:
                rel = str((Path(dirpath) / f).relative_to(base))
                if rel not in wanted:
                    t.remove(f"{SRC}/{rel}")
    t.quiet = False
    n = len(t.changes) - before
    if n:
        del t.changes[before:]
        t.change(f"update {SRC} ({n} file{'s' if n != 1 else ''} of this checkout)")
    return h.hexdigest()


def step_venv(t: Target, fingerprint: str, can_run: bool) -> bool:
    stamp = f"{VENV}/.pi-synth-source"
    if (t.read(stamp) or "").strip() == fingerprint and t.p(f"{VENV}/bin/pi-synth").exists():
        return True
    if not can_run:
        return False
    t.change(f"install pi-synth into {VENV}")
    if t.dry_run:
        return True
    if not t.p(f"{VENV}/bin/python").exists():
        t.run(["python3", "-m", "venv", "--system-site-packages", VENV], f"python3 -m venv {VENV}")
    t.run([f"{VENV}/bin/pip", "install", "-q", "--no-cache-dir", "--upgrade", f"{SRC}[web]"],
          f"pip install {SRC}[web] (onnxruntime, numpy, pyalsaaudio, aiohttp…)")
    # setuptools builds in the source tree: drop its leftovers, so the copy stays a copy
    shutil.rmtree(t.p(f"{SRC}/build"), ignore_errors=True)
    for egg in t.p(f"{SRC}/src").glob("*.egg-info"):
        shutil.rmtree(egg, ignore_errors=True)
    t.p(stamp).write_text(fingerprint + "\n")  # part of the install above, not a change of its own
    return True


def step_user(t: Target) -> None:
    r = [] if t.live else ["--root", str(t.root)]
    groups = group_members(t)
    for g in GROUPS:
        if g not in groups:
            t.change(f"create group {g}")
            if not t.dry_run:
                _check(["groupadd", *r, "--system", g], f"groupadd {g}")
    if not has_user(t, USER):
        t.change(f"create user {USER} (groups {', '.join(GROUPS)})")
        if not t.dry_run:
            _check(["useradd", *r, "--system", "--user-group", "--home-dir", STATE, "--no-create-home",
                    "--shell", "/usr/sbin/nologin", "--comment", "pi-synth service",
                    "--groups", ",".join(GROUPS), USER], f"useradd {USER}")
        return
    groups = group_members(t)
    for g in GROUPS:
        if USER not in groups.get(g, set()):
            t.change(f"add {USER} to group {g}")
            if not t.dry_run:
                _check(["usermod", *r, "--append", "--groups", g, USER], f"usermod -aG {g}")


def step_web_user(t: Target) -> None:
    """The web page's own user: no device groups, no shell, no home of its own."""
    if has_user(t, WEB_USER):
        return
    t.change(f"create user {WEB_USER} (the web page)")
    if not t.dry_run:
        r = [] if t.live else ["--root", str(t.root)]
        _check(["useradd", *r, "--system", "--user-group", "--home-dir", WEB_STATE, "--no-create-home",
                "--shell", "/usr/sbin/nologin", "--comment", "pi-synth web page", WEB_USER],
               f"useradd {WEB_USER}")


def _ids(t: Target, user: str) -> tuple[int, int] | None:
    for line in (t.read("/etc/passwd") or "").splitlines():
        f = line.split(":")
        if len(f) > 3 and f[0] == user:
            return int(f[2]), int(f[3])
    return None


def step_state(t: Target) -> None:
    """/var/lib/pi-synth owned by pisynth (so systemd's StateDirectory= never re-owns what is
    inside), and its models/ folder by pisynth-web, setgid, readable by all: the web page
    installs uploads there, the instrument reads them."""
    for path, user, mode in ((STATE, USER, 0o755), (UPLOADS, WEB_USER, 0o2755)):
        t.mkdir(path, mode)
        ids = _ids(t, user)
        if ids is None:  # a dry run before the user exists
            continue
        d = t.p(path)
        try:
            st = d.stat()
        except FileNotFoundError:
            continue
        if (st.st_uid, st.st_gid) != ids or (st.st_mode & 0o7777) != mode:
            t.change(f"set {path}/ to {user}:{user} {mode:o}")
            if not t.dry_run:
                os.chown(d, *ids)
                os.chmod(d, mode)


def _check(argv: list[str], what: str) -> None:
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise Failed(f"{what} failed: {p.stderr.strip() or p.stdout.strip()}")


def boot_dir(t: Target) -> str | None:
    if t.boot_host:
        return "/boot/firmware" if t.p("/boot/firmware/config.txt").is_file() else None
    for d in ("/boot/firmware", "/boot"):
        if t.p(f"{d}/config.txt").is_file():
            return d
    return None


def step_boot(t: Target, a, boot: str) -> bool:
    """config.txt, cmdline.txt, pi-synth.toml, the models folder; True if the boot config changed."""
    changed = False
    cfg = t.read(f"{boot}/config.txt") or ""
    changed |= t.write(f"{boot}/config.txt", edit_config_txt(cfg, a.hat, a.no_onboard_audio), 0o755
                       if t.p(f"{boot}/config.txt").stat().st_mode & 0o100 else 0o644)
    cmd = t.read(f"{boot}/cmdline.txt")
    if cmd is not None:
        mode = t.p(f"{boot}/cmdline.txt").stat().st_mode & 0o7777
        changed |= t.write(f"{boot}/cmdline.txt", edit_cmdline_txt(cmd), mode)
    toml = f"{boot}/pi-synth.toml"
    text = t.read(toml)
    if text is None or a.settings:  # the template only if absent; --set keys in any case
        text = text if text is not None else toml_from_template(template_toml(), a.hat)
        if t.write(toml, edit_toml(text, a.settings) if a.settings else text,
                   0o755 if _is_fat(t, boot) else 0o644):
            t.config_changed = True
    models = f"{boot}/pi-synth/models"
    if not t.p(models).is_dir():
        t.mkdir(models)
        t.write(f"{models}/README.txt",
                "Drop pi-synth models (.onnx) here from any computer. Name one in\r\n"
                "pi-synth.toml ([model] path = \"NAME\") or it plays the default model.\r\n",
                0o755 if _is_fat(t, boot) else 0o644)
    return changed


def _is_fat(t: Target, boot: str) -> bool:
    """FAT reports every file as 0755; write what a stat would show, so a rerun sees no change."""
    try:
        return (t.p(f"{boot}/config.txt").stat().st_mode & 0o777) == 0o755
    except OSError:
        return False


def step_system(t: Target, a) -> None:
    t.write("/etc/security/limits.d/pi-synth.conf", limits_conf())
    t.write("/etc/systemd/journald.conf.d/pi-synth.conf", journald_conf())
    fstab = t.read("/etc/fstab") or ""
    t.write("/etc/fstab", edit_fstab(fstab))
    asound = asound_conf(a.hat)
    if asound:
        t.write("/etc/asound.conf", asound)
    units = REPO / "systemd"
    for unit in ("pi-synth.service", "pi-synth-governor.service", "pi-synth-firstboot.service",
                 "pi-synth-web.service"):
        t.write(f"/etc/systemd/system/{unit}", (units / unit).read_bytes())
    for unit in ("pi-synth.service", "pi-synth-governor.service"):
        t.symlink(f"/etc/systemd/system/multi-user.target.wants/{unit}", f"/etc/systemd/system/{unit}")
    # Bluetooth gave its UART to MIDI (dtoverlay=disable-bt): its attach service would fail
    if t.p("/lib/systemd/system/hciuart.service").exists() or t.p("/usr/lib/systemd/system/hciuart.service").exists():
        t.symlink("/etc/systemd/system/hciuart.service", "/dev/null")


def step_hostname(t: Target, name: str) -> None:
    changed = t.write("/etc/hostname", name + "\n")
    changed |= t.write("/etc/hosts", edit_hosts(t.read("/etc/hosts") or "127.0.0.1\tlocalhost\n", name))
    if changed and t.live and not t.dry_run and Path("/run/systemd/system").is_dir():
        subprocess.run(["hostname", name], check=False)  # now, not only after the next boot


def step_first_boot(t: Target, a, pending: list[str]) -> None:
    link = "/etc/systemd/system/multi-user.target.wants/pi-synth-firstboot.service"
    if pending:
        args = {"hat": a.hat, "no_onboard_audio": a.no_onboard_audio, "read_only": a.read_only,
                "pending": pending}
        t.write(PENDING, json.dumps(args, indent=1, sort_keys=True) + "\n", 0o600)
        t.symlink(link, "/etc/systemd/system/pi-synth-firstboot.service")
    else:
        t.remove(PENDING)
        t.remove(link)


def read_only_enabled(t: Target, boot: str | None) -> bool:
    return bool(boot) and "overlayroot=tmpfs" in (t.read(f"{boot}/cmdline.txt") or "")


def step_read_only(t: Target, boot: str | None) -> bool:
    """True when done (or nothing to do here: first boot does it)."""
    if read_only_enabled(t, boot):
        return True
    if not t.live:
        return False  # raspi-config must run on the Pi (initramfs, overlayroot): first boot
    if not shutil.which("raspi-config"):
        raise Failed("--read-only needs raspi-config (Raspberry Pi OS): apt-get install raspi-config")
    t.change("enable the read-only overlay root (raspi-config nonint do_overlayfs 0)")
    if not t.dry_run:
        _check(["raspi-config", "nonint", "do_overlayfs", "0"], "raspi-config do_overlayfs")
        t.reboot_needed = True
    return True


def provision(a) -> dict:
    """Provision per ``a`` (main's arguments); returns the summary ``--json`` prints."""
    a.settings = parse_settings(a.set)
    if a.hostname and not re.fullmatch(r"(?!-)[a-z0-9-]{1,63}(?<!-)", a.hostname):
        raise BadInput(f"--hostname {a.hostname!r}: use lowercase letters, digits and '-' "
                       "(at most 63, not at either end), e.g. box-07")
    if a.settings:  # before anything changes: a typo in a key stops the run here
        check_settings(a.settings)
    t = Target(a.root, a.dry_run, a.boot)
    if not t.p("/etc/os-release").exists() and not t.p("/usr/lib/os-release").exists():
        raise BadInput(f"{t.root} has no /etc/os-release: not a Debian / Raspberry Pi OS root; "
                       "pass --root MOUNTPOINT of the image's root partition")
    if os.geteuid() != 0 and not a.dry_run:
        raise BadInput("provisioning changes system files: run with sudo (or --dry-run as any user)")
    if a.first_boot:
        saved = json.loads(t.read(PENDING) or "{}")
        for k in ("hat", "no_onboard_audio", "read_only"):
            if k in saved:
                setattr(a, k, saved[k])
    boot = boot_dir(t)
    if a.settings and not boot:
        raise BadInput(f"--set: no /boot/firmware/config.txt under {t.root}, so no pi-synth.toml to set "
                       "keys in (not Raspberry Pi OS?)")
    where = "this Pi" if t.live else str(t.root)
    print(f"pi-synth provision: {where}{' (dry run)' if a.dry_run else ''}, hat {a.hat}"
          f"{', onboard audio off' if a.no_onboard_audio else ''}{', read-only root' if a.read_only else ''}",
          flush=True)
    pending = []
    if not step_apt(t, a):
        pending.append("apt")
    step_user(t)
    step_web_user(t)
    fingerprint = step_source(t)
    if not step_venv(t, fingerprint, can_run="apt" not in pending and not a.skip_apt
                     and (t.live or t.runner() is not None)):
        pending.append("venv")
    step_state(t)
    boot_changed = False
    if boot:
        boot_changed = step_boot(t, a, boot)
    else:
        print("  note: no /boot/firmware/config.txt here: SPI/I2C/UART/HAT settings skipped "
              "(not Raspberry Pi OS?)", flush=True)
    step_system(t, a)
    if a.hostname:
        step_hostname(t, a.hostname)
    if a.read_only and not step_read_only(t, boot):
        pending.append("read-only")
    step_first_boot(t, a, pending)
    if not t.changes:
        print("no changes")
    else:
        n = len(t.changes)
        print(f"{'would make' if a.dry_run else 'made'} {n} change{'s' if n != 1 else ''}")
    if pending:
        print(f"on first boot (pi-synth-firstboot.service, needs network): {', '.join(pending)}")
    only_config = t.config_changed and len(t.changes) == 1
    if t.live and not a.dry_run and t.changes:
        if shutil.which("systemctl") and Path("/run/systemd/system").is_dir():
            subprocess.run(["systemctl", "daemon-reload"], check=False)
            if only_config:  # SIGHUP: the new config without a gap in the sound
                subprocess.run(["systemctl", "try-reload-or-restart", "pi-synth.service"], check=False)
            elif not boot_changed and not a.first_boot:  # new code or unit: restart if it was running
                subprocess.run(["systemctl", "try-restart", "pi-synth.service"], check=False)
        if boot_changed or t.reboot_needed:
            if a.first_boot and t.reboot_needed:
                print("rebooting into the read-only root", flush=True)
                subprocess.run(["systemctl", "--no-block", "reboot"], check=False)
            else:
                print("reboot to apply the boot configuration: sudo reboot")
    return {"changed": bool(t.changes), "changes": t.changes, "pending": pending,
            "reboot_needed": bool(boot_changed or t.reboot_needed), "dry_run": a.dry_run}


def pack(out: str) -> bool:
    """The files :func:`source_files` copies to a Pi, as a tarball whose bytes depend on their
    contents only (sorted, no times or owners); written only if different. True if written."""
    import io

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, full in source_files():
            data = full.read_bytes()
            info = tarfile.TarInfo(rel)
            info.size, info.mtime, info.uid, info.gid = len(data), 0, 0, 0
            info.mode = 0o755 if os.access(full, os.X_OK) else 0o644
            tar.addfile(info, io.BytesIO(data))
    data = gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)
    dest = Path(out)
    if dest.is_file() and dest.read_bytes() == data:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="provision.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="/", help="provision the root filesystem mounted at DIR "
                   "(its boot partition mounted at DIR/boot/firmware)")
    p.add_argument("--boot", help="the boot partition's files are in DIR, not ROOT/boot/firmware "
                   "(scripts/build-image.sh, where FAT cannot be mounted)")
    p.add_argument("--hat", default="none", choices=sorted(HATS), help="audio HAT overlay")
    p.add_argument("--no-onboard-audio", action="store_true", help="turn the Pi's own audio (and HDMI audio) off")
    p.add_argument("--read-only", action="store_true", help="overlay root: the SD card is never written")
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    p.add_argument("--skip-apt", action="store_true",
                   help="leave apt and the venv to the first boot (pi-synth-firstboot.service)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="set one key of /boot/firmware/pi-synth.toml, keeping the rest of the file "
                   "(repeatable), e.g. --set midi.channel=2 --set osc.port=9001")
    p.add_argument("--hostname", help="name this machine (/etc/hostname, /etc/hosts), e.g. box-07")
    p.add_argument("--json", action="store_true",
                   help="progress on stderr, one JSON summary on stdout (changed, changes, pending, reboot_needed)")
    p.add_argument("--pack", metavar="OUT.tar.gz",
                   help="write the files provisioning copies to a Pi as one tarball, and exit")
    p.add_argument("--first-boot", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    try:
        if a.pack:
            wrote = pack(a.pack)
            print(json.dumps({"changed": wrote, "path": a.pack}) if a.json else
                  f"{'wrote' if wrote else 'unchanged:'} {a.pack}")
            return 0
        if a.json:
            with contextlib.redirect_stdout(sys.stderr):
                summary = provision(a)
            print(json.dumps(summary))
        else:
            provision(a)
        return 0
    except BadInput as e:
        print(f"provision: {e}", file=sys.stderr)
        return 2
    except Failed as e:
        print(f"provision: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
