"""ansible/: a room of pi-synth boxes provisioned by Ansible, and the room's doctor table.

The slow test stands up two "Pis" on this machine: copies of the cached Debian root
(tests/_debian.py) with python3, sudo and OpenSSH, each running its own sshd (chrooted)
on a loopback address (127.0.0.2, 127.0.0.3) with a user ``pi`` who may sudo, as
Raspberry Pi Imager sets one up. ``ansible-playbook ansible/playbook.yml`` reaches them
over real ssh, as it reaches a room, and provisions them for real (apt and pip inside
them, through scripts/provision.py), pushes a model, a preset and each box's settings,
and prints the room's table from ``pi-synth doctor --json`` run on each box. A second
run must report 0 changed and leave both trees as they were. The root is of this
machine's architecture, so the boxes' programs (and their doctor) run natively.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _debian import CACHE, fresh_root, host_arch

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ANSIBLE / "filter_plugins"))
import pi_synth_room  # noqa: E402

BOX_PACKAGES = ("python3", "openssh-server", "sudo")  # what Raspberry Pi OS Lite with SSH on has
SSH_PORT = 2222


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in this venv: scripts/install.sh --dev installs the fleet extra")
    return str(path)


# -- fast: the playbook is lint-clean, and the room's table ---------------------------------


def test_ansible_lint_is_clean():
    p = subprocess.run([_tool("ansible-lint"), "--offline", "--nocolor"], cwd=ANSIBLE, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}",
                                                        ANSIBLE_HOME=str(ROOT / "work" / "ansible-home")))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 failure(s), 0 warning(s)" in p.stdout + p.stderr, p.stdout + p.stderr


def test_room_table_from_doctor_json(cli):
    # this machine's own report (no Pi hardware: warnings, and a failure where there is no sound card)
    p = cli("doctor", "--json", "--blocks", "20", timeout=120)
    assert p.returncode in (0, 2), p.stderr
    here = {"rc": p.returncode, "stdout": p.stdout}
    failing = json.loads(p.stdout)
    failing["ok"], failing["counts"]["fail"] = False, failing["counts"]["fail"] + 1
    failing["checks"].insert(3, {"name": "pcm", "status": "fail", "summary": "cannot open ALSA PCM 'hw:9'",
                                 "fix": "set [audio] device", "details": {}})
    hostvars = {"box-01": {"pi_synth_doctor_result": here},
                "box-02": {"pi_synth_doctor_result": {"rc": 2, "stdout": json.dumps(failing)}},
                "box-03": {},  # unreachable: no result at all
                "box-04": {"pi_synth_doctor_result": {"skipped": True}}}
    lines = pi_synth_room.room_table(list(hostvars), hostvars).splitlines()
    assert lines[0].split()[:5] == ["box", "doctor", "fail", "warn", "model"]
    rows = {ln.split()[0]: ln for ln in lines[1:-1]}
    assert list(rows) == ["box-01", "box-02", "box-03", "box-04"]
    rep = json.loads(p.stdout)
    model = next(c for c in rep["checks"] if c["name"] == "model")["details"]
    assert rows["box-01"].split()[1:4] == ["ok" if rep["ok"] else "FAIL", str(rep["counts"]["fail"]),
                                           str(rep["counts"]["warn"])]
    assert f"{model['model']} rtf {model['rtf']:.2f}" in rows["box-01"]
    assert "FAIL" in rows["box-02"] and "fail pcm: cannot open ALSA PCM 'hw:9'" in rows["box-02"]
    assert "no report" in rows["box-03"] and "no report" in rows["box-04"]
    bad = 1 + (not rep["ok"])
    assert lines[-1] == f"4 boxes: {2 - bad} ok, {bad} with failures, 2 without a report"
    # the columns line up: every row's status starts where the header's does
    col = lines[0].index("doctor")
    assert all(ln[col - 2:col] == "  " and ln[col] != " " for ln in lines[1:-1])


# -- slow: a room of two boxes over ssh ---------------------------------------------------


def _mount_plumbing(root: Path) -> list[Path]:
    mounted = []
    for src, dst, args in (("proc", "proc", ["-t", "proc"]), ("/sys", "sys", ["--bind"]),
                           ("/dev", "dev", ["--bind"]), ("/dev/pts", "dev/pts", ["--bind"])):
        d = root / dst
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", *args, src, str(d)], check=True)
        mounted.append(d)
    return mounted


def _unmount(mounted: list[Path]) -> None:
    for d in reversed(mounted):
        subprocess.run(["umount", "-l", str(d)], check=False)


def _box_base(debian_root: Path) -> Path:
    """The cached root plus what a Pi reached over SSH has: python3, sudo, sshd, user pi (no
    password: key only; "*", not locked, or sshd refuses the key too)."""
    base = CACHE / f"bookworm-{host_arch()}-box"
    if (base / ".complete").exists():
        return base
    tmp = base.with_name(base.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["cp", "-a", str(debian_root), str(tmp)], check=True)
    (tmp / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\n# no init runs here: never start services\nexit 101\n")
    (tmp / "usr/sbin/policy-rc.d").chmod(0o755)
    shutil.copyfile("/etc/resolv.conf", tmp / "etc/resolv.conf")
    mounted = _mount_plumbing(tmp)
    try:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
        for argv in (["apt-get", "update", "-qq"],
                     ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *BOX_PACKAGES],
                     ["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", "pi"]):
            p = subprocess.run(["chroot", str(tmp), *argv], env=env, capture_output=True, text=True, timeout=900)
            if p.returncode != 0:
                pytest.fail(f"{' '.join(argv)} in the box root failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    finally:
        _unmount(mounted)
    (tmp / "etc/sudoers.d/pi").write_text("pi ALL=(ALL) NOPASSWD:ALL\n")
    (tmp / "etc/sudoers.d/pi").chmod(0o440)
    shutil.rmtree(tmp / "var/lib/apt/lists", ignore_errors=True)
    (tmp / "var/lib/apt/lists/partial").mkdir(parents=True)
    (tmp / ".complete").write_text("python3, openssh-server, sudo; user pi\n")
    shutil.rmtree(base, ignore_errors=True)
    tmp.rename(base)
    return base


class Box:
    """One Pi stand-in: a root with its own sshd on ADDRESS:2222, chrooted."""

    def __init__(self, base: Path, root: Path, address: str, pubkey: str):
        self.root, self.address = fresh_root(base, root), address
        (root / ".complete").unlink(missing_ok=True)
        ssh = root / "home/pi/.ssh"
        ssh.mkdir(mode=0o700)
        (ssh / "authorized_keys").write_text(pubkey)
        uid = next(int(l.split(":")[2]) for l in (root / "etc/passwd").read_text().splitlines()
                   if l.startswith("pi:"))
        for p in (ssh, ssh / "authorized_keys"):
            os.chown(p, uid, uid)
        # the box trusts what this machine trusts (a room behind a proxy: its CA, for apt and pip)
        if os.path.isfile(os.environ.get("PIP_CERT", "")):
            shutil.copyfile(os.environ["PIP_CERT"], root / "etc/ssl/certs/ca-certificates.crt")
            (root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
        shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
        (root / "run/sshd").mkdir(parents=True, exist_ok=True)
        self.mounted = _mount_plumbing(root)
        self.sshd = subprocess.Popen(["chroot", str(root), "/usr/sbin/sshd", "-D", "-e", "-p", str(SSH_PORT),
                                      "-o", f"ListenAddress={address}", "-o", "UsePAM=no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((address, SSH_PORT), timeout=1).close()
                break
            except OSError:
                if self.sshd.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    pytest.fail(f"sshd in {root} did not start: {self.sshd.stderr.read()[-2000:]}")
                time.sleep(0.2)

    def close(self) -> None:
        if self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
        _unmount(self.mounted)


@pytest.fixture
def room(debian_root, tmp_path):
    if not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        pytest.fail("ssh is not installed: scripts/install.sh --dev installs openssh-client")
    base = _box_base(debian_root)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    boxes = {}
    try:
        for n, address in ((1, "127.0.0.2"), (2, "127.0.0.3")):
            boxes[f"box-0{n}"] = Box(base, tmp_path / f"box-0{n}", address, (key.with_suffix(".pub")).read_text())
        yield boxes, key
    finally:
        for b in boxes.values():
            b.close()
        for b in boxes.values():
            shutil.rmtree(b.root, ignore_errors=True)


def _playbook(inventory: Path, tmp: Path, *extra: str, timeout: int = 2400) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"),
               ANSIBLE_HOME=str(tmp / "ansible-home"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               # no ssh master outliving the run (and its box): one connection per task
               ANSIBLE_SSH_ARGS="-o ControlMaster=no")
    t0 = time.monotonic()
    p = subprocess.run([_tool("ansible-playbook"), "-i", str(inventory), str(ANSIBLE / "playbook.yml"), *extra],
                       cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - t0


def _recap(stdout: str) -> dict[str, dict[str, int]]:
    out = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", stdout, re.M):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


def _tree_digest(root: Path) -> str:
    """Every path, mode, size and mtime, minus what ssh sessions and Ansible's own temp files touch."""
    skip = {"proc", "sys", "dev", "run", "tmp", "var/log", "var/cache", "var/lib/apt/lists", "root/.ansible",
            "home/pi/.ansible", "root/.cache", "var/lib/sudo"}
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(d for d in dirnames if os.path.normpath(os.path.join(rel, d)) not in skip)
        for f in sorted(filenames):
            st = os.lstat(os.path.join(dirpath, f))
            h.update(f"{rel}/{f} {st.st_mode:o} {st.st_uid} {st.st_size} {int(st.st_mtime)}\n".encode())
    return h.hexdigest()


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the first run also builds the cached roots (debootstrap, then sshd)
def test_playbook_provisions_a_room_and_a_second_run_changes_nothing(room, organ, tmp_path):
    boxes, key = room
    from pi_synth.control.presets import PresetStore

    model = organ("room-organ")
    preset = PresetStore(tmp_path / "presets").save(5, model="room-organ", values={"brightness": 0.25})
    hosts = {name: {"ansible_host": b.address, "ansible_port": SSH_PORT, "pi_synth_midi_channel": n,
                    "pi_synth_osc_port": 9000 + n}
             for n, (name, b) in enumerate(boxes.items(), start=1)}
    inventory = tmp_path / "inventory.json"  # YAML inventory, written as JSON (a subset)
    inventory.write_text(json.dumps({"pi_synth": {"hosts": hosts, "vars": {
        "ansible_user": "pi", "ansible_ssh_private_key_file": str(key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "pi_synth_pack": str(tmp_path / "pack" / "pi-synth-src.tar.gz"),
        "pi_synth_hat": "hifiberry-dac", "pi_synth_hostname": "{{ inventory_hostname }}",
        "pi_synth_osc_enabled": True, "pi_synth_config": {"output.gain_db": -3.0},
        "pi_synth_models": [str(model)], "pi_synth_presets": [str(preset)],
        "pi_synth_reboot": False}}}, indent=1))

    p, first = _playbook(inventory, tmp_path)
    print(p.stdout[-6000:], p.stderr[-3000:], f"first run {first:.1f} s", sep="\n")
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-3000:]
    recap = _recap(p.stdout)
    for name in boxes:
        assert recap[name]["failed"] == 0 and recap[name]["unreachable"] == 0, recap
        assert recap[name]["changed"] > 0, recap

    from pi_synth.config import parse

    template = (ROOT / "src/pi_synth/data/pi-synth.toml").read_text()
    for n, (name, b) in enumerate(boxes.items(), start=1):
        toml = (b.root / "boot/firmware/pi-synth.toml").read_text()
        cfg = parse(toml)
        assert cfg.midi.channel == n and cfg.osc.port == 9000 + n and cfg.osc.enabled is True
        assert cfg.output.gain_db == -3.0 and cfg.audio.device == "plughw:CARD=sndrpihifiberry"
        # only the keys that were set differ from the template: every comment and other key stays
        changed = [(a, c) for a, c in zip(template.splitlines(), toml.splitlines()) if a != c]
        assert [c for _, c in changed] == ['device = "plughw:CARD=sndrpihifiberry"', "gain_db = -3.0",
                                           f"channel = {n}", "enabled = true", f"port = {9000 + n}"], changed
        assert (b.root / "etc/hostname").read_text() == f"{name}\n"
        assert f"127.0.1.1\t{name}" in (b.root / "etc/hosts").read_text().splitlines()
        assert (b.root / "boot/firmware/pi-synth/models/room-organ.onnx").read_bytes() == model.read_bytes()
        pushed = b.root / "var/lib/pi-synth/presets/preset-05.json"
        assert json.loads(pushed.read_text()) == json.loads(preset.read_text())
        uid = next(int(l.split(":")[2]) for l in (b.root / "etc/passwd").read_text().splitlines()
                   if l.startswith("pisynth:"))
        assert pushed.stat().st_uid == uid
        assert "dtoverlay=hifiberry-dac" in (b.root / "boot/firmware/config.txt").read_text().splitlines()
        assert (b.root / "opt/pi-synth/venv/bin/pi-synth").exists()

    # the room's table: one row per box, from the doctor each box ran (natively, in its root)
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\s*(box-0\d)\s+(ok|FAIL)\s+\d+\s+\d+\s+.*$", p.stdout, re.M)}
    assert set(rows) == set(boxes), p.stdout[-4000:]
    for line in rows.values():
        assert "room-organ" not in line  # the default model plays: the pushed one is only installed
        assert re.search(r"\b(flute|organ|morph) rtf \d+\.\d\d\b", line), line
    assert re.search(r"2 boxes: \d ok, \d with failures, 0 without a report", p.stdout)

    # a participant edits a key on box-01 by hand; the room is provisioned again
    b1 = boxes["box-01"].root / "boot/firmware/pi-synth.toml"
    b1.write_text(b1.read_text().replace("bend_range = 2.0", "bend_range = 12.0"))
    digests = {name: _tree_digest(b.root) for name, b in boxes.items()}
    p2, second = _playbook(inventory, tmp_path)
    print(p2.stdout[-3000:], f"second run {second:.1f} s", sep="\n")
    assert p2.returncode == 0, p2.stdout[-6000:] + p2.stderr[-3000:]
    recap2 = _recap(p2.stdout)
    assert set(recap2) >= set(boxes) | {"localhost"}
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in recap2.values()), recap2
    assert {name: _tree_digest(b.root) for name, b in boxes.items()} == digests
    assert "bend_range = 12.0" in b1.read_text()

    # the web page's password: `pi-synth web-password` on the box stores its hash; set once,
    # then left alone (the stored hash already verifies), and never printed
    web = ("--tags", "pi_synth_web", "-e", "pi_synth_web_password=room-secret-7", "--limit", "box-01")
    p3, _ = _playbook(inventory, tmp_path, *web)
    assert p3.returncode == 0 and _recap(p3.stdout)["box-01"]["changed"] == 1, p3.stdout[-3000:]
    p4, _ = _playbook(inventory, tmp_path, *web)
    assert p4.returncode == 0 and _recap(p4.stdout)["box-01"]["changed"] == 0, p4.stdout[-3000:]
    from pi_synth.web.auth import verify_password

    toml = b1.read_text()
    assert "room-secret-7" not in toml and "bend_range = 12.0" in toml
    assert verify_password("room-secret-7", parse(toml).web.password_hash)
    assert "room-secret-7" not in p3.stdout + p3.stderr + p4.stdout + p4.stderr
