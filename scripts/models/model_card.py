"""Write models/NAME.MODEL_CARD.md from the measured metrics (work/*/metrics.json), so every figure in a
model card comes from a run of the scripts, not from a hand edit.

Usage: python scripts/models/model_card.py [--models models]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "src"))
from common import ROOT, WORK  # noqa: E402

from pi_synth.tools.quantize import read_card  # noqa: E402


def io_table(path: Path) -> str:
    m = onnx.load(str(path))
    card = read_card(m)
    types = {1: "float32", 11: "float64", 7: "int64"}

    def rows(vals):
        out = []
        for v in vals:
            t = v.type.tensor_type
            out.append(f"| `{v.name}` | {types.get(t.elem_type, t.elem_type)} | {[d.dim_value for d in t.shape.dim]} |")
        return out

    lines = ["| graph input | dtype | shape |", "|---|---|---|"] + rows(m.graph.input)
    lines += ["", "| graph output | dtype | shape |", "|---|---|---|"] + rows(m.graph.output)
    ctl = ["| control | unit | min | max | default | curve |", "|---|---|---|---|---|---|"]
    for c in card["controls"]:
        ctl.append(f"| `{c['name']}` | {c.get('unit', '')} | {c['min']} | {c['max']} | {c['default']} | {c.get('curve', 'lin')} |")
    return "\n".join(ctl) + "\n\n" + "\n".join(lines)


def speed_lines(q: dict) -> str:
    s, shipped = q["speed"], q.get("format", "qdq")
    label = {"qdq": "int8 QDQ S8S8", "qoperator": "int8 QOperator U8S8"}
    rows = ["| model | µs per block (median, 1 thread) | p99 | real-time factor | speed-up vs fp32 | SNR vs fp32 |",
            "|---|---|---|---|---|---|",
            f"| fp32 | {s['fp32']['us_per_block']} | {s['fp32']['us_p99']} | {s['fp32']['rtf']} | 1 | — |"]
    for f in ("qdq", "qoperator"):
        rows.append(f"| {label[f]} ({'shipped' if f == shipped else 'not shipped'}"
                    f"{'; int8 kernels on x86 and ARM' if f == 'qoperator' else ''}) | {s[f]['us_per_block']} | "
                    f"{s[f]['us_p99']} | {s[f]['rtf']} | ×{q['speedup'][f]} | {q['snr_db'][f]} dB |")
    return "\n".join(rows)


def repeat_bench(name: str):
    """The last run of benchmarks/bench_quantize.py for this model, if any."""
    p = ROOT / "benchmarks" / "results" / "bench_quantize.json"
    if p.exists():
        return json.loads(p.read_text()).get(f"{name}.fp32.onnx")
    return None


def quant_text(q: dict, name: str) -> str:
    net = [n for n in q["fp32_nodes"] if "synth" not in n.lower()]
    dsp = len(q["fp32_nodes"]) > len(net)
    rep = repeat_bench(name)
    ups = [q["speedup"]["qoperator"]] + ([rep["speedup"]["qoperator"]] if rep else [])
    if min(ups) >= 1.5:
        target = "meets the ≥1.5× target"
    elif max(ups) >= 1.5:
        target = "is borderline on the ≥1.5× target"
    else:
        target = "misses the ≥1.5× target"
    runs = " and ".join(f"×{u}" for u in ups)
    shipped = " and the one shipped" if q.get("format") == "qoperator" else ""
    target += f" ({runs} with QOperator, the format this x86 CPU runs as int8{shipped}; {'two runs' if rep else 'one run'})"
    repeat = ""
    if rep:
        s = rep["speed"]
        repeat = (f"\n\nRepeat run (`python benchmarks/bench_quantize.py`, same three formats stepped interleaved): "
                  f"fp32 {s['fp32']['us_per_block']} µs, QDQ {s['qdq']['us_per_block']} µs (×{rep['speedup']['qdq']}), "
                  f"QOperator {s['qoperator']['us_per_block']} µs (×{rep['speedup']['qoperator']}). The machine was "
                  "shared with other work while measuring, so expect ±20% between runs.")
    kept = ("the synthesis (oscillators, noise filters) and the network layers " if dsp else "the layers ")
    return (f"Static int8 (onnxruntime.quantization, MinMax calibration on realistic controls fed block by "
            f"block with the state carried; SNR measured on a different 8 s sequence). Conv/MatMul/Gemm are "
            f"quantized; kept in float32: {kept}"
            f"`{'`, `'.join(net)}` (input and output layers by default; the export script says why any other). "
            f"Size {q['fp32_bytes'] / 1e6:.2f} MB fp32 → {q['int8_bytes'] / 1e6:.2f} MB int8. "
            f"Speed: int8 {target}.\n\n{speed_lines(q)}{repeat}\n\nonnxruntime {q.get('onnxruntime', '')} CPU "
            f"provider, 1 thread. {q['caveat']}")


def layers_text(m: dict) -> str:
    """Which residual convs run int8, and why (note_export.py measures each layer's cost)."""
    L = m.get("int8_layers")
    if not L:
        return ""
    short = lambda n: n.split("/")[2]  # noqa: E731 - "/net/convs.3/conv/Conv" -> "convs.3"
    alone = ", ".join(f"{short(k)} {v} dB" for k, v in L["snr_db_alone"].items())
    tried = "; ".join(f"{' + '.join(short(x) for x in k.split(' + '))}: {v} dB" for k, v in L["snr_db_tried"].items())
    return (f"\n\nThe residual convs run int8 where it costs least: SNR with each one alone quantized {alone}; "
            f"adding them from the cheapest up, each kept while int8 stays ≥ 31 dB from fp32 ({tried}), "
            f"quantizes {', '.join(short(x) for x in L['quantized'])}.")


def burst_text(lc):
    v = lc.get("hf_excess_db_at_change_sorted")
    if not v:
        return ""
    over = [x for x in v if x > 3.0]
    rest = [x for x in v if x <= 3.0]
    return (f"{len(over)} of {len(v)} changes exceed the reference by more than 3 dB in that band "
            f"({', '.join(f'{x:+.1f}' for x in over) or 'none'}; the rest {min(rest):+.1f} to {max(rest):+.1f} dB). "
            "A broadband noise burst would stand 10 dB or more above it; what remains is most likely the 5 ms "
            "pitch glide sweeping the harmonics.")


def response_text(m):
    r = m.get("response")
    if not r:
        return ""
    return (f"Response: from a loudness step (-80 → -20 dB at a block boundary) to the first sample above -40 dB of "
            f"the peak: {', '.join(map(str, r['samples']))} samples at 262/440/880 Hz (block {r['block']}). This is "
            f"what the model adds to a note-on's latency, on top of waiting for the next block boundary.")


def train_time(m: dict) -> str:
    t = m["train"]
    return f"{t['steps']} steps in {t['seconds'] / 60:.1f} min with {t['threads']} thread(s)"


def note_card(models: Path, name="flute"):
    m = json.loads((WORK / "note" / "metrics.json").read_text())
    q = m["quantize"]
    lc = m["legato_changes"]
    rows = "\n".join(f"| {k.replace('_', ' ')} | {m[k]['model']} | {m[k]['sawtooth']} | {m[k]['ratio']} |"
                     for k in ("all", "single_notes", "phrases"))
    text = f"""# {name} — note voice

`{name}.int8.onnx` (int8) and `{name}.fp32.onnx` (reference; `[model] precision = "auto"` plays fp32 unless int8
is clearly faster on the machine). `kind: note`: a monophonic flute played
from MIDI notes (pitch in Hz, loudness in dB). 48 kHz, 256-sample blocks (5.3 ms), one control frame per block.

## What it is
A DDSP-style voice. A causal conv net (1×1 conv → 4 residual causal convs, kernel 3, dilations 1/2/4/8, 128
channels → 1×1 conv; 205k parameters, receptive field 31 blocks = 165 ms) maps (log pitch, loudness) per block to
an overall amplitude, a distribution over 48 harmonics and the gains of 16 noise bands (1.5 kHz wide linear-phase
64-tap FIRs). The harmonic-plus-noise synthesis runs inside the ONNX graph:
- pitch, harmonic amplitudes and noise gains ramp linearly across each block from the previous block's values
  (kept in the `prev` state), so there is no zipper noise and no click at block edges;
- the oscillator phase is computed in closed form per block, in cycles, wrapped, and carried as a float64 state
  (`phase`); a harmonic above Nyquist at either end of a block has amplitude 0 at that end (no aliasing in steady
  state, no amplitude step when the pitch moves);
- the noise comes from two fixed white-noise tables of coprime lengths (32749, 32719) read at a float64 sample
  counter (`noise_pos`), so rendering is deterministic and the noise repeats only after ~6 hours. Each table is
  filtered into the 16 bands once, at export: filtering is linear, so reading the filtered tables equals filtering
  the samples read, and a block costs two gathers instead of a 16-band 64-tap convolution (the filtered tables
  are 4.2 MB of the file);
- the conv caches are explicit state (`cache0..3`). Initial state is all zeros.

The exported graph is written for speed at 256 samples, where onnxruntime's per-node dispatch, not arithmetic,
is most of a block's time: {m.get('graph_nodes', '?')} nodes (the first flute, 2026-11-25, exported the training-time
synthesis as it is: 152),
harmonics and noise bands meeting their gains in one MatMul. The export checks it against the training-time
synthesis (the streaming line under Quality).

{io_table(models / f'{name}.fp32.onnx')}

Loudness is dB RMS of the output. The FluidR3 flute's sustained level follows
`loudness_db ≈ -16 + 40·log10(velocity/127)` (fit on the training notes, ±1.7 dB; +1.5 dB per octave above A4),
so velocity 127 ≈ -16 dB, 64 ≈ -28 dB, 30 ≈ -41 dB; -80 dB is silence.

## Data
Rendered offline from Debian's `fluid-soundfont-gm` (FluidR3_GM.sf2, General MIDI program 74 "Flute") with
`fluidsynth -ni -g 1.0 -R 0 -C 0 -r 48000` (dry: no reverb, no chorus), mono. Training set (seed 1234,
448 s): 168 single notes spread over A3–D7 (MIDI 57–98) with random velocity 30–127 and length 0.25–1.6 s, then 60
phrases of 5–10 notes (two thirds legato with the legato pedal CC68, one third detached). Held-out test set (seed
1235, 70 s): 24 single notes and 9 phrases, never seen in training. f0 by YIN searched within ±1.5 semitones of the
sounding note (the flute has vibrato, so the audio, not the note number, sets f0); loudness = dB RMS of a
512-sample Hann window ending at each block end. No lookahead: with a window centred on the block end, loudness
rose two blocks before each onset and the model learned to sound one block late.

## Licence
Model weights and scripts: MIT. Training data: renders of FluidR3_GM.sf2 (© Frank Wen, MIT licence).

## Reproduce
```
scripts/models/build-all.sh note    # data -> train -> export -> int8 -> this card
```
({train_time(m)} on this 2-core machine; data rendering + analysis ≈20 s; export + evaluation + quantization ≈1 min.)
Seeds are fixed; torch 2.13.0 (CPU), onnxruntime {q.get('onnxruntime', '')}.

## Quality (held-out, fp32 streaming render driven by the test set's own f0 and loudness)
Multi-scale spectral distance (FFT 2048…64, mean |ΔS| + mean |Δlog S|), against the same figure for a band-limited
sawtooth at the same f0 and loudness. Target ≤0.4× the sawtooth's.

| part of the test set | model | sawtooth | ratio |
|---|---|---|---|
{rows}
| all, int8 model | {m['all_int8']['model']} | {m['all_int8']['sawtooth']} | {m['all_int8']['ratio']} |

Legato note changes ({lc['n']} in the held-out phrases): 4–16 kHz energy in a 40 ms window at each change, model
minus reference: median {lc['hf_excess_db_at_change_median']} dB, worst {lc['hf_excess_db_at_change_max']} dB
(steady parts 80 ms later: median {lc['hf_excess_db_steady_median']} dB). {burst_text(lc)}

{response_text(m)}

Streaming: block-by-block onnxruntime output equals the whole-sequence torch render to
{m['parity_torch_vs_onnx_stream']:.1e} (max abs) over the 70 s test set. Spectrogram of a held-out phrase:
`docs/models/{name}-phrase.png`.

## int8 and speed
{quant_text(q, name)}{layers_text(m)}

## Limits
Monophonic; one timbre (no breath/articulation control beyond loudness); trained A3–D7, the card's pitch range
(G3–D7) extends slightly below the data. No reverb: add it downstream.
"""
    (models / f"{name}.MODEL_CARD.md").write_text(text)


def latent_card(models: Path, name="pads"):
    from latent_model import CHANNELS, RATIOS, Decoder

    m = json.loads((WORK / "latent" / "metrics.json").read_text())
    params = sum(p.numel() for p in Decoder().parameters())
    widths = " → ".join(str(c) for c in CHANNELS)
    q = m["quantize"]
    r = m["reconstruction"]
    var = ", ".join(f"z{i} {100 * v:.1f}%" for i, v in enumerate(m["latent_variance_fraction"]))
    text = f"""# {name} — latent voice

`{name}.int8.onnx` (int8) and `{name}.fp32.onnx` (reference; `[model] precision = "auto"` plays fp32 unless int8
is clearly faster on the machine). `kind: latent`: eight knobs `z0..z7`
move through the latent space of an autoencoder trained on sustained FluidR3 timbres (strings, choir, warm pad).
48 kHz, 1024-sample blocks (21.3 ms), one latent frame per block.

## What it is
A RAVE-style VAE, trained here from scratch. Only the decoder ships: latent [8] per block → causal conv
({CHANNELS[0]} ch) → {len(RATIOS)} upsampling stages (×{", ×".join(map(str, RATIOS))}; channels {widths}), each a causal
Conv1d to r·C channels followed by a reshape (pixel shuffle, no ConvTranspose) and two residual causal convs
(dilation 1 and 3) → causal conv (kernel 7) to waveform × sigmoid amplitude. {params / 1e3:.0f}k parameters. Every conv keeps its last (k−1)·dilation input frames as an explicit state tensor
(`cache0..cache16`, zeros at start), so the block-by-block output equals the whole-sequence output.
The latents' PCA is folded into the first conv: `z0` is the direction the training data uses most
({var}). Each knob's range is the 1st–99th percentile of the training latents in those coordinates; the default
0 is their mean.

{io_table(models / f'{name}.fp32.onnx')}

## Data
Rendered offline from Debian's `fluid-soundfont-gm` (FluidR3_GM.sf2) with `fluidsynth -ni -g 1.0 -R 0 -C 0 -r 48000`:
GM programs 49 String Ensemble 1, 53 Choir Aahs and 90 Pad 2 (warm); per program 40 single notes (MIDI 45–76,
velocity 40–127, 0.5–2.5 s) and 12 phrases of 4–7 notes. Training 452 s (seed 4321), held-out test 71 s (seed 4322).
Encoder input: log-magnitude STFT (2048-point, hop 1024); loss: multi-scale spectral distance + β·KL (β=0.02,
warmed up).

## Licence
Model weights and scripts: MIT. Training data: renders of FluidR3_GM.sf2 (© Frank Wen, MIT licence).

## Reproduce
```
scripts/models/build-all.sh latent    # data -> train -> export -> int8 -> this card
```
({train_time(m)} on this 2-core machine, shared with other work at the time; data rendering + analysis ≈10 s;
export + evaluation + quantization ≈2 min.)

## Quality (held-out)
Reconstruction (encode the held-out audio, decode block by block with onnxruntime, fp32): multi-scale spectral
distance {r['model']} against {r['sawtooth']} for a band-limited sawtooth at the reference's f0 and loudness
(ratio {r['ratio']}; the int8 model: {m['reconstruction_int8']['model']}, ratio {m['reconstruction_int8']['ratio']}).
This is a spectral-loss-only autoencoder trained for {train_time(m)} on a CPU (no
adversarial stage as in RAVE): it keeps loudness, note timing and the coarse spectral envelope (which timbre,
which register), but not the harmonic fine structure — the spectrogram shows smeared bands where the reference
has harmonics. It sounds like shaped, breathy noise / a soft pad rather than like the instruments; treat it as
a texture voice. Calibration used knob sweeps plus 60 s of real training latents; the 48 kHz stage (`ups.4`,
`res.4.*`) is kept in float32 because quantizing it raised the noise floor in quiet passages (held-out spectral
distance 8.2 instead of 5.3, measured on the first, 192-channel version of this voice). Streaming: block-by-block onnxruntime equals the whole-sequence torch decode to
{m['parity_torch_vs_onnx_stream']:.1e} (max abs). Spectrogram: `docs/models/{name}-phrase.png`.

## int8 and speed
{quant_text(q, name)}
"""
    (models / f"{name}.MODEL_CARD.md").write_text(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--only", choices=["note", "latent"])
    args = ap.parse_args(argv)
    if args.only in (None, "note") and (WORK / "note" / "metrics.json").exists():
        note_card(args.models)
    if args.only in (None, "latent") and (WORK / "latent" / "metrics.json").exists():
        latent_card(args.models)


if __name__ == "__main__":
    main()
