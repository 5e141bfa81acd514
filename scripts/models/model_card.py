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
            dims = ", ".join(d.dim_param or str(d.dim_value) for d in t.shape.dim)
            out.append(f"| `{v.name}` | {types.get(t.elem_type, t.elem_type)} | [{dims}] |")
        return out

    lines = ["| graph input | dtype | shape |", "|---|---|---|"] + rows(m.graph.input)
    lines += ["", "| graph output | dtype | shape |", "|---|---|---|"] + rows(m.graph.output)
    ctl = ["| control | unit | min | max | default | curve |", "|---|---|---|---|---|---|"]
    for c in card["controls"]:
        ctl.append(f"| `{c['name']}` | {c.get('unit', '')} | {c['min']} | {c['max']} | {c['default']} | {c.get('curve', 'lin')} |")
    if card.get("voices", 1) > 1:
        ctl += ["", f"Card: `\"voices\": {card['voices']}` — one call plays 1 … {card['voices']} voices as batch rows "
                "(the leading dimension `voices` below)."]
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
            f"adding them from the cheapest up, each kept while int8 stays ≥ {L.get('snr_min', 31)} dB from fp32 ({tried}), "
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


# The flute shipped before this export (commit f02729f, its MODEL_CARD.md): monophonic, pitch and loudness
# only, 48 sines per sample; the same held-out test set (the data is rendered from fixed seeds).
PREVIOUS = {"all": 3.831, "sawtooth": 18.767, "ratio": 0.204, "int8": 3.837, "us_per_block_fp32": 173.7}


def voices_bench(name: str):
    """The last run of benchmarks/bench_voices.py for this model, if any."""
    p = ROOT / "benchmarks" / "results" / "voices" / "voices.json"
    if p.exists():
        d = json.loads(p.read_text())
        if d.get("model") == name:
            return d
    return None


def knob_table(card: dict, k: dict) -> str:
    """Which knob drives what, and what moving it end to end measured (note_export.knob_effects)."""
    d = k["default"]
    what = {"breath": ("noise_db", "noise between the harmonics, against the default", "dB"),
            "brightness": ("centroid_hz", "spectral centroid", "Hz"),
            "vibrato_depth": ("vibrato_cents", "pitch wobble (half peak-to-peak)", "cents"),
            "vibrato_rate": ("vibrato_hz", "wobble rate", "Hz")}
    rows = ["| knob | control | unit | range | default | what it does | measured at min / default / max |",
            "|---|---|---|---|---|---|---|"]
    for i, c in enumerate(card["controls"][2:], start=1):
        f, label, unit = what[c["name"]]
        lo, mid, hi = k[f"{c['name']}={c['min']:g}"][f], d[f], k[f"{c['name']}={c['max']:g}"][f]
        if f == "noise_db":  # an FFT's dB: only differences mean something
            lo, mid, hi = lo - mid, 0.0, hi - mid
        rows.append(f"| knob{i} | `{c['name']}` | {c['unit']} | {c['min']:g} … {c['max']:g} | {c['default']:g} | "
                    f"{c['description']} | {label}: {lo:+.1f} / {mid:.1f} / {hi:+.1f} {unit} |"
                    if f == "noise_db" else
                    f"| knob{i} | `{c['name']}` | {c['unit']} | {c['min']:g} … {c['max']:g} | {c['default']:g} | "
                    f"{c['description']} | {label}: {lo:.1f} / {mid:.1f} / {hi:.1f} {unit} |")
    return "\n".join(rows)


