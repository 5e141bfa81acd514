"""``pi-synth doctor``: check this machine, and say how to fix each problem.

Every check returns one :class:`Check`: a status, one line saying what was found and,
unless it passed, one line saying how to fix it.

* ``pass`` — fine. ``warn`` — it plays, but something is off (no SPI for knobs, an
  ``ondemand`` governor, a past under-voltage). ``fail`` — it will not play, or not
  cleanly (the config does not parse, the PCM does not open, the model cannot keep up:
  median real-time factor ≥ 0.8 or p99 ≥ 1.5; a warning from median 0.5 or p99 0.7).
  ``skip`` — not applicable here (no ``vcgencmd``: not a Raspberry Pi; no cpufreq).
* Exit status: **0** when nothing failed, **2** when at least one check failed (a
  problem the user can fix, like every exit 2 of pi-synth), 1 if doctor itself broke.
* ``--json`` prints ``{"version", "machine", "ok", "counts": {status: n},
  "checks": [{"name", "status", "summary", "fix", "details"}]}``.

Checks: config file, service (unit installed/enabled), SPI, I2C, UART MIDI (config.txt +
device nodes + no serial console), ALSA cards (``/proc/asound/cards``), the configured
PCM opens, CPU governor, rtprio/memlock limits, throttling/under-voltage (``vcgencmd
get_throttled``), the default model loads and its real-time factor here. ``--root DIR``
reads config.txt, device nodes, /proc and /sys under DIR instead of / (a mounted image,
or the tests).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field

from pi_synth import __version__

STATUSES = ("pass", "warn", "fail", "skip")
PROVISION = "sudo scripts/provision.sh"


@dataclass
class Check:
    name: str
    status: str
    summary: str
    fix: str = ""
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        assert self.status in STATUSES, self.status


class Machine:
    """Where the checks look: / (or ``--root``), and what they share (config, model)."""

    def __init__(self, root: str = "/", config: str | None = None, model: str | None = None,
                 device: str | None = None, blocks: int = 200):
        self.root = root.rstrip("/") or ""
        self.config_arg, self.model_arg, self.device_arg, self.blocks = config, model, device, blocks
        self.cfg = None
        self.model_path = None
        self.sample_rate = 48000

    def p(self, path: str) -> str:
        return self.root + path

    def read(self, path: str) -> str | None:
        try:
            with open(self.p(path), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return None

    def exists(self, path: str) -> bool:
        return os.path.exists(self.p(path))

    def boot(self) -> tuple[str | None, dict[str, list[str]]]:
        """(config.txt path, active settings: key → values in order, [all] and board sections alike)."""
        for path in ("/boot/firmware/config.txt", "/boot/config.txt"):
            text = self.read(path)
            if text is not None:
                settings: dict[str, list[str]] = {}
                for line in text.splitlines():
                    line = line.split("#", 1)[0].strip()
                    if "=" in line and not line.startswith("["):
                        k, v = line.split("=", 1)
                        settings.setdefault(k.strip(), []).append(v.strip())
                return path, settings
        return None, {}


def _dtparams(settings: dict[str, list[str]]) -> dict[str, str]:
    out = {}
    for v in settings.get("dtparam", []):
        for part in v.split(","):
            k, _, val = part.partition("=")
            out[k.strip()] = val.strip() or "on"
    return out


def _overlays(settings: dict[str, list[str]]) -> list[str]:
    return [v.split(",", 1)[0].strip() for v in settings.get("dtoverlay", [])]


# -- the checks ------------------------------------------------------------------------


def check_config(m: Machine) -> Check:
    from pi_synth import config as config_mod
    from pi_synth.errors import ConfigError

    try:
        cfg = config_mod.load(m.config_arg)
    except ConfigError as e:
        return Check("config", "fail", str(e), "fix the line named above (the template: "
                     "src/pi_synth/data/pi-synth.toml)")
    m.cfg = cfg
    if cfg.web.enabled:  # the rules `pi-synth web` starts by: the page must not fail where doctor passed
        from pi_synth.web.auth import check_binding

        try:
            check_binding(cfg)
        except ConfigError as e:
            return Check("config", "fail", f"{cfg.path or 'the config'}: {e}", "set the page's password, or "
                         "keep it on this Pi (host = \"127.0.0.1\")", {"path": cfg.path})
    if cfg.warnings:
        return Check("config", "warn", f"{cfg.path}: {len(cfg.warnings)} warning(s): {cfg.warnings[0]}",
                     "remove or correct the unknown keys", {"path": cfg.path, "warnings": cfg.warnings})
    if cfg.path is None:
        return Check("config", "pass", "no config file: built-in defaults (template: "
                     "src/pi_synth/data/pi-synth.toml)", details={"path": None})
    return Check("config", "pass", f"{cfg.path} parses", details={"path": cfg.path})


def check_service(m: Machine) -> Check:
    unit = "/etc/systemd/system/pi-synth.service"
    if not m.exists(unit):
        return Check("service", "warn", "pi-synth.service is not installed: nothing plays at boot",
                     f"{PROVISION} installs and enables it")
    enabled = os.path.islink(m.p("/etc/systemd/system/multi-user.target.wants/pi-synth.service"))
    details = {"unit": unit, "enabled": enabled}
    if m.root == "" and shutil.which("systemctl") and os.path.isdir("/run/systemd/system"):
        p = subprocess.run(["systemctl", "is-active", "pi-synth.service"], capture_output=True, text=True)
        details["active"] = p.stdout.strip()
    if not enabled:
        return Check("service", "warn", "pi-synth.service is installed but not enabled",
                     "sudo systemctl enable --now pi-synth", details)
    state = f", {details['active']}" if "active" in details else ""
    return Check("service", "pass", f"pi-synth.service installed and enabled{state}", details=details)


def _bus_check(m: Machine, name: str, param: str, nodes: tuple[str, ...], what: str, raspi: str) -> Check:
    path, settings = m.boot()
    on = _dtparams(settings).get(param) == "on"
    present = [n for n in nodes if m.exists(n)]
    details = {"config_txt": path, "enabled_in_config": on, "devices": present}
    fix = f"{PROVISION} (or: sudo raspi-config nonint {raspi} 0), then reboot"
    if present and (on or path is None):
        return Check(name, "pass", f"{name.upper()} on: {', '.join(present)}", details=details)
    if on:
        return Check(name, "warn", f"dtparam={param}=on is in {path} but {nodes[0]} is missing: "
                     "not rebooted since?", "sudo reboot", details)
    where = path or "no config.txt (not a Raspberry Pi?)"
    return Check(name, "warn", f"{name.upper()} is off ({where}; no {nodes[0]}): {what}", fix, details)


def check_spi(m: Machine) -> Check:
    return _bus_check(m, "spi", "spi", ("/dev/spidev0.0", "/dev/spidev0.1"),
                      "no MCP3008 knobs / CV inputs", "do_spi")


def check_i2c(m: Machine) -> Check:
    return _bus_check(m, "i2c", "i2c_arm", ("/dev/i2c-1",), "no I2C ADCs or displays", "do_i2c")


def check_uart(m: Machine) -> Check:
    path, settings = m.boot()
    uart = "1" in settings.get("enable_uart", [])
    midi = "midi-uart0" in _overlays(settings) or any("init_uart_clock" in k for k in settings)
    nodes = [n for n in ("/dev/ttyAMA0", "/dev/serial0") if m.exists(n)]
    cmdline = m.read(os.path.join(os.path.dirname(path), "cmdline.txt")) if path else None
    console = bool(cmdline) and any(w.startswith(("console=serial0", "console=ttyAMA0", "console=ttyS0"))
                                    for w in cmdline.split())
    details = {"config_txt": path, "enable_uart": uart, "midi_clock": midi, "devices": nodes,
               "serial_console": console}
    fix = f"{PROVISION} (enable_uart=1, dtoverlay=disable-bt, dtoverlay=midi-uart0, no serial console), then reboot"
    if path is None:
        return Check("uart-midi", "warn", "no config.txt (not a Raspberry Pi?): no DIN MIDI on the UART; "
                     "USB MIDI still works", fix, details)
    if console:
        return Check("uart-midi", "warn", "the serial console is on the UART (console=serial0 in cmdline.txt): "
                     "it would eat MIDI bytes", fix, details)
    if not (uart and midi):
        missing = [s for s, ok in (("enable_uart=1", uart), ("dtoverlay=midi-uart0", midi)) if not ok]
        return Check("uart-midi", "warn", f"UART MIDI at 31250 baud not set up ({', '.join(missing)} "
                     f"missing in {path})", fix, details)
    if not nodes:
        return Check("uart-midi", "warn", "UART MIDI configured but /dev/ttyAMA0 is missing: not rebooted since?",
                     "sudo reboot", details)
    return Check("uart-midi", "pass", f"UART MIDI at 31250 baud on {nodes[0]}", details=details)


def check_cards(m: Machine) -> Check:
    text = m.read("/proc/asound/cards")
    cards = []
    for line in (text or "").splitlines():
        parts = line.split()
        if parts and parts[0].isdigit() and "[" in line:
            cards.append(line.split("[", 1)[1].split("]", 1)[0].strip())
    details = {"cards": cards}
    if text is None:
        fix = "a Linux with ALSA is needed for live sound (render to WAV works anywhere)"
        if m.boot()[0] is None:
            fix = laptop_fix()
        return Check("alsa-cards", "warn", "no /proc/asound: this kernel has no ALSA sound", fix, details)
    if not cards:
        fix = f"fit a HAT and run {PROVISION} --hat NAME, or plug a USB audio interface"
        if m.boot()[0] is None:
            fix = laptop_fix()
        return Check("alsa-cards", "warn", "no sound card found (/proc/asound/cards is empty)", fix, details)
    return Check("alsa-cards", "pass", f"{len(cards)} sound card(s): {', '.join(cards)}", details=details)




def laptop_fix() -> str:
    """How to hear pi-synth on a machine that is not a Pi (README: "On a laptop")."""
    from pi_synth.audio.backends.desktop import running_servers

    servers = running_servers()
    if servers:
        first = f"pi-synth run --backend desktop plays through {servers[0]} (running here)"
    else:
        first = ("pi-synth run --backend desktop plays through PipeWire, PulseAudio or JACK when one runs "
                 "(none runs for this user now)")
    return (f"on a laptop: {first}; pi-synth run --backend null runs in real time, silent; "
            "pi-synth render default --midi demo -o demo.wav writes a WAV to listen to")


def check_pcm(m: Machine) -> Check:
    cfg = m.cfg
    backend = cfg.audio.backend if cfg else "alsa"
    device = m.device_arg or (cfg.audio.device if cfg else "default")
    if backend != "alsa":
        return Check("pcm", "pass", f"audio backend is {backend!r}: no sound card needed",
                     details={"backend": backend})
    from pi_synth.audio.backends.alsa import AlsaBackend
    from pi_synth.errors import DeviceError

    period = cfg.audio.period if cfg else 256
    periods = cfg.audio.periods if cfg else 2
    fmt = cfg.audio.format if cfg else "S16_LE"
    b = AlsaBackend(device, format=fmt)
    details = {"device": device, "sample_rate": m.sample_rate, "period": period, "periods": periods}
    try:
        g = b.open(m.sample_rate, 1, period, periods)
    except DeviceError as e:
        msg = str(e)
        if "busy" in msg.lower():
            return Check("pcm", "warn", f"ALSA PCM {device!r} is busy (pi-synth.service playing?)",
                         "sudo systemctl stop pi-synth, run doctor again, then start it", details)
        fix = ("list PCMs with 'aplay -L' and set [audio] device in pi-synth.toml (a plug PCM such as "
               "plughw:CARD=…)")
        if m.boot()[0] is None:  # not a Pi: a laptop or desktop has other ways to listen
            fix = laptop_fix() + "; or " + fix
        return Check("pcm", "fail", msg.split(";")[0], fix, details)
    finally:
        b.close()
    details.update(granted_period=g.period, granted_periods=g.periods, format=g.format,
                   latency_ms=round(g.latency_frames / g.sample_rate * 1e3, 2))
    return Check("pcm", "pass", f"ALSA PCM {device!r} opens: {g.sample_rate} Hz {g.format}, period "
                 f"{g.period}×{g.periods} ({details['latency_ms']} ms)", details=details)


def check_capture(m: Machine) -> Check:
    """The audio input, when the model plays from one (a decoder with its encoder, an effect):
    a missing input is a warning, not a failure — the output plays on with silence in."""
    cfg = m.cfg
    backend = cfg.audio.backend if cfg else "alsa"
    capture = (cfg.audio.capture if cfg else "").strip()
    if capture.lower() == "none":
        return Check("capture", "pass", "no audio input configured ([audio] capture = \"none\")")
    takes = None
    if m.model_path:
        from pi_synth.model.card import load_card
        from pi_synth.patch import input_kind

        takes = input_kind(m.model_path, load_card(m.model_path))
    if takes is None:
        return Check("capture", "pass", "the model plays no audio input: nothing to check",
                     details={"model": m.model_path})
    if backend != "alsa":
        return Check("capture", "pass", f"audio backend is {backend!r}: its input is "
                     f"{'a file' if backend == 'wav' else 'silence or the sound server'}", details={"backend": backend})
    from pi_synth.audio.backends.alsa import AlsaBackend
    from pi_synth.errors import DeviceError

    device = m.device_arg or (cfg.audio.device if cfg else "default")
    b = AlsaBackend(device, capture=capture or None)
    period = cfg.audio.period if cfg else 256
    periods = max(2, cfg.audio.periods if cfg else 2)
    details = {"capture": b.capture, "takes": takes, "sample_rate": m.sample_rate}
    try:
        g = b.open_capture(m.sample_rate, 1, period, periods)
    except DeviceError as e:
        return Check("capture", "warn", str(e).split(";")[0] + " (the model plays on with silence in)",
                     "list inputs with 'arecord -L' and set [audio] capture in pi-synth.toml "
                     "(e.g. plughw:CARD=Device for a USB interface), or capture = \"none\"", details)
    finally:
        b.close_capture()
    details.update(channels=g.channels, period=g.period, periods=g.periods, format=g.format)
    return Check("capture", "pass", f"audio in from {b.capture!r}: {g.sample_rate} Hz, {g.channels} ch, period "
                 f"{g.period}×{g.periods} ({'timbre transfer through its encoder' if takes == 'encoder' else 'the model takes audio'})",
                 details=details)


def check_kernels(m: Machine) -> Check:
    from pi_synth.audio import safety

    if safety.KERNELS == "c":
        return Check("kernels", "pass", "audio kernels: C (output guard and sample conversion)")
    return Check("kernels", "warn", "audio kernels: numpy (the C module was not built): the same sound, "
                 "~30 µs more CPU per block",
                 "install gcc and python3-dev, then reinstall: scripts/install.sh (or pip install .)")


def check_governor(m: Machine) -> Check:
    base = m.p("/sys/devices/system/cpu")
    govs = {}
    try:
        names = sorted(n for n in os.listdir(base) if n.startswith("cpu") and n[3:].isdigit())
    except OSError:
        names = []
    for n in names:
        g = m.read(f"/sys/devices/system/cpu/{n}/cpufreq/scaling_governor")
        if g is not None:
            govs[n] = g.strip()
    if not govs:
        return Check("governor", "skip", "no cpufreq here (fixed clock, or a VM)")
    other = sorted({g for g in govs.values() if g != "performance"})
    if other:
        return Check("governor", "warn", f"CPU governor {', '.join(other)}: the clock ramps up late, "
                     "the first notes can glitch",
                     "sudo systemctl enable --now pi-synth-governor (installed by scripts/provision.sh)",
                     {"governors": govs})
    return Check("governor", "pass", f"CPU governor performance on {len(govs)} CPU(s)",
                 details={"governors": govs})


def _cap(bit: int) -> bool:
    for line in (Machine().read("/proc/self/status") or "").splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def check_limits(m: Machine) -> Check:
    inf = resource.RLIM_INFINITY
    rt = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
    ml = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
    nice, ipc = _cap(23), _cap(14)
    rt_ok = nice or rt == inf or rt >= 50
    ml_ok = ipc or ml == inf
    details = {"rtprio": "unlimited" if rt == inf else rt, "memlock": "unlimited" if ml == inf else ml,
               "cap_sys_nice": nice, "cap_ipc_lock": ipc}
    if rt_ok and ml_ok:
        return Check("rt-limits", "pass", f"real-time allowed here (rtprio {details['rtprio']}"
                     f"{', CAP_SYS_NICE' if nice else ''}; memlock {details['memlock']}"
                     f"{', CAP_IPC_LOCK' if ipc else ''})", details=details)
    missing = [s for s, ok in ((f"rtprio {details['rtprio']}", rt_ok), (f"memlock {details['memlock']}", ml_ok))
               if not ok]
    return Check("rt-limits", "warn", f"this shell cannot run audio real-time ({', '.join(missing)}); "
                 "the service can (LimitRTPRIO=95, LimitMEMLOCK=infinity)",
                 f"for 'pi-synth run' from a shell: {PROVISION} (limits for @audio), join the audio group, log in again",
                 details)


THROTTLE_BITS = {0: "under-voltage", 1: "ARM frequency capped", 2: "throttled", 3: "soft temperature limit"}


def check_throttling(m: Machine) -> Check:
    exe = shutil.which("vcgencmd")
    if not exe or m.root:
        return Check("power", "skip", "no vcgencmd: not a Raspberry Pi (or not Raspberry Pi OS)")
    try:
        p = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5)
        value = int(p.stdout.strip().split("=", 1)[1], 16)
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return Check("power", "warn", "vcgencmd get_throttled gave no answer",
                     "add the user to the video group (sudo usermod -aG video $USER)")
    now = [THROTTLE_BITS[b] for b in THROTTLE_BITS if value >> b & 1]
    past = [THROTTLE_BITS[b] for b in THROTTLE_BITS if value >> (b + 16) & 1]
    details = {"throttled": hex(value), "now": now, "since_boot": past}
    fix = "use the official power supply (5.1 V 3 A; 5 A for a Pi 5) and a short cable; cool the CPU"
    if now:
        return Check("power", "fail", f"now: {', '.join(now)} (throttled={hex(value)}): audio will glitch",
                     fix, details)
    if past:
        return Check("power", "warn", f"since boot: {', '.join(past)} (throttled={hex(value)})", fix, details)
    return Check("power", "pass", "no under-voltage or throttling since boot", details=details)


def _engine_here(m: Machine, rtf: float, block: int) -> str | None:
    """Which engine ``pi-synth run`` would pick for this model with the configured buffer
    (``audio.engine = "auto"``), on how many periods."""
    from pi_synth.audio.engine import auto_choice

    a = m.cfg.audio if m.cfg else None
    period, periods = (a.period, a.periods) if a else (256, 2)
    if a and a.engine != "auto":
        return None
    mode, n = auto_choice(rtf, block, period, periods, a.ahead_blocks if a else 1)
    if mode == "threaded":
        return f"threaded engine on {period}×{periods}"
    more = f" (auto adds {n - periods} period{'s' if n - periods > 1 else ''})" if n > periods else ""
    return f"direct engine on {period}×{n}{more}"


def check_model(m: Machine) -> Check:
    from pi_synth.model.library import find_model
    from pi_synth.bench import bench_model
    from pi_synth.errors import PiSynthError

    name = m.model_arg or (m.cfg.model.path if m.cfg else None) or None
    try:
        path = find_model(name, m.cfg.model.precision if m.cfg else "auto", m.cfg.model.threads if m.cfg else 1)
        res = bench_model(path, blocks=m.blocks, bare=False)
    except PiSynthError as e:
        return Check("model", "fail", str(e), "copy a .onnx model into /boot/firmware/pi-synth/models "
                     "or set [model] path in pi-synth.toml")
    except Exception as e:  # onnxruntime refuses the file, out of memory…
        return Check("model", "fail", f"{name or 'the default model'} does not load: {type(e).__name__}: {e}",
                     "reinstall pi-synth, or pick another model")
    m.model_path, m.sample_rate = str(path), res["sample_rate"]
    details = {k: res[k] for k in ("model", "path", "block_size", "sample_rate", "load_s", "rtf", "rtf_p99",
                                   "block_ms_median", "block_ms_p99", "blocks")}
    from pi_synth.model.library import which_file

    why = which_file(name, path, m.cfg.model.precision if m.cfg else "auto")
    details["plays"] = why
    cad = res["at_cadence"]
    details["at_cadence"] = cad
    line = (f"{res['model']} ({path.name}{': ' + why if why else ''}) loads in {res['load_s']:.2f} s; "
            f"real-time factor {res['rtf']:.3f} (p99 {res['rtf_p99']:.3f}) back to back, {cad['rtf']:.3f} "
            f"(p99 {cad['rtf_p99']:.3f}) at the block cadence, on {platform.machine()}")
    engine = _engine_here(m, res["rtf"], res["block_size"])
    if engine:
        line += f"; {engine}"
        details["engine"] = engine
    fix = ("use the int8 model, a smaller model, raise [audio] ahead_blocks, "
           "and set the governor to performance")
    # the ring (ahead_blocks) absorbs a rare slow block, not a slow median; the instrument
    # calls the model once a block, so the slower of the two ways is what it meets
    rtf, p99 = max(res["rtf"], cad["rtf"]), max(res["rtf_p99"], cad["rtf_p99"])
    if rtf >= 0.8 or p99 >= 1.5:
        return Check("model", "fail", line + ": too slow for real time here", fix, details)
    if rtf >= 0.5 or p99 >= 0.7:
        return Check("model", "warn", line + ": little headroom, expect late blocks under load", fix, details)
    return Check("model", "pass", line, details=details)


# order matters: config first (the PCM and model checks use it), model before the PCM (its rate)
CHECKS = (check_config, check_service, check_spi, check_i2c, check_uart, check_cards, check_model,
          check_pcm, check_capture, check_kernels, check_governor, check_limits, check_throttling)


def run_checks(m: Machine) -> list[Check]:
    out = []
    for fn in CHECKS:
        try:
            out.append(fn(m))
        except Exception as e:  # a broken check is reported, never hides the others
            out.append(Check(fn.__name__.removeprefix("check_"), "fail",
                             f"the check itself failed: {type(e).__name__}: {e}",
                             "report this as a bug (pi-synth doctor --debug for the traceback)"))
            if os.environ.get("PI_SYNTH_DOCTOR_RAISE"):
                raise
    return out


def report(checks: list[Check]) -> dict:
    counts = {s: sum(c.status == s for c in checks) for s in STATUSES}
    return {"version": __version__, "machine": f"{platform.machine()} {platform.system()} {platform.release()}",
            "ok": counts["fail"] == 0, "counts": counts, "checks": [asdict(c) for c in checks]}


def cmd_doctor(args) -> int:
    m = Machine(args.root, config=args.config, model=args.model, device=args.device, blocks=args.blocks)
    if args.debug:
        os.environ["PI_SYNTH_DOCTOR_RAISE"] = "1"
    checks = run_checks(m)
    rep = report(checks)
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print(f"pi-synth doctor: pi-synth {rep['version']} on {rep['machine']}")
        for c in checks:
            print(f"  {c.status.upper():<4}  {c.name:<10}  {c.summary}")
            if c.fix and c.status != "pass":
                print(f"  {'':<4}  {'':<10}  fix: {c.fix}")
        n = rep["counts"]
        print(f"{n['fail']} fail, {n['warn']} warn, {n['pass']} pass, {n['skip']} skipped"
              + ("" if rep["ok"] else ": fix the failures above"))
    sys.stdout.flush()
    return 0 if rep["ok"] else 2


def add_parser(sub) -> None:
    d = sub.add_parser("doctor", help="check this machine and say how to fix each problem")
    d.add_argument("--json", action="store_true", help="machine-readable report")
    d.add_argument("--config", help="config file (TOML)")
    d.add_argument("--model", help="model file or name to load and time (default: the configured one)")
    d.add_argument("--device", help="ALSA PCM to open (default: the configured one)")
    d.add_argument("--blocks", type=int, default=200, help="blocks to time for the real-time factor")
    d.add_argument("--root", default="/", help="read config.txt, /dev, /proc and /sys under DIR")
    d.set_defaults(func=cmd_doctor)
