#!/usr/bin/env python3
"""Paced soak: the instrument played for N minutes through JACK, counting what went wrong.

The same pieces ``pi-synth run`` assembles (Instrument → Engine → ALSA backend), in this
process, on the tests' ``pisynth_jack`` PCM paced by ``jackd -d dummy`` (48 kHz, period
256, ALSA buffer 256×2 by default). While it plays:

* **random automation** from a control thread, the way live input arrives: note on/off,
  CC and pitch bend as MIDI bytes into the router's parser (what the DIN source's reader
  thread does; ``--midi jack`` sends them through a JACK virtual port and rtmidi's
  ``UNIX_JACK`` backend instead), plus knob readings through the mapping and direct
  control sets;
* **hot swaps** every ``--swap-every`` seconds through ``Instrument.swap`` (crossfade),
  cycling through every installed model file;
* optionally ``--busy N`` other processes each keeping a core busy.

Counted: ALSA xruns (``backend.xruns``, each with its time), output clock gaps (``Engine.watch_clock``: the
instrument stalled and JACK skipped its cycles — sound lost with no xrun), late periods (the ring ran dry), JACK's own xrun
reports (its log: a JACK cycle in which a client, here libasound's JACK plugin thread, did
not finish; on a loaded VM these happen with no load from us), swaps done/refused, crashes (an uncaught exception in any thread, or an engine
thread that died), RSS every second (``/proc/self/status``). RSS growth is measured from
the end of a warm-up (every model loaded once) to the end, so first-load allocations
(onnxruntime arenas, the optimized-graph cache) do not count as a leak.

Beside it, a stall probe per CPU (``_stallprobe.py``) logs when the machine itself stopped
running anything (a VM's host taking the vCPU). Each xrun is matched against it: one
within two buffers after a stall of about a period or more (the direct engine's margin)
happened while the machine was gone; the rest are the instrument's. Both are reported,
with how often a random instant would match (what a match is worth); the target counts
all of them.

``--cpus C`` pins jackd, libjack's process thread and the engine's audio threads to CPU C
(``benchmarks/run.py`` does, on the last CPU). The host of a virtual machine stops one vCPU
at a time: with the stand-in DAC on another vCPU, that stop is an underrun no instrument
could avoid, and a Pi has no host. Pinned together, such a stop pauses the DAC with the
instrument. What the instrument does to itself still shows: its audio thread waiting (for
the GIL, a lock, a slow render) while jackd runs on is an xrun as before.

With ``--input MODEL`` it is a **duplex** soak (issue 21): MODEL plays from the audio
input (a decoder with its encoder beside it), full duplex on ``pisynth_jack`` (one clock),
reading the dummy driver's capture ports (silence: the encoder and decoder run all the
same); with ``--singer`` a JACK client also sings the recorded voice (tests/data/voice.wav,
looped) into them — a Python client in JACK's graph, which JACK waits for every cycle, so
its own lateness on a loaded machine shows as JACK xruns and late input blocks. The
input's own xruns and late blocks are counted too.

    .venv/bin/python benchmarks/soak.py --minutes 30 --swap-every 60 --out DIR
    .venv/bin/python benchmarks/soak.py --minutes 10 --busy 1 --cpus 1 --out DIR
    .venv/bin/python benchmarks/soak.py --minutes 10 --busy 1 --cpus 1 --input work/pair/raspberry.onnx --out DIR
    .venv/bin/python benchmarks/soak.py --minutes 2 --late-render off --out DIR   # A/B: issue 26

Writes DIR/soak.json (rewritten every 30 s, so a killed run still leaves data).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import (BusyCore, JackServer, cpu_share, cpu_times, jack_shm_mb, loadavg, machine, pinned,  # noqa: E402
                  rss_mb, use_test_alsa_config, write_json)
from _stallprobe import StallProbe, chance, stall_before  # noqa: E402

log = logging.getLogger("soak")

TARGETS = {"xruns": 0, "crashes": 0, "rss_growth_mb": 5.0}


class Timeline:
    """One row per second in a preallocated array (fixed memory for the whole soak)."""

    COLUMNS = ("t_s", "rss_mb", "xruns", "late_periods", "blocks", "load", "block_ms_max", "loadavg_1min")
    ROUND = (1, 2, 0, 0, 0, 4, 3, 2)

    def __init__(self, rows: int):
        import numpy as np

        self.a = np.zeros((rows, len(self.COLUMNS)))
        self.n = 0

    def add(self, *values) -> None:
        if self.n < len(self.a):
            self.a[self.n] = values
            self.n += 1

    def rss_max(self) -> float:
        return float(self.a[: self.n, 1].max()) if self.n else 0.0

    def windows(self, start_s, cycle_s: float):
        """Median RSS over the first and the last window after ``start_s``: a window is 20% of
        that span, at least one swap cycle. None when the span is too short for two windows."""
        import numpy as np

        if start_s is None or not self.n:
            return None
        t, rss = self.a[: self.n, 0], self.a[: self.n, 1]
        span = t[-1] - start_s
        width = max(0.2 * span, cycle_s, 10.0)
        if span < 2 * width:
            return None
        first = rss[(t >= start_s) & (t < start_s + width)]
        last = rss[t > t[-1] - width]
        return float(np.median(first)), float(np.median(last)), width

    def rows(self) -> list[list]:
        return [[int(v) if r == 0 else round(float(v), r) for v, r in zip(row, self.ROUND)]
                for row in self.a[: self.n]]


def _thread_policy(tid: int) -> str:
    """Scheduling policy of one thread, from /proc (0 other, 1 fifo, 2 rr)."""
    try:
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        pol, prio = int(fields[38]), int(fields[37])
        return {0: "other", 1: "fifo", 2: "rr", 3: "batch", 5: "idle"}.get(pol, str(pol)) + f"/{prio}"
    except (OSError, IndexError, ValueError):
        return "?"


def _threads() -> dict:
    """Every thread of this process — the engine's, libjack's process thread (the stand-in
    DAC's side in this process), the rest — with its policy and the CPUs it may run on."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for task in Path("/proc/self/task").iterdir():
        tid = int(task.name)
        try:
            name = names.get(tid) or (task / "comm").read_text().strip()
            out[f"{name}/{tid}"] = {"policy": _thread_policy(tid), "cpus": sorted(os.sched_getaffinity(tid))}
        except OSError:
            continue  # ended meanwhile
    return out


class Automation(threading.Thread):
    """Random control and MIDI input at human-ish rates (every 10–150 ms)."""

    def __init__(self, inst, midi_out, seed: int, stop: threading.Event, errors: list):
        super().__init__(name="soak-automation", daemon=True)
        self.inst, self.out, self.stop, self.errors = inst, midi_out, stop, errors
        self.rng = random.Random(seed)
        self.sent = 0
        self.note = None

    def _midi(self, msg) -> None:
        if self.out is not None:
            self.out.send(msg)
        else:
            self.inst.router.midi_bytes(bytes(msg.bytes()))

    def run(self) -> None:
        import mido

        rng = self.rng
        while not self.stop.wait(rng.uniform(0.01, 0.15)):
            try:
                r = rng.random()
                router = self.inst.router
                if r < 0.30:
                    if self.note is not None and rng.random() < 0.5:
                        self._midi(mido.Message("note_off", note=self.note))
                    self.note = rng.randint(57, 96)
                    self._midi(mido.Message("note_on", note=self.note, velocity=rng.randint(20, 127)))
                elif r < 0.45:
                    if self.note is not None:
                        self._midi(mido.Message("note_off", note=self.note))
                        self.note = None
                elif r < 0.60:
                    self._midi(mido.Message("control_change", control=rng.choice((1, 7, 11, 74)),
                                            value=rng.randint(0, 127)))
                elif r < 0.70:
                    self._midi(mido.Message("pitchwheel", pitch=rng.randint(-8192, 8191)))
                elif r < 0.90:
                    knobs = [s for s in router.mapping.routes if s.startswith("knob")] or ["knob1"]
                    router.source(rng.choice(knobs), rng.random())
                else:
                    card = router.card
                    c = rng.choice(list(card.controls))
                    router.set(c.name, c.from_unit(rng.random()))
                self.sent += 1
            except Exception as e:  # counted as a crash: automation must never fail
                self.errors.append(f"automation: {type(e).__name__}: {e}")


def soak(minutes: float = 10.0, *, swap_every: float = 0.0, busy: int = 0, model: str | None = None,
         models: list[str] | None = None, period: int = 256, periods: int = 2, seed: int = 0,
         out: Path | None = None, jack: str | None = None, midi: bool = False,
         engine_mode: str | None = None, cpus: list[int] | None = None, input_model: str | None = None,
         singer: bool = False, late_render: bool | None = None, gc_policy: str | None = None) -> dict:
    """Run one soak; returns the result dict (also written to ``out/soak.json``).

    ``cpus``: pin the audio threads (``[audio] cpus``) and jackd, the stand-in for the
    DAC, to these CPUs. A virtual machine's host stops one vCPU at a time; with the
    consumer on another vCPU that stop is an underrun no instrument could avoid, while a
    DAC on a Pi keeps its clock and no host ever stops the CPU. Sharing the CPUs makes
    such a stop pause producer and consumer alike, so what is left is the instrument's."""
    use_test_alsa_config()
    from pi_synth import config as config_mod
    from pi_synth.app import Instrument
    from pi_synth.audio.backends.alsa import AlsaBackend
    from pi_synth.service.alsalib import quiet as _silence_alsa_lib
    from pi_synth.audio.engine import Engine
    from pi_synth.model.library import list_models
    from pi_synth.control.rig import Rig

    _silence_alsa_lib()
    errors: list[str] = []
    old_hook = threading.excepthook

    def hook(args):
        errors.append(f"thread {args.thread.name if args.thread else '?'}: "
                      f"{args.exc_type.__name__}: {args.exc_value}")
        old_hook(args)

    threading.excepthook = hook
    cfg = config_mod.Config(None, config_mod.defaults())  # built-in defaults, not the user's file
    config_mod.override(cfg, "audio.period", period)
    config_mod.override(cfg, "audio.periods", periods)
    if cpus:
        config_mod.override(cfg, "audio.cpus", list(cpus))
    if late_render is not None:
        config_mod.override(cfg, "audio.late_render", bool(late_render))
    swap_list = models or [str(p) for p in list_models()]
    rate = 48000
    if input_model:  # duplex: the model plays from the input, at its own rate; no swaps
        from pi_synth.model.card import load_card

        model, swap_every, rate = input_model, 0.0, load_card(input_model).sample_rate
    res: dict = {"kind": "soak", "minutes": minutes, "swap_every_s": swap_every, "busy_cores": busy,
                 "cpus": sorted(cpus) if cpus else None,
                 "period": period, "periods": periods, "sample_rate": rate, "seed": seed,
                 "input": bool(input_model), "late_render": cfg.audio.late_render,
                 "machine": machine(), "loadavg_start": loadavg()}
    out_json = (Path(out) / "soak.json") if out else None
    jack_ctx = JackServer(rate, period, log_path=(Path(out) / "jackd.log") if out else None,
                          cpus=cpus) if not jack else None
    if jack:
        os.environ["JACK_DEFAULT_SERVER"] = jack
        os.environ["JACK_NO_START_SERVER"] = "1"
    stop = threading.Event()
    cpu0 = cpu_times()
    probe = StallProbe(Path(out) if out else Path(f"/tmp/pisynth-soak-{os.getpid()}"))
    gcp = GcPauses()
    with (jack_ctx or contextlib.nullcontext()), BusyCore(busy) if busy else contextlib.nullcontext(), probe, gcp:
        t_load = time.monotonic()
        inst = Instrument(cfg, model=model, audio_in=bool(input_model))
        backend = AlsaBackend("pisynth_jack")  # with an input: full duplex, one clock
        if input_model:
            inst.connect_input(backend)
        singer = _singer(rate, Path(out) if out else Path(f"/tmp/pisynth-soak-{os.getpid()}")) \
            if input_model and singer else None
        res["singer"] = singer is not None
        kw = engine_kwargs(cfg, engine_mode)
        if gc_policy:
            kw["gc"] = gc_policy
        res["gc_policy"] = kw.get("gc", "audio")
        engine = inst.engine = Engine(inst.player, backend, **kw)
        with pinned(cpus):  # libjack's process thread, started in here, with the audio threads
            engine.start()
        if singer is not None:
            _connect_singer(singer)
        res["model"] = inst.card.name
        res["model_path"] = str(inst.model_path)
        res["startup_s"] = time.monotonic() - t_load
        res["engine_mode"] = getattr(engine, "mode", "threaded")
        res["jack_realtime"] = jack_ctx.realtime if jack_ctx else None
        rig = Rig(inst.router)
        midi_out = None
        res["midi_path"] = "MIDI bytes → router.midi_bytes (the byte-stream parser), from the automation thread"
        if midi:
            try:
                import mido

                be = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)
                port = f"pisynth-soak-{os.getpid()}"
                midi_out = be.open_output(port, virtual=True)
                src = rig.add("midi_ports", "midi", ports=port, api="UNIX_JACK", rescan_s=0.5)
                deadline = time.monotonic() + 5
                while src is not None and not src.ports and time.monotonic() < deadline:
                    time.sleep(0.05)
                if src is None or not src.ports:
                    raise RuntimeError("the JACK MIDI port was not picked up")
                res["midi_path"] = "JACK virtual port → rtmidi UNIX_JACK → MidiPortsSource → router"
            except Exception as e:
                res["midi_path"] = f"router.midi_bytes (JACK MIDI unavailable: {e})"
                if midi_out is not None:
                    midi_out.close()
                midi_out = None
        rig.start()
        time.sleep(0.5)  # the audio threads promote themselves as their first statement
        res["thread_policies"] = {t.name: _thread_policy(t.native_id) for t in engine._threads}
        res["threads"] = _threads()
        if jack_ctx and jack_ctx.proc:
            res["jackd_cpus"] = sorted(os.sched_getaffinity(jack_ctx.proc.pid))
        auto = Automation(inst, midi_out, seed, stop, errors)
        auto.start()
        if hasattr(engine, "settle"):
            engine.settle()  # as `pi-synth run` does once its controls are up

        swaps_tried = 0
        swap_log: list[dict] = []
        total = minutes * 60.0
        warm = min(total / 5, max(30.0, (swap_every * len(swap_list) + 5) if swap_every else 30.0))
        t0 = time.monotonic()
        next_swap = t0 + swap_every if swap_every else float("inf")
        next_save = t0 + 30
        idx = 0
        # the harness's own records are preallocated, so its memory does not count as the
        # instrument's growth (a list of rows grew ~0.5 MB over 30 min)
        timeline = Timeline(int(total) + 120)
        res["rss_initial_mb"] = rss_mb()
        rss_start = None
        crashed_threads: list[str] = []
        try:
            while True:
                now = time.monotonic()
                el = now - t0
                if el >= total:
                    break
                if now >= next_swap:
                    target = swap_list[idx % len(swap_list)]
                    idx += 1
                    swaps_tried += 1
                    ts = time.monotonic()
                    ok = inst.swap(target)
                    swap_log.append({"t": round(el, 1), "model": Path(target).name, "ok": ok,
                                     "load_s": round(time.monotonic() - ts, 3),
                                     "error": "" if ok else inst.last_error})
                    next_swap += swap_every
                inst.collect_retired()
                engine.watch_clock()  # a stall JACK skips is no xrun: the output's clock against the wall's
                st = engine.status()
                rss = rss_mb()
                timeline.add(el, rss, backend.xruns, st["late_periods"], st["blocks"],
                             st["load"], st["block_ms_max"], loadavg()[0])
                if rss_start is None and el >= warm:
                    rss_start = rss
                    res["rss_start_at_s"] = round(el, 1)
                dead = [t.name for t in engine._threads if not t.is_alive()]
                if dead and not engine.finished:
                    crashed_threads = dead
                    errors.append(f"engine thread(s) died: {', '.join(dead)}")
                    break
                if now >= next_save and out_json:
                    _fill(res, engine, backend, inst, auto, errors, swaps_tried, swap_log, timeline,
                          rss_start, jack_ctx, partial=True, cycle_s=swap_every * len(swap_list))
                    write_json(out_json, res)
                    next_save += 30
                time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))
        except Exception as e:
            errors.append(f"soak loop: {type(e).__name__}: {e}")
        finally:
            stop.set()
            auto.join(2)
            rig.close()
            if singer is not None:
                try:
                    singer.stdin.close()
                    singer.wait(10)
                except (OSError, subprocess.TimeoutExpired):
                    singer.kill()
            if midi_out is not None:
                midi_out.close()
            _fill(res, engine, backend, inst, auto, errors, swaps_tried, swap_log, timeline, rss_start,
                  jack_ctx, partial=False, cycle_s=swap_every * len(swap_list))
            xrun_times = backend.last_xrun_times()
            engine.stop(fade=True)
            threading.excepthook = old_hook
    res["crashed_threads"] = crashed_threads
    res.update(_stall_match(probe, xrun_times, period, periods, rate))
    res.update(gcp.summary(xrun_times, 2 * period * periods / rate, probe.started_at))
    res["loadavg_end"] = loadavg()
    res["machine_cpu"] = cpu_share(cpu0, cpu_times())  # whole machine, during the soak
    if out_json:
        write_json(out_json, res)
    return res


