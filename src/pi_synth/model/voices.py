"""Voices of a batched note model: the table the allocator and the synth share, and the
voice budget measured on this machine.

A batched note model (card ``voices`` > 1) plays one voice per row of one onnxruntime
call. Two paths meet at the rows: the control path decides which key sounds in which
row, with what pitch and loudness (the allocator, ``control/poly.py``), and the audio
path runs those rows and mixes them (``audio/synth.py``). They never import each
other; they share a :class:`VoiceTable`, written by the allocator and read by the
synth on the audio thread, one after the other in the same block (the allocator is a
block hook, the synth renders right after), so nothing in it needs a lock.

The budget: a block of *k* rows costs more than one of one row, less than *k* times as
much. :func:`block_curve` measures it for 1..N rows, once per file, CPU, onnxruntime
version and thread count (kept in ``voices.json`` in the cache folder, like the
precision choice), and :func:`fit` says how many voices fit a block-time allowance:
the player never plays more than fit, and a note beyond them steals a voice instead.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class VoiceTable:
    """Rows of a batched note model, as the allocator left them for this block.

    Written by the allocator (one block hook on the audio thread), read by the synth
    right after, on the same thread:

    * ``active``: rows 0..active-1 sound this block (the allocator keeps them packed);
    * ``pitch``, ``loudness`` ``[rows]``: each row's controls, in the card's units;
    * ``gain`` ``[rows]``: each row's output gain at the end of the block (a stolen
      voice fades to 0 before its row takes the new note);
    * ``weight``: the sum of the rows' envelope amplitudes (0..1 each), for the mix's
      gain law; ``fading``: how many rows have a gain below 1 (none: the mix has no
      per-row gains to ramp);
    * the row operations to apply to the model's state before this block's call, in
      order: :meth:`move` (a row's state into another row) and :meth:`reset` (a new
      voice starts from the initial state); ``seq`` changes each time they are set, so
      a reader applies them once.

    ``engaged`` turns true with the first note: until then a note model plays row 0
    from its control bank like a mono one (knobs alone can play it). ``budget``: the
    most rows the allocator may use (the voice budget), at most ``rows``.
    """

    def __init__(self, rows: int):
        if rows < 1:
            raise ValueError(f"a voice table needs at least one row, not {rows}")
        self.rows = rows
        self.budget = rows
        self.active = 0
        self.pitch = np.full(rows, 440.0)
        self.loudness = np.full(rows, -80.0)
        self.gain = np.ones(rows)
        self.weight = 0.0
        self.fading = 0
        self.engaged = False
        # row operations: (src, dst), src -1 = reset dst; at most one move per freed row
        # and one reset per started voice in a block, so 2 × rows is the bound
        self._src = [0] * (2 * rows + 2)
        self._dst = [0] * (2 * rows + 2)
        self.n_ops = 0
        self.seq = 0

    # -- the allocator (audio thread) ----------------------------------------------------

    def begin(self) -> None:
        """A new block: no row operations yet."""
        self.n_ops = 0
        self.seq += 1

    def move(self, src: int, dst: int) -> None:
        self._src[self.n_ops] = src
        self._dst[self.n_ops] = dst
        self.n_ops += 1

    def reset(self, row: int) -> None:
        self._src[self.n_ops] = -1
        self._dst[self.n_ops] = row
        self.n_ops += 1

    # -- the synth (audio thread, right after) ------------------------------------------

    def op(self, i: int) -> tuple[int, int]:
        """The i-th row operation of this block: (src, dst), src -1 for a reset."""
        return self._src[i], self._dst[i]


# -- the budget ---------------------------------------------------------------------------


def block_curve(rt, *, rounds: int = 3, blocks: int = 8, cache_dir=None, use_cache: bool = True) -> list[float]:
    """Seconds per block for 1..``rt.rows`` rows on this machine (index k-1 for k rows).

    Measured once for this file, CPU, onnxruntime version, thread count and row count,
    then read from ``voices.json`` in the cache folder (a first start costs ~0.1–1 s).
    Each row count runs ``rounds`` × ``blocks`` blocks, interleaved with the others; per
    count the fastest round's median (another process only ever adds time). Every row
    plays at full loudness, the dearest case for a model whose cost depends on it."""
    from pi_synth.model.precision import _read, _write
    from pi_synth.model.runtime import default_cache_dir

    cache = Path(cache_dir or default_cache_dir()) / "voices.json"
    key = _key(rt)
    if use_cache:
        known = _read(cache).get(key)
        if isinstance(known, dict) and isinstance(known.get("block_ms"), list) \
                and len(known["block_ms"]) == rt.rows:
            return [float(ms) * 1e-3 for ms in known["block_ms"]]
    curve = measure(rt, rounds=rounds, blocks=blocks)
    if use_cache:
        _write(cache, key, {"block_ms": [round(s * 1e3, 5) for s in curve],
                            "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return curve


def measure(rt, *, rounds: int = 3, blocks: int = 8) -> list[float]:
    """:func:`block_curve` without the cache; leaves the runtime reset, all rows set."""
    card = rt.card
    saved = rt.controls_rows.copy()
    names = card.control_names
    if "loudness" in names:
        loud = card.control("loudness")
        rt.controls_rows[:, names.index("loudness"), :] = max(loud.min, loud.max)
    best = [float("inf")] * rt.rows
    perf = time.perf_counter
    t = np.empty(max(1, blocks))
    for _ in range(max(1, rounds)):
        for k in range(1, rt.rows + 1):
            rt.set_rows(k)
            rt.step()  # the first call at a new row count may plan memory
            for i in range(t.size):
                t0 = perf()
                rt.step()
                t[i] = perf() - t0
            best[k - 1] = min(best[k - 1], float(np.median(t)))
    rt.set_rows(rt.rows)
    rt.reset()
    rt.controls_rows[...] = saved
    return best


def fit(curve: list[float], allowed_s: float) -> int:
    """The most voices whose block renders within ``allowed_s`` (every smaller count
    too); at least one — a model too slow for one voice is the engine's business."""
    n = 0
    for s in curve:
        if s > allowed_s:
            break
        n += 1
    return max(1, n)


def _key(rt) -> str:
    import onnxruntime as ort

    from pi_synth.model.precision import cpu_model

    p = Path(rt.path)
    st = p.stat()
    return (f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}|rows{rt.rows}|{cpu_model()}|"
            f"{platform.machine()}|ort{ort.__version__}|threads{rt.threads}")
