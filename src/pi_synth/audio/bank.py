"""The bank of model controls: where the control path hands over to the audio path.

Sources (knobs, MIDI, events, OSC) write *targets* from any thread with
:meth:`ControlBank.set`: one float store into a numpy array, atomic under the GIL,
no lock. Once per block the audio thread calls :meth:`fill`, which snapshots the
targets and ramps linearly from the previous block's values across the model's
control frames — so a knob turned between two blocks never steps (no zipper noise).

With several control frames a block, an event on the audio clock can land inside the
block: the events timeline (on the audio thread, just before :meth:`fill`) sets
:attr:`ControlBank.at_frame` while it applies one, and the controls it sets then step at
that frame instead of ramping across the block (the frames before keep the last
block's value; the model interpolates within a frame). The last change of a control in a
block wins, from its frame.

Most blocks nothing has moved: a setter bumps a generation number, and once the ramp
(and any glide) has run out, :meth:`fill` leaves the model's input as it is — no numpy
call at all on the audio thread.
"""

from __future__ import annotations

import numpy as np

from pi_synth.model.card import Card


class ControlBank:
    """The model's controls: written by any source, read by the audio thread once a block
    (a :class:`~pi_synth.model.controls.ControlTarget`)."""

    def __init__(self, card: Card):
        self.card = card
        self.names = card.control_names
        self._index = {n: i for i, n in enumerate(self.names)}
        # the range as Python floats (float32-rounded): clamping a huge value against a
        # numpy float32 would cast it first, and overflow (a RuntimeWarning on stderr)
        self._lo = [float(np.float32(min(c.min, c.max))) for c in card.controls]
        self._hi = [float(np.float32(max(c.min, c.max))) for c in card.controls]
        self.target = np.array([c.default for c in card.controls], np.float32)
        self._last = self.target.copy()
        self._snap = self.target.copy()
        self._delta = np.zeros_like(self.target)
        f = card.control_frames
        self._single = f == 1
        # optional per-control smoothing (a mapping's smooth_ms): one pole at block rate
        self._smooth = np.zeros_like(self.target)  # 0 = off, else the per-block coefficient
        self._smoothed = self.target.copy()
        self._target_col, self._smoothed_col = self.target[:, None], self._smoothed[:, None]
        self._any_smooth = False
        self._block_s = card.block_size / card.sample_rate
        self._ramp = (np.arange(1, f + 1, dtype=np.float32) / f)[None, :]
        # events placed inside the block (module docstring): each control's ramp row, the
        # block's ramp unless a placed event made it a step at its frame
        self.at_frame = -1  # ≥ 0: set by the events timeline (audio thread) while it applies one
        self._steps = (np.arange(f)[None, :] >= np.arange(f + 1)[:, None]).astype(np.float32)
        self._ramps = np.repeat(self._ramp, len(self.names), axis=0)
        self._placed = False
        # idle detection: setters bump _gen (any thread); fill (audio thread only) owns the rest
        self._gen = 0
        self._seen = -1
        self._busy = 0
        self._settle = 2  # blocks to fill after a change: the ramp, then one flat block
        self._filled = None

    # -- any thread -------------------------------------------------------------------

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(
                f"model {self.card.name!r} has no control {name!r}; its controls are: "
                + ", ".join(self.names)
            ) from None

    def set(self, name: str, value: float) -> None:
        self.set_index(self.index(name), value)

    def set_index(self, i: int, value: float) -> None:
        v = float(value)
        if v != v:  # NaN from a broken source never reaches the model
            return
        self.target[i] = min(max(v, self._lo[i]), self._hi[i])
        c = self.at_frame
        if c >= 0 and not self._single:  # an event placed inside the block: a step at frame c
            self._ramps[i] = self._steps[c]
            self._placed = True
        self._gen += 1  # after the store: the audio thread sees the value with the bump

    def set_unit(self, name: str, x: float) -> None:
        """Set from 0..1 along the control's curve (a knob)."""
        self.set(name, self.card.control(name).from_unit(x))

    def set_smoothing(self, name: str, seconds: float) -> None:
        """Glide ``name`` towards its target with time constant ``seconds`` (0 = off)."""
        i = self.index(name)
        self._smooth[i] = 0.0 if seconds <= 0 else 1.0 - float(np.exp(-self._block_s / seconds))
        self._any_smooth = bool(self._smooth.any())
        self._coef_or_one = np.where(self._smooth > 0, self._smooth, 1.0).astype(np.float32)
        np.copyto(self._smoothed, self.target)
        # glide until the rest is below 1e-6 of the step, then idle
        slowest = float(self._smooth[self._smooth > 0].min()) if self._any_smooth else 1.0
        self._settle = 2 + (int(np.ceil(np.log(1e-6) / np.log1p(-slowest))) if slowest < 1.0 else 0)
        self._gen += 1

    def get(self, name: str) -> float:
        return float(self.target[self.index(name)])

    def values(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self.target)}

    # -- the audio thread -------------------------------------------------------------

    def fill(self, out: np.ndarray) -> None:
        """Write this block's controls into ``out`` ``[n_controls, control_frames]``."""
        gen = self._gen
        if gen != self._seen:
            self._seen = gen
            self._busy = self._settle
        elif self._busy > 0:
            self._busy -= 1
        elif out is self._filled:
            return  # settled: out holds this block's values already
        self._filled = out
        src, col = self.target, self._target_col
        if self._any_smooth:  # smoothed controls glide; the others jump (mask: coef 1)
            np.subtract(self.target, self._smoothed, out=self._delta)
            self._delta *= self._coef_or_one
            self._smoothed += self._delta
            src, col = self._smoothed, self._smoothed_col
        if self._single:  # one frame: the model ramps inside the block itself
            np.copyto(out, col)
            return
        np.copyto(self._snap, src)
        np.subtract(self._snap, self._last, out=self._delta)
        if self._placed:  # some controls step at an event's frame this block
            self._placed = False
            np.multiply(self._delta[:, None], self._ramps, out=out)
            np.copyto(self._ramps, self._ramp)
        else:
            np.multiply(self._delta[:, None], self._ramp, out=out)
        out += self._last[:, None]
        np.copyto(self._last, self._snap)

    def jump(self) -> None:
        """Forget the ramp: the next block starts at the targets (after a reset)."""
        np.copyto(self._last, self.target)
        self._gen += 1
