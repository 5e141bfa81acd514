"""``pi-synth``: one program, one subcommand per job. This module parses; the jobs live
where they belong (``app.run``/``app.render``, ``doctor``, ``tools/``…).

Exit codes: 0 success; 2 bad input (one line on stderr saying what and how to fix
it, a traceback only with ``--debug``); 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import signal
import sys

from pi_synth import __version__
from pi_synth.errors import ConfigError, ModelError, PiSynthError

log = logging.getLogger("pi_synth")


# -- shared pieces ---------------------------------------------------------------------


def _parse_sets(items: list[str] | None) -> list[tuple[str, float]]:
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            v = float(value)
            if not sep or not name:
                raise ValueError
        except ValueError:
            raise ConfigError(f"--set {item!r}: use NAME=NUMBER, e.g. --set pitch=440") from None
        if not math.isfinite(v):
            raise ConfigError(f"--set {item!r}: {value.strip()} is not a value a control can take; give a "
                              "finite number, e.g. --set pitch=440")
        name = name.strip()
        if name in out and out[name] != v:
            log.warning("--set %s given twice: %g plays (the last one)", name, v)
        out[name] = v
    return list(out.items())


def _positive_seconds(value: str) -> float:
    from pi_synth.render_plan import MAX_SECONDS

    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not (math.isfinite(v) and 0 < v <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(f"seconds must be > 0 and at most a day ({MAX_SECONDS:.0f})")
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
    from pi_synth.model.library import find_encoder, find_model, precision_note, which_file
    from pi_synth.model.runtime import Runtime

    path = find_model(args.model, args.precision)
    why = which_file(args.model, path, args.precision)
    if note := precision_note(args.model, path, args.precision):
        log.info("%s", note)
    rt = Runtime(path, warmup_blocks=0, use_cache=False)
    card = rt.card

    def shape(a):  # a batched model's rows: "voices" first
        dims = list(rt.specs[a.name][0])
        if card.voices > 1 and a.shape and not isinstance(a.shape[0], int):
            dims[0] = "voices"
        return dims

    io = {
        "inputs": [
            {"name": a.name, "shape": shape(a), "dtype": rt.specs[a.name][1]}
            for a in rt.session.get_inputs()
        ],
        "outputs": [
            {"name": a.name, "shape": shape(a), "dtype": rt.specs[a.name][1]}
            for a in rt.session.get_outputs()
        ],
    }
    enc = None if card.is_encoder else find_encoder(path, card)
    if args.json:
        print(json.dumps({"path": str(path), "size_bytes": os.path.getsize(path), "plays": why or None,
                          "card": card.to_json(), "encoder": str(enc) if enc else None, **io}, indent=2))
        return 0
    bs, sr = card.block_size, card.sample_rate
    print(f"{card.name}  ({path}, {os.path.getsize(path) / 1e6:.2f} MB)")
    if why:
        print(f"  plays {path.name}: {why}")
    prec = card.extra.get("precision")
    if prec:  # an int8 file says how far from its fp32 one it is
        snr = card.extra.get("snr_db")
        fmt = card.extra.get("quant_format")
        print(f"  precision {prec}" + (f" ({fmt})" if fmt else "")
              + (f", {snr:g} dB SNR against its fp32 file" if isinstance(snr, (int, float)) else ""))
    if card.description:
        print(f"  {card.description}")
    if card.is_encoder:
        print(f"  an encoder (audio → latents: {', '.join(card.latent_controls) or 'the decoder’s first controls'}), "
              "played beside its decoder: not playable by itself")
    elif enc is not None:
        from pi_synth.audio.pair import pair_latency
        from pi_synth.model.card import load_card

        try:
            lat = f", latency {pair_latency(card, load_card(enc))} samples with it (the dry path waits as long)"
        except PiSynthError:  # a broken encoder is said when it is played
            lat = ""
        print(f"  audio in: timbre transfer through its encoder {enc.name}{lat} "
              f"(pi-synth render {path.name} --input IN.wav)")
    elif card.audio_input:
        print("  audio in: takes audio itself (inputs.audio), beside its controls")
    elif card.encoder:
        print(f"  audio in: none here — its card names the encoder {card.encoder}, which is not beside it "
              "(it plays from its knobs)")
    print(f"  kind {card.kind or '-'}, {sr} Hz, {card.channels} ch, block {bs} "
          f"({bs / sr * 1e3:.1f} ms), {card.control_frames} control frame(s)/block, "
          f"latency {card.latency_samples} samples")
    if card.voices > 1:
        print(f"  voices: up to {card.voices} at once (a batched note model: one row per voice, one call)")
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
    from pi_synth.app import render

    cfg = _config(args)
    args.output = _wav_out(args.output, "-o")
    if args.input == "-":  # and for standard input (a pipe from sox, ffmpeg, another render)
        args.input = "/dev/stdin"
    from pi_synth.audio.backends.wav import not_wav_said

    if why := not_wav_said(args.output, "-o"):
        raise ConfigError(why)
    # SIGTERM (a service manager, `timeout`, kill) stops a render as Ctrl-C does: no file left
    before = signal.signal(signal.SIGTERM, _terminated)
    try:
        line = render(cfg, model=args.model, output=args.output, format=args.format, events=_load_events(args),
                      seconds=args.seconds, sets=_parse_sets(args.set), input=args.input)
    finally:  # run in-process (the tests): the caller's handler back
        signal.signal(signal.SIGTERM, before)
    print(line, file=sys.stderr if _is_stdout(args.output) else sys.stdout)  # -o /dev/stdout: WAV only there
    return 0


class Terminated(BaseException):
    """SIGTERM during a command that cleans up on its way out (a render's file)."""


def _terminated(signum, frame):
    raise Terminated


def _is_stdout(path: str) -> bool:
    try:
        a, b = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _open_fds() -> set[int]:
    """The descriptors open now (less the one listing them: closed again by the time each is
    checked)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        names = ["0", "1", "2"]
    out = set()
    for n in names:
        try:
            os.fstat(int(n))
            out.add(int(n))
        except (OSError, ValueError):
            pass
    return out


STARTED_WITH_FDS = _open_fds()  # what the caller handed us (3>file …), before onnxruntime opens its own


def _wav_out(path: str, flag: str) -> str:
    """Where a WAV is written: ``-`` is standard output; a terminal is refused (a WAV's
    bytes there are noise and a garbled screen), and so is a descriptor the caller did not
    open (``/dev/fd/3`` with no ``3>file`` would be one of onnxruntime's own files)."""
    from pi_synth.render_plan import descriptor_of

    if path == "-":  # the usual word for standard output
        path = "/dev/stdout"
    fd = descriptor_of(path)
    if fd is not None and fd != 2 and _same_open_file(fd, 2):  # `&> out.wav`: log lines inside the audio
        raise ConfigError(f"{flag} {path}: standard error goes to the same file, and its lines would land inside "
                          "the WAV's samples; send it elsewhere (2>log.txt) or give a file name")
    if fd is not None and fd not in STARTED_WITH_FDS:
        raise ConfigError(f"{flag} {path}: descriptor {fd} was not open when pi-synth started; open it in the "
                          f"shell ({fd}>out.wav) or give a file name")
    if fd is not None and os.isatty(fd) or _is_terminal(path):
        raise ConfigError(f"{flag} {path}: that is the terminal; send it to a file or a program "
                          "(> out.wav, | aplay), or give a file name")
    return path


def _same_open_file(a: int, b: int) -> bool:
    """Descriptors ``a`` and ``b`` are open on one regular file or pipe."""
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino) and not os.isatty(b)


def _is_terminal(path: str) -> bool:
    """``/dev/tty``, ``/dev/pts/N``: a terminal by another name."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


def cmd_run(args) -> int:
    from pi_synth import config as config_mod
    from pi_synth.app import run

    cfg = _config(args)
    if args.backend:
        config_mod.override(cfg, "audio.backend", args.backend, "--backend")
    if args.device:
        if cfg.audio.backend == "wav":
            args.device = _wav_out(args.device, "--device")
        config_mod.override(cfg, "audio.device", args.device, "--device")
    if args.period:
        config_mod.override(cfg, "audio.period", args.period, "--period")
    if args.capture is not None:
        config_mod.override(cfg, "audio.capture", args.capture, "--capture")
    events = _load_events(args)
    if args.loop and not events:
        log.warning("--loop repeats a --midi or --events file, and none was given: nothing to loop")
    if args.no_panel and not args.emulate:
        log.info("--no-panel: the panel only comes with --emulate, so there was none to leave out")
    return run(cfg, model=args.model, events=events, seconds=args.seconds, sets=_parse_sets(args.set),
               emulate=args.emulate, panel=not args.no_panel, config_path=args.config, loop=args.loop)


def cmd_bench(args) -> int:
    from pi_synth.model.library import find_model, find_pair, precision_note, which_file
    from pi_synth.bench import bench_model, compare_precisions

    path = find_model(args.model, args.precision, args.threads)
    if note := precision_note(args.model, path, args.precision):
        log.info("%s", note)
    res = bench_model(path, threads=args.threads, blocks=args.blocks)
    res["precision"] = args.precision
    why = which_file(args.model, path, args.precision)
    pair = find_pair(args.model)
    if pair:  # a shipped voice: which of its two files is faster *here* is the question
        res["int8_vs_fp32"] = cmp = compare_precisions(pair[1], pair[0], blocks=args.blocks, seconds=4.0,
                                                       threads=args.threads)
        cmp["auto_plays"] = find_model(args.model, "auto", args.threads).name
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{res['model']} ({path.name}{': ' + why if why else ''}): block {res['block_size']} @ "
              f"{res['sample_rate']} Hz, {res['threads']} thread(s), {res['blocks']} blocks")
        print(f"  {path.name}: block time median {res['block_ms_median']:.3f} ms, p99 "
              f"{res['block_ms_p99']:.3f} ms, max {res['block_ms_max']:.3f} ms")
        print(f"  real-time factor {res['rtf']:.4f} (p99 {res['rtf_p99']:.4f}): "
              f"{'plays in real time' if max(res['rtf_p99'], res['at_cadence']['rtf_p99']) < 0.7 else 'TOO SLOW for real time on this machine'}")
        c = res["at_cadence"]
        print(f"  at the block cadence (one block per {1e3 * res['block_size'] / res['sample_rate']:.2f} ms, as the "
              f"instrument calls it; caches cool in between): median {c['block_ms_median']:.3f} ms, p99 "
              f"{c['block_ms_p99']:.3f} ms, real-time factor {c['rtf']:.4f}")
        if "wrapper_overhead_ratio" in res:
            r = res["wrapper_overhead_ratio"]
            print(f"  runtime wrapper vs bare session.run: ×{r:.3f} the time a block, "
                  f"{abs(1 - r) * 100:.1f}% {'faster' if r < 1 else 'slower'}")
        if pair:
            print(f"  int8 vs fp32, alternating: {cmp['int8_block_ms_median']:.3f} vs "
                  f"{cmp['fp32_block_ms_median']:.3f} ms a block, int8 ×{cmp['speedup']:.2f} the speed at "
                  f"{cmp['snr_db']:.1f} dB SNR; [model] precision = \"auto\" plays {cmp['auto_plays']}")
    return 0


def cmd_quantize(args) -> int:
    try:
        from pi_synth.tools.quantize import quantize_model
    except ImportError as e:
        raise ConfigError(f"quantize needs the 'convert' extra ({e}); pip install 'pi-synth[convert]'") from None
    from pi_synth.render_plan import same_file
    from pi_synth.tools.quantize import format_report

    if same_file(args.input, args.output):
        raise ConfigError(f"-o {args.output} is the input model: the int8 file would replace the fp32 one it is "
                          "measured against; write it beside, e.g. -o NAME.int8.onnx")
    from pi_synth.model.card import card_json

    card = card_json(args.input)
    encoder = bool(card.get("outputs", {}).get("latent"))
    if encoder != (".encoder." in os.path.basename(args.output)):  # the player finds files by these names
        raise ConfigError(f"-o {args.output}: " + (
            "an encoder's int8 file is NAME.encoder.int8.onnx, beside its decoder (other names are read as a "
            "decoder)" if encoder else "a name with .encoder. in it is read as an encoder; name the decoder's "
            "int8 file NAME.int8.onnx"))
    if encoder:  # its matrix products, latents compared
        from pi_synth.tools.convert.rave import quantize_encoder

        r = quantize_encoder(args.input, args.output)
        if r.get("skipped"):
            raise ModelError(f"{args.input}: {r['why']}")
        print(json.dumps(r, indent=2) if args.json else
              f"wrote {args.output}: int8 encoder ({r['int8_nodes']} matrix products), latents {r['snr_db']} dB "
              f"SNR against fp32, {r['us_per_block']['fp32']} → {r['us_per_block']['int8']} µs a block "
              f"(×{r['speedup']}), {r['fp32_bytes'] / 1e6:.2f} → {r['int8_bytes'] / 1e6:.2f} MB")
        return 0
    report = quantize_model(args.input, args.output)
    if args.report:
        print(format_report(report) if not args.json else json.dumps(report, indent=2, default=str))
    else:
        print(f"wrote {args.output}")
    return 0


def cmd_card(args) -> int:
    from pi_synth.cardtool import cmd_card as run

    return run(args)


def cmd_convert_rave(args) -> int:
    from pi_synth.tools.convert.cli import cmd_convert_rave as run  # desktop only: torch, onnx

    return run(args)


# -- entry point -----------------------------------------------------------------------


def _int_in(lo: int, hi: int):
    """An argparse type: an integer in lo..hi."""

    def parse(value: str) -> int:
        try:
            v = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be {lo}..{hi}, got {v}")
        return v

    return parse


class _Parser(argparse.ArgumentParser):
    """argparse with the command line's contract: a usage error is one line on stderr
    (what is wrong, and where the help is), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from pi_synth.audio.backends import backend_names

    p = _Parser(prog="pi-synth", description="neural synthesizer firmware")
    p.add_argument("--version", action="version", version=f"pi-synth {__version__}")
    p.add_argument("--debug", action="store_true", help="tracebacks and debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    r = sub.add_parser("run", help="the instrument: controls → model → audio")
    r.add_argument("--config", help="config file (TOML)")
    r.add_argument("--model", help="model file or name")
    r.add_argument("--device", help="ALSA PCM (e.g. default, plughw:CARD=sndrpihifiberry)")
    r.add_argument("--backend", help="where the sound goes: " + ", ".join(backend_names())
                   + " (default alsa: a sound card; desktop: the laptop's sound server, PipeWire, "
                   "PulseAudio or JACK; null: nowhere, in real time; unpaced: nowhere, as fast as the "
                   "CPU allows; wav: a recording to the file --device names, or to a dated "
                   "pi-synth-*.wav here)")
    r.add_argument("--period", type=int, help="ALSA period in frames")
    r.add_argument("--capture", metavar="PCM", help="audio input PCM ('' = the playback device, 'none' = no input)")
    r.add_argument("--events", help="timed events (JSON) to play; the run stops at the last one plus "
                   "the release tail, unless --loop, --seconds or a live source (knobs, CV, OSC, DIN "
                   "MIDI, a named [midi] port, buttons, --emulate) keeps it playing")
    r.add_argument("--midi", help="a Standard MIDI File to play ('demo': the shipped demo phrase); stops "
                   "at its end plus the release tail (the same rule as --events)")
    r.add_argument("--loop", action="store_true", help="play the --midi/--events file again and again "
                   "until stopped")
    r.add_argument("--seconds", type=_positive_seconds, help="stop after S seconds (fade out)")
    r.add_argument("--set", action="append", metavar="NAME=VALUE", help="initial control value")
    r.add_argument("--emulate", action="store_true",
                   help="emulated Pi controls (gpiozero MockFactory + an emulated ADC) and a terminal panel")
    r.add_argument("--no-panel", action="store_true", help="with --emulate: no terminal panel")
    r.set_defaults(func=cmd_run)

    rd = sub.add_parser("render", help="offline render to a WAV file, faster than real time")
    rd.add_argument("model", help="model file or name")
    rd.add_argument("-o", "--output", required=True, help="output .wav (or a stream: /dev/stdout, a FIFO)")
    rd.add_argument("--config", help="config file (TOML)")
    rd.add_argument("--seconds", type=_positive_seconds,
                    help="length: S seconds, then a fade out of a few blocks (default: the events or MIDI "
                         "file + the release tail, or 5 s)")
    rd.add_argument("--midi", help="a Standard MIDI File to play ('demo': the shipped demo phrase)")
    rd.add_argument("--events", help="timed events (JSON) to play")
    rd.add_argument("--set", action="append", metavar="NAME=VALUE", help="initial control value")
    rd.add_argument("--input", metavar="IN.wav",
                    help="play this WAV (- : standard input) into the audio input (a RAVE decoder with its encoder, or an effect); "
                         "any rate and channels: resampled with soxr, mixed to mono (default length: the input's)")
    rd.add_argument("--format", default="S16_LE", choices=("S16_LE", "S32_LE", "FLOAT_LE"))
    rd.set_defaults(func=cmd_render)

    precision_help = ("of a voice shipped as NAME.int8.onnx and NAME.fp32.onnx, which file: auto (the one "
                      "pi-synth run plays here, measured), int8 or fp32 (default auto)")
    i = sub.add_parser("info", help="the model card and I/O of a model file")
    i.add_argument("model")
    i.add_argument("--json", action="store_true")
    i.add_argument("--precision", default="auto", choices=("auto", "int8", "fp32"), help=precision_help)
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="real-time factor of a model on this machine")
    b.add_argument("model")
    b.add_argument("--threads", type=_int_in(1, 16), default=1)
    b.add_argument("--blocks", type=_int_in(1, 100000), default=500)
    b.add_argument("--json", action="store_true")
    b.add_argument("--precision", default="auto", choices=("auto", "int8", "fp32"), help=precision_help)
    b.set_defaults(func=cmd_bench)

    q = sub.add_parser("quantize", help="int8 model + speed/fidelity report")
    q.add_argument("input")
    q.add_argument("-o", "--output", required=True)
    q.add_argument("--report", action="store_true", help="print size, SNR vs fp32 and speed of both int8 formats")
    q.add_argument("--json", action="store_true", help="the report as JSON")
    q.set_defaults(func=cmd_quantize)

    cd = sub.add_parser("card", help="show, write or edit the model card inside a .onnx file")
    cd.add_argument("model", help="model file or name")
    cd.add_argument("--init", action="store_true", help="write a starting card guessed from the graph")
    cd.add_argument("--force", action="store_true", help="with --init: replace the card the file has")
    cd.add_argument("--from", dest="from_file", metavar="CARD.json", help="write this card")
    cd.add_argument("--update", metavar="FIELDS.json",
                    help="merge these keys into the card (e.g. license, source, provenance)")
    cd.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="edit one key (dotted: controls.0.name=cutoff); the value is JSON or text")
    cd.add_argument("--sample-rate", type=int, default=48000, help="with --init (default 48000)")
    cd.add_argument("--shape", action="append", metavar="NAME=D,D,D",
                    help="fix a dynamic graph input's shape (e.g. controls=1,4,1); a leading batch "
                         "dimension is 1 by itself with --init")
    cd.add_argument("-o", "--output", help="write to this file instead of changing the model in place")
    cd.set_defaults(func=cmd_card)

    c = sub.add_parser("convert", help="convert a model from another tool into a pi-synth model")
    csub = c.add_subparsers(dest="convert_kind", metavar="KIND", required=True)
    r = csub.add_parser("rave", help="RAVE streaming TorchScript export (.ts) → pi-synth model")
    r.add_argument("input", help="the .ts written by 'rave export --run RUN --streaming'")
    r.add_argument("-o", "--output", required=True, help="output model (.onnx)")
    r.add_argument("--quantize", action="store_true",
                   help="also write an int8 model beside it (OUT.int8.onnx) with its SNR")
    r.add_argument("--check", action="store_true",
                   help="run the .ts and the converted model side by side: max error and speed ratio")
    r.add_argument("--blocks", type=int, default=16, help="blocks for --check (default 16)")
    r.add_argument("--frames", type=int, default=1,
                   help="latent frames per model call (block = frames × decode ratio; default 1)")
    r.add_argument("--no-encoder", action="store_true", help="do not write OUT.encoder.onnx")
    r.add_argument("--name", help="model name in the card (default: from the output file name)")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.set_defaults(func=cmd_convert_rave)

    # -- commands contributed by other modules: each adds its own subparser ------------
    # (one line per module; the module defines add_parser(sub) and its cmd function)
    from pi_synth.doctor import add_parser as _doctor; _doctor(sub)  # noqa: E702
    from pi_synth.control.calibrate import add_parser as _calibrate; _calibrate(sub)  # noqa: E702
    from pi_synth.web.cli import add_parser as _web; _web(sub)  # noqa: E702
    return p