def _singer(rate: int, out: Path):
    """A JACK client singing the recorded voice, looped, out of ``pisynth-probe:play``."""
    import numpy as np

    from pi_synth.audio.backends.wav import load_input

    out.mkdir(parents=True, exist_ok=True)
    x, _ = load_input(Path(__file__).resolve().parent.parent / "tests" / "data" / "voice.wav", rate)
    np.save(out / "singer.npy", x[:, 0])
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent / "_jackprobe.py"), "--play",
                          str(out / "singer.npy"), "--loop", "--out", str(out / "singer.npz")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if p.stdout.readline().strip() != "ready":
        raise RuntimeError("the singing JACK client did not start")
    return p


def _connect_singer(p) -> None:
    ports = subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout.split("\n")
    for port in ports:
        if port.endswith((":in_000", ":in_001")) and not port.startswith(("system:", "pisynth-probe:")):
            subprocess.run(["jack_connect", "pisynth-probe:play", port], check=True)
    p.stdin.write("go\n")
    p.stdin.flush()


def _fill(res, engine, backend, inst, auto, errors, swaps_tried, swap_log, timeline, rss_start, jack_ctx,
          partial, cycle_s=0.0):
    st = inst.status()
    rss = rss_mb()
    res.update({
        "partial": partial,
        "played_s": round(st["position_s"], 2),
        "blocks": st["blocks"],
        "xruns": backend.xruns,
        "late_periods": st["late_periods"],
        "clock_gaps": st.get("clock_gaps", 0),
        "clock_gap_ms": st.get("clock_gap_ms", 0.0),
        "render": st.get("render"),
        "late_renders": st.get("late_renders"),
        "render_lead_ms": st.get("render_lead_ms"),
        "gc_collections_by_audio_thread": st.get("gc_collections"),
        "gc_ms_max_in_audio_thread": st.get("gc_ms_max"),
        "jack_xrun_reports": jack_ctx.xrun_reports() if jack_ctx else None,
        "device_errors": st["device_errors"],
        "nonfinite_blocks": st["nonfinite_blocks"],
        "block_ms_max": st["block_ms_max"],
        "load_mean": round(engine.stats.block_time_total / max(1, engine.stats.blocks) / engine.stats.block_seconds, 4),
        "swaps": inst.player.swaps,
        "swap_attempts": swaps_tried,
        "failed_swaps": inst.failed_loads,
        "swap_log": swap_log,
        "events_sent": auto.sent,
        "midi_messages_received": inst.router.midi_messages,
        "crashes": len(errors),
        "crash_messages": errors[:20],
        "rss_start_mb": round(rss_start if rss_start is not None else res.get("rss_initial_mb", rss), 2),
        "rss_end_mb": round(rss, 2),
        "jack_shm_mb_end": round(jack_shm_mb(), 2),  # JACK's shared memory inside that RSS (rig only)
        "rss_max_mb": round(max(timeline.rss_max(), rss), 2),
        "timeline_columns": list(Timeline.COLUMNS),
    })
    if not partial:  # partial saves skip the rows: serialising them every 30 s grew the heap
        res["timeline"] = timeline.rows()
    res["rss_growth_end_minus_start_mb"] = round(res["rss_end_mb"] - res["rss_start_mb"], 2)
    # With swaps, RSS swings by several MB with whichever model (or two, mid-crossfade) is
    # loaded, so end − start says more about the swap phase than about a leak. Compare like
    # with like: the median RSS over a window of whole swap cycles just after warm-up against
    # the same window at the end.
    w = timeline.windows(res.get("rss_start_at_s"), cycle_s)
    if w is not None:
        res["rss_growth_mb"] = round(w[1] - w[0], 2)
        res["rss_growth_method"] = (f"median RSS over the last {w[2]:.0f} s − median over the first {w[2]:.0f} s "
                                    "after warm-up (windows of whole swap cycles)")
    else:
        res["rss_growth_mb"] = res["rss_growth_end_minus_start_mb"]
        res["rss_growth_method"] = "RSS at end − RSS after warm-up"
    if "input" in st:
        res["input_status"] = st["input"]
        res["input_xruns"] = st["input"]["xruns"]
        res["input_late_blocks"] = st["input"]["late_blocks"]
    res["pass"] = {"xruns": res["xruns"] == 0 and res["late_periods"] == 0 and res.get("input_xruns", 0) == 0
                   and res["clock_gaps"] == 0,
                   "crashes": res["crashes"] == 0, "rss_growth": res["rss_growth_mb"] <= TARGETS["rss_growth_mb"]}


