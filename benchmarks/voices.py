"""Block time by number of voices, through the product's runtime and synth.

For a batched note model (card ``voices`` > 1): the block time with 0, 1, …, N voices
sounding, measured three ways on the same session, the row counts interleaved in rounds
(per count the fastest round's median: another process only ever adds time):

* ``runtime``: :meth:`Runtime.step` at k rows — the model call alone;
* ``synth``: :meth:`Synth.next_block` with k voices in the table — what a block costs
  the audio thread: the bank, the rows' controls, the call, the mix with its gain
  ramps and the output guard (0 voices: no model call at all);
* ``allocator``: :meth:`PolyVoice.advance` with k keys held — the control side's share
  of each block, on the same thread.

The figures a release is judged on are ratios from one run: 8 voices against 1 (goal
≤ 3: batching must pay) and 0 against 1 (idle must cost next to nothing). The Pi figure
is a *projection* (``_harness.project``: FLOPs and this machine's block time scaled by
assumed CPU factors), never a measurement. ``benchmarks/run.py --only voices`` runs this
for the batched organ and every installed batched voice; alone::

    .venv/bin/python benchmarks/voices.py [MODEL …] [--rows 16] [--blocks 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def per_voice_flops(path) -> float:
    """FLOPs of one voice's call: the graph with its ``voices`` dimension set to 1."""
    import onnx

    from _harness import graph_flops

    model = onnx.load(str(path))
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    del model.graph.value_info[:]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "one.onnx"
        onnx.save(model, str(p))
        return float(graph_flops(p)["flops"])


def measure_voices(path, *, rows: int = 16, blocks: int = 200, rounds: int = 5) -> dict:
    from pi_synth.audio.bank import ControlBank
    from pi_synth.audio.safety import OutputGuard
    from pi_synth.audio.synth import Synth
    from pi_synth.control.poly import PolyVoice
    from pi_synth.model.runtime import Runtime
    from pi_synth.model.voices import VoiceTable

    rt = Runtime(path, rows=rows, warmup_blocks=8, use_cache=False)
    card = rt.card
    R = rt.rows
    block_s = card.block_size / card.sample_rate
    table = VoiceTable(R)
    guard = OutputGuard(card.block_size, card.channels, card.sample_rate, fade_in=False)
    synth = Synth(rt, ControlBank(card), guard, voices=table)
    table.engaged = True
    loud = card.control("loudness")
    table.loudness[:] = max(loud.min, loud.max) - 12.0
    table.pitch[:] = 220.0 * 2 ** (np.arange(R) / 12.0)
    table.weight = 1.0
    voice = PolyVoice(VoiceTable(R), block_seconds=block_s)
    voice.table.budget = R
    import mido

    perf = time.perf_counter
    t = np.empty(blocks)
    best = {"runtime": [float("inf")] * (R + 1), "synth": [float("inf")] * (R + 1),
            "allocator": [float("inf")] * (R + 1)}
    held = 0
    for _ in range(rounds):
        for k in range(0, R + 1):
            if k:
                rt.set_rows(k)
                for i in range(blocks):
                    t0 = perf()
                    rt.step()
                    t[i] = perf() - t0
                best["runtime"][k] = min(best["runtime"][k], float(np.median(t)))
            table.active = k
            for i in range(blocks):
                t0 = perf()
                synth.next_block()
                t[i] = perf() - t0
            best["synth"][k] = min(best["synth"][k], float(np.median(t)))
            while held < k:  # k keys down, their voices settled
                voice.handle(mido.Message("note_on", note=40 + held, velocity=100))
                held += 1
            while held > k:
                held -= 1
                voice.handle(mido.Message("note_off", note=40 + held))
            for _ in range(200):
                voice.advance(block_s)
            for i in range(blocks):
                t0 = perf()
                voice.advance(block_s)
                t[i] = perf() - t0
            best["allocator"][k] = min(best["allocator"][k], float(np.median(t)))
    ms = {k: [v * 1e3 for v in vals] for k, vals in best.items()}
    out = {"model": card.name, "file": str(path), "rows": R, "block_size": card.block_size,
           "sample_rate": card.sample_rate, "block_ms": ms, "blocks": blocks, "rounds": rounds}
    if R >= 8:
        out["ratio_8v_1v_runtime"] = ms["runtime"][8] / ms["runtime"][1]
        out["ratio_8v_1v_synth"] = ms["synth"][8] / ms["synth"][1]
        out["ratio_8v_1v_with_allocator"] = ((ms["synth"][8] + ms["allocator"][8])
                                            / (ms["synth"][1] + ms["allocator"][1]))
    out["idle_vs_1v_synth"] = ms["synth"][0] / ms["synth"][1]
    out["idle_ms"] = ms["synth"][0] + ms["allocator"][0]
    return out


def projection(res: dict, voices: int = 8) -> dict:
    """The Pi projection for ``voices`` voices (a projection: assumed CPU factors)."""
    from _harness import project

    flops = per_voice_flops(res["file"]) * voices
    here = res["block_ms"]["synth"][voices] + res["block_ms"]["allocator"][voices]
    return {"voices": voices, "flops_per_block": flops, "block_ms_here": here,
            "pi": project(flops, here, res["block_size"], res["sample_rate"])}


