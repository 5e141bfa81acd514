"""Export the trained morph voice: the decoder (models/morph.fp32.onnx, kind latent) and its streaming
encoder (models/morph.encoder.onnx, kind encoder) with their cards; measure them on held-out material;
quantize the decoder (models/morph.int8.onnx).

The z encoder's outputs over the training set are rotated onto their principal axes (folded into the
encoder's output and the decoder's first layer), so z0 is the direction the data uses most; each control's
range is the 1st..99th percentile of the training data's values in those coordinates, its default their mean.

Held-out measures (the encoder and the decoder played block by block by onnxruntime, exactly as
``pi-synth render morph --input`` plays them, the output moved back by the encoder's 512-sample latency):
f0 of the output against the reference's (YIN), harmonic-to-noise ratio, multi-scale spectral distance
against a band-limited sawtooth's at the reference's f0 and loudness; int8 against fp32.

int8 is dynamic by default (``--fmt``; pi_synth.tools.quantize): int8 weights, each call's activations
quantized over their own range, no output rounding, with the four residual convs first rewritten as the
MatMuls they are for one frame (quantize.convs_as_matmul: onnxruntime runs a dynamic MatMul as one fused int8
kernel, where a dynamic Conv came out slower than fp32). A static (calibrated) range rounded the decoder's
level logit (a gain on the whole output) coarsely enough to cost 3 of 20 random knob positions the 30 dB
target (worst 28.4 dB, QOperator and QDQ alike); excluding layers, calibrating on held knob positions,
percentile/entropy ranges and per-channel equalization each moved the worst position around without lifting
all of them. With the dynamic format, the one residual MatMul whose rounding costs the most stays fp32 if
that lifts the worst case (:func:`fp32_layer`, searched on knob positions the measures never use): the
2026-12-06 retrain lost 30 dB at 1 of 20 positions with all four in int8 (28.8 dB), 33.1 dB with one kept.

Usage: python scripts/models/morph_export.py [--data work/morph] [--name morph] [--models models] [--int8-only]
Writes the three model files and {data}/metrics.json (model_card.py turns it into MODEL_CARD.md).
``--int8-only`` re-quantizes the existing {models}/{name}.fp32.onnx (no torch checkpoint needed: the data from
morph_data.py and the metrics.json of the full export) and updates the int8 file and the int8 and speed
figures of metrics.json; everything else in it stays as the full export measured it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "src"))
sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))
from common import ROOT, SR, WORK, saw_baseline, spectral_distance, write_json, yin_f0  # noqa: E402
from morph_data import EXTRA_TRAIN_PROGRAMS, HELD_PROGRAMS, TRAIN_PROGRAMS  # noqa: E402
from morph_model import (BLOCK, FLOOR_DB, LATENT, N_HARM, N_NOISE, WORDS, Morph, StreamingDecoder,  # noqa: E402
                         StreamingEncoder, held_pitch)

from pi_synth.model.card import write_card  # noqa: E402
from pi_synth.tools.quantize import (_session, control_sequence, convs_as_matmul, default_exclude,  # noqa: E402
                                     format_report, quantize_model, render, snr_db)

LICENSE = ("MIT (model weights and code); trained on renders of FluidR3_GM.sf2 by Frank Wen, MIT licence "
           "(Debian package fluid-soundfont-gm)")
LATENCY = BLOCK  # the encoder's window reaches one block past the frame it describes
WATTS_PER_CORE = 10.0  # assumed power of one busy x86 server core with its share of the machine (an estimate)


def fold_pca(net, mean, rot):
    """The decoder's z input = mean + rot @ z': fold into its first (1x1) conv's z columns."""
    conv = net.inp
    with torch.no_grad():
        W = conv.weight[:, 2:, 0].clone()  # [hidden, LATENT]
        conv.weight[:, 2:, 0] = W @ torch.tensor(rot, dtype=torch.float32)
        conv.bias.add_(W @ torch.tensor(mean, dtype=torch.float32))