class _FlushingHandler(logging.StreamHandler):
    """Writes what the command printed so far before each log line, so a log line never
    lands inside the command's own output (stdout is block-buffered into a pipe)."""

    def emit(self, record):
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        super().emit(record)


NUMBER_LISTS = ("--volts", "--points")  # values that may start with a minus sign


def _joined_negatives(argv: list[str]) -> list[str]:
    """``--volts -3,-2,0`` as ``--volts=-3,-2,0``: argparse takes a value starting with "-"
    for an option (a ±5 V rig could not calibrate below 0 V but by guessing the "=")."""
    out, it = [], iter(argv)
    for a in it:
        if a in NUMBER_LISTS:
            nxt = next(it, None)
            if nxt is not None and nxt[:1] == "-" and nxt[1:2].replace(".", "0").isdigit():
                out.append(f"{a}={nxt}")
                continue
            out.append(a)
            if nxt is not None:
                out.append(nxt)
            continue
        out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_joined_negatives(list(sys.argv[1:] if argv is None else argv)))
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    handler = _FlushingHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("pi-synth: %(levelname)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    try:
        return args.func(args)
    except PiSynthError as e:
        if args.debug:
            raise
        print(f"pi-synth: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Terminated:
        print("pi-synth: stopped by SIGTERM; nothing was written", file=sys.stderr)
        return 143
    except BrokenPipeError:  # `pi-synth info M | head`: the reader left, nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug: say so in one line unless debugging
        if args.debug:
            raise
        print(f"pi-synth: unexpected error: {type(e).__name__}: {e} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1
