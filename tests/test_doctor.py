"""pi-synth doctor on this machine (honest warnings: no SPI here) and on a provisioned-looking root."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["config", "service", "spi", "i2c", "uart-midi", "alsa-cards", "model", "pcm", "capture", "kernels", "governor",
         "rt-limits", "power"]


def _doctor(cli, *args, env=None):
    p = cli("doctor", "--blocks", "40", *args, env=env, timeout=120)
    return p


def _check_schema(rep: dict):
    assert set(rep) == {"version", "machine", "ok", "counts", "checks"}
    assert [c["name"] for c in rep["checks"]] == NAMES
    for c in rep["checks"]:
        assert set(c) == {"name", "status", "summary", "fix", "details"}
        assert c["status"] in ("pass", "warn", "fail", "skip")
        assert c["summary"] and "\n" not in c["summary"]
        if c["status"] in ("warn", "fail"):
            assert c["fix"], c
    assert sum(rep["counts"].values()) == len(NAMES)
    assert rep["ok"] == (rep["counts"]["fail"] == 0)
    return {c["name"]: c for c in rep["checks"]}


def test_json_report_on_this_machine(cli):
    p = _doctor(cli, "--json")
    rep = json.loads(p.stdout)
    checks = _check_schema(rep)
    assert p.returncode == (0 if rep["ok"] else 2), p.stderr
    # this machine, honestly: the tests' ALSA config makes 'default' a null PCM that opens
    assert checks["pcm"]["status"] == "pass"
    assert checks["config"]["status"] == "pass" and checks["config"]["details"]["path"] is None
    assert checks["model"]["status"] in ("pass", "warn", "fail")
    assert checks["model"]["details"]["rtf"] > 0 if checks["model"]["details"] else True
    if not os.path.exists("/dev/spidev0.0"):
        assert checks["spi"]["status"] == "warn"
        assert "provision.sh" in checks["spi"]["fix"] and "do_spi" in checks["spi"]["fix"]
    if not os.path.exists("/boot/firmware/config.txt"):
        assert checks["uart-midi"]["status"] == "warn"
    if not os.path.exists("/etc/systemd/system/pi-synth.service"):
        assert checks["service"]["status"] == "warn"


def test_failures_exit_2_with_the_fix(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[audio]\nperiod = 3\n")
    p = _doctor(cli, "--device", "no_such_pcm", "--model", str(tmp_path / "missing.onnx"),
                env={"PI_SYNTH_CONFIG": str(bad)})
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    config = next(l for l in lines if l.split()[1:2] == ["config"])
    assert config.split()[0] == "FAIL" and "bad.toml:2" in config and "audio.period" in config
    model = next(l for l in lines if l.split()[1:2] == ["model"])
    assert model.split()[0] == "FAIL" and "missing.onnx" in model
    pcm = lines.index(next(l for l in lines if l.split()[1:2] == ["pcm"]))
    assert lines[pcm].split()[0] == "FAIL" and "no_such_pcm" in lines[pcm]
    assert "fix:" in lines[pcm + 1] and "aplay -L" in lines[pcm + 1]
    assert "fail" in lines[-1] and "fix the failures above" in lines[-1]
    # a page `pi-synth web` would refuse to start (the network, no password): doctor says so too
    bad.write_text('[web]\nenabled = true\nhost = "0.0.0.0"\n')
    p = _doctor(cli, env={"PI_SYNTH_CONFIG": str(bad)})
    config = next(l for l in p.stdout.splitlines() if l.split()[1:2] == ["config"])
    assert config.split()[0] == "FAIL" and "opens the page to the network" in config and p.returncode == 2


def _provisioned_root(tmp_path: Path) -> Path:
    """Files as scripts/provision.sh leaves them on a Pi (config.txt made by its own edit)."""
    spec = importlib.util.spec_from_file_location("provision", ROOT / "scripts/provision.py")
    prov = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prov)
    r = tmp_path / "pi"
    boot = r / "boot/firmware"
    boot.mkdir(parents=True)
    (boot / "config.txt").write_text(prov.edit_config_txt("dtparam=audio=on\n[all]\n", "hifiberry-dac", True))
    (boot / "cmdline.txt").write_text(prov.edit_cmdline_txt("console=serial0,115200 console=tty1 rootwait"))
    for node in ("dev/spidev0.0", "dev/spidev0.1", "dev/i2c-1", "dev/ttyAMA0"):
        (r / node).parent.mkdir(parents=True, exist_ok=True)
        (r / node).touch()
    (r / "proc/asound").mkdir(parents=True)
    (r / "proc/asound/cards").write_text(
        " 0 [sndrpihifiberry]: RPi-simple - snd_rpi_hifiberry_dac\n"
        "                      snd_rpi_hifiberry_dac\n")
    for cpu in range(4):
        d = r / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_governor").write_text("performance\n")
    units = r / "etc/systemd/system"
    (units / "multi-user.target.wants").mkdir(parents=True)
    (units / "pi-synth.service").write_bytes((ROOT / "systemd/pi-synth.service").read_bytes())
    (units / "multi-user.target.wants/pi-synth.service").symlink_to("/etc/systemd/system/pi-synth.service")
    return r


def test_a_provisioned_pi_passes_the_board_checks(cli, tmp_path):
    r = _provisioned_root(tmp_path)
    rep = json.loads(_doctor(cli, "--json", "--root", r).stdout)
    checks = _check_schema(rep)
    for name in ("service", "spi", "i2c", "uart-midi", "alsa-cards", "governor"):
        assert checks[name]["status"] == "pass", checks[name]
    assert checks["alsa-cards"]["details"]["cards"] == ["sndrpihifiberry"]
    assert checks["uart-midi"]["details"]["serial_console"] is False
    # and one thing undone: the console back on the UART is caught
    (r / "boot/firmware/cmdline.txt").write_text("console=serial0,115200 console=tty1 rootwait\n")
    (r / "sys/devices/system/cpu/cpu2/cpufreq/scaling_governor").write_text("ondemand\n")
    (r / "dev/spidev0.0").unlink()
    (r / "dev/spidev0.1").unlink()
    checks = _check_schema(json.loads(_doctor(cli, "--json", "--root", r).stdout))
    assert checks["uart-midi"]["status"] == "warn" and "serial console" in checks["uart-midi"]["summary"]
    assert checks["governor"]["status"] == "warn" and "ondemand" in checks["governor"]["summary"]
    assert checks["spi"]["status"] == "warn" and "reboot" in checks["spi"]["fix"]


def test_model_check_says_which_engine_would_play_it(cli, tmp_path):
    """The model line names the engine `pi-synth run` would pick for the configured buffer,
    and the periods auto adds where a bigger buffer lets it play direct."""
    from pi_synth.doctor import Machine, _engine_here

    m = Machine()
    assert m.cfg is None  # built-in defaults: 256×2, auto
    assert _engine_here(m, 0.02, 256) == "direct engine on 256×2"
    assert _engine_here(m, 0.1, 1024) == "direct engine on 256×3 (auto adds 1 period)"  # a Pi-4-like slower voice
    assert _engine_here(m, 0.5, 1024) == "threaded engine on 256×2"  # more buffer than the ring costs
    rep = json.loads(_doctor(cli, "--json").stdout)
    model = {c["name"]: c for c in rep["checks"]}["model"]
    if model["status"] == "pass":
        assert model["details"]["engine"] in model["summary"]


def test_capture_check_for_a_model_that_takes_audio(cli, tmp_path):
    """A model played from the audio input (a decoder with its encoder): the doctor opens
    the input; one that cannot open is a warning with the fix, never a failure (the model
    plays on with silence in). A model with no audio in has nothing to check."""
    from pi_synth.tools.procedural import build_encoder, build_organ

    model = tmp_path / "organ.onnx"
    build_organ(model)
    rep = json.loads(_doctor(cli, "--json", "--model", model).stdout)
    capture = _check_schema(rep)["capture"]
    assert capture["status"] == "pass" and "no audio input" in capture["summary"]

    build_encoder(tmp_path / "organ.encoder.onnx")
    conf = tmp_path / "c.toml"
    conf.write_text('[audio]\ncapture = "no_such_input"\n')
    p = _doctor(cli, "--json", "--model", model, env={"PI_SYNTH_CONFIG": str(conf)})
    capture = _check_schema(json.loads(p.stdout))["capture"]
    assert capture["status"] == "warn", capture
    assert "no_such_input" in capture["summary"] and "arecord -L" in capture["fix"]
