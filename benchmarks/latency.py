#!/usr/bin/env python3
"""Knob → sound and MIDI note-on → onset latency, measured on the audio, two ways.

**Rendered (audio clock).** ``pi-synth run --device pisynth_jackfile:FILE=… --events E``
plays through the JACK-paced recorder PCM: a knob turning loudness up at time ``t``, then
notes at ``t``. Events are applied at the first block boundary at or after ``t`` on the
audio clock (a model with several control frames a block takes a knob event at its
control frame inside the block: ``--in-block``) and the recording's sample ``k`` *is* audio-clock frame ``k``, so onset −
``t·sr`` is what the model path adds: block quantization, the control ramp across the
block, the voice's attack, the model's own response. Buffering (ring, ALSA) is not in
this figure — an event on the audio clock does not wait for it.

**Live (JACK clock).** The real input path end to end: a JACK client
(``benchmarks/_jackprobe.py``, own process) sends a MIDI CC (mapped to loudness: the
knob stand-in) and then note-ons through JACK MIDI at known JACK frames into our MIDI
port source (rtmidi ``UNIX_JACK`` → router), the instrument runs in this process exactly
as ``pi-synth run`` builds it (Instrument → Engine, mode from the config, SCHED_FIFO
where permitted) on the ``pisynth_jack`` PCM, and the probe records what our ALSA
plugin hands to JACK. Onset frame − send frame is the latency a sound card would see
at its input (its own converter/driver latency comes on top). Needs ``JACK-Client``.

Onset: the first sample whose magnitude exceeds −40 dB (first sound) and −20 dB (attack
under way) of the peak in the 300 ms after the event (and 4× the noise before it).
Target (issue 5/7): output latency ≤ one model block + two ALSA periods. Output latency is
the live figure less the model's own response — its onset after the start of the block an
event lands in, measured on the rendered audio (the organ's ~150-frame ramp, a voice's
attack) — since that is the sound's, not the output path's. Both are reported.

    .venv/bin/python benchmarks/latency.py [--model M] [--out DIR] [--notes N]
    .venv/bin/python benchmarks/latency.py --notes 8 --ab-late 3 --transport din din-free --out DIR
    .venv/bin/python benchmarks/latency.py --in-block --out DIR

``--ab-late N`` runs the live measurement N rounds with ``[audio] late_render`` off, then
on (issue 26: the direct engine renders each block as late as its measured block time
allows, so events arriving meanwhile make it), and pools each setting's events.
``--in-block`` measures, on the audio clock, events inside a block of a model with
several control frames: placed at their control frame by the events timeline, against
waiting for the block boundary.
"""

from __future__ import annotations

import argparse
import contextlib
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
from _env import ROOT, JackServer, loadavg, pinned, use_test_alsa_config, write_json  # noqa: E402


def onset(x: np.ndarray, start: int, sr: int, rel_db: float = -30.0, window_s: float = 0.3) -> int | None:
    """First sample at/after ``start`` above ``rel_db`` of the peak that follows it."""
    end = min(len(x), start + int(window_s * sr))
    if end <= start:
        return None
    seg = np.abs(x[start:end])
    peak = float(seg.max())
    pre = np.abs(x[max(0, start - int(0.05 * sr)):start])
    noise = float(pre.max()) if pre.size else 0.0
    thr = max(peak * 10 ** (rel_db / 20), 4 * noise, 1e-4)
    if peak <= thr:
        return None
    return start + int(np.argmax(seg > thr))


# onset thresholds relative to the peak that follows the event: the first audible sound,
# and the attack well under way
ONSETS = {"onset_40db": -40.0, "onset_20db": -20.0}


def _stats(lat: list[int], sr: int) -> dict:
    if not lat:
        return {"n": 0}
    a = np.array(lat, float)
    return {"n": len(lat), "median_samples": float(np.median(a)), "max_samples": float(a.max()),
            "min_samples": float(a.min()), "median_ms": float(np.median(a) / sr * 1e3),
            "max_ms": float(a.max() / sr * 1e3), "samples": [int(v) for v in lat]}