class GcPauses:
    """Python's garbage collections during the soak that took ≥ ``min_ms``: (start, end,
    generation) on the monotonic clock. The audio thread needs the GIL, so a long
    collection in any thread is a stall of the instrument's own making."""

    def __init__(self, min_ms: float = 1.0, cap: int = 10000):
        self.min_s, self.cap = min_ms / 1e3, cap
        self.pauses: list[tuple[float, float, int]] = []
        self.threads: dict[str, int] = {}  # collections started in each thread (any length)
        self._t = 0.0

    def __call__(self, phase, info):
        if phase == "start":
            self._t = time.monotonic()
            name = threading.current_thread().name
            self.threads[name] = self.threads.get(name, 0) + 1
        else:
            t = time.monotonic()
            if t - self._t >= self.min_s and len(self.pauses) < self.cap:
                self.pauses.append((self._t, t, info.get("generation", -1)))

    def __enter__(self):
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self)

    def summary(self, xrun_times: list[float], window_s: float, t0: float = 0.0) -> dict:
        before = [max((e - b for b, e, _ in self.pauses if x - window_s <= e <= x), default=0.0) * 1e3
                  for x in xrun_times]
        return {"gc_pauses_over_1ms": len(self.pauses),
                "gc_collections_by_thread": dict(self.threads),
                "gc_longest_ms": round(max((e - b for b, e, _ in self.pauses), default=0.0) * 1e3, 2),
                "gc_pause_before_xrun_ms": [round(ms, 2) for ms in before],
                "gc_pauses": [(round(b - t0, 3), round((e - b) * 1e3, 2), g) for b, e, g in self.pauses[:200]]}


