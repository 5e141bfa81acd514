#!/usr/bin/env python3
"""Audio in → audio out latency, on the audio clock through JACK: a click in, its onset out.

A JACK client (``_jackprobe.py --play``, its own process) plays clicks at known JACK frames
out of ``pisynth-probe:play`` into the instrument's capture ports and records what the
instrument's playback port gives back, both on JACK's clock (``jackd -d dummy`` at the
model's rate). The instrument runs in this process as ``pi-synth run`` builds it (an
Instrument with the audio input, the Engine in the configured mode, ``pisynth_jack`` both
ways: full duplex, one clock). Onset frame − click frame is the round trip a sound card
would add its converters to.

Two paths per model: **dry** (``dry_wet`` 0: the input itself, delayed by the cards' stated
latency, through the whole pipeline — the block gathering, the engine's lead, the
buffers — with the models running), and **wet** (the model's answer; only where the
model answers a click audibly: the procedural organ pair, whose encoder's loudness follows
the input — a RAVE fixture has random weights and says ~1e-7). The budget the issue sets:
encoder block + decoder block + 2 periods; the design's: the block (the model's own
compression ratio: a block must have been heard before it is encoded) + the lead (direct:
the buffer less a period) + the device buffer.

    .venv/bin/python benchmarks/audio_input.py [--model raspberry|organ|PATH] [--period 256] [--periods 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _env import ROOT, JackServer, loadavg, machine, use_test_alsa_config, write_json  # noqa: E402


def organ_pair(d: Path, block: int = 256) -> Path:
    from pi_synth.tools.procedural import build_encoder, build_organ

    p = d / f"organ{block}.onnx"
    build_organ(p, block_size=block)
    build_encoder(d / f"organ{block}.encoder.onnx", block_size=block, smooth=0.0)
    return p


def measure(model: Path, out: Path, *, period: int, periods: int, clicks: int, dry: bool, seed: int = 0) -> dict:
    from pi_synth import config as config_mod
    from pi_synth.app import Instrument
    from pi_synth.audio.backends.alsa import AlsaBackend
    from pi_synth.audio.engine import Engine
    from pi_synth.model.card import load_card
    from pi_synth.service.alsalib import quiet

    quiet()
    card = load_card(model)
    sr = card.sample_rate
    rng = random.Random(seed)
    # clicks a second apart at random phases of the block; a 4-sample burst at −6 dBFS
    at = [int((0.6 + k + rng.uniform(0, card.block_size / sr)) * sr) for k in range(clicks)]
    play = np.zeros(at[-1] + sr, np.float32)
    for a in at:
        play[a:a + 4] = 0.5
    np.save(out / "clicks.npy", play)
    probe = subprocess.Popen([sys.executable, str(HERE / "_jackprobe.py"), "--play", str(out / "clicks.npy"),
                              "--tail", "0.5", "--out", str(out / "probe.npz")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    cfg = config_mod.Config(None, config_mod.defaults())
    cfg.values["input"].update(gate_db=-120.0, dc_hz=0.0)
    sets = [("dry_wet", 0.0)] if dry else [("pitch", 440.0), ("loudness", -80.0)]
    inst = engine = None
    res: dict = {"model": card.name, "path": str(model), "path_kind": "dry" if dry else "wet", "sample_rate": sr,
                 "block_size": card.block_size, "clicks": clicks}
    try:
        assert probe.stdout.readline().strip() == "ready", "the JACK probe did not start"
        inst = Instrument(cfg, model=str(model), audio_in=True, sets=sets)
        backend = AlsaBackend("pisynth_jack")  # full duplex, one clock
        inst.connect_input(backend)
        engine = inst.engine = Engine(inst.player, backend, period=period, periods=periods, realtime=True)
        engine.start()
        ports = subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout.split("\n")
        ours = [p for p in ports if not p.startswith(("system:", "pisynth-probe:"))]
        for p in ours:
            if p.endswith((":in_000", ":in_001")):
                subprocess.run(["jack_connect", "pisynth-probe:play", p], check=True)
            elif p.endswith(":out_000"):
                subprocess.run(["jack_connect", p, "pisynth-probe:in"], check=True)
        time.sleep(0.3)
        probe.stdin.write("go\n")
        probe.stdin.flush()
        assert probe.stdout.readline().strip() == "done", "the JACK probe did not finish"
        st = inst.status()
        res.update(engine_mode=engine.mode, granted={"period": engine.granted.period, "periods": engine.granted.periods},
                   lead_frames=engine.lead, xruns=st["xruns"], late_periods=st["late_periods"],
                   input_xruns=st["input"]["xruns"], input_late_blocks=st["input"]["late_blocks"],
                   input_resyncs=st["input"]["resyncs"], model_latency_samples=card.extra["audio_in"]["latency_samples"]
                   if "audio_in" in card.extra else inst.card.extra["audio_in"]["latency_samples"])
    finally:
        if engine is not None:
            engine.stop(fade=False)
        if probe.poll() is None:
            probe.stdin.close()
            probe.wait(10)
    d = np.load(out / "probe.npz")
    y = d["audio"]
    res["probe_xruns"] = int(d["xruns"])
    lat = []
    for a in at:
        seg = np.abs(y[a:a + int(0.4 * sr)])
        thr = max(0.05 if dry else 0.1 * float(seg.max()), 1e-4)
        hit = np.nonzero(seg > thr)[0]
        if len(hit):
            lat.append(int(hit[0]))
    g = res.get("granted", {})
    B, p, n = card.block_size, g.get("period", period), g.get("periods", periods)
    res["latency_frames"] = lat
    if lat:
        res.update(median_frames=float(np.median(lat)), max_frames=int(max(lat)), min_frames=int(min(lat)),
                   median_ms=round(1e3 * float(np.median(lat)) / sr, 2), max_ms=round(1e3 * max(lat) / sr, 2))
    res["budget_issue_frames"] = 2 * B + 2 * p  # encoder block + decoder block + 2 periods
    res["design_frames"] = {"block (the model's compression ratio)": B, "lead": res.get("lead_frames", 0),
                            "device buffer": p * n, "model latency (cards)": res.get("model_latency_samples", 0)}
    res["design_max_frames"] = sum(res["design_frames"].values())
    if lat:
        res["pass_issue_budget"] = max(lat) <= res["budget_issue_frames"]
        res["block_share_of_median"] = round(B / float(np.median(lat)), 3)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="raspberry (the converted fixture pair), organ (the "
                    "procedural pair, block 256), organ1024, or a decoder path with its encoder beside it")
    ap.add_argument("--period", type=int, default=256)
    ap.add_argument("--periods", type=int, default=2)
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / time.strftime("%Y-%m-%d")))
    args = ap.parse_args(argv)
    use_test_alsa_config()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pisynth-ain-"))
    runs = []
    for m in args.model or ["raspberry", "organ"]:
        if m == "raspberry":
            path = ROOT / "work" / "pair" / "raspberry.onnx"  # pi-synth convert rave raspberry-l128.ts (README)
            kinds = [True]
        elif m.startswith("organ"):
            path = organ_pair(work, int(m[5:] or 256))
            kinds = [True, False]
        else:
            path, kinds = Path(m), [True]
        from pi_synth.model.card import load_card

        sr = load_card(path).sample_rate
        for dry in kinds:
            with JackServer(sr, args.period, log_path=out / "jackd-audio-input.log"):
                r = measure(path, work, period=args.period, periods=args.periods, clicks=args.clicks, dry=dry)
            r["loadavg"] = loadavg()
            runs.append(r)
            print(f"{r['model']} ({r['path_kind']}, block {r['block_size']} @ {r['sample_rate']} Hz, "
                  f"{r.get('engine_mode')} {r.get('granted')} lead {r.get('lead_frames')}): median "
                  f"{r.get('median_frames')} max {r.get('max_frames')} frames ({r.get('median_ms')} / "
                  f"{r.get('max_ms')} ms); issue budget {r['budget_issue_frames']}, design max "
                  f"{r['design_max_frames']}; xruns {r.get('xruns')}/{r.get('input_xruns')} in, "
                  f"late input blocks {r.get('input_late_blocks')}", flush=True)
    write_json(out / "audio_input.json", {"kind": "audio_input_latency", "machine": machine(), "runs": runs})
    print(f"wrote {out / 'audio_input.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