def budget(card, period: int, periods: int, mode: str, ahead_blocks: int = 1) -> dict:
    """The latency the design allows, in frames (what the engine buffers)."""
    from pi_synth.audio.engine import ring_frames

    ring = 0 if mode == "direct" else ring_frames(card.block_size, period, ahead_blocks)
    alsa = period * periods
    return {"model_block": card.block_size, "model_latency_samples": card.latency_samples,
            "engine_mode": mode, "ring_frames": ring, "alsa_buffer_frames": alsa,
            "worst_case_frames": card.block_size + ring + alsa + card.latency_samples,
            "target_frames": card.block_size + 2 * period,
            "target_ms": (card.block_size + 2 * period) / card.sample_rate * 1e3}


def output_latency(rendered_kind: dict | None, live_kind: dict | None) -> dict | None:
    """Live onset (−40 dB) less the model's own response (median, from the rendered run):
    what input, the wait for the next block, ring and ALSA buffer add. None if either
    side has no onsets."""
    v = (live_kind or {}).get("onset_40db") or {}
    r = ((rendered_kind or {}).get("response_onset_40db") or {}).get("median_samples")
    if not v.get("n") or r is None:
        return None
    return {"model_response_median": r, "median_samples": v["median_samples"] - r,
            "max_samples": v["max_samples"] - r}


