"""A monophonic voice played from MIDI: notes in, ``pitch`` (Hz) and ``loudness`` (dB) out.

A ``kind: note`` model has no gate and no envelope of its own: it sings whatever pitch and loudness
it is given every block.  :class:`MonoVoice` turns keys into those two controls the way a mono
synth does: a note stack with last-note priority (let go of the top key and the voice falls back
to the latest key still held, legato), velocity and channel pressure to loudness, pitch bend,
portamento, an attack/release envelope, and the sustain pedal (CC64: a key let go while it is
down stays in the stack, sounding if it is the latest, until the pedal lifts — as on a mono synth
with a sustain input; all-notes-off clears them too, reset-all-controllers lifts the pedal).

Envelope: loudness moves *linearly in dB* at a fixed rate, which is an exponential in amplitude —
the curve of an analog VCA's RC release and of most acoustic decays, so a release sounds natural
and does not click.  Unlike a one-pole (which only approaches its target), it arrives: a release
really reaches ``floor_db``, so "released and silent" is a state the engine can see
(:attr:`MonoVoice.sounding`).  ``attack_ms``/``release_ms`` are the times for a full-scale move
between ``floor_db`` and ``max_db``.  Portamento is a linear glide in semitones (log-frequency)
taking ``portamento_ms`` whatever the interval, from the previous note even after a release (the
first note after start or :meth:`MonoVoice.panic` starts on its pitch); pitch bend is applied on
top, not glided.

Threads, without locks (CPython's GIL makes one attribute store or load atomic):

- the control (MIDI) thread calls :meth:`MonoVoice.handle`; it owns the note stack, controllers
  and every other control-side field, and publishes what the audio side needs as **one tuple**
  stored in one attribute, so the audio thread never sees half an update;
- the audio thread calls :meth:`MonoVoice.advance` once per model block and reads
  :attr:`~MonoVoice.pitch_hz`/:attr:`~MonoVoice.loudness_db`; only ``advance`` writes those.
  It is a handful of float operations: no allocation of containers, no logging, no locks.
- a jump of the current values (first note, re-attack) is requested by bumping a counter in the
  published tuple, never by the control thread writing the current values itself;
- ``gate``/``note``/``velocity`` come from one published tuple too; ``cc`` is a plain dict the
  control thread writes: read it elsewhere with ``cc.get(n)``, do not iterate it.

Re-attack (``legato=False``, ``retrigger=True``) dips to ``floor_db`` and attacks again, both at
the attack rate, so it articulates without a hard cut.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import mido

from pi_synth.model.card import Control

__all__ = ["MonoVoice", "VOICE_CONTROLS"]

log = logging.getLogger(__name__)

SUSTAIN = 64
ALL_SOUND_OFF = 120
RESET_ALL_CONTROLLERS = 121
ALL_NOTES_OFF = 123  # 124..127 (omni/mono/poly mode) imply all notes off too
A4_NOTE = 69
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def note_name(note: int) -> str:
    """MIDI note → its name, middle C = C4 (60)."""
    return f"{NOTE_NAMES[note % 12]}{note // 12 - 1}"


# The voice's own playing controls, which knobs, CC, OSC and presets reach like a model's
# (:class:`~pi_synth.control.played.PlayedControls`): envelope times, glide, octave.
VOICE_CONTROLS = (
    Control("attack", 1.0, 2000.0, 5.0, "ms", "log", "time to rise from silence to full (the envelope)"),
    Control("release", 10.0, 5000.0, 250.0, "ms", "log", "time to fall to silence after the key is let go"),
    Control("glide", 0.0, 1000.0, 0.0, "ms", "exp", "portamento: time to slide from note to note"),
    Control("octave", -2.0, 2.0, 0.0, "oct", "lin", "transposes every note by whole octaves"),
)


class MonoVoice:
    """Mono note handling for a ``kind: note`` model, fed ``mido.Message`` objects.

    Control thread: :meth:`handle`, :meth:`panic`.  Audio thread: :meth:`advance`, then read
    :attr:`pitch_hz` and :attr:`loudness_db`.

    - ``channel``: 0..15, or None for all channels (omni).
    - ``legato``: a new key while another is held changes pitch without re-attack (True), or
      re-attacks: a fast dip to ``floor_db``, then the attack (False).
    - ``retrigger``: releasing the top key while others are held re-attacks on the note it
      falls back to (default False: the fall-back is legato).
    - ``bend_range``: semitones at full pitch bend; ``transpose``: semitones; ``tuning_hz``: A4.
    - velocity 127 → ``max_db``, velocity 1 → ``max_db - velocity_db_range``, in between
      ``max_db - velocity_db_range * (1 - x ** velocity_curve)`` with ``x = (velocity-1)/126``
      (``velocity_curve`` 1: linear in dB).
    - ``pressure_db``: dB added at full channel pressure (aftertouch), scaled linearly; 0 = off.
    - ``floor_db``: loudness when silent.  The result is not clamped to ``max_db`` (pressure may
      push above it): the mapping layer clamps to the model card's range.
    - ``on_program(program)`` is called on program change (from the control thread).
    """

    def __init__(
        self,
        *,
        channel: int | None = None,
        legato: bool = True,
        retrigger: bool = False,
        bend_range: float = 2.0,
        transpose: float = 0.0,
        tuning_hz: float = 440.0,
        portamento_ms: float = 0.0,
        max_db: float = 0.0,
        velocity_db_range: float = 36.0,
        velocity_curve: float = 1.0,
        pressure_db: float = 0.0,
        floor_db: float = -80.0,
        attack_ms: float = 5.0,
        release_ms: float = 250.0,
        on_program: Callable[[int], None] | None = None,
    ) -> None:
        if channel is not None and not (isinstance(channel, int) and 0 <= channel <= 15):
            raise ValueError(f"channel must be None (all) or 0..15, not {channel!r}")
        if tuning_hz <= 0:
            raise ValueError(f"tuning_hz must be > 0, not {tuning_hz!r}")
        if floor_db >= max_db:
            raise ValueError(f"floor_db ({floor_db}) must be below max_db ({max_db})")
        if velocity_db_range < 0 or velocity_curve <= 0:
            raise ValueError("velocity_db_range must be >= 0 and velocity_curve > 0")
        for name, value in (
            ("portamento_ms", portamento_ms),
            ("attack_ms", attack_ms),
            ("release_ms", release_ms),
        ):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, not {value!r}")

        self.channel = channel
        self.legato = legato
        self.retrigger = retrigger
        self.bend_range = float(bend_range)
        self.transpose = float(transpose)
        self.tuning_hz = float(tuning_hz)
        self.max_db = float(max_db)
        self.velocity_db_range = float(velocity_db_range)
        self.velocity_curve = float(velocity_curve)
        self.pressure_db = float(pressure_db)
        self.floor_db = float(floor_db)
        self.on_program = on_program

        span = self.max_db - self.floor_db
        # Rates in dB (or semitones) per second; inf = jump.
        self._attack_rate = span / (attack_ms / 1000.0) if attack_ms > 0 else math.inf
        self._release_rate = span / (release_ms / 1000.0) if release_ms > 0 else math.inf
        self._portamento_s = portamento_ms / 1000.0
        self._params = {"attack": float(attack_ms), "release": float(release_ms), "glide": float(portamento_ms),
                        "octave": float(transpose) / 12.0}

        # Control side (written only by handle/panic).
        self._stack: list[int] = []  # held keys, oldest first; top = sounding note
        self._velocities: dict[int, int] = {}
        self._bend = 0.0  # semitones
        self._pressure = 0  # 0..127
        self._played = False
        self._jumps = 0  # bumped to make the pitch jump instead of glide
        self._attacks = 0  # bumped to re-attack: a fast dip to the floor, then the attack
        self._last_note = float(A4_NOTE)  # semitones incl. transpose, kept after release
        self._mute = False
        self._sustain = False  # the pedal is down
        self._sustained: set[int] = set()  # keys let go while it was: still in the stack
        self.cc: dict[int, int] = {}
        """Last value per controller number (for the mapping layer)."""
        self.program: int | None = None
        """Last program change received, or None."""
        self.callback_errors = 0
        """Exceptions raised by ``on_program`` (logged, never propagated to the MIDI thread)."""

        # Published to the audio side as one tuple:
        # (note_semitones, bend_semitones, loudness_target_db, fall_rate, jumps, attacks)
        self._targets = (self._last_note, 0.0, self.floor_db, self._release_rate, 0, 0)
        # Published for readers on any thread: (sounding key or None, its velocity).
        self._key: tuple[int | None, int] = (None, 0)

        # Audio side (written only by advance).
        self._note_now = self._last_note
        self._glide_to = self._last_note
        self._glide_rate = math.inf
        self._jumps_seen = 0
        self._attacks_seen = 0
        self._db_now = self.floor_db
        self._dipping = False
        self._pitch_hz = self.tuning_hz

        self._handlers: dict[str, Callable[[mido.Message], None]] = {
            "note_on": self._note_on,
            "note_off": self._note_off,
            "pitchwheel": self._pitchwheel,
            "control_change": self._control_change,
            "aftertouch": self._aftertouch,
            "program_change": self._program_change,
            "reset": self._reset,
        }

    # ---- control thread ---------------------------------------------------------------------

    def set_param(self, name: str, value: float) -> None:
        """Set one of :data:`VOICE_CONTROLS` (``attack``/``release``/``glide`` in ms, ``octave``
        rounded to a whole octave): a few attribute stores, then the targets are published
        again, as for a key."""
        span = self.max_db - self.floor_db
        v = float(value)
        if name == "attack":
            self._attack_rate = span / (v / 1000.0) if v > 0 else math.inf
        elif name == "release":
            self._release_rate = span / (v / 1000.0) if v > 0 else math.inf
        elif name == "glide":
            self._portamento_s = max(v, 0.0) / 1000.0
        elif name == "octave":
            v = float(round(v))
            self.transpose = 12.0 * v
        else:
            raise KeyError(name)
        self._params[name] = v
        self._publish()

    def param(self, name: str) -> float:
        return self._params[name]

    def handle(self, msg: mido.Message) -> None:
        """Apply one message; irrelevant types and other channels are ignored.  Never raises."""
        handler = self._handlers.get(getattr(msg, "type", None))
        if handler is None:
            return
        if self.channel is not None:
            channel = getattr(msg, "channel", None)
            if channel is not None and channel != self.channel:
                return
        handler(msg)

    def panic(self) -> None:
        """Silence now (a fast fade at the attack rate, not a hard cut): keys, bend, pressure."""
        self._stack.clear()
        self._velocities.clear()
        self._sustained.clear()
        self._sustain = False
        self._bend = 0.0
        self._pressure = 0
        self._mute = True
        self._played = False
        self._publish()

    def velocity_db(self, velocity: int) -> float:
        """Loudness in dB for a note-on velocity 1..127 (the velocity curve)."""
        x = (min(max(velocity, 1), 127) - 1) / 126.0
        return self.max_db - self.velocity_db_range * (1.0 - x**self.velocity_curve)

    def _note_on(self, msg: mido.Message) -> None:
        if msg.velocity == 0:
            self._note_off(msg)
            return
        note = msg.note
        was_held = bool(self._stack)
        self._sustained.discard(note)  # held again
        if note in self._velocities:
            self._stack.remove(note)
        self._stack.append(note)
        self._velocities[note] = msg.velocity
        if not self._played:
            self._played = True
            self._jumps += 1  # the first note (since start or panic) starts on its pitch
        if was_held and not self.legato:
            self._attacks += 1
        self._mute = False
        self._publish()

    def _note_off(self, msg: mido.Message) -> None:
        note = msg.note
        if note not in self._velocities or note in self._sustained:
            return
        if self._sustain:  # the pedal keeps it until it lifts
            self._sustained.add(note)
            return
        self._let_go(note)

    def _let_go(self, note: int) -> None:
        top = self._stack[-1]
        self._stack.remove(note)
        del self._velocities[note]
        if note == top and self._stack and self.retrigger:
            self._attacks += 1
        self._publish()

    def _pitchwheel(self, msg: mido.Message) -> None:
        pitch = msg.pitch  # -8192..8191: both extremes reach exactly ±bend_range
        self._bend = self.bend_range * pitch / (8192.0 if pitch < 0 else 8191.0)
        self._publish()

    def _aftertouch(self, msg: mido.Message) -> None:
        self._pressure = msg.value
        if self.pressure_db:
            self._publish()

    def _control_change(self, msg: mido.Message) -> None:
        control = msg.control
        self.cc[control] = msg.value
        if control == SUSTAIN:
            self._pedal(msg.value >= 64)
        elif control == ALL_SOUND_OFF:
            self._stack.clear()
            self._velocities.clear()
            self._sustained.clear()
            self._mute = True
            self._publish()
        elif control == RESET_ALL_CONTROLLERS:
            self._bend = 0.0
            self._pressure = 0
            self._pedal(False)
            self._publish()
        elif control >= ALL_NOTES_OFF:
            self._stack.clear()
            self._velocities.clear()
            self._sustained.clear()
            self._publish()

    def _pedal(self, down: bool) -> None:
        self._sustain = down
        if down or not self._sustained:
            return
        for note in [n for n in self._stack if n in self._sustained]:
            self._let_go(note)
        self._sustained.clear()

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

    def _publish(self) -> None:
        """Recompute the targets from control-side state and hand them over in one store."""
        if self._stack:
            note = self._stack[-1]
            self._last_note = note + self.transpose
            loudness = self.velocity_db(self._velocities[note])
            loudness += self.pressure_db * self._pressure / 127.0
            loudness = max(loudness, self.floor_db)
        else:
            loudness = self.floor_db
        fall = self._attack_rate if self._mute else self._release_rate
        top = self._stack[-1] if self._stack else None
        self._key = (top, self._velocities[top]) if top is not None else (None, 0)
        self._targets = (
            self._last_note,
            self._bend,
            loudness,
            fall,
            self._jumps,
            self._attacks,
        )

    # ---- audio thread -----------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move pitch and loudness one block (``seconds`` long) toward their targets."""
        if not seconds > 0.0:  # also refuses NaN: the current values must stay finite
            return
        note, bend, target_db, fall_rate, jumps, attacks = self._targets

        # Pitch: a linear glide in semitones, taking portamento_ms from where it was.
        now = self._note_now
        if jumps != self._jumps_seen:
            self._jumps_seen = jumps
            now = self._glide_to = note
        elif note != self._glide_to:
            self._glide_to = note
            self._glide_rate = (
                abs(note - now) / self._portamento_s if self._portamento_s > 0.0 else math.inf
            )
        step = self._glide_rate * seconds
        if abs(note - now) <= step:
            now = note
        elif note > now:
            now += step
        else:
            now -= step
        self._note_now = now
        self._pitch_hz = self.tuning_hz * 2.0 ** ((now + bend - A4_NOTE) / 12.0)

        # Loudness: linear in dB; attack rate up, release (or mute) rate down.
        # A re-attack first dips to the floor at the attack rate (a cut would click).
        db = self._db_now
        if attacks != self._attacks_seen:
            self._attacks_seen = attacks
            self._dipping = True
        if self._dipping:
            db = max(db - self._attack_rate * seconds, self.floor_db)
            if db <= self.floor_db:
                self._dipping = False
        elif db < target_db:
            db = min(db + self._attack_rate * seconds, target_db)
        elif db > target_db:
            db = max(db - fall_rate * seconds, target_db)
        self._db_now = db

    @property
    def pitch_hz(self) -> float:
        """Current pitch in Hz (the ``pitch`` control), as of the last :meth:`advance`."""
        return self._pitch_hz

    @property
    def loudness_db(self) -> float:
        """Current loudness in dB (the ``loudness`` control), as of the last :meth:`advance`."""
        return self._db_now

    @property
    def sounding(self) -> bool:
        """A key is held or the release has not reached ``floor_db`` yet."""
        return self._key[0] is not None or self._db_now > self.floor_db

    # ---- control-side state, safe to read from anywhere ------------------------------------

    @property
    def gate(self) -> bool:
        """A key is held."""
        return self._key[0] is not None

    @property
    def note(self) -> int | None:
        """The sounding key (top of the stack), or None."""
        return self._key[0]

    @property
    def held(self) -> tuple[int, ...]:
        """Keys held, oldest first (the last one sounds)."""
        return tuple(self._stack)

    def held_notes(self) -> list[tuple[int, int, int]]:
        """(channel, note, velocity) of each key held, oldest first: what a voice taking
        over in a hot swap plays on (a control thread's snapshot)."""
        for _ in range(3):  # the MIDI thread may change the keys meanwhile: take a whole copy
            try:
                vel = dict(self._velocities)
                return [(self.channel or 0, n, vel.get(n, 100)) for n in tuple(self._stack)]
            except RuntimeError:
                continue
        return []

    @property
    def velocity(self) -> int:
        """Velocity of the sounding key, 0 when none is held."""
        return self._key[1]

    @property
    def pressure(self) -> int:
        """Last channel pressure, 0..127."""
        return self._pressure

    @property
    def bend_semitones(self) -> float:
        """Current pitch bend in semitones."""
        return self._bend

    @property
    def target_pitch_hz(self) -> float:
        """Where the pitch is going (no glide), from the control side's last update."""
        note, bend = self._targets[0], self._targets[1]
        return self.tuning_hz * 2.0 ** ((note + bend - A4_NOTE) / 12.0)

    @property
    def target_loudness_db(self) -> float:
        """Where the loudness is going, from the control side's last update."""
        return self._targets[2]
