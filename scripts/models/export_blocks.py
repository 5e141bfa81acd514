"""The shipped voices at other block sizes, for the benchmark's real-time factor by block size.

A trained voice's block is a whole number of its control frames (flute: 256 samples), and its
streaming graph computes any number of frames per call: the flute's synthesis and network are
vectorised over frames. So the same weights export at k frames per call, a block k times as
long and the same sound. (The morph voice's streaming graph is written for one 512-sample frame
per call and is not exported here.) Each variant here is:

- fp32: exported from the training checkpoint with the shipped card (block size and control
  frames changed), and checked against the shipped fp32 file on the same controls — k calls
  of the shipped file against one call here (``snr_vs_shipped_db``);
- int8: quantized in the shipped file's format with the same ops quantized (the ops the
  shipped int8 file runs as int8; the rest excluded), calibrated on the card's control sweep.

Nothing here is shipped: ``models/`` keeps one block size per voice. Needs ``.venv-train``
(torch) and the checkpoints ``scripts/models/build-all.sh`` leaves in ``work/``.

    .venv-train/bin/python scripts/models/export_blocks.py --out DIR [--flute 1 2 4 8]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "src"))
from common import ROOT, WORK, write_json  # noqa: E402

from pi_synth.tools.quantize import quantized_nodes  # noqa: E402
from pi_synth.model.card import write_card  # noqa: E402
from pi_synth.tools.quantize import (QUANT_OPS, _session, control_sequence, quantize_model, read_card,  # noqa: E402
                                     render, snr_db)


def _card(shipped: Path, frames: int) -> dict:
    card = read_card(onnx.load(str(shipped)), str(shipped))
    one = card["block_size"] // card["control_frames"]
    card.update(block_size=one * frames, control_frames=frames,
                description=card["description"] + f" — exported at {frames} frames per call "
                            f"({one * frames}-sample blocks) for the benchmark; not shipped")
    card.pop("precision", None)
    return card


def flute(frames: int, path: Path, data: Path) -> None:
    from note_export import export
    from note_model import NoteVoice

    voice = NoteVoice()
    voice.load_state_dict(torch.load(data / "note_voice.pt"))
    voice.eval()
    export(voice, path, "flute", frames)
    _recard(path, _card(ROOT / "models" / "flute.fp32.onnx", frames))


def _recard(path: Path, card: dict) -> None:
    write_card(path, card)


def same_sound(shipped: Path, variant: Path, card: dict, seconds: float = 4.0) -> float:
    """SNR (dB) of the variant against the shipped file on the same control frames."""
    seq = control_sequence(card, max(4, int(seconds * card["sample_rate"] / card["block_size"])), seed=3)
    # [n, controls, k] → [n·k, controls, 1]: each of a call's k frames becomes one call of the shipped file
    one = seq.transpose(0, 2, 1).reshape(-1, 1, seq.shape[1]).transpose(0, 2, 1)
    base = read_card(onnx.load(str(shipped)), str(shipped))
    a = render(_session(shipped), base, np.ascontiguousarray(one))[0]
    return snr_db(a, render(_session(variant), card, seq)[0])


def int8_like_shipped(fp32: Path, int8: Path, shipped_int8: Path) -> dict:
    keep = set(quantized_nodes(shipped_int8))
    fmt = "qoperator" if any(n.op_type.startswith("QLinear") for n in onnx.load(str(shipped_int8)).graph.node) else "qdq"
    exclude = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type in QUANT_OPS and n.name not in keep]
    report = quantize_model(fp32, int8, fmt=fmt, exclude=exclude, eval_seconds=4.0)
    got = set(quantized_nodes(int8))
    return {"format": fmt, "quantized_ops": len(got), "same_ops_as_shipped": got == keep,
            "snr_db": min(report["snr_db"].values())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--flute", type=int, nargs="*", default=[1, 2, 4, 8], help="frames per call (256 samples each)")
    ap.add_argument("--work", type=Path, default=WORK)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    made = []
    for name, frames, build, data, need in (("flute", a.flute, flute, a.work / "note", ["note_voice.pt"]),):
        missing = [str(data / f) for f in need if not (data / f).exists()]
        if missing:  # each voice on its own: one rebuilt voice is enough to measure it
            print(f"{name}: skipped (needs {', '.join(missing)}: scripts/models/build-all.sh)", file=sys.stderr)
            continue
        for k in frames:
            fp32, int8 = a.out / f"{name}-x{k}.fp32.onnx", a.out / f"{name}-x{k}.int8.onnx"
            build(k, fp32, data)
            card = read_card(onnx.load(str(fp32)), str(fp32))
            row = {"model": name, "frames": k, "block_size": card["block_size"], "fp32": fp32.name,
                   "int8": int8.name, "snr_vs_shipped_db": same_sound(ROOT / "models" / f"{name}.fp32.onnx", fp32, card)}
            row.update(int8_like_shipped(fp32, int8, ROOT / "models" / f"{name}.int8.onnx"))
            made.append(row)
            print(json.dumps(row), flush=True)
    write_json(a.out / "blocks.json", made)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