def batched_models() -> list[Path]:
    """Installed model files that are batched note models (card ``voices`` > 1)."""
    from pi_synth.model.card import load_card
    from pi_synth.model.library import list_models

    out = []
    for p in list_models():
        try:
            if load_card(p).voices > 1:
                out.append(p)
        except Exception:
            continue
    return out


def run(models=(), *, rows: int = 16, blocks: int = 200, rounds: int = 5, log=print) -> list[dict]:
    """The organ built with ``rows`` voices, then each of ``models`` (default: every
    installed batched voice)."""
    from pi_synth.tools.procedural import build_organ

    results = []
    with tempfile.TemporaryDirectory() as d:
        organ = Path(d) / "organ-voices.onnx"
        build_organ(organ, voices=rows)
        paths = [organ] + [Path(m) for m in (models or batched_models())]
        if len(paths) == 1:
            log("voices: no installed batched voice (card \"voices\" > 1) yet: the organ only")
        for p in paths:
            r = measure_voices(p, rows=rows, blocks=blocks, rounds=rounds)
            r["label"] = "organ (procedural)" if p == organ else p.name
            if r["rows"] >= 8:
                r["projection_8v"] = projection(r, 8)
            results.append(r)
            ms = r["block_ms"]
            log(f"voices {r['label']}: 1 voice {ms['synth'][1]:.3f} ms, 8 voices "
                f"{ms['synth'][min(8, r['rows'])]:.3f} ms (×{r.get('ratio_8v_1v_synth', float('nan')):.2f}), "
                f"idle {ms['synth'][0]:.4f} ms")
    return results


def lines(results: list[dict]) -> list[str]:
    """The markdown section."""
    if not results:
        return []
    L = ["", "## Block time by number of voices (batched note models, 1 thread)", "",
         "Through the product's runtime and synth (`benchmarks/voices.py`): the model call alone "
         "(`Runtime.step` at k rows), the synth's whole block (`Synth.next_block`: the rows' controls, "
         "the call, the mix with its gain ramps, the guard; 0 voices makes no model call) and the "
         "allocator's block (`PolyVoice.advance` with k keys held). Median ms, the fastest of the "
         "interleaved rounds.", ""]
    for r in results:
        ms = r["block_ms"]
        L += [f"**{r['label']}** ({r['block_size']}-frame blocks, "
              f"{1e3 * r['block_size'] / r['sample_rate']:.2f} ms of audio):", "",
              "| voices | model call ms | synth block ms | allocator ms | synth, × 1 voice |",
              "|---|---|---|---|---|"]
        for k in range(r["rows"] + 1):
            call = f"{ms['runtime'][k]:.4f}" if k else "— (no call)"
            L.append(f"| {k} | {call} | {ms['synth'][k]:.4f} | {ms['allocator'][k]:.4f} | "
                     f"{ms['synth'][k] / ms['synth'][1]:.2f} |")
        if "ratio_8v_1v_synth" in r:
            L += ["", f"8 voices against 1: ×{r['ratio_8v_1v_runtime']:.2f} for the model call, "
                      f"×{r['ratio_8v_1v_synth']:.2f} for the synth's block, ×{r['ratio_8v_1v_with_allocator']:.2f} "
                      f"with the allocator (goal ≤ 3). No voice: {r['idle_ms']:.4f} ms a block, "
                      f"{100 * r['idle_vs_1v_synth']:.1f} % of one voice's."]
        pj = r.get("projection_8v")
        if pj:
            cells = "; ".join(f"{v['cpu']}: {v['block_ms']:.2f} ms a block, RTF {v['rtf']:.3f} "
                              f"({v['engine_256']} on 256×2)" for v in pj["pi"].values())
            L += ["", f"*Projection* (not a measurement) for 8 voices ({pj['flops_per_block'] / 1e6:.2f} MFLOP a "
                      f"block, {pj['block_ms_here']:.3f} ms here with the allocator): {cells}."]
        L.append("")
    return L


def plot(results: list[dict], out: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    for r in results:
        ks = list(range(r["rows"] + 1))
        line = ax.plot(ks, r["block_ms"]["synth"], "o-", label=f"{r['label']}: synth block")
        ax.plot(ks[1:], r["block_ms"]["runtime"][1:], "x--", color=line[0].get_color(),
                label=f"{r['label']}: model call")
        ax.axhline(0.25 * 256 / r["sample_rate"] * 1e3, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("voices sounding")
    ax.set_ylabel("ms per block")
    ax.set_title("Block time by voices, 1 thread (dotted: the direct engine's allowance on 256×2)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "block_ms_by_voices.png", dpi=100)
    plt.close(fig)
    return "block_ms_by_voices.png"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="batched model files (default: every installed one)")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--plot", help="a folder for block_ms_by_voices.png")
    args = ap.parse_args(argv)
    res = run(args.models, rows=args.rows, blocks=args.blocks, rounds=args.rounds,
              log=lambda m: print(m, file=sys.stderr))
    if args.plot:
        Path(args.plot).mkdir(parents=True, exist_ok=True)
        plot(res, Path(args.plot))
    print(json.dumps(res, indent=1) if args.json else "\n".join(lines(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
