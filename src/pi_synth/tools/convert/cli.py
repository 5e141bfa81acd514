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
    if not out.name.endswith(".onnx"):
        raise ConfigError(f"-o {args.output}: the output must be an .onnx file")
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
        summary["quantize"] = {"model": str(q), "report": report}
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