def _stall_match(probe: StallProbe, xrun_times: list[float], period: int, periods: int, rate: int = 48000) -> dict:
    """The machine's stalls during the soak, and which xruns came right after one: a stall
    of ≥ one period (the least margin of any engine mode) less the probe's tick (the probe
    sleeps a tick, so it sees a stall that long at the least) ending within two ALSA buffers
    before the xrun was counted. Each xrun's longest stall is kept, to read the rest."""
    min_ms = 1e3 * period / rate - probe.tick_s * 1e3
    window_s = 2 * period * periods / rate
    stalls = probe.stalls()
    before = stall_before(xrun_times, stalls, window_s)
    hit = sum(ms >= min_ms for ms in before)
    return {"machine_stalls": probe.summary(min_ms),
            "stall_match_chance": round(chance(stalls, probe.started_at, probe.stopped_at, window_s, min_ms), 4),
            "xrun_times_s": [round(t - probe.started_at, 3) for t in xrun_times],
            "xrun_stall_ms": [round(ms, 2) for ms in before],
            "xrun_stall_ms_by_cpu": {cpu: [round(ms, 2) for ms in stall_before(
                xrun_times, [s for s in stalls if s[2] == cpu], window_s)] for cpu in probe.cpus},
            "xruns_after_machine_stall": hit,
            "xruns_without_machine_stall": len(before) - hit,
            "stall_match": f"a stall of ≥ {min_ms:.2f} ms on any CPU ending ≤ {window_s * 1e3:.1f} ms before the xrun"}


