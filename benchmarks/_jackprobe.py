#!/usr/bin/env python3
"""A JACK client that plays a keyboard and a microphone at once, on JACK's own clock.

Run by ``benchmarks/latency.py`` in its own process (its Python callback must not share
a GIL with the engine under test). It registers a MIDI output ``pisynth-probe:out`` and an
audio input ``pisynth-probe:in`` — and, with ``--play F.npy``, an audio output
``pisynth-probe:play`` that plays those float32 samples from the first recorded frame (a
singer or a click into the instrument's audio input, for the audio-in latency and the
live-equals-render test). Once told ``go`` on stdin it records every frame its
input receives and writes the scheduled MIDI messages at exact frame offsets inside
JACK cycles, so "when the note was sent" and "when the sound arrived" are both JACK frame
numbers — no wall clock involved. Needs the ``JACK-Client`` package (pip).

Protocol: prints ``ready`` once registered; reads ``go`` (then records), prints ``done``
and writes ``--out`` (npz: audio, sent frames, message bytes) when the schedule and
``--tail`` seconds have passed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="pisynth-probe")
    ap.add_argument("--schedule", help="JSON: [[seconds, [bytes…]], …] after 'go'")
    ap.add_argument("--play", help="float32 .npy to play out of pisynth-probe:play from the first recorded frame")
    ap.add_argument("--loop", action="store_true",
                    help="with --play: play it over and over, record nothing, until stdin closes (a soak's singer)")
    ap.add_argument("--tail", type=float, default=1.0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pty", action="store_true",
                    help="send the bytes into a pseudo-terminal (our DIN MIDI source reads its other end) "
                         "instead of a JACK MIDI port; the send frame is JACK's current frame at the write")
    ap.add_argument("--free", action="store_true",
                    help="with --pty: write each message from a thread of its own at its scheduled time, "
                         "so messages land at any phase of the JACK cycle (a knob turned at a random "
                         "moment); without it they are written at the start of a cycle")
    args = ap.parse_args()
    import jack

    schedule = json.loads(open(args.schedule).read()) if args.schedule else []
    client = jack.Client(args.name, no_start_server=True)
    sr = client.samplerate
    events = [(int(round(t * sr)), bytes(b)) for t, b in schedule]
    play = np.load(args.play).astype(np.float32).reshape(-1) if args.play else None
    total = max(events[-1][0] if events else 0, len(play) if play is not None else 0) \
        + int(args.tail * sr) + client.blocksize
    buf = np.zeros(total, np.float32)
    inp = client.inports.register("in")
    mout = client.midi_outports.register("out")
    pout = client.outports.register("play") if play is not None else None
    master = None
    if args.pty:
        master, slave = os.openpty()
        import tty

        tty.setraw(slave)
        pty_name = os.ttyname(slave)
    st = {"armed": False, "start": None, "i": 0, "sent": [], "done": threading.Event(), "xruns": 0}

    @client.set_xrun_callback
    def xrun(delay):
        st["xruns"] += 1

    @client.set_process_callback
    def process(frames):
        mout.clear_buffer()
        if pout is not None:
            pbuf = pout.get_array()
            pbuf.fill(0.0)
        if not st["armed"]:
            return
        t = client.last_frame_time
        if st["start"] is None:
            st["start"] = t
        rel = t - st["start"]
        if pout is not None and args.loop:
            i = 0
            while i < frames:  # cyclically, from where the last cycle left off
                j = (rel + i) % len(play)
                k = min(frames - i, len(play) - j)
                pbuf[i:i + k] = play[j:j + k]
                i += k
            return
        if pout is not None and rel < len(play):
            k = min(frames, len(play) - rel)
            pbuf[:k] = play[rel:rel + k]
        if rel + frames <= total:
            buf[rel:rel + frames] = inp.get_array()
        else:
            st["done"].set()
        i = st["i"]
        while not args.free and i < len(events) and events[i][0] < rel + frames:
            if master is not None:
                os.write(master, events[i][1])
                st["sent"].append(client.frame_time - st["start"])
            else:
                off = max(0, events[i][0] - rel)
                mout.write_midi_event(off, events[i][1])
                st["sent"].append(rel + off)
            i += 1
        st["i"] = i

    def free_writer():
        """Sleep to each message's time (from the first recorded cycle) and write it."""
        import time

        while st["start"] is None and not st["done"].is_set():
            time.sleep(0.001)
        t0 = time.monotonic() - (client.frame_time - st["start"]) / sr
        for frame, msg in events:
            delay = t0 + frame / sr - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            os.write(master, msg)
            st["sent"].append(client.frame_time - st["start"])

    with client:
        print(f"ready {pty_name}" if master is not None else "ready", flush=True)
        for line in sys.stdin:
            if line.strip() == "go":
                break
        if args.free and master is not None:
            threading.Thread(target=free_writer, daemon=True).start()
        st["armed"] = True
        if args.loop:
            sys.stdin.read()  # until the soak closes our stdin
            return 0
        st["done"].wait(total / sr + 30)
        st["armed"] = False
    np.savez(args.out, audio=buf, sent=np.array(st["sent"], np.int64), sample_rate=sr,
             blocksize=client.blocksize, xruns=st["xruns"],
             messages=np.array([list(b) + [0] * (3 - len(b)) for _, b in events], np.int64).reshape(-1, 3))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
