#!/usr/bin/env python3
"""The benchmark suite, one command: every figure of issue 7 for every shipped model.

    .venv/bin/python benchmarks/run.py [--out DIR] [--quick] [--soak-minutes 10] [--only SECTION …]

Writes to DIR (default ``benchmarks/results/<UTC date>/``): ``results.json`` (everything),
``results.md`` (the targets with pass/miss, then the detail tables), PNG plots when
matplotlib is importable, and the per-part JSON of latency / startup / soak. Sections:

speed      real-time factor per model file × thread count (1, 2): median/p99/max block time
           at the model's own block size (fixed by its card), and the runtime wrapper
           against a bare ``session.run`` in the same run  (``pi_synth.bench.bench_model``);
           and by block size: the procedural organ built at 64 … 2048 frames
flops      multiply-adds and FLOPs per second of audio from the ONNX graph, GFLOP/s
           achieved here, and a labelled *projection* to Pi 4 / Pi 5 / Zero 2 W
precision  int8 vs fp32 of each shipped pair: speed ratio and SNR (same controls), and the
           ceiling: fp32 with the ops int8 quantizes made free
engine     engine CPU / pure inference CPU (each engine mode), on the ``pisynth_null`` PCM;
           with ``--profile``, a cProfile of the engine run per model
latency    latency budget and knob → sound / note-on → onset measured on the audio
           (``benchmarks/latency.py``), for the default model and the procedural organ
startup    start → first audio and RSS of ``pi-synth run`` (``benchmarks/startup.py``)
soak       paced soak through JACK (48 kHz, 256×2), idle and with one core busy
           (``benchmarks/soak.py``); here and in latency, jackd, its clients and the audio
           threads share one CPU (``--jack-cpus``)
rave       converted RAVE decoders vs TorchScript (``benchmarks/bench_rave.py``, run in
           ``.venv-rave`` when it and the fixtures exist), also by block size (2048 … 16384)
voices     block time of 0 … 16 voices of a batched note model through the product's
           runtime, synth and allocator (``benchmarks/voices.py``): the batched organ and
           every installed batched voice; 8 voices against 1, idle against 1, and the
           *projection* of 8 voices to the Pis

Targets are figures in the output with pass/miss, never assertions: a number measured on a
busy machine is reported with the machine's load beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _env import ROOT, cpu_share, cpu_times, loadavg, machine, use_test_alsa_config, write_json  # noqa: E402

SECTIONS = ("speed", "flops", "precision", "engine", "latency", "audio_input", "startup", "soak", "rave", "arm64",
            "voices")
TARGETS = {
    "int8_speedup": 1.5, "int8_snr_db": 30.0, "engine_cpu_ratio": 1.05, "soak_xruns": 0,
    "rss_mb": 100.0, "first_audio_s": 2.0, "rave_raspberry": 5.0, "rave_v2": 5.0,
    "voices_8v_1v": 3.0,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def model_files() -> list[Path]:
    """Every installed model file (shipped int8/fp32 pairs and the procedural organ)."""
    from pi_synth.model.library import list_models

    return list_models()


def pairs(files: list[Path]) -> dict[str, dict[str, Path]]:
    out: dict[str, dict[str, Path]] = {}
    for p in files:
        parts = p.name.split(".")
        if len(parts) == 3 and parts[1] in ("int8", "fp32"):
            out.setdefault(parts[0], {})[parts[1]] = p
    return {k: v for k, v in out.items() if len(v) == 2}


# -- sections ----------------------------------------------------------------------------


def sec_speed(files, args) -> list[dict]:
    from _harness import bench_sweep

    rows = []
    for p in files:
        for r in bench_sweep(p, threads=tuple(args.threads), blocks=args.blocks):
            r["file"] = p.name
            rows.append(r)
            log(f"speed {p.name} ×{r['threads']}: rtf {r['rtf']:.4f} (p99 {r['rtf_p99']:.4f}), "
                f"block {r['block_ms_median']:.3f} ms, wrapper ×{r.get('wrapper_overhead_ratio', 0):.3f}")
    return rows + speed_by_block(args) + trained_by_block(args)


BLOCK_SIZES = (64, 128, 256, 512, 1024, 2048)


def speed_by_block(args) -> list[dict]:
    """Real-time factor by block size: the procedural organ built at 64 … 2048 frames — what the
    block size alone costs, onnxruntime's fixed cost per call spread over more frames. (The shipped
    voices: ``trained_by_block``; RAVE decoders converted at 2048 … 16384: the ``rave`` section.)"""
    import tempfile

    from pi_synth.bench import bench_model
    from pi_synth.tools.procedural import build_organ

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for b in BLOCK_SIZES:
            path = Path(d) / f"organ-{b}.onnx"
            build_organ(path, block_size=b)
            r = bench_model(path, threads=1, blocks=max(50, args.blocks * 256 // b))
            r.update(file=f"organ.onnx built at block {b}", by_block=True, voice="organ (procedural)")
            rows.append(r)
            log(f"speed organ at block {b}: rtf {r['rtf']:.4f}, block {r['block_ms_median']:.3f} ms")
    return rows


def trained_by_block(args) -> list[dict]:
    """The flute exported at k control frames per call (256 … 2048 samples; the same weights and
    sound, ``scripts/models/export_blocks.py``; the morph voice streams one frame per call), when
    ``.venv-train`` and a voice's training checkpoint are here (each voice on its own)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return _trained_by_block(args, Path(d))


