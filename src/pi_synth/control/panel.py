"""A terminal panel for ``pi-synth run --emulate``: the Pi's front panel on a laptop.

Keys turn the *emulated chip's* input voltages (so the knob still travels the whole
real path: ADC protocol → gpiozero → poller → mapping → model), play notes through
the MIDI path, and press actions. One status line shows the model, the knobs, xruns
and load. Keys::

    1..8   select knob           ← → or - +   turn it (shift: coarse with [ ])
    a w s e d f t g y h u j k    play notes (a piano row from C4)   space: notes off
    n / b  next / previous model  p: panic   l: MIDI learn   q: quit
"""

from __future__ import annotations

import os
import select
import shutil
import sys
import termios
import threading
import tty

import mido

KEYS = "awsedftgyhujk"  # C4 .. C5, chromatic


class Panel:
    """The terminal front panel of ``run --emulate``: keys turn the emulated board's ADC
    inputs and play notes; one line shows what plays."""

    def __init__(self, instrument, board, rig, stop: threading.Event):
        self.inst, self.emu, self.rig, self.stop_event = instrument, board, rig, stop
        self.selected = 0
        self.note = None
        self._thread = threading.Thread(target=self._loop, name="pi-synth-panel", daemon=True)
        self._fd = sys.stdin.fileno()
        self._saved = None

    def start(self) -> None:
        self._saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)
        self._thread.start()

    def stop(self) -> None:
        if self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None
        sys.stderr.write("\n")

    def _knob(self, delta: float) -> None:
        adc = self.emu.adc
        vref = getattr(adc, "vref", getattr(adc, "vdd", 3.3))
        i = self.selected
        adc.volts[i] = min(vref, max(0.0, adc.volts[i] + delta * vref))

    def _key(self, ch: str) -> None:
        r = self.inst.router
        if ch in "12345678":
            self.selected = int(ch) - 1
        elif ch in "+=.":
            self._knob(0.02)
        elif ch in "-_,":
            self._knob(-0.02)
        elif ch == "]":
            self._knob(0.1)
        elif ch == "[":
            self._knob(-0.1)
        elif ch in KEYS:
            n = 60 + KEYS.index(ch)
            if self.note is not None:
                r.midi_message(mido.Message("note_off", note=self.note))
            r.midi_message(mido.Message("note_on", note=n, velocity=100))
            self.note = n
        elif ch == " " and self.note is not None:
            r.midi_message(mido.Message("note_off", note=self.note))
            self.note = None
        elif ch == "n":
            r.action("next_model")
        elif ch == "b":
            r.action("prev_model")
        elif ch == "p":
            r.action("panic")
        elif ch == "l":
            r.action("learn")
        elif ch == "q":
            self.stop_event.set()

    def _line(self) -> str:
        st = self.inst.status()
        adc = self.emu.adc
        vref = getattr(adc, "vref", getattr(adc, "vdd", 3.3))
        knobs = " ".join(
            ("[" if i == self.selected else " ") + f"{v / vref:4.2f}" + ("]" if i == self.selected else " ")
            for i, v in enumerate(adc.volts[:8])
        )
        learn = " LEARN" if self.inst.learn is not None and self.inst.learn.armed else ""
        sel = adc.volts[self.selected] / vref
        line = (f"{st.get('model', '?'):<10} knob{self.selected + 1} {sel:4.2f} | xruns {st.get('xruns', 0)} "
                f"late {st.get('late_periods', 0)} load {st.get('load', 0) * 100:4.1f}%{learn} | knobs {knobs}   ")
        # never wider than the terminal (a wrapped line makes each redraw a new line): what does
        # not fit is the end of the knob list
        width = shutil.get_terminal_size((80, 24)).columns - 1
        return "\r" + line[:width]

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.2)
            if ready:
                data = os.read(self._fd, 16).decode(errors="ignore")
                for ch in data.replace("\x1b[C", "+").replace("\x1b[D", "-"):
                    self._key(ch)
            sys.stderr.write(self._line())
            sys.stderr.flush()