def note_card(models: Path, name="flute"):
    m = json.loads((WORK / "note" / "metrics.json").read_text())
    q = m["quantize"]
    lc = m["legato_changes"]
    card = read_card(onnx.load(str(models / f"{name}.fp32.onnx")))
    pv = card["provenance"]
    rows = "\n".join(f"| {k.replace('_', ' ')} | {m[k]['model']} | {m[k]['sawtooth']} | {m[k]['ratio']} |"
                     for k in ("all", "single_notes", "phrases"))
    wt = m["wavetable"]
    s8 = m["int8_snr"]
    knobs_at = "; ".join(f"{v['snr_db']} dB at " + ", ".join(f"{kk} {vv:g}" for kk, vv in v["knobs"].items())
                         for kk2, v in s8.items() if kk2.startswith("held_out_knobs"))
    vb = voices_bench(name)
    if vb:
        c = vb["curve_us"]
        vrows = ["| voices | " + " | ".join(f"{k} µs/block (quietest round's median)" for k in c) + " | " + " | ".join(f"{k} × 1 voice" for k in c) + " |",
                 "|---|" + "---|" * (2 * len(c))]
        for v in vb["voices"]:
            vrows.append(f"| {v} | " + " | ".join(f"{c[k][str(v)]['us_best']:.0f}" for k in c) + " | "
                         + " | ".join(f"{c[k][str(v)]['us_best'] / c[k]['1']['us_best']:.2f}" for k in c) + " |")
        ratio = vb["ratio_8_vs_1"]
        pj = vb["projection_8_voices"]
        dv = vb["dynamic_vs_fixed"]
        prof1, prof8 = vb["profile"]["1"], vb["profile"]["8"]
        top = lambda p: ", ".join(f"{k} {v:.0f}" for k, v in list(p["by_op_us"].items())[:6])  # noqa: E731
        voices_text = (
            f"Measured by `benchmarks/bench_voices.py` (one run, 1 onnxruntime thread, every file × voice count "
            f"stepped in alternation, each voice its own moving notes and knobs):\n\n" + "\n".join(vrows) +
            f"\n\n**8 voices cost {ratio['fp32']:.2f}× one voice (fp32) and {ratio['int8']:.2f}× (int8)** — the goal "
            f"is ≤ 3× (thread CPU time: {vb['ratio_8_vs_1_cpu']['fp32']:.2f}× and {vb['ratio_8_vs_1_cpu']['int8']:.2f}×; "
            f"the median of all blocks: {vb['ratio_8_vs_1_all_blocks']['fp32']:.2f}× and "
            f"{vb['ratio_8_vs_1_all_blocks']['int8']:.2f}×; load average {vb['loadavg'][0]:.1f} on this 2-core machine "
            f"during the run). One voice: RTF {vb['rtf_1_voice']['fp32']:.3f} (fp32), {vb['rtf_1_voice']['int8']:.3f} "
            f"(int8). The dynamic `voices` dimension against a copy with it fixed (same rows, fp32): 1 voice "
            f"{dv['1']['dynamic_us']:.0f} vs {dv['1']['fixed_us']:.0f} µs, 8 voices {dv['8']['dynamic_us']:.0f} vs "
            f"{dv['8']['fixed_us']:.0f} µs. The first call at a new row count costs up to "
            f"{max(vb['first_calls']['first_call_us'].values()) / 1e3:.1f} ms (onnxruntime plans that shape's memory; "
            f"steady at 16 rows: {list(vb['first_calls'].values())[1]:.0f} µs): a player should run each row count "
            "once at load, not in the audio thread. Where the time goes (onnxruntime's profiler, µs per call by op type, "
            f"fp32; the profiler adds a few µs to each of the {prof1['nodes']} nodes, so read shares): 1 voice "
            f"{top(prof1)}; 8 voices {top(prof8)}.\n\n"
            f"**Projection, not a measurement** — 8 voices of the int8 file on a Pi: " + ", ".join(
                f"{p['cpu']} {p['block_ms']:.2f} ms per 5.33 ms block (RTF {p['rtf']:.2f})" for p in pj["pi"].values())
            + " (`benchmarks/_harness.py` `project`: this machine's block time × an assumed slowdown, or FLOPs ÷ an assumed "
              "sustained rate, whichever is larger; check on a Pi with `benchmarks/bench_voices.py`).")
    else:
        v = m["voices"]
        voices_text = (f"8 voices / 1 voice: fp32 {v['ratio_8_vs_1']['fp32']:.2f}×, int8 {v['ratio_8_vs_1']['int8']:.2f}× "
                       "(note_export.py's quick check; `benchmarks/bench_voices.py` measures the 1–16 curve).")
    kb = m["knobs"]
    dvib = m["data_vibrato"]
    env = m["vibrato_envelope"]
    text = f"""# {name} — note voice

`{name}.int8.onnx` (int8) and `{name}.fp32.onnx` (reference; `[model] precision = "auto"` plays fp32 unless int8
is clearly faster on the machine). `kind: note`: a flute played from MIDI notes (pitch in Hz, loudness in dB) with
four timbre knobs (breath, brightness, vibrato depth and rate). **One file plays up to {card['voices']} voices in one
onnxruntime call** (card: `"voices": {card['voices']}`): voice = batch row, each with its own state rows. 48 kHz,
256-sample blocks (5.3 ms), one control frame per block.

## The knobs
The instrument routes knobs to a note model's controls after pitch and loudness, in card order, so:

{knob_table(card, kb)}

Measured on a held A4 at -20 dB, its last 2.5 s of 3 s, each control moved alone (`note_export.knob_effects`;
`tests/test_flute_voices.py` checks each one moves the sound). Breath and brightness act on the gains a block
ramps to, so a knob never steps the sound; brightness rescales the harmonics to the same power, so loudness stays
put ({kb['brightness=-12']['level_db']:.1f} / {kb['default']['level_db']:.1f} / {kb['brightness=12']['level_db']:.1f} dB).
Vibrato is an LFO whose phase is a float64 state (blocks join without clicks); it fades in {env['delay_s']:g}–{env['delay_s'] + env['fade_s']:g} s
after the voice starts sounding (loudness above {env['gate_db']:g} dB; legato keeps counting), as the data's does. Its
default is the FluidR3 flute's own vibrato, measured on the {dvib['notes']} training notes of ≥ 0.9 s: median
{dvib['depth_cents_median']} cents (quartiles {dvib['depth_cents_iqr'][0]}–{dvib['depth_cents_iqr'][1]}) at
{dvib['rate_hz_median']} Hz ({dvib['rate_hz_iqr'][0]}–{dvib['rate_hz_iqr'][1]}). The network hears the pitch with its
vibrato, as it heard the data's f0. Attack, release, portamento and octave are the instrument's (voice-level), not
the model's.

## What it is
A DDSP-style voice. A causal conv net (1×1 conv → 4 residual causal convs, kernel 3, dilations 1/2/4/8, 128
channels → 1×1 conv; 205k parameters, receptive field 31 blocks = 165 ms) maps (log pitch, loudness) per block to
an overall amplitude, a distribution over 48 harmonics and the gains of 16 noise bands (1.5 kHz wide linear-phase
64-tap FIRs). The harmonic-plus-noise synthesis runs inside the ONNX graph, after the timbre controls:
- pitch, harmonic amplitudes and noise gains ramp linearly across each block from the previous block's values
  (kept in the `prev` state), so there is no zipper noise and no click at block edges;
- the oscillator phase is computed in closed form per block, in cycles, wrapped, and carried as a float64 state
  (`phase`); a harmonic above Nyquist at either end of a block has amplitude 0 at that end;
- the harmonics are read from a wavetable: the block's start and end amplitudes become two single-cycle tables
  ({wt['length']} points; one MatMul; half a cycle built, the other half read mirrored, since a sum of sines is odd
  about it), read at the phase with linear interpolation — 4 table reads a sample instead of 48 sines, so the
  per-voice cost of a batch is small. Against the training-time synthesis (48 sines) over the held-out set:
  {wt['snr_db_vs_48_sines']} dB SNR; the held-out spectral distance is the same to 0.001 (tables of 256 and 512
  points cost 0.09 and 0.01 of it);
- the noise comes from two fixed white-noise tables of coprime lengths (32749, 32719), filtered into the 16 bands
  once at export and read at a float64 sample counter (`noise_pos`, one modulo per voice), so rendering is
  deterministic and the noise repeats only after ~6 hours (the filtered tables are most of the file);
- the network's causal convs run as one MatMul over their gathered taps (all voices one GEMM); their caches are
  explicit state (`cache0..3`, channels last), as are the vibrato's `vibrato_phase` (float64) and `vibrato_age`.
  Initial state is all zeros.

{m.get('graph_nodes', '?')} graph nodes. The export checks the ONNX graph against the torch module (block by block: max
|difference| {m['parity_torch_module_vs_onnx']:.1e}) and batched rows against separate one-voice runs (max |difference| over
1, 3, 8, 16 voices: {max(m['batch_rows_vs_mono_max_abs'].values()):.1e}: float rounding of a GEMM over more rows).

{io_table(models / f'{name}.fp32.onnx')}

`voices` is dynamic: the player feeds `controls [V, 6, 1]` and every state input with V rows (its active voices,
1 … {card['voices']}; inactive voices are not run) and reads `audio [V, 1, 256]`, one row per voice, which it mixes with
its own gain law (nothing is mixed in the graph). V = 1 is the mono path; the rows are independent, so a voice's
state rows move with it when the player reorders the batch, and a new note may start from zeros (or keep a
released voice's state for a legato steal). Every voice starts its noise at the same `noise_pos` from zero state;
seed `noise_pos_in` differently per voice if unison voices should not share their breath noise.

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

## Provenance and licence
- Data: {pv['data']}.
- Data licence: {pv['data_license']}.
- Owner of the trained weights: {pv['owner']}.
- Training: {pv['training']}: {pv['cpu_hours']} CPU-hours, ≈ {pv['energy_wh']} Wh (an estimate).
- Playing: ≈ {pv['run_watts_pi4']} W on a Pi 4 — {pv['run_watts_pi4_basis']}.

The same facts are in the card JSON (`provenance`; `pi-synth info --json`). Model weights and scripts: MIT.

## Reproduce
```
scripts/models/build-all.sh note    # data -> train -> export -> int8 -> bench_voices -> this card
```
({train_time(m)} on this 2-core machine, shared with other work at the time: wall time depends on the load, CPU
time does not; data rendering + analysis ≈30 s; export + evaluation + quantization {m.get('export_seconds', 0) / 60:.0f} min.)
Seeds are fixed; torch 2.13.0 (CPU), onnxruntime {q.get('onnxruntime', '')}.

## Quality (held-out, fp32 streaming render driven by the test set's own f0 and loudness)
Multi-scale spectral distance (FFT 2048…64, mean |ΔS| + mean |Δlog S|), against the same figure for a band-limited
sawtooth at the same f0 and loudness. Target ≤0.4× the sawtooth's. The knobs at their neutral positions and no
vibrato added (the test set's f0 carries the flute's own); with the default vibrato on top of it:
{m['all_default_vibrato']['model']}.

| part of the test set | model | sawtooth | ratio |
|---|---|---|---|
{rows}
| all, int8 model | {m['all_int8']['model']} | {m['all_int8']['sawtooth']} | {m['all_int8']['ratio']} |
| all, the flute shipped before (mono, 48 sines; commit f02729f) | {PREVIOUS['all']} | {PREVIOUS['sawtooth']} | {PREVIOUS['ratio']} |

Legato note changes ({lc['n']} in the held-out phrases): 4–16 kHz energy in a 40 ms window at each change, model
minus reference: median {lc['hf_excess_db_at_change_median']} dB, worst {lc['hf_excess_db_at_change_max']} dB
(steady parts 80 ms later: median {lc['hf_excess_db_steady_median']} dB). {burst_text(lc)}

{response_text(m)}

Spectrograms: `docs/models/{name}-phrase.png` (a held-out phrase), `docs/models/{name}-knobs.png` (each knob swept).

## Voices (polyphony as a batch)
{voices_text}

## int8 and speed
int8 against fp32, worst of: the held-out test set at the default knobs ({s8['held_out_defaults']} dB), at five
random knob positions ({knobs_at}) and the moving-controls sequence quantize.py uses ({s8['moving_controls']} dB):
**{s8['worst']} dB** (target ≥ 30).

{quant_text(q, name)}{layers_text(m)}

## Limits
Trained A3–D7, the card's pitch range (G3–D7) extends slightly below the data. The timbre controls are DSP on the
network's output, not learned articulations: breath adds or removes the model's own noise bands, brightness tilts
its harmonics. No reverb: add it downstream.
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