def _trained_by_block(args, d: Path) -> list[dict]:
    from pi_synth.bench import bench_model

    py = ROOT / ".venv-train" / "bin" / "python"
    if not py.exists():  # which checkpoints are here, export_blocks.py decides (and says)
        log("speed by block: shipped voices skipped (needs .venv-train: scripts/models/build-all.sh)")
        return []
    log("exporting the shipped voices at other block sizes (scripts/models/export_blocks.py) …")
    p = subprocess.run([str(py), str(ROOT / "scripts" / "models" / "export_blocks.py"), "--out", str(d)],
                       capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        log(f"speed by block: export failed: {(p.stderr or p.stdout).strip()[-300:]}")
        return []
    for line in p.stderr.splitlines():
        if ": skipped (" in line:
            log(f"speed by block: {line}")
    rows = []
    for v in json.loads((d / "blocks.json").read_text()):
        for prec in ("fp32", "int8"):
            r = bench_model(d / v[prec], threads=1, blocks=max(50, args.blocks * 256 // v["block_size"]))
            r.update(file=f"{v['model']}.{prec} at {v['frames']} frames per call", by_block=True,
                     voice=f"{v['model']} {prec}", frames=v["frames"])
            if prec == "fp32":
                r["snr_vs_shipped_db"] = v["snr_vs_shipped_db"]
            else:
                r["int8"] = {k: v[k] for k in ("format", "quantized_ops", "same_ops_as_shipped", "snr_db")}
            rows.append(r)
            log(f"speed {v['model']}.{prec} at block {v['block_size']}: rtf {r['rtf']:.4f}, "
                f"block {r['block_ms_median']:.3f} ms")
    return rows


def sec_flops(files, speed_rows) -> list[dict]:
    from _harness import flops_report, project

    rows = []
    for p in files:
        one = [r for r in speed_rows if r["file"] == p.name and r["threads"] == 1]
        ms = one[0]["block_ms_median"] if one else None
        try:
            f = flops_report(p, ms)
        except ImportError as e:
            return [{"error": f"onnx is not installed ({e}): pip install onnx (the dev extra)"}]
        f["file"] = p.name
        if ms:
            f["block_ms_here"] = ms
            f["projection"] = project(f["flops_per_block"], ms, f["block_size"], f["sample_rate"])
        rows.append(f)
        log(f"flops {p.name}: {f['mflops_per_audio_second']:.1f} MFLOP per audio second, "
            f"{f.get('gflops_achieved', 0):.2f} GFLOP/s here")
    return rows


def sec_precision(files, args) -> list[dict]:
    from pi_synth.bench import compare_precisions
    from pi_synth.tools.quantize import int8_ceiling, int8_kernels_on_arm

    rows = []
    for name, pr in pairs(files).items():
        r = compare_precisions(pr["fp32"], pr["int8"], blocks=args.blocks, seconds=10.0 if not args.quick else 3.0)
        r["model"] = name
        try:  # why: the most int8 could give, with the ops it quantizes made free
            r["ceiling"] = int8_ceiling(pr["fp32"], pr["int8"], blocks=args.blocks)
        except Exception as e:  # noqa: BLE001 - a graph the ablation cannot rewrite: say so, go on
            r["ceiling"] = {"error": f"{type(e).__name__}: {e}"}
        try:  # and whether a Pi's onnxruntime would run those ops as int8 kernels
            r["arm"] = int8_kernels_on_arm(pr["int8"])
        except Exception as e:  # noqa: BLE001
            r["arm"] = {"error": f"{type(e).__name__}: {e}"}
        rows.append(r)
        c = r["ceiling"].get("ceiling")
        log(f"precision {name}: int8 ×{r['speedup']:.2f} of fp32, SNR {r['snr_db']:.1f} dB"
            + (f"; ceiling ×{c:.2f} ({r['ceiling']['quantized_ops']} quantized ops made free)" if c else ""))
    return rows


def sec_engine(files, args, out: Path) -> list[dict]:
    """Per model: the engine ``pi-synth run`` picks (``auto``: graded against the target),
    then the other mode for comparison. Each is the median of interleaved repeats."""
    from pi_synth.model.card import load_card
    from _harness import block_breakdown, engine_overhead

    rows = []
    for p in files:
        card = load_card(p)
        blocks = max(200, int(args.engine_blocks * 256 / card.block_size))
        picked = None
        for mode in ("auto", "threaded", "direct"):
            if mode == picked:
                continue
            prof = str(out / f"profile-{p.stem}-{mode}.pstats") if args.profile else None
            picked_run = mode == "auto"
            r = engine_overhead(p, blocks=blocks, mode=mode, profile=prof,
                                repeats=args.engine_repeats if picked_run else max(1, args.engine_repeats // 2),
                                sessions=args.engine_sessions if picked_run else 1)
            r["file"] = p.name
            r["picked"] = mode == "auto"
            if prof:
                r["profile"] = prof
                r["profile_top"] = _profile_top(prof)
            if mode == "auto":
                picked = r["engine_mode"]
                r["breakdown"] = block_breakdown(p, blocks=min(args.engine_blocks, 3000))
            rows.append(r)
            log(f"engine {p.name} {r['engine_mode']}{' (picked)' if r['picked'] else ''}: "
                f"{r['engine_us_per_block']:.1f} µs CPU/block vs pure {r['pure_us_per_block']:.1f} → "
                f"×{r['engine_cpu_ratio']:.3f} (best of {r['repeats']} over best of {r['repeats'] + 1}, "
                f"median of {r.get('sessions', 1)} sessions: {', '.join(f'{x:.3f}' for x in r.get('engine_cpu_ratio_sessions', []))}; "
                f"paired median ×{r['engine_cpu_ratio_paired_median']:.3f}: "
                f"{', '.join(f'{x:.3f}' for x in r['engine_cpu_ratios'])})")
    return rows


def _profile_top(path: str, n: int = 15) -> list[str]:
    import io
    import pstats

    s = io.StringIO()
    pstats.Stats(path, stream=s).sort_stats("tottime").print_stats(n)
    return [line for line in s.getvalue().splitlines() if line.strip()][-n - 1:]


def sec_latency(args, out: Path) -> dict:
    import latency

    res = {}
    models = [None] + (["organ"] if not args.quick else [])
    for m in models:
        key = m or "default"
        log(f"latency {key} …")
        res[key] = latency.measure(m, out / f"latency-{key}", notes=args.notes, transports=tuple(args.transport),
                                   cpus=jack_cpus(args.jack_cpus))
        write_json(out / f"latency-{key}.json", res[key])
    return res


def sec_audio_input(args, out: Path) -> dict:
    """Audio in → audio out through JACK (``benchmarks/audio_input.py``): the procedural pair
    at 256 and 1024-sample blocks, dry and wet, and the raspberry RAVE pair (dry) when it
    has been converted to work/pair/raspberry.onnx (docs/rave.md)."""
    import audio_input

    models = ["organ"] + ([] if args.quick else ["organ1024"])
    if (ROOT / "work" / "pair" / "raspberry.onnx").exists():
        models.append("raspberry")
    log(f"audio in: {', '.join(models)} …")
    audio_input.main(sum((["--model", m] for m in models), []) + ["--out", str(out), "--clicks", "10"])
    return json.loads((out / "audio_input.json").read_text())


def sec_startup(args, out: Path) -> dict:
    import startup

    log("startup and RSS of pi-synth run …")
    res = startup.measure(None, 8.0 if not args.quick else 4.0, out / "startup")
    write_json(out / "startup.json", res)
    return res


def sec_soak(args, out: Path) -> dict:
    """Each soak in a fresh process (``benchmarks/soak.py``), as the service would run: no
    JACK client or engine left over from the other sections shares its address space."""
    res = {}
    for busy in (0, 1):
        key = f"busy{busy}"
        d = out / f"soak-{key}"
        log(f"soak {args.soak_minutes} min, {busy} core(s) busy …")
        cmd = [sys.executable, str(HERE / "soak.py"), "--minutes", str(args.soak_minutes), "--busy", str(busy),
               "--swap-every", str(args.soak_swap_every), "--out", str(d)]
        cpus = jack_cpus(args.jack_cpus)
        if cpus:
            cmd += ["--cpus", *map(str, cpus)]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.soak_minutes * 60 + 300)
        try:
            res[key] = json.loads((d / "soak.json").read_text())
        except (OSError, ValueError):
            res[key] = {"error": (p.stderr or p.stdout).strip()[-800:], "command": " ".join(cmd)}
            continue
        res[key]["command"] = " ".join(cmd)
        r = res[key]
        log(f"soak {key}: xruns {r['xruns']}, late {r['late_periods']}, JACK reports {r['jack_xrun_reports']}, "
            f"after a machine stall {r.get('xruns_after_machine_stall')}, "
            f"crashes {r['crashes']}, RSS {r['rss_start_mb']} → {r['rss_end_mb']} MB")
    return res


def jack_cpus(choice: str) -> list[int]:
    """The CPUs the JACK sections (soak, latency) pin jackd, its clients in them and the
    audio threads to: ``auto`` = the last CPU this
    process may use, where it may use two or more (the busy process and the rest of the
    machine have the others); ``none`` = unpinned; or a comma list."""
    if choice == "none":
        return []
    if choice == "auto":
        mine = sorted(os.sched_getaffinity(0))
        return mine[-1:] if len(mine) > 1 else []
    return [int(c) for c in choice.split(",")]


def _pin_text(s: dict) -> str:
    return f", audio threads and jackd on CPU {','.join(map(str, s['cpus']))}" if s.get("cpus") else ""


def _stall_text(s: dict) -> str:
    """What the soak's stall probe saw, and which xruns came right after a machine stall."""
    m = s.get("machine_stalls")
    if not m:
        return ""
    n = s["xruns_after_machine_stall"] + s["xruns_without_machine_stall"]
    return (f"; the machine stopped for ≥ {m['long_ms']:g} ms {m['long_stalls_per_min']:g} times a minute "
            f"(longest {m['longest_ms']:g} ms): {s['xruns_after_machine_stall']} of {n} xruns came right after "
            f"such a stall (a random instant: {100 * s['stall_match_chance']:.1f} %)")


def sec_rave(args, out: Path) -> dict:
    py = ROOT / ".venv-rave" / "bin" / "python"
    fixtures = ROOT / "work" / "rave-fixtures"
    if not py.exists() or not fixtures.is_dir():
        return {"skipped": "needs .venv-rave (torch) and work/rave-fixtures (scripts/rave/make-fixtures.sh)"}
    log("RAVE vs TorchScript (benchmarks/bench_rave.py) …")
    p = subprocess.run([str(py), str(HERE / "bench_rave.py"), "--out", str(out), "--blocks", str(min(args.blocks, 300)),
                        "--seconds", "2" if args.quick else "8"], capture_output=True, text=True, timeout=3600)
    if p.returncode != 0 or not (out / "rave.json").exists():
        return {"error": (p.stderr or p.stdout).strip()[-800:]}
    return json.loads((out / "rave.json").read_text())


def sec_arm64(args, out: Path) -> dict:
    """The same sound on arm64 (qemu-user): correctness on a Pi's instruction set, not speed."""
    import arm64

    log("the shipped models and the C kernels on emulated arm64 (benchmarks/arm64.py) …")
    try:
        return arm64.check(out / "arm64", list(arm64.CPUS))
    except arm64.EmulationError as e:
        return {"skipped": str(e).splitlines()[0]}


# -- report -----------------------------------------------------------------------------


def sec_voices(args) -> list[dict]:
    import voices

    return voices.run(rows=16, blocks=max(50, args.blocks // 10), log=log)


def _pf(ok) -> str:
    return "—" if ok is None else ("pass" if ok else "**miss**")


def targets_table(R: dict) -> list[list]:
    rows = []
    for r in R.get("precision", []):
        rows.append([f"int8 vs fp32 speed, {r['model']}", "≥ 1.5×", f"{r['speedup']:.2f}×",
                     _pf(r["speedup"] >= TARGETS["int8_speedup"])])
        rows.append([f"int8 SNR vs fp32, {r['model']}", "≥ 30 dB", f"{r['snr_db']:.1f} dB",
                     _pf(r["snr_db"] >= TARGETS["int8_snr_db"])])
    for r in R.get("engine", []):
        if not r.get("picked", True):
            continue  # the other mode: in the engine table, not a target
        rows.append([f"engine CPU / pure inference, {r['file']} ({r['engine_mode']}, picked by pi-synth run)", "≤ 1.05",
                     f"{r['engine_cpu_ratio']:.3f}", _pf(r["engine_cpu_ratio"] <= TARGETS["engine_cpu_ratio"])])
    for key, s in (R.get("soak") or {}).items():
        if isinstance(s, dict) and "xruns" in s:
            rows.append([f"xruns in {s['minutes']:g} min paced, {s['busy_cores']} core(s) busy ({s['model']}, "
                         f"{s.get('engine_mode', '?')}{_pin_text(s)})", "0",
                         f"{s['xruns']} xruns, {s['late_periods']} late periods "
                         f"(JACK's own reports: {s['jack_xrun_reports']}){_stall_text(s)}",
                         _pf(s["xruns"] == 0 and s["late_periods"] == 0)])
    for key, lat in (R.get("latency") or {}).items():
        b = lat.get("budget", {})
        tgt = b.get("target_frames")
        for tr in [k for k in lat if k.startswith("live")]:
            lv = lat[tr]
            for kind in ("knob", "note"):
                v = (lv.get(kind) or {}).get("onset_40db", {})
                o = (lv.get(kind) or {}).get("output_latency_40db")
                if v.get("n"):
                    got = (f"median {v['median_samples']:.0f}, max {v['max_samples']:.0f} frames end to end "
                           f"({v['median_ms']:.1f} / {v['max_ms']:.1f} ms)")
                    if o:  # graded: less the model's own response, which is the sound's
                        got += (f"; less the model's own response ({o['model_response_median']:.0f}): "
                                f"**{o['median_samples']:.0f} / {o['max_samples']:.0f}**")
                    j = (lv.get(kind) or {}).get("output_latency_40db_just_in_time")
                    nj = ((lv.get(kind) or {}).get("onset_40db_just_in_time") or {}).get("n", 0)
                    if nj < v["n"]:  # some rendered ahead, after an xrun: a period more, by design
                        got += (f"; {v['n'] - nj} of {v['n']} rendered a period ahead after an xrun, the "
                                + (f"{nj} just in time: {j['median_samples']:.0f} / {j['max_samples']:.0f}"
                                   if j and nj else "none just in time"))
                    rows.append([f"output latency, {kind} → sound, live ({lv.get('transport')}), {lv['model']} "
                                 f"({lv.get('engine_mode')}{_pin_text(lat)})",
                                 f"≤ {tgt} frames ({b.get('target_ms', 0):.1f} ms)", got,
                                 _pf((o or v)["median_samples"] <= tgt)])
    st = R.get("startup") or {}
    if "warm_cache" in st:
        w, c = st["warm_cache"], st["cold_cache"]
        rows.append(["RSS of pi-synth run, default model", "≤ 100 MB",
                     f"{w['rss_steady_without_jack_shm_mb']:.1f} MB ({w['rss_steady_mb']:.1f} MB incl. JACK shm)",
                     _pf(st["pass"]["rss"])])
        rows.append(["start → first audio (warm cache / cold cache)", "≤ 2 s",
                     f"{w['first_audio_s']:.2f} s / {c['first_audio_s']:.2f} s",
                     _pf(st["pass"]["first_audio_warm"] and st["pass"]["first_audio_cold"])])
    rave = R.get("rave") or {}
    for r in rave.get("results", []) if isinstance(rave, dict) else []:
        ratio = (r.get("speedup_vs_torchscript") or {}).get("fp32")
        name = r.get("fixture", "?")
        tgt = TARGETS["rave_v2"] if name.startswith("v2") else TARGETS["rave_raspberry"]
        if ratio:
            rows.append([f"RAVE {name} fp32 vs TorchScript (1 thread, same blocks, rounds of 10)", f"≥ {tgt:g}×",
                         f"{ratio:.2f}× ({r['ms_per_block']['fp32']:.2f} vs {r['ms_per_block']['ts']:.2f} ms/block)",
                         _pf(ratio >= tgt)])
        bb = r.get("block_by_block") or {}
        ratio = (bb.get("speedup_vs_torchscript") or {}).get("fp32")
        if ratio:
            rows.append([f"RAVE {name} fp32 vs TorchScript (block by block, plain session.run)", f"≥ {tgt:g}×",
                         f"{ratio:.2f}× ({bb['ms_per_block']['fp32']:.2f} vs {bb['ms_per_block']['ts']:.2f} ms/block)",
                         _pf(ratio >= tgt)])
    for r in R.get("voices") or [] if isinstance(R.get("voices"), list) else []:
        if "ratio_8v_1v_synth" in r:
            rows.append([f"block time of 8 voices / 1 voice, {r['label']} (synth's block, allocator included)",
                         f"≤ {TARGETS['voices_8v_1v']:g}", f"{r['ratio_8v_1v_with_allocator']:.2f} "
                         f"(model call alone {r['ratio_8v_1v_runtime']:.2f})",
                         _pf(r["ratio_8v_1v_with_allocator"] <= TARGETS["voices_8v_1v"])])
    return rows


def by_block_rows(R: dict) -> tuple[list[dict], list[dict]]:
    """The real-time-factor-by-block-size rows: ours (organ and shipped voices, speed section) and
    RAVE's (rave section)."""
    ours = [r for r in R.get("speed") or [] if r.get("by_block")]
    rave = (R.get("rave") or {}).get("by_block", []) if isinstance(R.get("rave"), dict) else []
    return ours, rave


def _voice(r: dict) -> str:
    return r.get("voice") or "organ (procedural)"


def by_block_lines(R: dict) -> list[str]:
    ours, rave = by_block_rows(R)
    if not ours and not rave:
        return []
    L = ["", "## Real-time factor by block size (1 thread)", "",
         "The procedural organ is built at each block size. The flute is exported at k control "
         "frames per call from their checkpoints (`scripts/models/export_blocks.py`: the same weights; "
         "the fp32 column is the SNR of one call against k calls of the shipped file, and the int8 variants "
         "quantize the ops the shipped int8 file does, in its format). RAVE decoders are converted at 1, 2, 4 "
         "and 8 latent frames per call and timed against TorchScript `decode` (nn~'s engine) on the same "
         "blocks, the engines alternating in rounds of 10 blocks.", "",
         "| model | block | pi-synth ms/block | pi-synth RTF | fp32: SNR against the shipped file | TorchScript ms/block "
         "| TorchScript RTF | speed-up |",
         "|---|---|---|---|---|---|---|---|"]
    for r in ours:
        snr, q = r.get("snr_vs_shipped_db"), r.get("int8")
        same = "—" if snr is None else ("identical" if snr == float("inf") else f"{snr:.0f} dB")
        if q:
            same = (f"int8 {q['snr_db']:.1f} dB vs its fp32, {q['quantized_ops']} ops int8"
                    + ("" if q["same_ops_as_shipped"] else " (**not** the shipped file's ops)"))
        L.append(f"| {_voice(r)} | {r['block_size']} | {r['block_ms_median']:.3f} | {r['rtf']:.4f} | {same} "
                 "| — | — | — |")
    for r in rave:
        L.append(f"| RAVE {r['fixture']} | {r['block_size']} | {r['onnx_ms']:.3f} | {r['onnx_rtf']:.4f} | — | "
                 f"{r['torchscript_ms']:.3f} | {r['torchscript_rtf']:.4f} | {r['speedup_vs_torchscript']}× |")
    return L


def markdown(R: dict) -> str:
    m = R["machine"]
    L = [f"# pi-synth benchmarks — {R['started_utc']}", "",
         f"Machine: {m['cpu']} ({m['machine']}), {m['cores']} cores, Python {m['python']}, onnxruntime "
         f"{m['onnxruntime']}. Load average at start {R['loadavg_start']}, at end {R['loadavg_end']}; "
         f"whole-machine CPU during the run: {R.get('machine_cpu', {})}. "
         "Figures from a loaded machine are upper bounds for times and lower bounds for headroom.", "",
         "Load average (1, 5, 15 min) per section, at its start and end: "
         + "; ".join(f"{k} {v[0]} → {v[1]} (ended {v[2]})" for k, v in R.get("section_loadavg", {}).items())
         + (f". Sections kept from an earlier run (`--merge`): {R['merged_from_earlier_run']}"
            if R.get("merged_from_earlier_run") else "") + ".", "",
         "## Targets", "", "| figure | target | measured | |", "|---|---|---|---|"]
    L += [f"| {' | '.join(map(str, r))} |" for r in targets_table(R)]
    if R.get("speed"):
        L += ["", "## Real-time factor (model's own block; 1 and 2 intra-op threads)", "",
              "| model file | block | threads | median ms | p99 ms | max ms | RTF | RTF p99 | bare session.run ms | wrapper ratio |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in [r for r in R["speed"] if not r.get("by_block")]:
            L.append(f"| {r['file']} | {r['block_size']} | {r['threads']} | {r['block_ms_median']:.3f} | "
                     f"{r['block_ms_p99']:.3f} | {r['block_ms_max']:.3f} | {r['rtf']:.4f} | {r['rtf_p99']:.4f} | "
                     f"{r.get('bare_block_ms_median', float('nan')):.3f} | {r.get('wrapper_overhead_ratio', float('nan')):.3f} |")
    L += by_block_lines(R)
    if isinstance(R.get("voices"), list):
        import voices

        L += voices.lines(R["voices"])
    if R.get("engine"):
        L += ["", "## Engine CPU vs pure inference (pisynth_null PCM: work, not waiting)", "",
              "| model file | mode | engine µs CPU/block (best run) | pure µs/block (best run) | ratio | "
              "paired median | every pair | ratio of each session (the median one counts) |",
              "|---|---|---|---|---|---|---|---|"]
        for r in R["engine"]:
            mode = r["engine_mode"] + (" (picked)" if r.get("picked") else "")
            reps = ", ".join(f"{x:.3f}" for x in r.get("engine_cpu_ratios", [r["engine_cpu_ratio"]]))
            sess = ", ".join(f"{x:.3f}" for x in r.get("engine_cpu_ratio_sessions", [r["engine_cpu_ratio"]]))
            L.append(f"| {r['file']} | {mode} | {r['engine_us_per_block']:.1f} | "
                     f"{r['pure_us_per_block']:.1f} | {r['engine_cpu_ratio']:.3f} | "
                     f"{r.get('engine_cpu_ratio_paired_median', r['engine_cpu_ratio']):.3f} | {reps} | {sess} |")
        bd = [r["breakdown"] for r in R["engine"] if r.get("breakdown")]
        if bd:
            L += ["", "Where a block's time goes outside the model (one thread, median µs per stage; "
                  "`benchmarks/_harness.py`: `block_breakdown`):", "",
                  "| model file | hooks + control bank | Runtime.step | copy + output guard | device (sink: wait, convert, libasound) | outside the model | (all) / step |",
                  "|---|---|---|---|---|---|---|"]
            for b in bd:
                L.append(f"| {Path(b['path']).name} | {b['hooks_and_bank_us']:.1f} | {b['runtime_step_us']:.1f} | "
                         f"{b['copy_and_guard_us']:.1f} | {b['backend_write_us']:.1f} | {b['outside_model_us']:.1f} | "
                         f"{b['outside_model_ratio']:.3f} |")
    if R.get("flops") and "error" not in R["flops"][0]:
        L += ["", "## FLOPs and a projection to Raspberry Pi CPUs", "",
              "Counted from the ONNX graph (Conv/MatMul/Gemm exactly from inferred shapes, 2 FLOPs per "
              "multiply-add; elementwise ops 1 FLOP per output element). **Projection, not a measurement**: "
              "block time on a Pi = max(FLOPs ÷ assumed sustained single-core GFLOP/s, block time here × "
              "assumed single-thread slowdown); the assumptions are in `benchmarks/_harness.py` (`PI_CPUS`) and the "
              "README. Measure a real Pi with `pi-synth bench MODEL`.", "",
              "The RTF cells add what `auto` would open for a configured 256-frame × 2 buffer: the direct "
              "engine, on more periods where that is less latency than the threaded engine's ring, or the "
              "threaded one (`pi_synth.audio.engine.auto_periods`).", "",
              "| model file | MMAC/s audio | MFLOP/s audio | GFLOP/s here | Pi 4 RTF (proj.) | Pi 5 RTF (proj.) | Zero 2 W RTF (proj.) |",
              "|---|---|---|---|---|---|---|"]

        def cell(pj, k):
            if k not in pj:
                return "—"
            n, eng = pj[k].get("auto_periods_256", 2), pj[k].get("engine_256", "direct")
            how = f"{eng} on 256×{n}"
            return f"{pj[k]['rtf']:.3f} ({how})" if pj[k]["rtf"] < 1 else f"{pj[k]['rtf']:.3f} (too slow)"

        for r in R["flops"]:
            pj = r.get("projection", {})
            L.append(f"| {r['file']} | {r['mmacs_per_audio_second']:.1f} | {r['mflops_per_audio_second']:.1f} | "
                     f"{r.get('gflops_achieved', float('nan')):.2f} | {cell(pj, 'pi4')} | {cell(pj, 'pi5')} | {cell(pj, 'zero2w')} |")
    if R.get("precision"):
        L += ["", "## int8 vs fp32", "",
              "On x86, QDQ int8 runs as dequantize → fp32 kernels → quantize, so an x86 timing of a QDQ model "
              "says little about ARM, where onnxruntime runs int8 kernels. The **ceiling** is measured, "
              "on any CPU: the fp32 graph timed with the ops the int8 file quantizes made free "
              "(`pi_synth.tools.quantize.int8_ceiling`). int8 can at best save a share of those ops' time, less its "
              "quantize/dequantize steps, so its speed-up stays under the ceiling. **int8 kernels on ARM** "
              "counts the quantized ops onnxruntime turns into int8 kernels under its ARM rule "
              "(`session.qdqisint8allowed`; the graph a Pi runs, checked here; its speed is not).", "",
              "| model | fp32 ms | int8 ms | speed-up | SNR dB | quantized ops | ceiling (those ops free) "
              "| int8 kernels on ARM |",
              "|---|---|---|---|---|---|---|---|"]
        for r in R["precision"]:
            c, a = r.get("ceiling") or {}, r.get("arm") or {}
            ceil = f"×{c['ceiling']:.2f}" if "ceiling" in c else c.get("error", "—")
            arm = f"{a['int8_kernels']} of {a['quantized_ops']}" if "int8_kernels" in a else a.get("error", "—")
            L.append(f"| {r['model']} | {r['fp32_block_ms_median']:.3f} | {r['int8_block_ms_median']:.3f} | "
                     f"{r['speedup']:.2f} | {r['snr_db']:.1f} | {c.get('quantized_ops', '—')} | {ceil} | {arm} |")
    for key, lat in (R.get("latency") or {}).items():
        b = lat.get("budget", {})
        L += ["", f"## Latency — {key} model", "",
              f"Budget (frames): model block {b.get('model_block')}, ring {b.get('ring_frames')} "
              f"({b.get('engine_mode')} engine), ALSA buffer {b.get('alsa_buffer_frames')}; target ≤ "
              f"{b.get('target_frames')} (one block + two periods).", "",
              "| path | event | onset −40 dB median / max | onset −20 dB median / max |", "|---|---|---|---|"]

        def mm(d):
            return f"{d.get('median_samples', float('nan')):.0f} / {d.get('max_samples', float('nan')):.0f}"

        for path in ["rendered"] + [k for k in lat if k.startswith("live")]:
            v = lat.get(path) or {}
            for kind in ("knob", "note"):
                e = v.get(kind) or {}
                a, c = e.get("onset_40db", {}), e.get("onset_20db", {})
                if a.get("n"):
                    label = path if path == "rendered" else f"live ({v.get('transport')})"
                    L.append(f"| {label} | {kind} | {mm(a)} | {mm(c)} |")
                if path == "rendered" and e.get("response_onset_40db", {}).get("n"):
                    L.append(f"| the model's own response | {kind} | {mm(e['response_onset_40db'])} | "
                             f"{mm(e.get('response_onset_20db', {}))} |")
                if e.get("output_latency_40db"):
                    L.append(f"| output latency, live ({v.get('transport')}) | {kind} | "
                             f"{mm(e['output_latency_40db'])} | |")
        L.append("")
        L.append("`rendered` is on the audio clock (block quantization + the model's response; no buffering); "
                 "`live` is end to end on JACK's clock (input path, wait for the next block, ring, ALSA buffer, "
                 "the model's response). `din` sends each message at the start of a JACK cycle, just after the "
                 "engine woke (the worst phase: its figure is the worst case); `din-free` at any phase (a knob "
                 "turned at a random moment). The model's own response is the rendered onset after the start of "
                 "the block the event lands in (ramp, attack, lookahead: the sound's, not the output path's); "
                 "output latency is the live figure less its median, and is what the target grades.")
    a = R.get("arm64") or {}
    if a.get("cpus"):
        import arm64

        L += ["", "## The same sound on arm64 (emulated: correctness, not speed)", "",
              "Each shipped model renders the same 24 blocks of moving controls under `qemu-aarch64` (Debian arm64 "
              "Python, the aarch64 wheels of the same versions, `_kernels.c` cross-compiled) and here; onnxruntime's "
              "profile on arm64 says which op kernels ran. `benchmarks/arm64.py`.", "", arm64.table(a).rstrip()]
    elif a:
        L += ["", f"## arm64 (emulated): {a.get('skipped') or a.get('error')}"]
    return "\n".join(L) + "\n"


def plots(R: dict, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    if R.get("speed"):
        fig, ax = plt.subplots(figsize=(8, 4))
        rows = [r for r in R["speed"] if not r.get("by_block")]
        labels = [f"{r['file']}\n×{r['threads']}" for r in rows]
        ax.bar(range(len(rows)), [r["rtf"] for r in rows], label="median")
        ax.scatter(range(len(rows)), [r["rtf_p99"] for r in rows], color="k", marker="_", s=300, label="p99")
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_ylabel("block time / block duration")
        ax.set_title("Real-time factor (lower is better; 1 = no headroom)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "rtf.png", dpi=100)
        plt.close(fig)
        made.append("rtf.png")
    ours, rave = by_block_rows(R)
    if ours or rave:
        fig, ax = plt.subplots(figsize=(8, 4))
        for v in dict.fromkeys(_voice(r) for r in ours):
            rr = [r for r in ours if _voice(r) == v]
            ax.plot([r["block_size"] for r in rr], [r["rtf"] for r in rr], "o-", label=f"{v}, pi-synth")
        for fx in sorted({r["fixture"] for r in rave}):
            rr = [r for r in rave if r["fixture"] == fx]
            line = ax.plot([r["block_size"] for r in rr], [r["onnx_rtf"] for r in rr], "o-", label=f"RAVE {fx}, pi-synth")
            ax.plot([r["block_size"] for r in rr], [r["torchscript_rtf"] for r in rr], "x--",
                    color=line[0].get_color(), label=f"RAVE {fx}, TorchScript")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("block size (frames)")
        ax.set_ylabel("block time / block duration")
        ax.set_title("Real-time factor by block size, 1 thread (lower is better)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "rtf_by_block.png", dpi=100)
        plt.close(fig)
        made.append("rtf_by_block.png")
    if isinstance(R.get("voices"), list) and R["voices"]:
        import voices

        made += [p for p in [voices.plot(R["voices"], out)] if p]
    if R.get("engine"):
        fig, ax = plt.subplots(figsize=(8, 4))
        rows = R["engine"]
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [r["pure_us_per_block"] for r in rows], 0.4, label="pure inference")
        ax.bar([i + 0.2 for i in x], [r["engine_us_per_block"] for r in rows], 0.4, label="engine")
        ax.set_xticks(list(x), [f"{r['file']}\n{r['engine_mode']}" for r in rows], fontsize=7)
        ax.set_ylabel("CPU µs per block")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "engine.png", dpi=100)
        plt.close(fig)
        made.append("engine.png")
    lat = R.get("latency") or {}
    if lat:
        fig, ax = plt.subplots(figsize=(8, 4))
        i = 0
        ticks = []
        for key, L in lat.items():
            for path in ["rendered"] + [k for k in L if k.startswith("live")]:
                for kind in ("knob", "note"):
                    s = ((L.get(path) or {}).get(kind) or {}).get("onset_40db", {}).get("samples")
                    if s:
                        ax.scatter([i] * len(s), s, s=12)
                        ticks.append((i, f"{key}\n{path}\n{kind}"))
                        i += 1
            tgt = (L.get("budget") or {}).get("target_frames")
        if ticks:
            if tgt:
                ax.axhline(tgt, color="r", ls="--", label=f"target {tgt} frames")
            ax.set_xticks([t for t, _ in ticks], [s for _, s in ticks], fontsize=6)
            ax.set_ylabel("frames from event to onset (−40 dB)")
            ax.legend()
            fig.tight_layout()
            fig.savefig(out / "latency.png", dpi=100)
            made.append("latency.png")
        plt.close(fig)
    soaks = {k: v for k, v in (R.get("soak") or {}).items() if isinstance(v, dict) and v.get("timeline")}
    if soaks:
        fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
        for k, s in soaks.items():
            t = [r[0] for r in s["timeline"]]
            a1.plot(t, [r[1] for r in s["timeline"]], label=k)
            a2.plot(t, [r[2] + r[3] for r in s["timeline"]], label=k)
        a1.set_ylabel("RSS MB")
        a2.set_ylabel("xruns + late periods")
        a2.set_xlabel("s")
        a1.legend()
        fig.tight_layout()
        fig.savefig(out / "soak.png", dpi=100)
        plt.close(fig)
        made.append("soak.png")
    return made


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(HERE / "results" / time.strftime("%Y-%m-%d", time.gmtime())))
    ap.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    ap.add_argument("--skip", nargs="+", choices=SECTIONS, default=[], help="skip these sections")
    ap.add_argument("--models", nargs="+", help="model files or names (default: every installed model)")
    ap.add_argument("--blocks", type=int, default=2000, help="timed blocks per speed measurement")
    ap.add_argument("--engine-blocks", type=int, default=1500, help="blocks per engine CPU measurement")
    ap.add_argument("--engine-repeats", type=int, default=11,
                    help="interleaved engine/baseline repeats per session (the best of each counts)")
    ap.add_argument("--engine-sessions", type=int, default=3,
                    help="onnxruntime sessions the picked engine is measured on (the median one counts)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--notes", type=int, default=10, help="events per latency measurement")
    ap.add_argument("--transport", nargs="+", default=["din", "din-free"], choices=("din", "din-free", "jack"),
                    help="live MIDI path(s) for the latency test (din: sent at the worst phase of the "
                         "JACK cycle; din-free: at any phase)")
    ap.add_argument("--soak-minutes", type=float, default=10.0)
    ap.add_argument("--soak-swap-every", type=float, default=0.0)
    ap.add_argument("--jack-cpus", default="auto",
                    help="CPUs for jackd (the stand-in DAC), its clients and the audio threads in the soak and "
                         "latency sections: auto (the last "
                         "CPU, on a machine with two or more), none (unpinned), or a list such as 3 or 2,3. "
                         "On a virtual machine the host stops one vCPU at a time; pinned together, such a "
                         "stop pauses the stand-in DAC with the instrument, as no host stops a Pi")
    ap.add_argument("--profile", action="store_true", help="cProfile the engine runs (pstats files in --out)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the sections of an earlier results.json in --out that this run does not redo")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 200 blocks, 1-minute soaks, fewer latency events")
    args = ap.parse_args(argv)
    if args.quick:
        args.blocks, args.engine_blocks, args.notes, args.engine_repeats = 200, 400, 3, 1
        args.engine_sessions = 1
        args.soak_minutes = min(args.soak_minutes, 1.0)
    use_test_alsa_config()
    os.environ.setdefault("PI_SYNTH_CACHE_DIR", str(Path(args.out) / "cache"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from pi_synth.model.library import find_model

    files = [find_model(m) for m in args.models] if args.models else model_files()
    want = [s for s in (args.only or SECTIONS) if s not in args.skip]
    R: dict = {"started_utc": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()), "machine": machine(),
               "loadavg_start": loadavg(), "models": [str(p) for p in files], "sections": want,
               "targets": TARGETS, "command": " ".join([sys.executable] + sys.argv)}
    if args.merge and (out / "results.json").exists():
        old = json.loads((out / "results.json").read_text())
        for k in SECTIONS:
            if k in old and k not in want:
                R[k] = old[k]
                if k in old.get("section_loadavg", {}):
                    R.setdefault("section_loadavg", {})[k] = old["section_loadavg"][k]
                R.setdefault("merged_from_earlier_run", {})[k] = old.get("started_utc")
        R["earlier_loadavg"] = {old.get("started_utc"): [old.get("loadavg_start"), old.get("loadavg_end")]}
    cpu0 = cpu_times()
    steps = [("speed", lambda: sec_speed(files, args)),
             ("flops", lambda: sec_flops(files, R.get("speed") or [])),
             ("precision", lambda: sec_precision(files, args)),
             ("engine", lambda: sec_engine(files, args, out)),
             ("latency", lambda: sec_latency(args, out)),
             ("audio_input", lambda: sec_audio_input(args, out)),
             ("startup", lambda: sec_startup(args, out)),
             ("soak", lambda: sec_soak(args, out)),
             ("rave", lambda: sec_rave(args, out)),
             ("arm64", lambda: sec_arm64(args, out)),
             ("voices", lambda: sec_voices(args))]
    for name, fn in steps:
        if name not in want:
            continue
        if name == "flops" and "speed" not in want:
            from pi_synth.bench import bench_model

            R["speed_for_flops"] = [dict(bench_model(p, blocks=args.blocks, bare=False), file=p.name) for p in files]
            R["flops"] = sec_flops(files, R["speed_for_flops"])
            continue
        t0 = time.monotonic()
        la0 = loadavg()
        try:
            R[name] = fn()
        except Exception as e:  # one broken section must not lose the others
            R[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
            log(f"{name} failed: {e}")
        R.setdefault("section_seconds", {})[name] = round(time.monotonic() - t0, 1)
        R.setdefault("section_loadavg", {})[name] = [la0, loadavg(), time.strftime("%H:%M:%SZ", time.gmtime())]
        write_json(out / "results.json", R)
    R["loadavg_end"] = loadavg()
    R["machine_cpu"] = cpu_share(cpu0, cpu_times())
    R["finished_utc"] = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    R["targets_table"] = targets_table(R)
    write_json(out / "results.json", R)
    md = markdown(R)
    R["plots"] = plots(R, out)
    if R["plots"]:
        md += "\n" + "\n".join(f"![{p}]({p})" for p in R["plots"]) + "\n"
    else:
        md += "\n(no plots: matplotlib is not installed — pip install matplotlib)\n"
    (out / "results.md").write_text(md)
    write_json(out / "results.json", R)
    print(md)
    log(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
