"""A terminal panel for ``pi-synth run --emulate``: the Pi's front panel on a laptop.

Keys turn the *emulated chip's* input voltages (so the knob still travels the whole
real path: ADC protocol → gpiozero → poller → mapping → model), play notes through
the MIDI path, and press actions. Keys::

    1..8   select knob         ← →  or - +   turn it a step (1/20 of its travel)
    ↑ ↓  or ] [   coarse (1/4)    . ,   fine (1/100)
    a w s e d f t g y h u j k    play notes (a piano row from C4)   space: notes off
    A W S … (shift)              let that note go (a chord: press several letters)
    n / b  next / previous model  p: panic   l: MIDI learn   q: quit

A terminal reports key presses, not releases: with a mono voice a new note replaces
the last one; with a polyphonic one each letter adds its note to what sounds (a
chord), shift + the letter lets it go, and space lets them all go.

Five lines at the bottom of the terminal show what plays — the model and its file, the
note and gate (and the active voices when the model plays several), xruns and load —
each knob (four a row) with the control it drives and its value in the control's units, and the keys
(each line fits 80 columns; a line wider than the terminal is cut, never wrapped).
Log lines scroll above them in their own area: while the panel is up it owns the
terminal's last lines, and the log handler prints above and redraws.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import sys
import termios
import threading
import tty

import mido

from pi_synth.control.voice import note_name

KEYS = "awsedftgyhujk"  # C4 .. C5, chromatic
# a card's units, as a knob cell of 17 characters has room for them
SHORT_UNITS = {"db": "dB", "db_per_octave": "dB/oct", "hz": "Hz", "cents": "ct", "semitones": "st"}
CELL = 19  # a knob's room on its row: four a row, 76 columns
STEP, COARSE, FINE = 0.05, 0.25, 0.01  # of a knob's travel per key press
ARROWS = {"\x1b[C": "+", "\x1b[D": "-", "\x1b[A": "]", "\x1b[B": "["}
HELP = ("keys: 1-8 knob   ←→ ±.05   ↑↓ ±.25   ,. ±.01   a w s e d f t g y h u j k: C4…C5",
        "      shift: let go   space: all off   n/b: model   p: panic  l: learn  q: quit")


def _ranges(ns: list[int]) -> str:
    """[4, 5, 6, 8] → "4-6,8"."""
    out, start = [], None
    for i, n in enumerate(ns):
        if start is None:
            start = n
        if i + 1 == len(ns) or ns[i + 1] != n + 1:
            out.append(f"{start}-{n}" if n > start else f"{n}")
            start = None
    return ",".join(out)


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


class _PanelLog(logging.Handler):
    """Prints log records above the panel, then redraws it."""

    def __init__(self, panel: Panel, formatter):
        super().__init__()
        self.panel = panel
        self.setFormatter(formatter)

    def emit(self, record):
        try:
            self.panel.log_line(self.format(record))
        except Exception:
            self.handleError(record)


class Panel:
    """The terminal front panel of ``run --emulate``: keys turn the emulated board's ADC
    inputs and play notes; five lines show what plays (see the module docstring)."""

    LINES = 5

    def __init__(self, instrument, board, rig, stop: threading.Event, *, fd: int | None = None, out=None):
        self.inst, self.emu, self.rig, self.stop_event = instrument, board, rig, stop
        self.selected = 0
        self.note = None
        self.notes: list[int] = []  # held by the panel (a chord, with a poly voice)
        self._thread = threading.Thread(target=self._loop, name="pi-synth-panel", daemon=True)
        self._fd = sys.stdin.fileno() if fd is None else fd
        self._out = out or sys.stderr
        self._saved = None
        self._drawn = False
        self._failed = False
        self._lock = threading.Lock()  # the panel's lines and a log line never interleave
        self._handlers: list[tuple[logging.Handler, logging.Handler]] = []

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        if os.isatty(self._fd):
            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        self._capture_logs()
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(1.0)
        if self._saved is not None:
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None
        root = logging.getLogger()
        for mine, theirs in self._handlers:
            root.removeHandler(mine)
            root.addHandler(theirs)
        self._handlers = []
        with self._lock:
            self._out.write("\n")
            self._out.flush()

    def _capture_logs(self) -> None:
        """Route the root logger's terminal handlers through the panel."""
        root = logging.getLogger()
        for h in list(root.handlers):
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (sys.stderr, self._out):
                mine = _PanelLog(self, h.formatter)
                mine.setLevel(h.level)
                root.removeHandler(h)
                root.addHandler(mine)
                self._handlers.append((mine, h))

    # -- drawing -------------------------------------------------------------------------

    def _clear(self) -> str:
        """Back to the panel's first line and erase it and what follows."""
        return ("\x1b[%dA" % (self.LINES - 1) if self.LINES > 1 else "") + "\r\x1b[J" if self._drawn else ""

    def draw(self) -> None:
        width = max(20, shutil.get_terminal_size((100, 24)).columns - 1)
        text = "\n".join(line[:width] for line in self.lines())  # a wrapped line would break the redraw
        with self._lock:
            self._out.write(self._clear() + text)
            self._out.flush()
            self._drawn = True

    def log_line(self, text: str) -> None:
        """A log record: printed above the panel, which is drawn again below it."""
        with self._lock:
            self._out.write(self._clear() + text + "\n")
            self._drawn = False
        if self._thread.is_alive():
            self.draw()

    # -- what the lines say ----------------------------------------------------------------

    def _vref(self) -> float:
        adc = self.emu.adc
        return getattr(adc, "vref", getattr(adc, "vdd", 3.3))

    def _channel(self, i: int) -> int:
        channels = list(getattr(self.inst.cfg.knobs, "channels", range(8)))
        return channels[i] if i < len(channels) else i

    def knobs(self) -> list[tuple[int, str, str]]:
        """(knob number, what it drives, its value in the control's units) of each knob."""
        out = []
        # the played controls: the model's and its voice's (attack, release, …)
        adc, controls = self.emu.adc, self.inst.controls
        card = controls.card
        routes = self.inst.mapping.routes
        for i in range(min(8, len(adc.volts))):
            r = routes.get(f"knob{i + 1}")
            if r is None:
                pos = adc.volts[self._channel(i)] / self._vref()
                out.append((i + 1, "-", f"{pos:.2f}"))
            elif r.action:
                out.append((i + 1, r.action, ""))
            else:
                ctl = card.control(r.control)
                unit = SHORT_UNITS.get(ctl.unit, ctl.unit)
                unit = f" {unit}" if unit and unit not in ("unit", "0..1") else ""
                out.append((i + 1, r.control, _fmt(controls.get(r.control)) + unit))
        return out

    def lines(self) -> list[str]:
        st = self.inst.status()
        r = self.inst.router
        voice = getattr(r, "voice", None)
        if getattr(voice, "poly", False):  # a chord: the keys held, oldest first
            held = list(getattr(voice, "held", ()) or self.notes)
            playing = ("notes " + " ".join(note_name(n) for n in held[:6]) + (" …" if len(held) > 6 else "")
                       if held else "no note")
        else:
            note = getattr(voice, "note", None) if voice is not None else self.note
            if note is not None:
                playing = f"note {note_name(note)} ({note}) gate on"
            elif voice is not None and getattr(voice, "sounding", False):
                playing = "release"
            else:
                playing = "no note"
        voices = st.get("voices")
        if isinstance(voices, dict) and "active" in voices:
            playing += f"  voices {voices['active']}/{voices.get('max', '?')}"
        learn = "LEARN: move a knob or CC  " if self.inst.learn is not None and self.inst.learn.armed else ""
        head = (f"{learn}{st.get('model', '?')} ({os.path.basename(str(self.inst.model_path))})  {playing}  "
                f"xruns {st.get('xruns', 0)}  late {st.get('late_periods', 0)}  "
                f"load {st.get('load', 0) * 100:.1f}%")  # the learn prompt first: a cut line keeps it
        cells = []
        for n, name, value in self.knobs():
            if len(name) > 10 and "_" in name:  # vibrato_depth, vibrato_rate: vib_dep, vib_rat
                name = "_".join(part[:3] for part in name.split("_"))
            text = f"{n} {name[:10]} {value}".rstrip() if name != "-" else f"{n} -"
            if len(text) > CELL - 2:  # the unit goes first, then what does not fit
                text = text.rsplit(" ", 1)[0] if value.count(" ") else text
            text = text[:CELL - 2]
            cells.append((f"[{text}]" if n - 1 == self.selected else f" {text} ").ljust(CELL))
        rows = ["".join(cells[:4]).rstrip(), "".join(cells[4:8]).rstrip()]
        return [head, *rows, *HELP]

    # -- keys ------------------------------------------------------------------------------

    def _knob(self, delta: float) -> None:
        adc = self.emu.adc
        vref = self._vref()
        ch = self._channel(self.selected)
        adc.volts[ch] = min(vref, max(0.0, adc.volts[ch] + delta * vref))

    def _key(self, ch: str) -> None:
        r = self.inst.router
        if ch in "12345678":
            self.selected = int(ch) - 1
        elif ch in "+=":
            self._knob(STEP)
        elif ch in "-_":
            self._knob(-STEP)
        elif ch == "]":
            self._knob(COARSE)
        elif ch == "[":
            self._knob(-COARSE)
        elif ch == ".":
            self._knob(FINE)
        elif ch == ",":
            self._knob(-FINE)
        elif ch in KEYS:
            n = 60 + KEYS.index(ch)
            if getattr(r.voice, "poly", False):  # a chord: the note joins the others
                if n not in self.notes:
                    self.notes.append(n)
                    r.midi_message(mido.Message("note_on", note=n, velocity=100))
                return
            if self.note is not None:
                r.midi_message(mido.Message("note_off", note=self.note))
            r.midi_message(mido.Message("note_on", note=n, velocity=100))
            self.note = n
        elif ch in KEYS.upper() and ch.lower() in KEYS:
            n = 60 + KEYS.index(ch.lower())
            if n in self.notes:
                self.notes.remove(n)
                r.midi_message(mido.Message("note_off", note=n))
        elif ch == " ":
            for n in self.notes:
                r.midi_message(mido.Message("note_off", note=n))
            self.notes.clear()
            if self.note is not None:
                r.midi_message(mido.Message("note_off", note=self.note))
                self.note = None
        elif ch == "n":
            r.action("next_model")
        elif ch == "b":
            r.action("prev_model")
        elif ch == "p":
            r.action("panic")
            self.note = None
            self.notes.clear()
        elif ch == "l":
            r.action("learn")
        elif ch == "q":
            self.stop_event.set()

    def keys(self, data: str) -> None:
        """Apply a chunk of typed input (arrow keys arrive as escape sequences)."""
        for seq, ch in ARROWS.items():
            data = data.replace(seq, ch)
        for ch in data:
            self._key(ch)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(self._fd, 64).decode(errors="ignore")
                except OSError:
                    data = ""
                if not data:  # the terminal went away: stop reading, keep playing
                    self.stop_event.wait(0.2)
                self.keys(data)
            try:
                self.draw()
            except Exception as e:  # a panel that cannot draw must not take the keys down
                if not self._failed:
                    self._failed = True
                    logging.getLogger(__name__).warning("panel: cannot draw (%s: %s)", type(e).__name__, e)