def engine_kwargs(cfg, mode: str | None = None) -> dict:
    """Engine options exactly as ``pi-synth run`` passes them (``mode`` only where the
    engine has one)."""
    import inspect

    from pi_synth.audio.engine import Engine

    kw = dict(period=cfg.audio.period, periods=cfg.audio.periods, ahead_blocks=cfg.audio.ahead_blocks,
              realtime=cfg.audio.realtime, cpus=set(cfg.audio.cpus) or None)
    params = inspect.signature(Engine).parameters
    if "mode" in params:
        kw["mode"] = mode or cfg.values["audio"].get("engine", "auto")
    if "late" in params:
        kw["late"] = cfg.values["audio"].get("late_render", True)
    return kw


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--swap-every", type=float, default=0.0, help="seconds between hot swaps (0 = none)")
    ap.add_argument("--busy", type=int, default=0, help="other processes each keeping a core busy")
    ap.add_argument("--model", default=None, help="model to start with (default: the default model)")
    ap.add_argument("--models", nargs="*", help="models to swap through (default: every installed file)")
    ap.add_argument("--period", type=int, default=256)
    ap.add_argument("--periods", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpus", type=int, nargs="+", help="pin the audio threads and jackd to these CPUs "
                    "(see soak(): a host stopping a vCPU then stops the stand-in DAC too)")
    ap.add_argument("--jack", help="use this running JACK server instead of starting one")
    ap.add_argument("--engine", choices=("auto", "threaded", "direct"), help="engine mode (default: config)")
    ap.add_argument("--midi", choices=("bytes", "jack"), default="bytes",
                    help="bytes: MIDI bytes into the router's parser from the automation thread (as the DIN "
                         "source does); jack: through a JACK virtual port and rtmidi's UNIX_JACK backend (its "
                         "Python callback runs in JACK's process thread and takes the GIL there, so JACK "
                         "reports xruns of its own: a test-rig artefact, not the ALSA path the Pi uses)")
    ap.add_argument("--input", metavar="MODEL", help="duplex soak: MODEL (a decoder with its encoder) plays "
                    "from the audio input (no swaps)")
    ap.add_argument("--singer", action="store_true", help="with --input: a JACK client sings a voice into it")
    ap.add_argument("--late-render", choices=("on", "off"), help="[audio] late_render for this run (default: "
                    "the config's, on): the direct engine renders each block as late as its measured block "
                    "time allows (engine.py)")
    ap.add_argument("--gc", choices=("audio", "freeze", "python"), help="Python's GC while playing (default: "
                    "audio, collected by the thread that writes to the device; freeze: as before issue 21, "
                    "CPython collects in whichever thread allocates; see gc_clock.py)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / time.strftime("%Y-%m-%d")
                                         / "soak"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="soak: %(levelname)s: %(name)s: %(message)s")
    res = soak(args.minutes, swap_every=args.swap_every, busy=args.busy, model=args.model, models=args.models,
               period=args.period, periods=args.periods, seed=args.seed, out=Path(args.out), jack=args.jack,
               midi=args.midi == "jack", engine_mode=args.engine, cpus=args.cpus, input_model=args.input,
               singer=args.singer, late_render=None if args.late_render is None else args.late_render == "on",
               gc_policy=args.gc)
    print(f"soak {res['minutes']} min ({res['model']}, busy {res['busy_cores']}, late render "
          f"{'on' if res['late_render'] else 'off'}: {res.get('late_renders')} of {res['blocks']} blocks): "
          f"xruns {res['xruns']}, output clock gaps {res['clock_gaps']} ({res['clock_gap_ms']} ms), "
          f"late {res['late_periods']}, JACK xrun reports {res['jack_xrun_reports']}, "
          f"xruns after a machine stall {res['xruns_after_machine_stall']} (long stalls: "
          f"{res['machine_stalls']['long_stalls']}, longest {res['machine_stalls']['longest_ms']} ms), "
          f"GC ({res.get('gc_policy')}): {res.get('gc_collections_by_audio_thread')} collections by the audio "
          f"thread, longest {res.get('gc_ms_max_in_audio_thread')} ms; "
          f"GC pauses ≥1 ms {res['gc_pauses_over_1ms']} (longest {res['gc_longest_ms']} ms; before each xrun "
          f"{res['gc_pause_before_xrun_ms']}), swaps {res['swaps']}/"
          f"{res['swap_attempts']}, crashes {res['crashes']}, RSS {res['rss_start_mb']:.1f} → "
          f"{res['rss_end_mb']:.1f} MB ({res['rss_growth_mb']:+.2f}), load avg {res['loadavg_start']} → "
          f"{res['loadavg_end']}"
          + (f"; input xruns {res.get('input_xruns')}, late input blocks {res.get('input_late_blocks')}"
             if res.get("input") else "") + f"; {Path(args.out) / 'soak.json'}")
    return 0 if all(res["pass"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
