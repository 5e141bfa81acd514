"""``pi-synth convert rave IN.ts -o OUT.onnx [--quantize] [--check] [--blocks N]``: the command
(its arguments are declared in ``pi_synth.cli``, which imports this only when it runs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pi_synth.errors import ConfigError


def _int8_path(out: Path) -> Path:
    n = out.name
    if n.endswith(".fp32.onnx"):
        return out.with_name(n[: -len(".fp32.onnx")] + ".int8.onnx")
    if n.endswith(".onnx"):
        return out.with_name(n[: -len(".onnx")] + ".int8.onnx")
    return out.with_name(n + ".int8.onnx")


def _check_output(src: Path, out: Path) -> None:
    """Before minutes of work: an output the conversion can write, under a name the player
    reads as one model (every failure here used to come after the work, as a traceback)."""
    where = f"-o {out}"
    if not out.name.endswith(".onnx"):
        raise ConfigError(f"{where}: the output must be an .onnx file")
    for word in (".int8.onnx", ".encoder.onnx", ".encoder.fp32.onnx", ".encoder.int8.onnx"):
        if out.name.endswith(word):
            raise ConfigError(f"{where}: a name ending in {word} is what pi-synth gives a model's other files "
                              f"(--quantize and the encoder are written beside it); name the model, e.g. -o "
                              f"{out.name[: -len(word)]}.onnx")
    if src.is_dir():
        raise ConfigError(f"{src}: is a directory; give the .ts file `rave export --streaming` wrote")
    if src.exists() and out.exists() and os.path.samefile(src, out):
        raise ConfigError(f"{where} is the input: the conversion would replace the only copy of the export; "
                          "write it under another name")
    if out.is_dir():
        raise ConfigError(f"{where}: is a directory; name a file in it, e.g. -o {out / (src.stem + '.onnx')}")
    folder = out.parent
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{where}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: cannot write in {probe}; choose a folder you can write to")


def _stale_siblings(out: Path, summary: dict, *, quantize: bool) -> list[Path]:
    """The files beside ``out`` that an earlier conversion to this name left and this one did
    not write: its int8 files (unless --quantize writes them again now) and its encoder (none
    written now: --no-encoder, or a model without one)."""
    from pi_synth.tools.convert import rave

    q = _int8_path(out)
    stale = set() if quantize else {q, rave.encoder_path(q)}
    if "encoder" not in summary:  # every name the player's encoder lookup tries for this decoder
        base = out.name[: -len(".fp32.onnx")] if out.name.endswith(".fp32.onnx") else out.name[: -len(".onnx")]
        stale |= {out.with_name(f"{base}.encoder{k}.onnx") for k in ("", ".fp32", ".int8")}
    return sorted(p for p in stale if p.exists())


def cmd_convert_rave(args) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ConfigError(
            "'pi-synth convert rave' needs torch: pip install 'pi-synth[convert]' "
            "(on a desktop machine; the converted model plays on the Pi without it)"
        ) from None
    from pi_synth.tools.convert import rave

    if not (1 <= args.blocks <= 100000):
        raise ConfigError(f"--blocks must be 1..100000, got {args.blocks}")
    out = Path(args.output)
    _check_output(Path(args.input), out)
    summary = rave.convert(args.input, out, frames=args.frames, encoder=not args.no_encoder,
                           name=args.name, progress=not args.json and os.isatty(2))
    card = summary["card"]
    if not args.json:
        print(f"wrote {out}: {card['name']}, {len(card['controls'])} latent controls, "
              f"{card['sample_rate']} Hz{', stereo' if card['channels'] == 2 else ''}, block {card['block_size']}, {summary['states']} state pairs "
              f"({summary['state_elements']} floats), {summary['multiply_adds_per_block'] / 1e6:.1f} M "
              f"multiply-adds per block, {summary['seconds']:.1f} s")
        if "encoder" in summary:
            print(f"wrote {summary['encoder']}: encoder (audio → latent), card kind encoder: play the decoder with --input for timbre transfer")
        if "encoder_skipped" in summary:
            print(f"no encoder written: {summary['encoder_skipped']}")
    for stale in _stale_siblings(out, summary, quantize=args.quantize):
        stale.unlink(missing_ok=True)  # another model's files under this name would play with it
        if not args.json:
            print(f"removed {stale}: left by an earlier conversion to this name, it would play as this "
                  "model's other precision or encoder")
    if args.check:
        res = rave.check(args.input, out, blocks=args.blocks, encoder=summary.get("encoder"))
        summary["check"] = res
        if not args.json:
            print(rave.format_check(res))
    if args.quantize:
        try:
            import onnxruntime.quantization  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"--quantize needs onnxruntime's quantization tools ({e}); "
                              "pip install 'pi-synth[convert]'") from None
        q = _int8_path(out)
        qe = rave.encoder_path(q) if summary.get("encoder") else None
        if qe is not None:  # first, so the int8 decoder's card can name it
            rep = rave.quantize_encoder(summary["encoder"], qe)
            if rep.get("skipped"):  # the int8 decoder plays with the fp32 encoder
                qe = Path(summary["encoder"])
        report = rave.quantize_decoder(out, q, encoder=qe.name if qe is not None else None)
        summary["quantize"] = {"model": report["model"], "report": report}
        if report.get("skipped"):  # no int8 decoder: its int8 encoder would play with nothing
            if qe is not None and qe != Path(summary["encoder"]):
                qe.unlink(missing_ok=True)
            if not args.json:
                print(f"no int8 model: {report['why']}")
            if args.json:
                print(json.dumps(summary, indent=2, default=str))
            return 0
        if qe is not None:
            summary["quantize"]["encoder"] = {"model": str(qe), "report": rep}
        if not args.json:
            print(f"wrote {q}: int8 weights in {report['int8_nodes']} matrix products (dynamic), "
                  f"SNR {report['snr_db']:.1f} dB against the fp32 model, "
                  f"{report['speedup']:.2f}× its speed here (1 thread)")
            if qe is not None and rep.get("skipped"):
                print(f"no int8 encoder: {rep['why']}; {q.name} plays with {qe.name}")
            elif qe is not None:
                print(f"wrote {qe}: int8 weights in {rep['int8_nodes']} matrix products (dynamic), latents "
                      f"{rep['snr_db']:.1f} dB SNR against the fp32 encoder's, {rep['speedup']:.2f}× its speed "
                      f"here (1 thread); {q.name} plays with it")
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    return 0