def z_of(model, pitch_enc, loud, logmel):
    with torch.no_grad():
        z, _ = model.znet(torch.from_numpy(pitch_enc)[None], torch.from_numpy(loud)[None],
                          torch.from_numpy(logmel.T.copy())[None], model.znet.zero_caches(1))
    return z[0].T.numpy().astype(np.float64)  # [frames, LATENT]


def export(module, args, path, ins, outs):
    torch.onnx.export(module, tuple(args), str(path), dynamo=False, opset_version=17, input_names=ins,
                      output_names=outs)


def run_encoder(path, card, audio):
    """The encoder block by block (zero state): latents [calls, k] for calls = len(audio) // BLOCK."""
    sess = _session(path)
    specs = {a.name: a for a in sess.get_inputs()}
    dt = {"tensor(float)": np.float32, "tensor(double)": np.float64}
    state = {i: np.zeros(specs[i].shape, dt[specs[i].type]) for i, _ in card["state"]}
    outs = [card["outputs"]["latent"]] + [o for _, o in card["state"]]
    z = []
    for j in range(len(audio) // BLOCK):
        res = sess.run(outs, {card["inputs"]["audio"]: audio[None, None, j * BLOCK:(j + 1) * BLOCK], **state})
        z.append(res[0][0, :, 0])
        state = {i: r for (i, _), r in zip(card["state"], res[1:])}
    return np.array(z, np.float32)


def through(enc_path, enc_card, dec_path, dec_card, audio):
    """audio -> encoder -> decoder, both block by block; the output moved back by the latency so that
    sample i answers input sample i (the last block: silence in, as a render's tail)."""
    x = np.concatenate([audio, np.zeros(LATENCY, np.float32)])
    lat = run_encoder(enc_path, enc_card, x)
    y = render(_session(dec_path), dec_card, lat[:, :, None])[0]
    return y[LATENCY: LATENCY + len(audio)], lat


def hnr_db(x, f0, loud, voiced, n=4096):
    """Mean over voiced frames of the harmonic-to-noise ratio (dB): spectral energy within f0/4 of a
    harmonic against the energy farther from every harmonic (100 Hz .. 16 kHz), 4096-point Hann."""
    f = np.fft.rfftfreq(n, 1 / SR)
    w = np.hanning(n)
    out = []
    for i in np.nonzero(voiced)[0]:
        c = (i + 1) * BLOCK
        seg = x[max(0, c - n // 2): c + n // 2]
        if len(seg) < n:
            continue
        p = np.abs(np.fft.rfft(seg * w)) ** 2
        dist = np.abs(f / f0[i] - np.round(f / f0[i])) * f0[i]
        band = (f > 100) & (f < 16000)
        h, nz = p[band & (dist <= f0[i] / 4)].sum(), p[band & (dist > f0[i] / 4)].sum()
        out.append(10 * np.log10((h + 1e-20) / (nz + 1e-20)))
    return float(np.mean(out))


def quality(y, test, sl=slice(None)):
    ref = test["audio"][sl]
    yy = y[sl]
    f0, loud = test["f0"], test["loudness"]
    frames = np.arange(len(f0))[slice(sl.start and sl.start // BLOCK, sl.stop and sl.stop // BLOCK)]
    fsl = slice(frames[0], frames[-1] + 1)
    saw = saw_baseline(f0[fsl], loud[fsl], BLOCK)
    dm, ds = spectral_distance(yy, ref), spectral_distance(saw[: len(ref)], ref)
    return {"model": round(dm, 4), "sawtooth": round(ds, 4), "ratio": round(dm / ds, 4)}


def harmonics(y, test):
    """f0 of the output (YIN around the reference's f0) against the reference's, on the reference's
    voiced frames (periodicity > 0.8, loudness > -50 dB); HNR of both on those frames."""
    voiced = (test["periodicity"] > 0.8) & (test["loudness"] > -50)
    f0_ref = test["f0"]
    f0_out, per_out = yin_f0(y, BLOCK, f0_ref)
    cents = 1200 * np.abs(np.log2(f0_out / f0_ref))
    within = float(np.mean((cents[voiced] < 50) & (per_out[voiced] > 0.5)))
    h_ref, h_out = hnr_db(test["audio"], f0_ref, test["loudness"], voiced), hnr_db(y, f0_ref, test["loudness"], voiced)
    by_part = {}  # the same measure on each half of the held-out set (test["part"]: 0 and 1)
    for name, k in (("seen_programs_held_out_notes", 0), ("held_out_programs", 1)):
        v = voiced & (test["part"] == k)
        r, o = hnr_db(test["audio"], f0_ref, test["loudness"], v), hnr_db(y, f0_ref, test["loudness"], v)
        by_part[name] = {"reference": round(r, 2), "model": round(o, 2), "diff": round(o - r, 2)}
    return {"voiced_frames": int(voiced.sum()), "f0_within_50_cents": round(within, 4),
            "f0_median_abs_cents": round(float(np.median(cents[voiced])), 2),
            "hnr_db_reference": round(h_ref, 2), "hnr_db_model": round(h_out, 2),
            "hnr_db_diff": round(h_out - h_ref, 2), "hnr_by_part": by_part}


def make_cards(name, lo, hi, pitch_rng, loud_max, loud_default, var, dec_states, enc_states):
    zc = [{"name": f"z{i}", "unit": "", "min": round(float(lo[i]), 3), "max": round(float(hi[i]), 3),
           "default": 0.0, "curve": "lin",
           "description": f"timbre latent {i}: principal direction {i} of the encoder's output over the training "
                          f"data ({100 * var[i]:.1f}% of its variance); range its 1st..99th percentile"}
          for i in range(LATENT)]
    controls = [
        {"name": "pitch", "unit": "hz", "min": pitch_rng[0], "max": pitch_rng[1], "default": 220.0, "curve": "log",
         "description": "fundamental frequency; range: the training data's 1st..99th percentile"},
        {"name": "loudness", "unit": "db", "min": FLOOR_DB, "max": loud_max, "default": loud_default, "curve": "lin",
         "description": f"dB RMS of the output ({FLOOR_DB:g}: silence); max: the training data's 99.5th percentile"},
    ] + zc
    dec = {
        "format": 1, "name": name, "kind": "latent",
        "description": "latent voice with harmonics (DDSP-style harmonic + noise decoder): pitch, loudness and "
                       f"{WORDS.get(LATENT, LATENT)} timbre latents spanning strings, choir, pads, brass, reeds and plucked strings; its encoder "
                       f"({name}.encoder.onnx) plays any monophonic input through it; 48 kHz, {BLOCK}-sample blocks",
        "sample_rate": SR, "block_size": BLOCK, "channels": 1, "control_frames": 1, "controls": controls,
        "inputs": {"controls": "controls"}, "outputs": {"audio": "audio"},
        "state": [[a, b] for a, b, _, _ in dec_states], "latency_samples": 0, "license": LICENSE,
        "source": "scripts/models/build-all.sh latent: autoencoder trained on dry FluidR3_GM renders of 14 programs; "
                  f"causal conv net -> {N_HARM} harmonics + {N_NOISE} noise bands",
    }
    enc = {
        "format": 1, "name": f"{name}-encoder", "kind": "encoder",
        "description": f"the {name} voice's streaming encoder: audio -> pitch (YIN), loudness (dB RMS) and "
                       f"z0..z{LATENT - 1} "
                       f"(a causal conv net over a log-mel spectrum); answers {LATENCY} samples late",
        "sample_rate": SR, "block_size": BLOCK, "channels": 1, "control_frames": 1, "controls": [],
        "inputs": {"audio": "audio"}, "outputs": {"latent": "latent"},
        "latent_controls": [c["name"] for c in controls],
        "state": [[a, b] for a, b, _, _ in enc_states], "latency_samples": LATENCY, "license": LICENSE,
        "source": f"scripts/models/build-all.sh latent: trained with {name}.fp32.onnx as one autoencoder",
    }
    return dec, enc


def with_knobs(card, lat, **knobs):
    out = lat.copy()
    for i, c in enumerate(card["controls"]):
        if c["name"] in knobs:
            out[:, i] = knobs[c["name"]]
    return out


def knob_snrs(s32, s8, card, seeds):
    """int8 against fp32 (dB) at random knob positions (every control; a level that sounds)."""
    n = int(3.0 * SR / BLOCK)
    out = []
    for s in seeds:
        rng = np.random.default_rng(100 + s)
        v = np.array([[c["min"] + (c["max"] - c["min"]) * rng.uniform()] for c in card["controls"]], np.float32)
        v[1] = rng.uniform(-45.0, card["controls"][1]["max"])  # a level that sounds
        ctl = v[None].repeat(n, 0)
        out.append(round(snr_db(render(s32, card, ctl), render(s8, card, ctl)), 2))
    return out


SEARCH_SEEDS = range(1000, 1020)  # never the measured positions (int8_checks: 0..19)


def fp32_layer(fp32, src, card, exclude):
    """Which residual MatMul (if any) stays fp32: the rounding of the four adds up, and the 2026-12-06
    model lost the 30 dB target at 1 of 20 knob positions with all four in int8 (28.8 dB). Each choice
    is tried on 20 *other* knob positions (SEARCH_SEEDS); the one with the best worst case is kept.
    Returns (node names to exclude, the search's worst case per choice)."""
    import tempfile

    mm = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "MatMul" and "/convs." in n.name]
    s32 = _session(fp32)
    tried = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in [None] + mm:
            extra = [] if m is None else [m]
            q = Path(tmp) / "q.onnx"
            quantize_model(src, q, fmt="dynamic", calibration_blocks=None, exclude=exclude + extra)
            tried[m or "none"] = (min(knob_snrs(s32, _session(q), card, SEARCH_SEEDS)), extra)
    best = max(tried, key=lambda k: tried[k][0])
    return tried[best][1], {"kept_fp32": best, "search_seeds": [SEARCH_SEEDS.start, SEARCH_SEEDS.stop],
                            "worst_db_by_choice": {k: v[0] for k, v in tried.items()}}


def int8_checks(fp32, int8, card, lat, seeds=range(20)):
    """int8 against fp32 (dB): default knobs (pitch and loudness at a held note's), 20 random knob
    positions (every control), and the held-out phrase through the encoder."""
    n = int(3.0 * SR / BLOCK)
    dflt = np.array([[c["default"]] for c in card["controls"]], np.float32)[None].repeat(n, 0)
    s32, s8 = _session(fp32), _session(int8)
    out = {"defaults": round(snr_db(render(s32, card, dflt), render(s8, card, dflt)), 2)}
    knob = knob_snrs(s32, s8, card, seeds)
    out["random_knobs"] = knob
    out["random_knobs_worst"] = min(knob)
    out["held_out_phrase"] = round(snr_db(render(s32, card, lat[:, :, None]), render(s8, card, lat[:, :, None])), 2)
    out["worst"] = min(out["defaults"], out["random_knobs_worst"], out["held_out_phrase"])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=WORK / "morph")
    ap.add_argument("--name", default="morph")
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--fmt", default="dynamic", choices=["qdq", "qoperator", "dynamic"])
    ap.add_argument("--int8-only", action="store_true",
                    help="re-quantize the existing fp32 file and update the int8 figures of metrics.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.int8_only:
        return int8_only(args)
    t_export = time.time()
    model = Morph()
    model.load_state_dict(torch.load(args.data / "morph.pt"))
    model.eval()
    train, test = dict(np.load(args.data / "train.npz")), dict(np.load(args.data / "test.npz"))
    feats = dict(np.load(args.data / "features.npz"))

    z = z_of(model, feats["train_pitch_enc"], feats["train_loud"], feats["train_logmel"])
    sounding = feats["train_loud"] > -60
    mean = z[sounding].mean(0)
    evals, evecs = np.linalg.eigh(np.cov((z[sounding] - mean).T))
    order = np.argsort(evals)[::-1]
    rot = evecs[:, order]
    rot *= np.sign(rot[np.abs(rot).argmax(0), np.arange(LATENT)])  # deterministic signs
    zp = (z[sounding] - mean) @ rot
    lo, hi = np.percentile(zp, 1, 0), np.percentile(zp, 99, 0)
    var = evals[order] / evals.sum()
    voiced = (train["periodicity"] > 0.8) & (train["loudness"] > -60)
    p1, p99 = np.percentile(train["f0"][voiced], [1, 99])
    pitch_rng = (float(np.floor(p1)), float(np.ceil(p99)))
    loud_max = float(np.ceil(np.percentile(train["loudness"], 99.5)))
    loud_default = float(np.round(np.median(train["loudness"][voiced])))
    np.savez(args.data / "pca.npz", mean=mean, rot=rot, lo=lo, hi=hi)

    clamps = {"pitch": (20.0, 4000.0), "loudness": (FLOOR_DB, 0.0), "z": float(max(np.abs(lo).max(), np.abs(hi).max()) * 2)}
    fold_pca(model.net, mean, rot)
    dec = StreamingDecoder(model, clamps).eval()
    enc = StreamingEncoder(model, mean, rot).eval()
    dspecs, especs = dec.state_specs(), enc.state_specs()
    dcard, ecard = make_cards(args.name, lo, hi, pitch_rng, loud_max, loud_default, var, dspecs, especs)
    args.models.mkdir(parents=True, exist_ok=True)
    fp32, int8 = args.models / f"{args.name}.fp32.onnx", args.models / f"{args.name}.int8.onnx"
    encp = args.models / f"{args.name}.encoder.onnx"
    export(dec, [torch.zeros(1, 2 + LATENT, 1)] + [torch.zeros(s, dtype=d) for _, _, s, d in dspecs], fp32,
           ["controls"] + [s[0] for s in dspecs], ["audio"] + [s[1] for s in dspecs])
    write_card(fp32, dcard)
    export(enc, [torch.zeros(1, 1, BLOCK)] + [torch.zeros(s, dtype=d) for _, _, s, d in especs], encp,
           ["audio"] + [s[0] for s in especs], ["latent"] + [s[1] for s in especs])
    write_card(encp, ecard)

    metrics = {"pca_variance_fraction": [round(float(v), 4) for v in var],
               "ranges": {c["name"]: [c["min"], c["max"], c["default"]] for c in dcard["controls"]}}
    # the streaming encoder against the offline features the training used (the first 20 s of held-out)
    n20 = 20 * SR // BLOCK
    lat20 = run_encoder(encp, ecard, test["audio"][: (n20 + 1) * BLOCK])[1:]  # call j+1 describes frame j
    tp = held_pitch(feats["test_raw_pitch"][:n20])
    zt = (z_of(model, feats["test_pitch_enc"], feats["test_loud"], feats["test_logmel"])[:n20] - mean) @ rot
    w = 32  # the streaming encoder saw one frame more at the start (its first call): past its conv memory
    metrics["encoder_parity_max_abs"] = {
        "pitch_cents": float(np.max(np.abs(1200 * np.log2(lat20[:, 0] / tp)))),
        "loudness_db": float(np.max(np.abs(lat20[:, 1] - feats["test_loud"][:n20]))),
        "z": float(np.max(np.abs(lat20[w:, 2:] - zt[w:])))}

    # held-out: everything, then the training programs at held-out notes, then the held-out programs
    t0 = time.time()
    y, lat = through(encp, ecard, fp32, dcard, test["audio"])
    metrics["render_seconds_ort"] = round(time.time() - t0, 1)
    metrics["test_seconds"] = round(len(test["audio"]) / SR, 1)
    split = int(np.argmax(test["part"] == 1)) * BLOCK
    parts = {"all": slice(None), "seen_programs_held_out_notes": slice(0, split),
             "held_out_programs": slice(split, None)}
    metrics["spectral"] = {k: quality(y, test, sl) for k, sl in parts.items()}
    metrics["harmonics"] = harmonics(y, test)
    print(json.dumps(metrics, indent=1), flush=True)
    np.save(args.data / "test_render.npy", y)
    np.save(args.data / "test_latents.npy", lat)

    int8_and_speed(metrics, args.fmt, fp32, int8, encp, dcard, ecard, train, test, lat, parts)
    train_log = json.loads((args.data / "train_log.json").read_text())
    metrics["train"] = train_log
    data_s = float((args.data / "data_seconds.txt").read_text()) if (args.data / "data_seconds.txt").exists() else 0.0
    metrics["export_seconds"] = round(time.time() - t_export, 1)
    metrics["pipeline"] = {"data_seconds": data_s, "train_seconds": round(train_log["seconds"], 1),
                           "export_seconds": metrics["export_seconds"],
                           "total_minutes": round((data_s + train_log["seconds"] + metrics["export_seconds"]) / 60, 1),
                           "train_cpu_hours": round(train_log["cpu_seconds"] / 3600, 3),
                           "energy_wh_assumed": round(train_log["cpu_seconds"] / 3600 * WATTS_PER_CORE, 1)}
    metrics["programs"] = {"train": {str(k): v[0] for k, v in TRAIN_PROGRAMS.items()},
                           "train_only": {str(k): v[0] for k, v in EXTRA_TRAIN_PROGRAMS.items()},
                           "held_out": {str(k): v[0] for k, v in HELD_PROGRAMS.items()}}
    write_json(args.data / "metrics.json", metrics)
    print(json.dumps({k: metrics[k] for k in ("speed", "pipeline")}, indent=1))


def int8_and_speed(metrics, fmt, fp32, int8, encp, dcard, ecard, train, test, lat, parts):
    """Quantize the decoder, measure int8 against fp32 (int8_checks, held-out spectral distance) and the speed
    of both and of the encoder: the int8 and speed figures of ``metrics``."""
    # the static twins of the report are calibrated on what will be played (the card's knob walk, and
    # held-in latents through the encoder); the dynamic format needs no calibration
    import tempfile

    lat_train = run_encoder(encp, ecard, train["audio"][: 30 * SR])
    calib = np.concatenate([control_sequence(dcard, int(8.0 * SR / BLOCK), seed=1), lat_train[:, :, None]])
    convs = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv" and "/convs." in n.name]
    with tempfile.TemporaryDirectory() as tmp:
        src = fp32
        if fmt == "dynamic":  # the residual convs as MatMuls: fused int8 kernels (module doc)
            src = Path(tmp) / "matmul.onnx"
            convs_as_matmul(fp32, src, convs)
            metrics["matmul_rewrite_snr_db"] = round(snr_db(*(render(_session(p), dcard, lat[:2000, :, None])
                                                              for p in (fp32, src))), 1)
        exclude = default_exclude(onnx.load(str(src)))
        if fmt == "dynamic":
            keep, metrics["int8_layer_search"] = fp32_layer(fp32, src, dcard, exclude)
            exclude += keep
        report = quantize_model(src, int8, fmt=fmt, calibration_blocks=calib, exclude=exclude)
    print(format_report(report), flush=True)
    metrics["quantize"] = report
    metrics["int8_snr"] = int8_checks(fp32, int8, dcard, lat)
    y8 = render(_session(int8), dcard, lat[:, :, None])[0][LATENCY: LATENCY + len(test["audio"])]
    metrics["spectral_int8"] = {k: quality(y8, test, sl) for k, sl in parts.items()}
    print(json.dumps({k: metrics[k] for k in ("int8_snr", "spectral_int8")}, indent=1), flush=True)

    from _harness import graph_flops, project

    from pi_synth.tools.quantize import bench as qbench

    seq = control_sequence(dcard, 700, seed=4)
    sp = qbench({"fp32": fp32, "int8": int8}, dcard, seq)
    flops = graph_flops(fp32)["flops"]
    metrics["speed"] = {"here": sp, "flops_per_block": flops,
                        "pi": project(flops, sp["fp32"]["us_per_block"] / 1e3, BLOCK, SR),
                        "loadavg": open("/proc/loadavg").read().split()[:3]}
    esp = encoder_speed(encp, ecard, test["audio"][: 10 * SR])
    metrics["speed"]["encoder"] = {**esp, "pi": project(graph_flops(encp)["flops"], esp["us_per_block"] / 1e3,
                                                        BLOCK, SR)}


def int8_only(args):
    """``--int8-only``: the shipped fp32 decoder and encoder re-quantized and re-measured (see the module doc)."""
    from pi_synth.model.card import card_json

    t0 = time.time()
    fp32, int8 = args.models / f"{args.name}.fp32.onnx", args.models / f"{args.name}.int8.onnx"
    encp = args.models / f"{args.name}.encoder.onnx"
    mpath = args.data / "metrics.json"
    for need in (fp32, encp, args.data / "train.npz", args.data / "test.npz", mpath):
        if not need.exists():
            print(f"--int8-only needs {need}: run scripts/models/morph_data.py (data) or the full export (metrics)",
                  file=sys.stderr)
            return 2
    metrics = json.loads(mpath.read_text())
    dcard, ecard = card_json(fp32), card_json(encp)
    train, test = dict(np.load(args.data / "train.npz")), dict(np.load(args.data / "test.npz"))
    lp = args.data / "test_latents.npy"
    if lp.exists() and len(np.load(lp)) == len(test["audio"]) // BLOCK + 1:
        lat = np.load(lp)
    else:  # the held-out audio through the shipped encoder (the latents the full export saved)
        _, lat = through(encp, ecard, fp32, dcard, test["audio"])
        np.save(lp, lat)
    split = int(np.argmax(test["part"] == 1)) * BLOCK
    parts = {"all": slice(None), "seen_programs_held_out_notes": slice(0, split),
             "held_out_programs": slice(split, None)}
    int8_and_speed(metrics, args.fmt, fp32, int8, encp, dcard, ecard, train, test, lat, parts)
    metrics["requantized"] = {"seconds": round(time.time() - t0, 1), "format": args.fmt,
                              "date": time.strftime("%Y-%m-%d", time.gmtime())}
    write_json(mpath, metrics)
    print(json.dumps({k: metrics[k] for k in ("speed", "requantized")}, indent=1))
    return 0


def encoder_speed(path, card, audio, rounds=3):
    sess = _session(path)
    specs = {a.name: a for a in sess.get_inputs()}
    dt = {"tensor(float)": np.float32, "tensor(double)": np.float64}
    outs = [card["outputs"]["latent"]] + [o for _, o in card["state"]]
    best = None
    for _ in range(rounds):
        state = {i: np.zeros(specs[i].shape, dt[specs[i].type]) for i, _ in card["state"]}
        ts = []
        for j in range(len(audio) // BLOCK):
            feed = {card["inputs"]["audio"]: audio[None, None, j * BLOCK:(j + 1) * BLOCK], **state}
            t0 = time.perf_counter()
            res = sess.run(outs, feed)
            ts.append(time.perf_counter() - t0)
            state = {i: r for (i, _), r in zip(card["state"], res[1:])}
        med = float(np.median(ts[20:]) * 1e6)
        best = med if best is None else min(best, med)
    return {"us_per_block": round(best, 1), "rtf": round(best / (1e6 * BLOCK / SR), 4)}


if __name__ == "__main__":
    sys.exit(main())
