"""scripts/provision.sh for real, against a Debian root made with debootstrap; and the image builder.

The slow tests build (once, cached in work/debootstrap-cache/, gitignored) a minbase
Debian bookworm root of the host's architecture, add a Raspberry Pi OS style
/boot/firmware (config.txt, cmdline.txt), and provision a copy of it: apt and pip run
inside it for real (chroot, as root), then a second run must change nothing. They need
root, debootstrap and the network (deb.debian.org, PyPI).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from _debian import CMDLINE_TXT, CONFIG_TXT, fresh_root

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "provision.py"


def _load():
    spec = importlib.util.spec_from_file_location("provision", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


prov = _load()


# -- fast: the text edits and the arguments --------------------------------------------


def test_config_txt_block_is_idempotent_and_reversible():
    once = prov.edit_config_txt(CONFIG_TXT, "hifiberry-dacplus", True)
    assert prov.edit_config_txt(once, "hifiberry-dacplus", True) == once
    lines = once.splitlines()
    for want in ("dtparam=spi=on", "dtparam=i2c_arm=on", "enable_uart=1", "dtoverlay=midi-uart0",
                 "dtoverlay=disable-bt", "dtoverlay=hifiberry-dacplus", "dtparam=audio=off"):
        assert lines.count(want) == 1, want
    assert "dtparam=audio=on" not in lines
    assert any(l.startswith("dtoverlay=vc4-kms-v3d,noaudio") for l in lines)
    assert lines.index(prov.BEGIN) > lines.index("[cm4]")  # after every conditional section
    assert lines[lines.index(prov.BEGIN) + 1] == "[all]"
    # a run with other flags replaces the block and restores the stock lines
    back = prov.edit_config_txt(once, "none", False)
    assert "dtparam=audio=on" in back.splitlines() and "dtoverlay=vc4-kms-v3d" in back.splitlines()
    assert "hifiberry" not in back and "noaudio" not in back
    assert back.replace(back[back.index(prov.BEGIN):], "") == CONFIG_TXT.rstrip("\n") + "\n\n"


def test_cmdline_loses_the_serial_console_only():
    out = prov.edit_cmdline_txt(CMDLINE_TXT)
    assert "console=serial0" not in out and "console=tty1" in out
    assert out.endswith("firstboot\n") and "\n" not in out[:-1]
    assert prov.edit_cmdline_txt(out) == out


def test_toml_template_names_the_hat_card():
    template = (ROOT / "src/pi_synth/data/pi-synth.toml").read_text()
    toml = prov.toml_from_template(template, "iqaudio-dacplus")
    assert 'device = "plughw:CARD=IQaudIODAC"' in toml
    assert prov.toml_from_template(template, "usb") == template
    from pi_synth.config import parse
    assert parse(toml).audio.device == "plughw:CARD=IQaudIODAC"


def _run(*args, timeout=900):
    return subprocess.run([str(ROOT / "scripts" / "provision.sh"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_bad_arguments_exit_2(tmp_path):
    p = _run("--hat", "soundblaster", "--dry-run")
    assert p.returncode == 2 and "invalid choice" in p.stderr
    p = _run("--root", tmp_path, "--dry-run")
    assert p.returncode == 2 and "not a Debian" in p.stderr


def test_dry_run_on_an_empty_os_tree_changes_nothing(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text("ID=debian\n")
    (tmp_path / "boot/firmware").mkdir(parents=True)
    (tmp_path / "boot/firmware/config.txt").write_text(CONFIG_TXT)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    p = _run("--root", tmp_path, "--dry-run", "--skip-apt")
    assert p.returncode == 0, p.stderr
    assert "would update /boot/firmware/config.txt" in p.stdout
    assert "would create user pisynth" in p.stdout
    assert "would create user pisynth-web (the web page)" in p.stdout
    assert "would create /var/lib/pi-synth/models/" in p.stdout
    assert "would create /etc/systemd/system/pi-synth-web.service" in p.stdout
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "boot/firmware/config.txt").read_text() == CONFIG_TXT


def test_set_rewrites_only_its_keys_and_keeps_every_other_line():
    template = (ROOT / "src/pi_synth/data/pi-synth.toml").read_text()
    user = template.replace("bend_range = 2.0", "bend_range = 12.0  # mine")  # a participant's edit
    settings = prov.parse_settings(["midi.channel=3", "osc.port=9001", "osc.host=0.0.0.0", "model.path=flute",
                                    "knobs.channels=[0, 1]", "output.gain_db=-3.5", "osc.enabled=true"])
    out = prov.edit_toml(user, settings)
    assert prov.edit_toml(out, settings) == out  # idempotent
    changed = [(a, b) for a, b in zip(user.splitlines(), out.splitlines()) if a != b]
    assert len(out.splitlines()) == len(user.splitlines())
    assert [b for _, b in changed] == ['path = "flute"', "gain_db = -3.5", "channel = 3", "channels = [0, 1]",
                                       "enabled = true", 'host = "0.0.0.0"', "port = 9001"]
    from pi_synth.config import parse
    cfg = parse(out)
    assert (cfg.midi.channel, cfg.osc.port, cfg.osc.host, cfg.model.path) == (3, 9001, "0.0.0.0", "flute")
    assert cfg.midi.bend_range == 12.0 and cfg.knobs.channels == [0, 1] and cfg.osc.enabled is True
    # a key the file lacks goes at the end of its section; a missing section at the end of the file
    short = "[midi]\nchannel = 1\n\n[audio]\ndevice = \"default\"\n"
    out = prov.edit_toml(short, prov.parse_settings(["midi.bend_range=7", "osc.port=9002", 'audio.device="hw:1"']))
    assert out == '[midi]\nchannel = 1\nbend_range = 7\n\n[audio]\ndevice = "hw:1"\n\n[osc]\nport = 9002\n'
    assert parse(out).midi.bend_range == 7.0


@pytest.mark.parametrize("args, words", [
    (["--set", "midi.chanel=2"], ["--set midi.chanel", "not a pi-synth setting", "known in [midi]: channel"]),
    (["--set", "midi.channel=17"], ["--set", "midi.channel", "0..16", "17"]),
    (["--set", "midichannel"], ["SECTION.KEY=VALUE"]),
    (["--set", "nosuch.key=x"], ["--set nosuch.key", "not a pi-synth setting", "no section [nosuch]"]),
    # the system python3 provision runs with has no gpiozero: the chips are named all the same
    (["--set", "knobs.chip=mcp3009"], ["knobs.chip", "mcp3008", "got 'mcp3009'"]),
    (["--hostname", "Box_7"], ["--hostname", "lowercase"]),
])
def test_bad_settings_exit_2_before_anything_changes(tmp_path, args, words):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text("ID=debian\n")
    (tmp_path / "boot/firmware").mkdir(parents=True)
    (tmp_path / "boot/firmware/config.txt").write_text(CONFIG_TXT)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    p = _run("--root", tmp_path, "--skip-apt", *args)  # not a dry run: nothing may be written all the same
    assert p.returncode == 2 and p.stdout == "", (p.stdout, p.stderr)
    line, = p.stderr.strip().splitlines()
    assert all(w in line for w in words), line
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_json_summary_says_what_would_change(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text("ID=debian\n")
    (tmp_path / "boot/firmware").mkdir(parents=True)
    (tmp_path / "boot/firmware/config.txt").write_text(CONFIG_TXT)
    # (knobs.chip's choices come from the chips pi-synth has, which the system python3 running
    # this cannot import: that value is left to pi-synth on the Pi)
    p = _run("--root", tmp_path, "--dry-run", "--skip-apt", "--json", "--set", "midi.channel=2",
             "--set", "knobs.chip=mcp3008", "--hostname", "box-07")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)  # stdout is the JSON alone; progress went to stderr
    assert summary["changed"] and summary["dry_run"] and summary["reboot_needed"]
    assert summary["pending"] == ["apt", "venv"]
    for want in ("create /boot/firmware/pi-synth.toml", "create /etc/hostname", "create /etc/hosts",
                 "create user pisynth (groups audio, gpio, spi, i2c, dialout)"):
        assert want in summary["changes"], summary["changes"]
    assert summary["changes"].count("create /boot/firmware/pi-synth.toml") == 1
    assert "would create /etc/hostname" in p.stderr


def test_pack_is_the_checkout_provisioning_copies_byte_for_byte(tmp_path):
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    assert prov.pack(str(a)) and prov.pack(str(b))
    assert a.read_bytes() == b.read_bytes()  # no times, owners or order in it: same checkout, same bytes
    assert not prov.pack(str(a))  # unchanged: not rewritten
    import tarfile
    with tarfile.open(a) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [rel for rel, _ in prov.source_files()]
        for m, (rel, full) in zip(members, prov.source_files()):
            assert tar.extractfile(m).read() == full.read_bytes(), rel
            assert m.mtime == 0 and m.uid == 0 and m.mode in (0o644, 0o755)
    p = _run("--pack", a, "--json")
    assert p.returncode == 0 and json.loads(p.stdout) == {"changed": False, "path": str(a)}


# -- slow: a real Debian root ----------------------------------------------------------


def _checkout(dest: Path) -> Path:
    """A snapshot of what the provisioner copies, so concurrent edits cannot disturb the test."""
    for rel, full in prov.source_files():
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(full, out)
    return dest


def _provision(checkout: Path, *args, timeout=1200):
    t0 = time.monotonic()
    p = subprocess.run([str(checkout / "scripts/provision.sh"), *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - t0


def _tree_digest(root: Path, skip=("proc", "sys", "dev", "var/cache/apt", "var/lib/apt/lists")) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(d for d in dirnames if os.path.join(rel, d).lstrip("./") not in skip)
        for f in sorted(filenames):
            full = os.path.join(dirpath, f)
            st = os.lstat(full)
            h.update(f"{rel}/{f} {st.st_mode:o} {st.st_size} {int(st.st_mtime)}\n".encode())
    return h.hexdigest()


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/mounts") as f:
        return [l.split()[1] for l in f if l.split()[1].startswith(str(root))]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first run also builds the cached root (debootstrap)
def test_provision_a_debian_root_for_real(debian_root, tmp_path):
    root = fresh_root(debian_root, tmp_path / "root")
    checkout = _checkout(tmp_path / "checkout")
    p, first = _provision(checkout, "--root", root, "--hat", "hifiberry-dac", "--no-onboard-audio")
    print(p.stdout, p.stderr, f"first run {first:.1f} s", sep="\n")
    assert p.returncode == 0, p.stdout + p.stderr
    assert _mounts_under(root) == []

    boot = root / "boot/firmware"
    cfg = (boot / "config.txt").read_text().splitlines()
    for want in ("dtparam=spi=on", "dtparam=i2c_arm=on", "enable_uart=1", "dtoverlay=midi-uart0",
                 "dtoverlay=hifiberry-dac", "dtparam=audio=off"):
        assert cfg.count(want) == 1, want
    assert "console=serial0" not in (boot / "cmdline.txt").read_text()
    toml = (boot / "pi-synth.toml").read_text()
    assert 'device = "plughw:CARD=sndrpihifiberry"' in toml and "[audio]" in toml
    assert (boot / "pi-synth/models").is_dir()
    assert "@audio   -  rtprio   95" in (root / "etc/security/limits.d/pi-synth.conf").read_text()
    assert "Storage=volatile" in (root / "etc/systemd/journald.conf.d/pi-synth.conf").read_text()
    assert any(l.startswith("tmpfs /var/log tmpfs") for l in (root / "etc/fstab").read_text().splitlines())
    assert "defaults.pcm.card sndrpihifiberry" in (root / "etc/asound.conf").read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert os.readlink(wants / "pi-synth.service") == "/etc/systemd/system/pi-synth.service"
    assert os.readlink(wants / "pi-synth-governor.service") == "/etc/systemd/system/pi-synth-governor.service"
    assert not (wants / "pi-synth-firstboot.service").exists()  # nothing was left for first boot
    assert (root / "etc/systemd/system/pi-synth.service").read_bytes() == \
        (ROOT / "systemd/pi-synth.service").read_bytes()
    passwd = [l.split(":") for l in (root / "etc/passwd").read_text().splitlines()]
    user = next(u for u in passwd if u[0] == "pisynth")
    assert user[5] == "/var/lib/pi-synth" and user[6] == "/usr/sbin/nologin" and int(user[2]) < 1000
    groups = {l.split(":")[0]: l.split(":")[3].split(",") for l in (root / "etc/group").read_text().splitlines()}
    for g in ("audio", "gpio", "spi", "i2c", "dialout"):
        assert "pisynth" in groups[g], g
    # the web page: its own user in no group, its unit installed but off, uploads its only folder
    web = next(u for u in passwd if u[0] == "pisynth-web")
    assert web[6] == "/usr/sbin/nologin" and int(web[2]) < 1000
    assert not any("pisynth-web" in members for members in groups.values())
    assert (root / "etc/systemd/system/pi-synth-web.service").read_bytes() == \
        (ROOT / "systemd/pi-synth-web.service").read_bytes()
    assert not (wants / "pi-synth-web.service").exists()
    uploads = (root / "var/lib/pi-synth/models").stat()
    assert (uploads.st_uid, oct(uploads.st_mode & 0o7777)) == (int(web[2]), "0o2755")
    assert (root / "var/lib/pi-synth").stat().st_uid == int(user[2])

    # the installed program runs inside the root, and finds its model
    info = subprocess.run(["chroot", str(root), "/opt/pi-synth/venv/bin/pi-synth", "info", "default",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["path"].startswith("/opt/pi-synth/venv/")
    # pip built the C audio kernels there with the gcc and python3-dev that provisioning installs
    kern = subprocess.run(["chroot", str(root), "/opt/pi-synth/venv/bin/python", "-c",
                           "from pi_synth.audio import safety; print(safety.KERNELS)"],
                          capture_output=True, text=True, timeout=120)
    assert kern.stdout.strip() == "c", kern.stderr

    digest = _tree_digest(root)
    p2, second = _provision(checkout, "--root", root, "--hat", "hifiberry-dac", "--no-onboard-audio")
    print(p2.stdout, f"second run {second:.1f} s", sep="\n")
    assert p2.returncode == 0, p2.stderr
    assert p2.stdout.strip().splitlines()[-1] == "no changes"
    assert _tree_digest(root) == digest
    p3, _ = _provision(checkout, "--root", root, "--hat", "hifiberry-dac", "--no-onboard-audio", "--dry-run")
    assert p3.stdout.strip().splitlines()[-1] == "no changes"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_skip_apt_leaves_the_installs_to_first_boot(debian_root, tmp_path):
    root = fresh_root(debian_root, tmp_path / "root")
    checkout = _checkout(tmp_path / "checkout")
    p, _ = _provision(checkout, "--root", root, "--skip-apt", "--read-only")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "on first boot (pi-synth-firstboot.service, needs network): apt, venv, read-only" in p.stdout
    pending = json.loads((root / "var/lib/pi-synth-provision/pending.json").read_text())
    assert pending["pending"] == ["apt", "venv", "read-only"] and pending["read_only"] is True
    link = root / "etc/systemd/system/multi-user.target.wants/pi-synth-firstboot.service"
    assert os.readlink(link) == "/etc/systemd/system/pi-synth-firstboot.service"
    assert (root / "opt/pi-synth/src/scripts/provision.py").is_file()  # what first boot runs
    assert not (root / "opt/pi-synth/venv").exists()
    assert "pisynth" in (root / "etc/passwd").read_text()  # the user is made now, not on the Pi
    p2, _ = _provision(checkout, "--root", root, "--skip-apt", "--read-only")
    assert p2.stdout.strip().splitlines()[-2] == "no changes", p2.stdout


# -- the image builder -----------------------------------------------------------------

BUILD = ROOT / "scripts" / "build-image.sh"


def test_build_image_arguments_exit_2(tmp_path):
    for args, why in (([], "no input image"), (["x.iso", "-o", "o.img"], "no such file"),
                      ([str(SCRIPT), "-o", "o.img"], "expected a .img"),
                      ([str(tmp_path / "a.img")], "no such file"),
                      (["--frobnicate"], "unknown option")):
        p = subprocess.run([str(BUILD), *args], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and why in p.stderr, (args, p.stderr)
    img = tmp_path / "in.img"
    img.write_bytes(b"")
    p = subprocess.run([str(BUILD), str(img)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "-o OUT.img" in p.stderr
    p = subprocess.run([str(BUILD), str(img), "-o", str(img)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "must not be the input" in p.stderr


def _loop_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("losetup"):
        return False
    p = subprocess.run(["losetup", "-f"], capture_output=True, text=True)
    return p.returncode == 0 and p.stdout.startswith("/dev/loop")


def _partitions(img: Path) -> list[tuple[int, int]]:
    t = json.loads(subprocess.run(["sfdisk", "--json", str(img)], capture_output=True, text=True,
                                  check=True).stdout)["partitiontable"]
    return [(p["start"] * 512, p["size"] * 512) for p in t["partitions"]]


class MountedRoot:
    """The image's root partition mounted at DIR (a loop device at its offset)."""

    def __init__(self, img: Path, mnt: Path):
        self.img, self.mnt, self.loop = img, mnt, None

    def __enter__(self):
        root_off, root_size = _partitions(self.img)[1]
        self.mnt.mkdir(exist_ok=True)
        self.loop = subprocess.run(["losetup", "--find", "--show", "--offset", str(root_off), "--sizelimit",
                                    str(root_size), str(self.img)], capture_output=True, text=True,
                                   check=True).stdout.strip()
        if subprocess.run(["mount", self.loop, str(self.mnt)]).returncode != 0:
            subprocess.run(["losetup", "-d", self.loop], check=False)
            raise RuntimeError(f"cannot mount the root partition of {self.img}")
        return self.mnt

    def __exit__(self, *exc):
        subprocess.run(["umount", str(self.mnt)], check=False)
        subprocess.run(["losetup", "-d", self.loop], check=False)


