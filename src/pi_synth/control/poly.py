"""Polyphony: keys in, one voice per row of a batched note model out.

:class:`PolyVoice` is :class:`~pi_synth.control.voice.MonoVoice`'s polyphonic sibling:
same messages in, same envelope (linear in dB at the attack and release rates, so a
release really ends), but every key gets a voice of its own — a row of the batched
model (``model/voices.py``) — and the allocator behaves like a hardware polysynth's:

* a new key takes a free row while the **voice budget** allows; beyond it it
  **steals**: a released voice first (``steal = "quietest"``: the quietest of them;
  ``"oldest"``: the one released longest ago… by start), else a held one the same way.
  The stolen voice **fades** to silence over ``fade_ms`` (a few ms, at block rate, no
  click) and its row then starts the new note from the model's initial state;
* **release tails** keep sounding in their rows until they reach the floor; the
  active rows stay packed in 0..k-1 (when one ends, the last moves into its place), so
  the model runs exactly k rows and no voice at all costs no call;
* **sustain** (CC64) keeps released keys sounding until the pedal lifts;
  **sostenuto** (CC66) keeps only the keys held when it went down;
* the **same key again** while its voice still sounds (held, sustained or in its tail)
  re-attacks that voice (a dip to the floor at the attack rate, then the attack, as
  MonoVoice's re-attack): no second voice for one key;
* **velocity** per voice, **pitch bend** and channel pressure to all voices;
  **MPE** (``mode = "mpe"``, lower zone): channel 1 is the master (bend, pressure and
  pedals for all), every other channel carries its own notes, and its bend
  (``mpe_bend_range``) and pressure move only those;
* all-notes-off (CC123–127) releases every key, sustained or not; all-sound-off
  (CC120), a reset message and :meth:`PolyVoice.panic` fade every voice out at once;
  reset-all-controllers (CC121) recentres bend and pressure and lifts the pedals.

Threads, without locks (the same discipline as MonoVoice):

- the control (MIDI) thread calls :meth:`PolyVoice.handle`; it owns which keys are
  down, the pedals and the controllers, and publishes each key's state in three
  preallocated arrays — velocity, gate (held or kept by a pedal), and a serial number
  that a note-on bumps — then bumps a change counter, in that order;
- the audio thread calls :meth:`PolyVoice.advance` once per block (from
  ``Router.on_block``). Only when the change counter moved does it snapshot the arrays
  and compare them with what it saw last: a new serial starts (or re-attacks) a voice, a
  gate that fell releases one. A note on and off inside one block still sounds (its
  serial is new): no note is dropped inside the budget. However many messages arrived,
  the audio thread's work is bounded by the number of keys (128; 2048 in MPE), not by
  the number of messages — a note-on storm costs the MIDI thread, never a block;
- the audio thread alone owns the voices (rows) and writes the
  :class:`~pi_synth.model.voices.VoiceTable` the synth reads right after it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import mido
import numpy as np

from pi_synth.model.voices import VoiceTable

__all__ = ["PolyVoice", "MODES", "STEAL"]

log = logging.getLogger(__name__)

MODES = ("poly", "mpe")
STEAL = ("quietest", "oldest")
SUSTAIN = 64
SOSTENUTO = 66
ALL_SOUND_OFF = 120
RESET_ALL_CONTROLLERS = 121
ALL_NOTES_OFF = 123  # 124..127 (omni/mono/poly mode) imply all notes off too
A4_NOTE = 69
KEYS = 128
CHANNELS = 16


class PolyVoice:
    """Polyphonic note handling for a batched ``kind: note`` model (module docstring).

    Control thread: :meth:`handle`, :meth:`panic`. Audio thread: :meth:`advance`, which
    writes ``table``. Parameters as :class:`~pi_synth.control.voice.MonoVoice`, plus:

    - ``table``: the rows it plays (``table.budget`` of them at most);
    - ``mode``: ``"poly"`` (one key = one voice on every channel listened to) or
      ``"mpe"`` (lower zone: per-channel bend and pressure for that channel's notes);
    - ``steal``: ``"quietest"`` or ``"oldest"`` (released voices first, either way);
    - ``fade_ms``: how long a stolen voice takes to fade out (at least one block);
    - ``mpe_bend_range``: semitones at full bend on a member channel.
    """

    poly = True

    def __init__(
        self,
        table: VoiceTable,
        *,
        mode: str = "poly",
        steal: str = "quietest",
        channel: int | None = None,
        bend_range: float = 2.0,
        mpe_bend_range: float = 48.0,
        transpose: float = 0.0,
        tuning_hz: float = 440.0,
        max_db: float = 0.0,
        velocity_db_range: float = 36.0,
        velocity_curve: float = 1.0,
        pressure_db: float = 0.0,
        floor_db: float = -80.0,
        attack_ms: float = 5.0,
        release_ms: float = 250.0,
        fade_ms: float = 5.0,
        block_seconds: float = 256 / 48000,
        on_program: Callable[[int], None] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if steal not in STEAL:
            raise ValueError(f"steal must be one of {', '.join(STEAL)}, not {steal!r}")
        if channel is not None and not (isinstance(channel, int) and 0 <= channel <= 15):
            raise ValueError(f"channel must be None (all) or 0..15, not {channel!r}")
        if floor_db >= max_db:
            raise ValueError(f"floor_db ({floor_db}) must be below max_db ({max_db})")
        if tuning_hz <= 0:
            raise ValueError(f"tuning_hz must be > 0, not {tuning_hz!r}")
        for name, value in (("attack_ms", attack_ms), ("release_ms", release_ms), ("fade_ms", fade_ms),
                            ("velocity_db_range", velocity_db_range)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, not {value!r}")
        self.table = table
        self.mode = mode
        self.steal = steal
        self.channel = None if mode == "mpe" else channel
        self.bend_range = float(bend_range)
        self.mpe_bend_range = float(mpe_bend_range)
        self.transpose = float(transpose)
        self.tuning_hz = float(tuning_hz)
        self.max_db = float(max_db)
        self.velocity_db_range = float(velocity_db_range)
        self.velocity_curve = float(velocity_curve)
        self.pressure_db = float(pressure_db)
        self.floor_db = float(floor_db)
        self.on_program = on_program
        span = self.max_db - self.floor_db
        self._attack_rate = span / (attack_ms / 1000.0) if attack_ms > 0 else math.inf
        self._release_rate = span / (release_ms / 1000.0) if release_ms > 0 else math.inf
        self._params = {"attack": float(attack_ms), "release": float(release_ms), "glide": 0.0,
                        "octave": float(transpose) / 12.0}
        self.block_seconds = block_seconds
        self.fade_blocks = max(1, round(fade_ms / 1000.0 / block_seconds))
        self.override_hz = 0.0  # a CV pitch (the router's): every voice plays it while > 0

        slots = KEYS * CHANNELS if mode == "mpe" else KEYS
        self.slots = slots
        # -- control side: published arrays (written vel, gate, serial; then _changes)
        self._k_serial = np.zeros(slots, np.int64)
        self._k_vel = np.zeros(slots, np.int16)
        self._k_gate = np.zeros(slots, np.int8)
        self._k_count = np.zeros(slots, np.int64)  # note-ons per key: two in one block show
        self._changes = 0
        self._serials = 0
        self._panic = (0, 0)  # (count, last serial it silences): one store
        # control-only state
        self._down: set[int] = set()  # keys physically held
        self._sustained: set[int] = set()  # released while the sustain pedal was down
        self._latched: set[int] = set()  # held when the sostenuto pedal went down
        self._sustain = False
        self._sostenuto = False
        self.cc: dict[int, int] = {}
        """Last value per controller number (for the mapping layer)."""
        self.program: int | None = None
        self.callback_errors = 0
        # written by the control thread, read per block: one float store each
        self._bend = 0.0  # semitones, every voice (master channel in MPE)
        self._pressure = 0  # 0..127, every voice (master channel in MPE)
        self._ch_bend = [0.0] * CHANNELS  # MPE member channels, semitones
        self._ch_pressure = [0] * CHANNELS

        # -- audio side: snapshots and the voices (one per row), plain lists
        self._snap_s = np.zeros(slots, np.int64)
        self._snap_g = np.zeros(slots, np.int8)
        self._snap_v = np.zeros(slots, np.int16)
        self._seen_s = np.zeros(slots, np.int64)
        self._seen_g = np.zeros(slots, np.int8)
        self._snap_c = np.zeros(slots, np.int64)
        self._seen_c = np.zeros(slots, np.int64)
        self._d1 = np.zeros(slots, bool)
        self._d2 = np.zeros(slots, bool)
        self._changes_seen = 0
        self._panic_seen = 0
        self._row_of = [-1] * slots  # slot → row sounding it (or fading to play it), -1
        R = table.rows
        self._slot = [0] * R
        self._note = [0.0] * R  # semitones, transpose included
        self._chan = [0] * R
        self._level = [0.0] * R  # the velocity's loudness, dB
        self._db = [self.floor_db] * R
        self._gate = [False] * R
        self._hold1 = [False] * R  # started already released: sound one block first
        self._dip = [False] * R
        self._born = [0] * R
        self._fade = [1.0] * R  # output gain; below 1 while a stolen or silenced voice fades
        self._fading = [False] * R
        self._pend: list[tuple | None] = [None] * R  # (slot, serial, velocity, gate) after the fade
        self._done = [False] * R
        self._n = 0  # rows in use (== table.active)
        self._blocks = 0
        # counters (audio thread writes, anyone reads)
        self.started = 0
        """Voices started or re-attacked (one per note-on that got to sound)."""
        self.stolen = 0
        """Voices taken from another key because the budget was full."""
        self.stolen_held = 0
        """… of which the key was still held (or kept by a pedal): none while the keys
        down fit the budget."""
        self.merged = 0
        """Note-ons of a key that came again within the same block: they sound as one."""
        self.dropped = 0
        """Note-ons that never sounded: more in one block than the budget has rows."""

        self._handlers: dict[str, Callable[[mido.Message], None]] = {
            "note_on": self._note_on,
            "note_off": self._note_off,
            "pitchwheel": self._pitchwheel,
            "control_change": self._control_change,
            "aftertouch": self._aftertouch,
            "program_change": self._program_change,
            "reset": self._reset,
        }

    # ---- control thread ---------------------------------------------------------------

    def set_param(self, name: str, value: float) -> None:
        """Set one of the voice's own controls (``control/voice.py`` ``VOICE_CONTROLS``, reached
        by knobs, CC, OSC and presets through the played controls): ``attack``/``release``
        in ms take effect at once for every voice (one float store each, read per block);
        ``octave`` for the keys pressed after; ``glide`` is kept but a poly voice does not
        glide (each key is its own voice)."""
        span = self.max_db - self.floor_db
        v = float(value)
        if name == "attack":
            self._attack_rate = span / (v / 1000.0) if v > 0 else math.inf
        elif name == "release":
            self._release_rate = span / (v / 1000.0) if v > 0 else math.inf
        elif name == "octave":
            v = float(round(v))
            self.transpose = 12.0 * v
        elif name != "glide":
            raise KeyError(name)
        self._params[name] = v

    def param(self, name: str) -> float:
        return self._params[name]

    def handle(self, msg: mido.Message) -> None:
        """Apply one message; irrelevant types and other channels are ignored. Never raises."""
        handler = self._handlers.get(getattr(msg, "type", None))
        if handler is None:
            return
        if self.channel is not None:
            channel = getattr(msg, "channel", None)
            if channel is not None and channel != self.channel:
                return
        handler(msg)

    def panic(self) -> None:
        """Silence now: every key up, pedals up, bend and pressure centred, and every voice
        fades out over ``fade_ms`` (not a hard cut)."""
        self._down.clear()
        self._sustained.clear()
        self._latched.clear()
        self._sustain = self._sostenuto = False
        self._centre()
        self._k_gate[:] = 0
        self._panic = (self._panic[0] + 1, self._serials)
        self._changes += 1

    def velocity_db(self, velocity: int) -> float:
        """Loudness in dB for a note-on velocity 1..127 (MonoVoice's curve)."""
        x = (min(max(velocity, 1), 127) - 1) / 126.0
        return self.max_db - self.velocity_db_range * (1.0 - x**self.velocity_curve)

    def _slot_of(self, msg) -> int:
        return msg.channel * KEYS + msg.note if self.mode == "mpe" else msg.note

    def _gated(self, slot: int) -> bool:
        return (slot in self._down or (self._sustain and slot in self._sustained)
                or (self._sostenuto and slot in self._latched))

    def _note_on(self, msg: mido.Message) -> None:
        if msg.velocity == 0:
            self._note_off(msg)
            return
        slot = self._slot_of(msg)
        self.table.engaged = True
        self._down.add(slot)
        self._sustained.discard(slot)
        self._serials += 1
        self._k_vel[slot] = msg.velocity
        self._k_gate[slot] = 1
        self._k_count[slot] += 1
        self._k_serial[slot] = self._serials
        self._changes += 1

    def _note_off(self, msg: mido.Message) -> None:
        slot = self._slot_of(msg)
        if slot not in self._down:
            return  # a note-off without its note-on
        self._down.discard(slot)
        if self._sustain:
            self._sustained.add(slot)
        if not self._gated(slot):
            self._k_gate[slot] = 0
            self._changes += 1

    def _release_where(self, keep) -> None:
        """Drop the gate of every key not held for which ``keep(slot)`` is false."""
        for slot in np.flatnonzero(self._k_gate).tolist():
            if slot not in self._down and not keep(slot):
                self._k_gate[slot] = 0
        self._changes += 1

    def _pitchwheel(self, msg: mido.Message) -> None:
        pitch = msg.pitch  # -8192..8191: both extremes reach exactly ±range
        x = pitch / (8192.0 if pitch < 0 else 8191.0)
        if self.mode == "mpe" and msg.channel != 0:
            self._ch_bend[msg.channel] = self.mpe_bend_range * x
        else:
            self._bend = self.bend_range * x

    def _aftertouch(self, msg: mido.Message) -> None:
        if self.mode == "mpe" and msg.channel != 0:
            self._ch_pressure[msg.channel] = msg.value
        else:
            self._pressure = msg.value

    def _centre(self) -> None:
        self._bend = 0.0
        self._pressure = 0
        for c in range(CHANNELS):
            self._ch_bend[c] = 0.0
            self._ch_pressure[c] = 0

    def _control_change(self, msg: mido.Message) -> None:
        control, value = msg.control, msg.value
        self.cc[control] = value
        if control == SUSTAIN:
            on = value >= 64
            if on == self._sustain:
                return
            self._sustain = on
            if not on:
                self._sustained.clear()
                self._release_where(lambda s: self._sostenuto and s in self._latched)
        elif control == SOSTENUTO:
            on = value >= 64
            if on == self._sostenuto:
                return
            self._sostenuto = on
            if on:
                self._latched = set(self._down)
            else:
                self._latched.clear()
                self._release_where(lambda s: self._sustain and s in self._sustained)
        elif control == ALL_SOUND_OFF:
            self.panic()
        elif control == RESET_ALL_CONTROLLERS:
            self._centre()
            self._sustain = self._sostenuto = False
            self._sustained.clear()
            self._latched.clear()
            self._release_where(lambda s: False)
        elif control >= ALL_NOTES_OFF:
            self._down.clear()
            self._sustained.clear()
            self._latched.clear()
            self._k_gate[:] = 0
            self._changes += 1

    def _program_change(self, msg: mido.Message) -> None:
        self.program = msg.program
        if self.on_program is not None:
            try:
                self.on_program(msg.program)
            except Exception:  # a broken callback must not kill the MIDI thread
                self.callback_errors += 1
                log.exception("on_program(%d) failed", msg.program)

    def _reset(self, msg: mido.Message) -> None:
        self.cc.clear()
        self.panic()

    # ---- audio thread -----------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """One block (``seconds`` long): start, release, fade and end voices, move every
        envelope, and write the table for the synth."""
        if not seconds > 0.0:  # also refuses NaN: the table must stay finite
            return
        t = self.table
        t.begin()
        self._blocks += 1
        self._free_ended()
        panic, floor_serial = self._panic
        if panic != self._panic_seen:
            self._panic_seen = panic
            self._silence_all()
        if self._changes != self._changes_seen:
            self._sync(floor_serial)
        self._envelopes(seconds)

    def _free_ended(self) -> None:
        """Rows that ended last block leave (the last row moves into a gap); rows whose
        fade has finished take the note they were stolen for."""
        t = self.table
        for r in range(self._n - 1, -1, -1):
            if self._done[r]:
                last = self._n - 1
                if self._row_of[self._slot[r]] == r:
                    self._row_of[self._slot[r]] = -1
                if r != last:
                    self._move(last, r)
                    t.move(last, r)
                self._n -= 1
        for r in range(self._n):
            if self._fading[r] and self._fade[r] <= 0.0 and self._pend[r] is not None:
                slot, serial, vel, gate = self._pend[r]
                t.reset(r)
                self._init(r, slot, vel, gate)

    def _move(self, src: int, dst: int) -> None:
        for a in (self._slot, self._note, self._chan, self._level, self._db, self._gate, self._hold1,
                  self._dip, self._born, self._fade, self._fading, self._pend, self._done):
            a[dst] = a[src]
        slot = self._slot[dst]
        if self._row_of[slot] == src:
            self._row_of[slot] = dst
        pend = self._pend[dst]
        if pend is not None and self._row_of[pend[0]] == src:
            self._row_of[pend[0]] = dst

    def _init(self, r: int, slot: int, vel: int, gate: bool) -> None:
        """A new voice in row ``r`` (its state reset by the synth this block)."""
        self._slot[r] = slot
        self._note[r] = float(slot % KEYS) + self.transpose
        self._chan[r] = slot // KEYS
        self._level[r] = self.velocity_db(vel)
        self._db[r] = self.floor_db
        self._gate[r] = bool(gate)
        self._hold1[r] = not gate
        self._dip[r] = False
        self._born[r] = self._blocks
        self._fade[r] = 1.0
        self._fading[r] = False
        self._pend[r] = None
        self._done[r] = False
        self._row_of[slot] = r
        self.started += 1

    def _silence_all(self) -> None:
        """Panic: every voice fades out, nothing pending."""
        for r in range(self._n):
            if self._row_of[self._slot[r]] == r:
                self._row_of[self._slot[r]] = -1
            pend = self._pend[r]
            if pend is not None and self._row_of[pend[0]] == r:
                self._row_of[pend[0]] = -1
            self._pend[r] = None
            self._gate[r] = self._hold1[r] = False
            self._fading[r] = True

    def _sync(self, floor_serial: int) -> None:
        """Compare the keys with what this thread saw last: start and release voices."""
        self._changes_seen = self._changes  # read before the snapshot: a later change shows next block
        np.copyto(self._snap_s, self._k_serial)
        np.copyto(self._snap_g, self._k_gate)
        np.copyto(self._snap_v, self._k_vel)
        np.copyto(self._snap_c, self._k_count)
        np.not_equal(self._snap_s, self._seen_s, out=self._d1)
        np.not_equal(self._snap_g, self._seen_g, out=self._d2)
        np.logical_or(self._d1, self._d2, out=self._d1)
        changed = np.flatnonzero(self._d1).tolist()
        snap_s, snap_g, seen_s = self._snap_s, self._snap_g, self._seen_s
        starts = []
        for slot in changed:
            serial = int(snap_s[slot])
            if serial != seen_s[slot]:
                self.merged += max(0, int(self._snap_c[slot] - self._seen_c[slot]) - 1)
                if serial > floor_serial:
                    starts.append((serial, slot))
            elif not snap_g[slot]:
                self._release(slot)
        np.copyto(self._seen_s, snap_s)
        np.copyto(self._seen_g, snap_g)
        np.copyto(self._seen_c, self._snap_c)
        if not starts:
            return
        starts.sort()
        room = self.table.budget
        if len(starts) > room:  # more new notes in one block than voices: the latest win
            self.dropped += len(starts) - room
            starts = starts[-room:]
        for serial, slot in starts:
            self._start(slot, serial, int(self._snap_v[slot]), bool(snap_g[slot]))

    def _release(self, slot: int) -> None:
        r = self._row_of[slot]
        if r < 0:
            return
        pend = self._pend[r]
        if pend is not None and pend[0] == slot:
            self._pend[r] = (slot, pend[1], pend[2], False)
        elif self._slot[r] == slot:
            self._gate[r] = False

    def _start(self, slot: int, serial: int, vel: int, gate: bool) -> None:
        r = self._row_of[slot]
        if r >= 0:
            pend = self._pend[r]
            if pend is not None and pend[0] == slot:  # waiting for a stolen row: a newer note
                self._pend[r] = (slot, serial, vel, gate)
                self.dropped += 1
                return
            if not self._fading[r]:  # the key still sounds: re-attack its voice
                self._level[r] = self.velocity_db(vel)
                self._gate[r] = gate
                self._hold1[r] = not gate
                self._dip[r] = self._db[r] > self.floor_db
                self._done[r] = False
                self._born[r] = self._blocks
                self.started += 1
                return
        t = self.table
        if self._n < t.budget:
            r = self._n
            self._n += 1
            t.reset(r)
            self._init(r, slot, vel, gate)
            return
        victim = self._victim()
        if victim < 0:  # every row already fades towards a note: the oldest waiting one loses
            victim = min((r for r in range(self._n) if self._pend[r] is not None),
                         key=lambda r: self._pend[r][1], default=-1)
            if victim < 0:
                self.dropped += 1
                return
            old = self._pend[victim][0]
            if self._row_of[old] == victim:
                self._row_of[old] = -1
            self.dropped += 1
        else:
            self.stolen += 1
            self.stolen_held += self._gate[victim]
            if self._row_of[self._slot[victim]] == victim:
                self._row_of[self._slot[victim]] = -1
            self._fading[victim] = True
        self._pend[victim] = (slot, serial, vel, gate)
        self._row_of[slot] = victim

    def _victim(self) -> int:
        """The row to steal: a released voice before a held one; among them the quietest
        (``steal = "quietest"``, ties to the oldest) or the oldest. -1: none (all fading)."""
        best, best_key = -1, None
        quiet = self.steal == "quietest"
        for r in range(self._n):
            if self._fading[r] or self._done[r]:
                continue
            key = (self._gate[r] or self._hold1[r], self._db[r] if quiet else 0.0, self._born[r])
            if best_key is None or key < best_key:
                best, best_key = r, key
        return best

    def _envelopes(self, seconds: float) -> None:
        t = self.table
        attack, release = self._attack_rate * seconds, self._release_rate * seconds
        floor, max_db = self.floor_db, self.max_db
        fade_step = 1.0 / self.fade_blocks
        mpe = self.mode == "mpe"
        bend, pressure = self._bend, self._pressure
        press_db = self.pressure_db / 127.0
        tuning, override = self.tuning_hz, self.override_hz
        pitch, loud, gain = t.pitch, t.loudness, t.gain
        weight = 0.0
        fading = 0
        for r in range(self._n):
            db = self._db[r]
            if self._dip[r]:  # a re-attack: down to the floor first (a cut would click)
                db = max(db - attack, floor)
                if db <= floor:
                    self._dip[r] = False
                gated = True
            else:
                gated = self._gate[r] or self._hold1[r]
                self._hold1[r] = False  # a note released in its first block sounds this one
                if gated:
                    target = self._level[r]
                    if press_db:
                        p = pressure + (self._ch_pressure[self._chan[r]] if mpe else 0)
                        target += press_db * p
                else:
                    target = floor
                if db < target:
                    db = min(db + attack, target)
                elif db > target:
                    db = max(db - release, target)
            self._db[r] = db
            g = 1.0
            if self._fading[r]:
                fading += 1
                g = self._fade[r] = max(self._fade[r] - fade_step, 0.0)
                if g <= 0.0 and self._pend[r] is None:
                    self._done[r] = True
            elif not gated and db <= floor:
                self._done[r] = True
            if override > 0.0:
                hz = override
            else:
                semis = self._note[r] + bend + (self._ch_bend[self._chan[r]] if mpe else 0.0)
                hz = tuning * 2.0 ** ((semis - A4_NOTE) / 12.0)
            pitch[r] = hz
            loud[r] = db
            gain[r] = g
            weight += g * 10.0 ** ((db - max_db) / 20.0)
        t.active = self._n
        t.weight = weight
        t.fading = fading

    # ---- state, safe to read from anywhere -----------------------------------------------

    @property
    def active(self) -> int:
        """Rows sounding (held, sustained, in their release tail or fading)."""
        return self.table.active

    @property
    def budget(self) -> int:
        return self.table.budget

    @property
    def held(self) -> tuple[int, ...]:
        """Keys held down (notes; in MPE channel × 128 + note), in no particular order."""
        return tuple(self._down)

    def held_notes(self) -> list[tuple[int, int, int]]:
        """(channel, note, velocity) of each key held: what a voice taking over in a hot
        swap plays on (a control thread's snapshot)."""
        for _ in range(3):  # the MIDI thread may change the keys meanwhile: take a whole copy
            try:
                down = sorted(tuple(self._down))
                break
            except RuntimeError:
                continue
        else:
            return []
        mpe = self.mode == "mpe"
        return [(slot // KEYS if mpe else (self.channel or 0), slot % KEYS, int(self._k_vel[slot]) or 100)
                for slot in down]

    @property
    def sustain(self) -> bool:
        return self._sustain

    @property
    def sostenuto(self) -> bool:
        return self._sostenuto

    @property
    def sounding(self) -> bool:
        return self.table.active > 0

    @property
    def gate(self) -> bool:
        """Some key is held or kept by a pedal."""
        return bool(self._k_gate.any())

    def voices(self) -> list[dict]:
        """The voices as of the last :meth:`advance` (tests, the panel): row order."""
        t = self.table
        return [{"row": r, "note": self._slot[r] % KEYS, "channel": self._slot[r] // KEYS if self.mode == "mpe" else None,
                 "gate": self._gate[r], "loudness_db": self._db[r], "pitch_hz": float(t.pitch[r]),
                 "gain": self._fade[r], "fading": self._fading[r]}
                for r in range(t.active)]
