"""The units under systemd/: real systemd-analyze verify and security, and the program under
the unit's MemoryDenyWriteExecute.

``systemd-analyze verify`` checks that ExecStart's binary exists; the tests verify a copy
of each unit whose ExecStart points at an existing binary (``/bin/true``): the rest of
the unit is verified as shipped. systemd-analyze comes with the ``systemd`` apt package.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
ANALYZE = shutil.which("systemd-analyze")



def _analyze():
    if not ANALYZE:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (scripts/install.sh --dev)")
    return ANALYZE


def _unit_copy(name: str, tmp_path: Path) -> Path:
    text = (UNITS / name).read_text()
    true = shutil.which("true")
    text = re.sub(r"^ExecStart=(?:/usr/bin/python3|/opt/pi-synth/venv/bin/pi-synth)(.*)$",
                  lambda m: f"ExecStart={true}{m.group(1)}", text, flags=re.M)
    out = tmp_path / name
    out.write_text(text)
    return out


def _props(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


@pytest.mark.parametrize("name", ["pi-synth.service", "pi-synth-governor.service",
                                  "pi-synth-firstboot.service", "pi-synth-web.service"])
def test_verify_is_clean(name, tmp_path):
    unit = _unit_copy(name, tmp_path)
    p = subprocess.run([_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr


@pytest.mark.parametrize("name", ["pi-synth.service", "pi-synth-web.service"])
def test_security_exposure_at_most_2_5(name, tmp_path):
    unit = _unit_copy(name, tmp_path)
    p = subprocess.run([_analyze(), "security", "--offline=true", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(rf"Overall exposure level for {re.escape(name)}: ([0-9.]+)", p.stdout)
    assert m, p.stdout + p.stderr
    exposure = float(m.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= 2.5


def test_the_unit_says_what_the_service_needs():
    u = _props("pi-synth.service")
    assert u["Type"] == ["notify"] and u["NotifyAccess"] == ["main"]
    assert u["ExecStart"] == ["/opt/pi-synth/venv/bin/pi-synth run"]
    assert u["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert u["Restart"] == ["on-failure"] and u["WatchdogSec"]
    assert u["User"] == ["pisynth"]
    assert set(u["SupplementaryGroups"][0].split()) == {"audio", "gpio", "spi", "i2c", "dialout"}
    assert u["LimitRTPRIO"] == ["95"] and u["LimitMEMLOCK"] == ["infinity"]
    assert u["StateDirectory"] == ["pi-synth"] and u["ReadWritePaths"] == ["/var/lib/pi-synth"]
    assert u["CapabilityBoundingSet"] == [""] and u["ProtectSystem"] == ["strict"]
    assert "RestrictRealtime" not in u  # the audio threads need SCHED_FIFO
    # the paths provisioning installs to (the values its code uses) are the ones the unit runs
    provision = _provision()
    assert u["ExecStart"] == [f"{provision.VENV}/bin/pi-synth run"]
    assert u["User"] == [provision.USER] and u["ReadWritePaths"] == [provision.STATE]


def test_the_web_unit_runs_the_page_unprivileged_writing_only_uploads():
    u = _props("pi-synth-web.service")
    provision = _provision()
    assert u["ExecStart"] == [f"{provision.VENV}/bin/pi-synth web"]
    assert u["User"] == [provision.WEB_USER] and u["Group"] == [provision.WEB_USER]
    assert "SupplementaryGroups" not in u  # no audio, gpio, … : it touches no device
    assert u["ReadWritePaths"] == [provision.UPLOADS] and u["ProtectSystem"] == ["strict"]
    assert u["CapabilityBoundingSet"] == [""] and u["NoNewPrivileges"] == ["yes"]
    assert u["PrivateDevices"] == ["yes"] and u["RestrictRealtime"] == ["yes"]
    assert u["RestartPreventExitStatus"] == ["2"]  # off, or LAN without password: no restart loop
    # the model check (a child) sets its own limits: setrlimit and nice must not be filtered
    assert "@resources" not in " ".join(u["SystemCallFilter"])
    from pi_synth.model.library import UPLOAD_MODELS

    assert provision.UPLOADS == UPLOAD_MODELS


def _provision():
    """scripts/provision.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("provision", ROOT / "scripts" / "provision.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _mdwe_supported() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(66, 0, 0, 0, 0) >= 0  # PR_GET_MDWE, Linux >= 6.3


@pytest.mark.skipif(not _mdwe_supported(), reason="kernel without PR_SET_MDWE (Linux < 6.3)")
def test_plays_under_memory_deny_write_execute(tmp_path):
    """MemoryDenyWriteExecute=yes is what systemd sets with PR_SET_MDWE (on kernels that have
    it): onnxruntime, numpy and the ctypes callback of the ALSA backend must live with it."""
    code = (
        "import ctypes, mmap, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "assert libc.prctl(65, 1, 0, 0, 0) == 0, ctypes.get_errno()  # PR_SET_MDWE, REFUSE_EXEC_GAIN\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    sys.exit('W+X mapping was allowed: MDWE not in force')\n"
        "except OSError:\n"
        "    pass\n"
        "from pi_synth.cli import main\n"
        "sys.exit(main(['run', '--backend', 'alsa', '--device', 'pisynth_null', '--seconds', '0.5']))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "played" in p.stderr