def _boot_files(img: Path, dest: Path) -> Path:
    """The boot partition's files, read with mtools (this kernel may not mount FAT)."""
    off = _partitions(img)[0][0]
    dest.mkdir()
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    subprocess.run(["mcopy", "-s", "-n", "-i", f"{img}@@{off}", "::*", str(dest)], check=True, env=env)
    return dest


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not _loop_works(), reason="needs root and loop devices")
def test_build_image_from_a_synthetic_raspios_image(debian_root, tmp_path):
    for tool in ("sfdisk", "mkfs.vfat", "mkfs.ext4", "mcopy", "xz"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing: apt-get install fdisk dosfstools mtools e2fsprogs xz-utils")
    # a Raspberry Pi OS-shaped image: FAT boot partition + ext4 root, made without mounting
    stage = tmp_path / "stage"
    subprocess.run(["cp", "-a", str(debian_root), str(stage)], check=True)
    (stage / "boot/firmware").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.txt").write_text(CONFIG_TXT)
    (tmp_path / "cmdline.txt").write_text(CMDLINE_TXT)
    img = tmp_path / "raspios.img"
    boot_start, boot_sectors, total_mb = 8192, 64 * 2048, 700
    subprocess.run(["truncate", "-s", f"{total_mb}M", str(img)], check=True)
    subprocess.run(["sfdisk", "-q", str(img)], check=True, text=True,
                   input=f"label: dos\nstart={boot_start}, size={boot_sectors}, type=c\n"
                         f"start={boot_start + boot_sectors}, type=83\n")
    (boot_off, boot_size), (root_off, root_size) = _partitions(img)
    subprocess.run(["mkfs.vfat", "-F", "16", "-n", "BOOTFS", "--offset", str(boot_start), str(img),
                    str(boot_size // 1024)], check=True, capture_output=True)
    subprocess.run(["mcopy", "-i", f"{img}@@{boot_off}", str(tmp_path / "config.txt"),
                    str(tmp_path / "cmdline.txt"), "::"], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-E", f"offset={root_off}", "-d", str(stage),
                    str(img), f"{root_size // 1024}k"], check=True, capture_output=True)
    shutil.rmtree(stage)
    subprocess.run(["xz", "-0", "-T0", str(img)], check=True)

    out = tmp_path / "pi-synth.img"
    t0 = time.monotonic()
    p = subprocess.run([str(BUILD), f"{img}.xz", "-o", str(out), "--hat", "pisound", "--no-onboard-audio",
                        "--read-only"], capture_output=True, text=True, timeout=600)
    print(p.stdout, p.stderr, f"build-image {time.monotonic() - t0:.1f} s", sep="\n")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "on first boot (pi-synth-firstboot.service, needs network): apt, venv, read-only" in p.stdout
    assert _partitions(out) == [(boot_off, boot_size), (root_off, root_size)]
    assert not [l for l in open("/proc/mounts") if str(tmp_path) in l]  # the builder unmounted

    boot = _boot_files(out, tmp_path / "boot")
    cfg = (boot / "config.txt").read_text().splitlines()
    assert "dtoverlay=pisound" in cfg and "dtparam=audio=off" in cfg and "dtparam=spi=on" in cfg
    assert 'device = "plughw:CARD=pisound"' in (boot / "pi-synth.toml").read_text()
    assert "console=serial0" not in (boot / "cmdline.txt").read_text()
    assert (boot / "pi-synth/models/README.txt").is_file()
    with MountedRoot(out, tmp_path / "mnt") as mnt:
        wants = mnt / "etc/systemd/system/multi-user.target.wants"
        for unit in ("pi-synth.service", "pi-synth-governor.service", "pi-synth-firstboot.service"):
            assert os.readlink(wants / unit) == f"/etc/systemd/system/{unit}"
        assert json.loads((mnt / "var/lib/pi-synth-provision/pending.json").read_text())["read_only"]
        assert "pisynth:" in (mnt / "etc/passwd").read_text()
        # provisioning the built image again changes nothing
        again = subprocess.run([str(SCRIPT), "--root", str(mnt), "--boot", str(boot), "--hat", "pisound",
                                "--no-onboard-audio", "--read-only", "--skip-apt"],
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert "no changes" in again.stdout.splitlines(), again.stdout
