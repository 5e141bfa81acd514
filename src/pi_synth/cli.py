"""``pi-synth``: one program, one subcommand per job.

Exit codes: 0 success; 2 bad input (one line on stderr saying what and how to fix
it, a traceback only with ``--debug``); 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time

from pi_synth import __version__
from pi_synth.errors import ConfigError, PiSynthError

log = logging.getLogger("pi_synth")


# -- shared pieces ---------------------------------------------------------------------


def _parse_sets(items: list[str] | None) -> list[tuple[str, float]]:
    out = []
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            v = float(value)
            if not sep or not name or not math.isfinite(v):
                raise ValueError
        except ValueError:
            raise ConfigError(f"--set {item!r}: use NAME=NUMBER, e.g. --set pitch=440") from None
        out.append((name.strip(), v))
    return out


def _positive_seconds(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not (math.isfinite(v) and 0 < v <= 24 * 3600):
        raise argparse.ArgumentTypeError("seconds must be > 0 and at most a day")
    return v


def _load_events(args):
    from pi_synth.control.events import load_events, load_midi_file

    events = []
    if getattr(args, "events", None):
        events += load_events(args.events)
    if getattr(args, "midi", None):
        events += load_midi_file(args.midi)
    events.sort(key=lambda e: e.t)
    return events


def _config(args):
    from pi_synth import config as config_mod

    cfg = config_mod.load(getattr(args, "config", None))
    if not (args.debug or args.quiet):
        logging.getLogger().setLevel(cfg.log.level.upper())
    for w in cfg.warnings:
        log.warning("%s", w)
    return cfg


# -- commands --------------------------------------------------------------------------


def cmd_info(args) -> int:
    from pi_synth.audio.library import find_model
    from pi_synth.audio.runtime import Runtime

    from pi_synth.audio.runtime import load_card

    path = find_model(args.model)
    if load_card(path).kind == "rave-encoder":
        # audio in, latents out (docs/rave.md): shown, not playable by itself
        import onnxruntime as ort

        card = load_card(path)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        io = {k: [{"name": a.name, "shape": list(a.shape), "dtype": a.type} for a in args_]
              for k, args_ in (("inputs", sess.get_inputs()), ("outputs", sess.get_outputs()))}
    else:
        rt = Runtime(path, warmup_blocks=0, use_cache=False)
        card = rt.card
        io = {
            "inputs": [
                {"name": a.name, "shape": list(rt.specs[a.name][0]), "dtype": rt.specs[a.name][1]}
                for a in rt.session.get_inputs()
            ],
            "outputs": [
                {"name": a.name, "shape": list(rt.specs[a.name][0]), "dtype": rt.specs[a.name][1]}
                for a in rt.session.get_outputs()
            ],
        }
    if args.json:
        print(json.dumps({"path": str(path), "size_bytes": os.path.getsize(path),
                          "card": card.to_json(), **io}, indent=2))
        return 0
    bs, sr = card.block_size, card.sample_rate
    print(f"{card.name}  ({path}, {os.path.getsize(path) / 1e6:.2f} MB)")
    if card.description:
        print(f"  {card.description}")
    if card.kind == "rave-encoder":
        print("  an encoder (audio → latents), for driving a model from audio: not playable by itself")
    print(f"  kind {card.kind or '-'}, {sr} Hz, {card.channels} ch, block {bs} "
          f"({bs / sr * 1e3:.1f} ms), {card.control_frames} control frame(s)/block, "
          f"latency {card.latency_samples} samples")
    print("  controls:")
    for c in card.controls:
        unit = f" {c.unit}" if c.unit else ""
        print(f"    {c.name:<14} {c.min:g}..{c.max:g}{unit}  default {c.default:g}  ({c.curve})")
    print(f"  state: {len(card.state)} pair(s)")
    for kind in ("inputs", "outputs"):
        print(f"  {kind}:")
        for a in io[kind]:
            print(f"    {a['name']:<20} {a['dtype']:<8} {a['shape']}")
    if card.license:
        print(f"  license: {card.license}")
    if card.source:
        print(f"  source: {card.source}")
    for line in provenance_lines(card.extra.get("provenance")):
        print(f"  {line}")
    return 0


# a card's "provenance" (docs/model-card-template.md): where the data came from, who owns the
# weights, what training and playing cost; unknown keys are shown as they are
PROVENANCE = (("data", "data", ""), ("data_license", "data licence", ""), ("owner", "weights owned by", ""),
              ("training", "training", ""), ("cpu_hours", "training compute", " CPU-hours"),
              ("energy_wh", "training energy", " Wh"), ("run_watts_pi4", "playing on a Pi 4", " W"))


def provenance_lines(prov) -> list[str]:
    if not isinstance(prov, dict) or not prov:
        return []
    known = {k for k, _, _ in PROVENANCE}
    rows = [(label, f"{prov[k]:g}{unit}" if isinstance(prov[k], (int, float)) and not isinstance(prov[k], bool)
             else str(prov[k])) for k, label, unit in PROVENANCE if prov.get(k) not in (None, "")]
    rows += [(k.replace("_", " "), v if isinstance(v, str) else json.dumps(v))
             for k, v in prov.items() if k not in known]
    width = max(len(label) for label, _ in rows)
    return ["provenance:"] + [f"  {label:<{width}}  {value}" for label, value in rows]


def cmd_render(args) -> int:
    from pi_synth.app import Instrument
    from pi_synth.audio.backends.wav import WavBackend
    from pi_synth.audio.engine import render_offline

    cfg = _config(args)
    events = _load_events(args)
    seconds = args.seconds
    if seconds is None:
        seconds = (events[-1].t + 1.0) if events else 5.0
    inst = Instrument(cfg, model=args.model, events=events, seconds=seconds, sets=_parse_sets(args.set))
    backend = WavBackend(args.output, format=args.format)
    t0 = time.perf_counter()
    frames = render_offline(inst.player, backend)
    dt = time.perf_counter() - t0
    card = inst.card
    sr = card.sample_rate
    print(f"wrote {args.output}: {frames / sr:.2f} s, {sr} Hz, {card.channels} ch, "
          f"model {card.name}, rendered in {dt:.2f} s ({frames / sr / max(dt, 1e-9):.3g}× real time)")
    return 0


def cmd_run(args) -> int:
    from pi_synth import config as config_mod
    from pi_synth.app import Instrument
    from pi_synth.audio.backends import backend_class
    from pi_synth.audio.engine import Engine, ring_frames
    from pi_synth.control.rig import Rig
    from pi_synth.service.notify import Notifier, WatchdogGate

    cfg = _config(args)
    from pi_synth.audio.backends.alsa import _silence_alsa_lib

    _silence_alsa_lib()  # our errors say what and how to fix it; libasound's would repeat them
    if args.backend:
        config_mod.override(cfg, "audio.backend", args.backend, "--backend")
    if args.device:
        config_mod.override(cfg, "audio.device", args.device, "--device")
    if args.period:
        config_mod.override(cfg, "audio.period", args.period, "--period")
    events = _load_events(args)
    notifier = Notifier.from_env()
    emulation = None
    if args.emulate:
        from pi_synth.control.emulate import install

        emulation = install(cfg.knobs.chip if cfg.knobs.chip != "none" else "mcp3008", cfg.knobs.vref)
        log.info("emulating the Pi's controls: gpiozero MockFactory with an emulated %s",
                 cfg.knobs.chip if cfg.knobs.chip != "none" else "mcp3008")
    inst = Instrument(cfg, model=args.model, events=events, seconds=args.seconds,
                      sets=_parse_sets(args.set))
    backend = backend_class(cfg.audio.backend)(cfg.audio.device, format=cfg.audio.format)
    engine = inst.engine = Engine(
        inst.player, backend, period=cfg.audio.period, periods=cfg.audio.periods,
        ahead_blocks=cfg.audio.ahead_blocks, realtime=cfg.audio.realtime, mode=cfg.audio.engine,
        cpus=set(cfg.audio.cpus) or None,
    )
    stop = threading.Event()
    reload = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    signal.signal(signal.SIGHUP, lambda *a: reload.set())
    if cfg.audio.realtime:
        from pi_synth.service.realtime import lock_memory

        lock_memory()  # after the model is loaded, before sound: logged once if refused
    t_start = time.monotonic()
    engine.start()
    rig = Rig.from_config(cfg, inst.router, status_fn=engine.status, emulation=emulation)
    rig.start()
    log.info("playing %s (%s) on %s (block %d, %s engine%s)", inst.card.name, os.path.basename(inst.model_path),
             backend.describe(), inst.card.block_size, engine.mode,
             f", ring {engine.ring.capacity} frames" if engine.ring is not None else "")
    if engine.periods > cfg.audio.periods:
        log.info("audio.periods %d → %d: one block renders in %.1f%% of real time here, and a "
                 "bigger buffer lets it play in the direct engine (less latency than a %d-frame ring)",
                 cfg.audio.periods, engine.periods, 100 * (inst.player.rtf_hint or 0),
                 ring_frames(inst.card.block_size, engine.period, cfg.audio.ahead_blocks))
    if not backend.paced and cfg.audio.backend != "null":
        log.info("backend %s is not paced by a clock: running faster than real time", cfg.audio.backend)
    panel = None
    if emulation is not None and sys.stdin.isatty() and not args.no_panel:
        from pi_synth.control.emulate.panel import Panel

        panel = Panel(inst, emulation, rig, stop)
        panel.start()
    gate = WatchdogGate(notifier, lambda: (engine.stats.blocks, backend.frames_written))
    last: dict = {}
    ready = False
    try:
        while not engine.finished and not stop.is_set():
            stop.wait(0.1 if not ready else 0.25)
            st = inst.status()
            if not ready and engine.stats.first_audio_at:
                ready = True
                notifier.ready(_status_line(st))
            if reload.is_set():
                reload.clear()
                notifier.reloading()
                inst.reload(args.config)
                notifier.ready(_status_line(inst.status()))
            gate.tick()
            if ready:
                notifier.status(_status_line(st))
            inst.collect_retired()
            _log_changes(st, last, engine)
    finally:
        notifier.stopping()
        if panel is not None:
            panel.stop()
        rig.close()
        engine.stop(fade=True)
        if emulation is not None:
            emulation.close()
    st = inst.status()
    _log_changes(st, last, engine)
    played = inst.player.position / inst.card.sample_rate
    first = (engine.stats.first_audio_at - t_start) if engine.stats.first_audio_at else float("nan")
    print(f"played {played:.2f} s of {inst.card.name} on {cfg.audio.backend}:{cfg.audio.device}: "
          f"{st['xruns']} xruns, {st['late_periods']} late periods, "
          f"load {engine.stats.load * 100:.1f}%, first audio after {first:.3f} s", file=sys.stderr)
    return 0


def _status_line(st: dict) -> str:
    return (f"{st.get('model')}: load {st.get('load', 0) * 100:.0f}%, xruns {st.get('xruns', 0)}, "
            f"late {st.get('late_periods', 0)}")


def _log_changes(st: dict, last: dict, engine) -> None:
    """Log counters that moved: the monitor half of 'xruns are data'."""
    for key in ("xruns", "late_periods", "nonfinite_blocks", "device_errors", "reopens"):
        if st[key] != last.get(key, 0):
            if key == "reopens":
                log.warning("audio device back: playing again")
            elif key == "nonfinite_blocks":
                log.warning("model output was not finite in %d block(s): muted and reset",
                            st[key] - last.get(key, 0))
            elif key == "device_errors":
                log.warning("audio device error (%s); retrying", engine.stats.last_device_error)
            else:
                log.warning("%s: %d (+%d)", key.replace("_", " "), st[key], st[key] - last.get(key, 0))
    if st.get("render") == "ahead" and last.get("render") == "just-in-time":
        log.warning("after an xrun, audio is rendered a period ahead from now on (one period more "
                    "latency); audio.periods = 3 starts with that margin")
    last.update(st)


def cmd_bench(args) -> int:
    from pi_synth.audio.library import find_model, find_pair
    from pi_synth.bench import bench_model, compare_precisions

    res = bench_model(find_model(args.model), threads=args.threads, blocks=args.blocks)
    pair = find_pair(args.model)
    if pair:  # a shipped voice: which of its two files is faster *here* is the question
        res["int8_vs_fp32"] = cmp = compare_precisions(pair[1], pair[0], blocks=args.blocks, seconds=4.0,
                                                       threads=args.threads)
        cmp["auto_plays"] = find_model(args.model, "auto", args.threads).name
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['model']}: block {res['block_size']} @ {res['sample_rate']} Hz, "
              f"{res['threads']} thread(s), {res['blocks']} blocks")
        print(f"  block time median {res['block_ms_median']:.3f} ms, p99 {res['block_ms_p99']:.3f} ms, "
              f"max {res['block_ms_max']:.3f} ms")
        print(f"  real-time factor {res['rtf']:.4f} (p99 {res['rtf_p99']:.4f}): "
              f"{'plays in real time' if res['rtf_p99'] < 0.7 else 'TOO SLOW for real time on this machine'}")
        if "wrapper_overhead_ratio" in res:
            print(f"  runtime wrapper vs bare session.run: ×{res['wrapper_overhead_ratio']:.3f}")
        if pair:
            print(f"  int8 vs fp32, alternating: {cmp['int8_block_ms_median']:.3f} vs "
                  f"{cmp['fp32_block_ms_median']:.3f} ms a block, int8 ×{cmp['speedup']:.2f} the speed at "
                  f"{cmp['snr_db']:.1f} dB SNR; [model] precision = \"auto\" plays {cmp['auto_plays']}")
    return 0


def cmd_quantize(args) -> int:
    try:
        from pi_synth.quantize import quantize_model
    except ImportError as e:
        raise ConfigError(f"quantize needs the 'convert' extra ({e}); pip install 'pi-synth[convert]'") from None
    from pi_synth.quantize import format_report

    report = quantize_model(args.input, args.output)
    if args.report:
        print(format_report(report) if not args.json else json.dumps(report, indent=2, default=str))
    else:
        print(f"wrote {args.output}")
    return 0


# -- entry point -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pi-synth", description="neural synthesizer firmware")
    p.add_argument("--version", action="version", version=f"pi-synth {__version__}")
    p.add_argument("--debug", action="store_true", help="tracebacks and debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    r = sub.add_parser("run", help="the instrument: controls → model → audio")
    r.add_argument("--config", help="config file (TOML)")
    r.add_argument("--model", help="model file or name")
    r.add_argument("--device", help="ALSA PCM (e.g. default, plughw:CARD=sndrpihifiberry)")
    r.add_argument("--backend", help="alsa (default), wav or null")
    r.add_argument("--period", type=int, help="ALSA period in frames")
    r.add_argument("--events", help="timed events (JSON) to play")
    r.add_argument("--midi", help="a Standard MIDI File to play")
    r.add_argument("--seconds", type=_positive_seconds, help="stop after S seconds (fade out)")
    r.add_argument("--set", action="append", metavar="NAME=VALUE", help="initial control value")
    r.add_argument("--emulate", action="store_true",
                   help="emulated Pi controls (gpiozero MockFactory + an emulated ADC) and a terminal panel")
    r.add_argument("--no-panel", action="store_true", help="with --emulate: no terminal panel")
    r.set_defaults(func=cmd_run)

    rd = sub.add_parser("render", help="offline render to a WAV file, faster than real time")
    rd.add_argument("model", help="model file or name")
    rd.add_argument("-o", "--output", required=True, help="output .wav")
    rd.add_argument("--config", help="config file (TOML)")
    rd.add_argument("--seconds", type=_positive_seconds, help="length (default: events + 1 s, or 5 s)")
    rd.add_argument("--midi", help="a Standard MIDI File to play")
    rd.add_argument("--events", help="timed events (JSON) to play")
    rd.add_argument("--set", action="append", metavar="NAME=VALUE", help="initial control value")
    rd.add_argument("--format", default="S16_LE", choices=("S16_LE", "S32_LE", "FLOAT_LE"))
    rd.set_defaults(func=cmd_render)

    i = sub.add_parser("info", help="the model card and I/O of a model file")
    i.add_argument("model")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="real-time factor of a model on this machine")
    b.add_argument("model")
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--blocks", type=int, default=500)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    q = sub.add_parser("quantize", help="int8 model + speed/fidelity report")
    q.add_argument("input")
    q.add_argument("-o", "--output", required=True)
    q.add_argument("--report", action="store_true", help="print size, SNR vs fp32 and speed of both int8 formats")
    q.add_argument("--json", action="store_true", help="the report as JSON")
    q.set_defaults(func=cmd_quantize)

    # -- commands contributed by other modules: each adds its own subparser ------------
    # (one line per module; the module defines add_parser(sub) and its cmd function)
    from pi_synth.convert.cli import add_parser as _convert; _convert(sub)  # noqa: E702
    from pi_synth.doctor import add_parser as _doctor; _doctor(sub)  # noqa: E702
    from pi_synth.control.calibrate import add_parser as _calibrate; _calibrate(sub)  # noqa: E702
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="pi-synth: %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except PiSynthError as e:
        if args.debug:
            raise
        print(f"pi-synth: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `pi-synth info M | head`: the reader left, nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug: say so in one line unless debugging
        if args.debug:
            raise
        print(f"pi-synth: unexpected error: {type(e).__name__}: {e} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1