def rendered(model: str | None, out: Path, notes: int = 8, seed: int = 0, period: int = 256) -> dict:
    """Events through ``pi-synth run`` on the JACK-paced recorder PCM."""
    from pi_synth.model.library import find_model
    from pi_synth.model.card import load_card

    path = find_model(model, "auto")  # what `pi-synth run` plays
    card = load_card(path)
    sr, block = card.sample_rate, card.block_size
    rng = random.Random(seed)
    names = card.control_names
    # the knob: loudness set through the router into the bank, what the live run's CC 20
    # mapped to loudness does (a note model's own knobs play its voice's controls, and a
    # knob mapped to loudness by the card alone would not sound: the voice holds it)
    loud = card.control("loudness") if "loudness" in names else None
    ev, marks = [], []
    t = 0.5
    if loud is not None:
        for _ in range(notes):  # knob up (sound), knob down (silence)
            t0 = round(t + rng.uniform(0, block / sr), 6)
            ev += [{"t": t0, "set": {"loudness": loud.from_unit(0.85)}},
                   {"t": t0 + 0.4, "set": {"loudness": loud.from_unit(0.0)}}]
            marks.append(("knob", t0))
            t += 1.0
    is_note = {"pitch", "loudness"} <= set(names)
    if is_note:
        for _ in range(notes):
            t0 = round(t + rng.uniform(0, block / sr), 6)
            ev += [{"t": t0, "midi": [0x90, 69, 110]}, {"t": t0 + 0.4, "midi": [0x80, 69, 0]}]
            marks.append(("note", t0))
            t += 1.0
    out.mkdir(parents=True, exist_ok=True)
    evf, raw = out / "latency_events.json", out / "latency_rendered.raw"
    evf.write_text(json.dumps(ev))
    raw.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pi_synth", "run", "--model", str(path), "--device",
           f"pisynth_jackfile:FILE={raw}", "--events", str(evf), "--seconds", f"{t + 0.5:.2f}",
           "--period", str(period)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120 + t * 3)
    if p.returncode != 0:
        return {"error": p.stderr.strip()[-500:], "command": " ".join(cmd)}
    x = np.fromfile(raw, np.int16).astype(np.float32) / 32767.0
    res: dict = {"model": card.name, "path": str(path), "command": " ".join(cmd), "recorded_s": len(x) / sr,
                 "stderr_tail": p.stderr.strip().splitlines()[-1:] if p.stderr else []}
    for kind in ("knob", "note"):
        quant = [-(-round(t0 * sr) // block) * block - round(t0 * sr) for k, t0 in marks if k == kind]
        res[kind] = {"block_quantization_median": float(np.median(quant)) if quant else None}
        for name, db in ONSETS.items():
            lat, resp = [], []
            for k, t0 in marks:
                if k != kind:
                    continue
                e = round(t0 * sr)
                on = onset(x, e, sr, db)
                if on is not None:
                    lat.append(on - e)
                    resp.append(on - (-(-e // block) * block))  # from the block it lands in
            res[kind][name] = _stats(lat, sr)
            # the model's own response: onset after the start of the block the event
            # lands in (its ramp, attack, lookahead) — no buffering, no quantization
            res[kind][f"response_{name}"] = _stats(resp, sr)
    raw.unlink(missing_ok=True)  # large and reproducible
    return res


def live(model: str | None, out: Path, notes: int = 10, seed: int = 0, period: int = 256,
         periods: int = 2, engine_mode: str | None = None, transport: str = "din", cpus=None,
         late: bool | None = None) -> dict:
    """MIDI in (DIN through a pty, or JACK MIDI), JACK audio out, both timed in JACK frames
    by the probe client. ``cpus``: libjack's thread and the audio threads there, beside
    jackd (see ``soak.soak``). ``late``: ``[audio] late_render`` for this run (None: the
    default, on)."""
    try:
        import jack  # noqa: F401
    except ImportError:
        return {"skipped": "JACK-Client is not installed (pip install JACK-Client): live latency not measured"}
    from soak import engine_kwargs

    from pi_synth import config as config_mod
    from pi_synth.app import Instrument
    from pi_synth.audio.backends.alsa import AlsaBackend
    from pi_synth.service.alsalib import quiet as _silence_alsa_lib
    from pi_synth.audio.engine import Engine
    from pi_synth.control.mapping import Route
    from pi_synth.control.rig import Rig

    _silence_alsa_lib()
    cfg = config_mod.Config(None, config_mod.defaults())
    config_mod.override(cfg, "audio.period", period)
    config_mod.override(cfg, "audio.periods", periods)
    if cpus:
        config_mod.override(cfg, "audio.cpus", sorted(cpus))
    if late is not None:
        config_mod.override(cfg, "audio.late_render", bool(late))
    inst = Instrument(cfg, model=model)
    card = inst.card
    sr, block = card.sample_rate, card.block_size
    rng = random.Random(seed)
    sched, marks = [], []
    t = 0.5
    has_loud = "loudness" in card.control_names
    if has_loud:
        inst.mapping.add("cc20", Route("loudness"))
        for _ in range(notes):
            t0 = t + rng.uniform(0, block / sr)
            sched += [[t0, [0xB0, 20, 108]], [t0 + 0.4, [0xB0, 20, 0]]]
            marks.append("knob")
            t += 1.0
    if {"pitch", "loudness"} <= set(card.control_names):
        for _ in range(notes):
            t0 = t + rng.uniform(0, block / sr)
            sched += [[t0, [0x90, 69, 110]], [t0 + 0.4, [0x80, 69, 0]]]
            marks.append("note")
            t += 1.0
    out.mkdir(parents=True, exist_ok=True)
    schedf, npz = out / "latency_live_schedule.json", out / "latency_live.npz"
    schedf.write_text(json.dumps(sched))
    # the probe client stays unpinned: on the audio threads' CPU, its pty write would queue
    # behind the engine's wake-up instead of racing it, and "din" would no longer be the
    # worst phase (measured: medians ~30 frames lower with the probe pinned too)
    probe = subprocess.Popen([sys.executable, str(HERE / "_jackprobe.py"), "--schedule", str(schedf), "--out",
                              str(npz)] + {"din": ["--pty"], "din-free": ["--pty", "--free"]}.get(transport, []),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    res: dict = {"model": card.name, "transport": transport}
    engine = rig = None
    try:
        hello = probe.stdout.readline().split()
        if not hello or hello[0] != "ready":
            return {"error": "the JACK probe did not start"}
        backend = AlsaBackend("pisynth_jack")
        engine = inst.engine = Engine(inst.player, backend, **engine_kwargs(cfg, engine_mode))
        modes = [(0.0, False)]  # (time.monotonic(), rendering ahead?) at each change

        def watch(_position, e=engine):  # a block hook: appends only when the mode changes
            if e.render_ahead != modes[-1][1]:
                modes.append((time.monotonic(), e.render_ahead))

        inst.player.hooks.append(watch)
        with pinned(cpus):
            engine.start()
        rig = Rig(inst.router)
        if transport.startswith("din"):
            if rig.add("din", "din", device=hello[1], baud=31250) is None:
                return {"error": f"our DIN source cannot open the probe's pty: {rig.failed}"}
        else:
            src = rig.add("midi_ports", "midi", ports="pisynth-probe", api="UNIX_JACK", rescan_s=0.2)
            deadline = time.monotonic() + 5
            while src is not None and not src.ports and time.monotonic() < deadline:
                time.sleep(0.05)
            if src is None or not src.ports:
                return {"error": "our MIDI source did not find the probe's JACK MIDI port"}
        ports = subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout.split()
        ours = [p for p in ports if p.split(":")[0] not in ("system", "pisynth-probe")
                and ":out" in p and not p.lower().startswith("rtmidi")]
        if not ours:
            return {"error": f"no output port of our ALSA plugin in {ports}"}
        subprocess.run(["jack_connect", ours[0], "pisynth-probe:in"], check=True)
        time.sleep(0.5)
        t_go = time.monotonic()  # the schedule's zero, near enough to place the xruns in it
        probe.stdin.write("go\n")
        probe.stdin.flush()
        line = probe.stdout.readline().strip()
        if line != "done":
            return {"error": "the JACK probe did not finish"}
        res["engine_mode"] = getattr(engine, "mode", "threaded")
        res["xruns"] = backend.xruns
        res["render"] = engine.status().get("render")  # "ahead" after an xrun: +1 period
        res["render_changes_s"] = [[round(t - t_go, 3), a] for t, a in modes[1:]]
        res["late_periods"] = engine.stats.late_periods
        res["late_render"] = engine.late
        res["late_renders"] = engine.stats.late_renders
        res["blocks"] = engine.stats.blocks
        res["render_lead_ms"] = round(engine.render_lead * 1e3, 3)
        res["granted"] = {"period": engine.granted.period, "periods": engine.granted.periods}
        res["ring_frames"] = engine.ring.capacity if engine.ring is not None else 0
    finally:
        if rig is not None:
            rig.close()
        if engine is not None:
            engine.stop(fade=False)
        if probe.poll() is None:
            try:
                probe.stdin.close()
            except OSError:
                pass
            try:
                probe.wait(10)
            except subprocess.TimeoutExpired:
                probe.kill()
    d = np.load(npz)
    x, sent = d["audio"], d["sent"]
    res["probe_xruns"] = int(d["xruns"])
    on_idx = [i for i, (_, b) in enumerate(sched) if (b[0] & 0xF0) == 0x90 or (b[0] == 0xB0 and b[2] > 0)]
    # After an xrun the direct engine renders a period ahead for a while (engine.py): the
    # events rendered just in time show its latency, the others that plus a period.
    changes = res.get("render_changes_s", [])

    def ahead_at(t: float) -> bool:
        return next((a for tc, a in reversed(changes) if tc <= t), False)

    for k in ("knob", "note"):
        for name, db in ONSETS.items():
            lat, jit = [], []
            for kk, i in zip(marks, on_idx):
                if kk != k or i >= len(sent):
                    continue
                on = onset(x, int(sent[i]), sr, db)
                if on is not None:
                    lat.append(on - int(sent[i]))
                    if not ahead_at(sched[i][0]):
                        jit.append(lat[-1])
            res.setdefault(k, {})[name] = _stats(lat, sr)
            res[k][f"{name}_just_in_time"] = _stats(jit, sr)
    res["method"] = ("JACK frames: MIDI bytes sent by the probe at a known JACK frame ("
                     + ("written into a pty that our DIN MIDI source reads: the Pi's UART path, less the "
                        "0.96 ms a 3-byte message takes on the wire at 31250 baud; "
                        + ("written from a free-running thread, at any phase of the JACK cycle"
                           if transport == "din-free" else
                           "written at the start of a JACK cycle, just after the engine woke: the worst phase")
                        if transport.startswith("din") else
                        "JACK MIDI into our rtmidi UNIX_JACK port source")
                     + "), onset found in the audio the probe received from our ALSA plugin's JACK port "
                     "(both on JACK's clock)")
    return res


def in_block(out: Path | None = None, notes: int = 8, seed: int = 0, block: int = 1024, frames: int = 4) -> dict:
    """Events inside a block on the audio clock (issue 26): the procedural organ with
    ``frames`` control frames in a ``block``-frame block, rendered offline through the
    Instrument as ``pi-synth render`` builds it, knob turns (loudness set through the router
    into the bank, as a mapped knob does) and notes at random offsets inside blocks — once
    with the events timeline placing the knob events at their control frame (the product),
    once with every event waiting for the block boundary (as before). Onset − event, in
    frames; deterministic."""
    from pi_synth import config as config_mod
    from pi_synth.app import Instrument
    from pi_synth.tools.procedural import build_organ

    out = Path(out or tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"organ_{block}x{frames}.onnx"
    build_organ(path, block_size=block, control_frames=frames)
    cfg = config_mod.Config(None, config_mod.defaults())
    from pi_synth.control.events import parse_events
    from pi_synth.model.card import load_card

    card = load_card(path)
    sr = card.sample_rate
    rng = random.Random(seed)
    ev, marks, t = [], [], 0.5
    for kind in ("knob", "note"):  # knobs first: the voice takes loudness over once a note played
        for _ in range(notes):
            t0 = round(t + rng.uniform(0, block / sr), 6)
            if kind == "knob":  # loudness set as a mapped knob sets it (router → bank)
                ev += [{"t": t0, "set": {"loudness": -6.0}}, {"t": t0 + 0.4, "set": {"loudness": -80.0}}]
            else:
                ev += [{"t": t0, "midi": [0x90, 69, 110]}, {"t": t0 + 0.4, "midi": [0x80, 69, 0]}]
            marks.append((kind, t0))
            t += 1.0
    res: dict = {"model": f"procedural organ, {block}-frame block, {frames} control frames", "events": len(marks)}
    for placed in (True, False):
        inst = Instrument(cfg, model=str(path), events=parse_events(ev), offline=True, fade_in=False)
        if not placed:
            inst.timeline.block = None  # every event at the next block boundary (before issue 26)
        n = int((t + 0.5) * sr / block) + 1
        x = np.concatenate([inst.player.next_block()[:, 0].copy() for _ in range(n)])
        key = "frame_placed" if placed else "block_boundary"
        res[key] = {"placed_events": inst.timeline.placed}
        for kind in ("knob", "note"):
            lat = []
            for k, t0 in marks:
                if k == kind:
                    e = round(t0 * sr)
                    on = onset(x, e, sr, ONSETS["onset_40db"])
                    if on is not None:
                        lat.append(on - e)
            res[key][kind] = _stats(lat, sr)
    res["method"] = ("offline render through Instrument (the events timeline, router, voice, bank, model); "
                     "onset = first sample above −40 dB of the peak in the 300 ms after the event")
    return res


def measure(model: str | None = None, out: Path | None = None, notes: int = 8, period: int = 256,
            periods: int = 2, engine_mode: str | None = None, jack: str | None = None,
            transports=("din",), cpus=None, ab_late: int = 0) -> dict:
    use_test_alsa_config()
    from pi_synth.model.library import find_model
    from pi_synth.model.card import load_card

    out = Path(out or tempfile.mkdtemp())
    card = load_card(find_model(model, "auto"))
    res: dict = {"kind": "latency", "loadavg_start": loadavg(), "period": period, "periods": periods,
                 "cpus": sorted(cpus) if cpus else None}
    ctx = JackServer(48000, period, log_path=out / "jackd-latency.log", cpus=cpus) if not jack else None
    if jack:
        os.environ["JACK_DEFAULT_SERVER"] = jack
    with (ctx or contextlib.nullcontext()):
        res["jack_realtime"] = ctx.realtime if ctx else None
        res["rendered"] = rendered(model, out, notes, period=period)
        if ab_late:  # late render off, then on, in alternating rounds on the same rig
            runs = res["ab_late_runs"] = []
            for r in range(ab_late):
                for late in (False, True):
                    for tr in transports:
                        lv = live(model, out, notes, seed=r, period=period, periods=periods,
                                  engine_mode=engine_mode, transport=tr, cpus=cpus, late=late)
                        lv.update(round=r, late=late, loadavg=loadavg())
                        runs.append(lv)
            res["live"] = next(v for v in runs if v["late"] and v["transport"] == transports[0])
        else:
            for tr in transports:
                key = "live" if tr == transports[0] else f"live_{tr}"
                res[key] = live(model, out, notes, period=period, periods=periods, engine_mode=engine_mode,
                                transport=tr, cpus=cpus)
    mode = res["live"].get("engine_mode") or "threaded"
    g = res["live"].get("granted") or {}  # what the device gave (auto may add periods)
    res["budget"] = budget(card, g.get("period", period), g.get("periods", periods), mode)
    tgt = res["budget"]["target_frames"]
    res["pass"] = {}
    for key in [k for k in res if k.startswith("live")]:
        for k in ("knob", "note"):
            o = output_latency(res["rendered"].get(k), res[key].get(k))
            if o:
                res[key][k]["output_latency_40db"] = o
            lk = res[key].get(k) or {}
            o = output_latency(res["rendered"].get(k), {"onset_40db": lk.get("onset_40db_just_in_time")})
            if o:
                lk["output_latency_40db_just_in_time"] = o
    for k in ("knob", "note"):
        o = (res["live"].get(k) or {}).get("output_latency_40db")
        if o:
            res["pass"][f"live_{k}_median"] = o["median_samples"] <= tgt
            res["pass"][f"live_{k}_max"] = o["max_samples"] <= tgt
    if ab_late:
        res["ab_late"] = ab_summary(res["ab_late_runs"], res["rendered"], tgt)
    res["loadavg_end"] = loadavg()
    return res


def ab_summary(runs: list[dict], rendered_res: dict, target: int) -> dict:
    """Late render off against on, per transport and kind: output latency (live onset −
    the model's own response) pooled over the rounds — median, max, events over the
    target — with each round's xruns and its share of blocks rendered late."""
    out: dict = {"target_frames": target}
    for tr in dict.fromkeys(r["transport"] for r in runs):
        d = out[tr] = {}
        for late in (False, True):
            rs = [r for r in runs if r["transport"] == tr and r["late"] == late]
            row = d["on" if late else "off"] = {
                "rounds": len(rs), "xruns": [r.get("xruns") for r in rs],
                "late_share": [round(r.get("late_renders", 0) / max(1, r.get("blocks", 0)), 3) for r in rs],
                "render_lead_ms": [r.get("render_lead_ms") for r in rs],
                "loadavg": [r.get("loadavg") for r in rs],
                "errors": [r["error"] for r in rs if "error" in r]}
            for k in ("knob", "note"):
                resp = ((rendered_res.get(k) or {}).get("response_onset_40db") or {}).get("median_samples")
                lat = [v - resp for r in rs for v in ((r.get(k) or {}).get("onset_40db") or {}).get("samples", [])] \
                    if resp is not None else []
                if lat:
                    a = np.array(lat, float)
                    row[k] = {"n": len(lat), "median_samples": float(np.median(a)), "max_samples": float(a.max()),
                              "over_target": int((a > target).sum()), "model_response_median": resp}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--notes", type=int, default=8)
    ap.add_argument("--period", type=int, default=256)
    ap.add_argument("--periods", type=int, default=2)
    ap.add_argument("--engine", choices=("auto", "threaded", "direct"))
    ap.add_argument("--jack", help="use this running JACK server")
    ap.add_argument("--cpus", type=int, nargs="+", help="pin jackd and the audio threads to these CPUs (as "
                    "benchmarks/soak.py --cpus; the probe client stays free)")
    ap.add_argument("--transport", nargs="+", default=["din"], choices=("din", "din-free", "jack"),
                    help="live MIDI path(s): din = bytes into a pty read by our DIN source, written at the "
                         "start of a JACK cycle, just after the engine woke: the worst phase (default); "
                         "din-free = the same, written from a free-running thread at any phase (a knob "
                         "turned at a random moment); "
                         "jack = JACK MIDI into our rtmidi UNIX_JACK source (its callback takes the GIL in "
                         "JACK's process thread, which makes JACK xruns of its own)")
    ap.add_argument("--ab-late", type=int, default=0, metavar="N",
                    help="N rounds of the live runs with [audio] late_render off, then on (each transport), "
                         "pooled per setting: the A/B of issue 26 on one rig in one run")
    ap.add_argument("--in-block", action="store_true",
                    help="only the audio-clock figure for events inside a block: the organ with 4 control "
                         "frames in a 1024-frame block, knob events placed at their control frame against "
                         "every event at the block boundary (no JACK needed)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / time.strftime("%Y-%m-%d")))
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.in_block:
        res = {"kind": "latency_in_block", "loadavg_start": loadavg(), **in_block(out, args.notes)}
        write_json(out / "latency_in_block.json", res)
        print(json.dumps(res, indent=1, default=str)[:4000])
        return 0
    res = measure(args.model, out, args.notes, args.period, args.periods, args.engine, args.jack,
                  tuple(args.transport), args.cpus, args.ab_late)
    write_json(out / "latency.json", res)
    show = res.get("ab_late") or res
    print(json.dumps(show, indent=1, default=str)[:6000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
