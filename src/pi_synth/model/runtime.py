"""Model runtime: one onnxruntime session, run one block at a time, state carried.

Why it looks the way it does:

* **No allocation per block.** The controls input, the audio output and two copies of
  every state tensor are numpy arrays allocated once and bound to the session by
  pointer (``IOBinding``). Two bindings alternate ("ping-pong"): call *k* reads state
  set A and writes set B, call *k+1* reads B and writes A. So a state output becomes
  the next call's state input without a copy.
* **Session options on purpose.** One intra-op thread by default: on a small model,
  two threads on two cores gave a worse p99 (1.3 ms vs 0.28 ms) — for audio the tail
  matters, not the mean. Spinning is off, or idle pool threads burn a core after each
  run. Sequential execution, full graph optimization, and the optimized graph cached
  on disk (keyed by the model's hash, onnxruntime version and CPU) so the next start
  is fast.
* **Fixed shapes and warm-up.** The card's shapes are static; a few warm-up runs let
  onnxruntime plan its memory before sound starts.
* **Voices as rows.** A batched note model (card ``voices`` > 1) has one leading row per
  voice. The runtime allocates ``rows`` of everything once and runs only the first *k*
  (:meth:`Runtime.set_rows`): a binding per *k* and parity is made up front, each
  binding views of the first *k* rows (contiguous, since the voices come first), so
  changing *k* is one attribute store. Whoever allocates voices keeps the active ones
  in rows 0..k-1 (:meth:`move_row`, :meth:`reset_row`: a few small copies, not per-sample
  work); no voice, no call at all (the synth skips the step).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from pi_synth.errors import ModelError
from pi_synth.model.card import batched_outputs, check_graph, load_card
from pi_synth.model.onnxrewrite import external_files
from pi_synth.model.session import open_session, session_options

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    env = os.environ.get("PI_SYNTH_CACHE_DIR") or os.environ.get("CACHE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pi-synth"


class Runtime:
    """A loaded model, ready to make one block per :meth:`step`.

    Write the controls for the next block into :attr:`controls` (shape
    ``[n_controls, control_frames]``, a view of the bound input), call :meth:`step`,
    read :attr:`audio` (``[channels, block_size]``). Both arrays are reused: copy
    what you keep. A model that takes audio (an effect, an encoder) reads
    :attr:`audio_in` (``[block_size]``, mono) too; an encoder writes :attr:`latent`
    (``[latents, control_frames]``) instead of :attr:`audio`.

    ``rows`` (a batched note model only, at most its card's ``voices``): how many voices
    to make room for; :attr:`controls_rows` ``[rows, n_controls, control_frames]`` and
    :attr:`audio_rows` ``[rows, channels, block_size]`` hold them, and :meth:`step` runs
    the first :attr:`active` rows. :attr:`controls` and :attr:`audio` are row 0.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        threads: int = 1,
        warmup_blocks: int = 4,
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        rows: int = 1,
    ):
        import onnxruntime as ort

        self.path = os.fspath(path)
        t0 = time.perf_counter()
        self.card = load_card(self.path)
        self.threads = threads
        self.session = self._make_session(ort, threads, cache_dir, use_cache)
        self.specs = check_graph(
            self.card, self.session.get_inputs(), self.session.get_outputs(), where=self.path
        )
        card = self.card
        R = self.rows = max(1, min(int(rows), card.voices))
        self._controls = np.zeros((R, len(card.controls), card.control_frames), np.float32)
        self.controls_rows = self._controls
        self.controls = self._controls[0]
        for i, c in enumerate(card.controls):
            self._controls[:, i, :] = c.default
        self._audio = np.zeros((R, card.channels, card.block_size), np.float32)
        self.audio_rows = self._audio
        self.audio = self._audio[0]
        self._audio_in = np.zeros((1, 1, card.block_size), np.float32)
        self.audio_in = self._audio_in[0, 0]
        if card.latent_output:
            self._latent = np.zeros(self.specs[card.latent_output][0], np.float32)
            self.latent = self._latent[0]

        def rowed(shape):  # one voice's shape → room for R of them (a batched model)
            return (R,) + tuple(shape[1:]) if card.voices > 1 else tuple(shape)

        # Two buffers per state pair: ping-pong between calls.
        self._state = [
            (
                np.zeros(rowed(self.specs[s_in][0]), self.specs[s_in][1]),
                np.zeros(rowed(self.specs[s_in][0]), self.specs[s_in][1]),
            )
            for s_in, _ in card.state
        ]
        names = {card.audio_output, card.latent_output} | {s_out for _, s_out in card.state}
        outputs = self.session.get_outputs()
        self._rowed_scratch = batched_outputs(card, outputs)
        self._scratch = {
            n: np.zeros(rowed(shape) if n in self._rowed_scratch else shape, dtype)
            for n, (shape, dtype) in self.specs.items()
            if n not in names and n in {o.name for o in outputs}
        }
        # per parity, one row's view of every state buffer (row moves and resets, no
        # view made on the audio thread)
        self._row_views = [[[bufs[p][r] for r in range(R)] for bufs in self._state] for p in (0, 1)]
        # one pair of bindings (the two parities) per number of rows run, 1..R
        self._bindings = [[self._bind(p, k) for p in (0, 1)] for k in range(1, R + 1)]
        # onnxruntime's Python run_with_iobinding checks for WebGPU graph capture on every
        # call (1.6 µs per block here, more on a Pi); on the CPU provider that is never on, so call
        # the C++ session directly when this onnxruntime has the usual private names
        sess_c = getattr(self.session, "_sess", None)
        binds_c = [[getattr(b, "_iobinding", None) for b in pair] for pair in self._bindings]
        if sess_c is not None and hasattr(sess_c, "run_with_iobinding") and all(all(p) for p in binds_c):
            self._run, self._by_rows = sess_c.run_with_iobinding, binds_c
        else:
            self._run, self._by_rows = self.session.run_with_iobinding, self._bindings
        self.active = R
        self._bound = self._by_rows[R - 1]
        self._parity = 0
        self.blocks = 0
        self.load_seconds = time.perf_counter() - t0
        self.warmup_rtf: float | None = None  # median block time / block duration, from warm-up
        self.warmup(warmup_blocks)

    # -- construction -----------------------------------------------------------------

    def _make_session(self, ort, threads, cache_dir, use_cache):
        providers = ["CPUExecutionProvider"]
        cached = None
        if use_cache:
            try:
                data = Path(self.path).read_bytes()
                h = hashlib.sha256(data)
                for ext in external_files(data, str(self.path)):  # weights kept beside it
                    h.update((Path(self.path).parent / ext).read_bytes())
                digest = h.hexdigest()[:24]
                key = f"{digest}-ort{ort.__version__}-{platform.machine()}.onnx"
                cached = Path(cache_dir) if cache_dir else default_cache_dir()
                cached = cached / "optimized" / key
            except (OSError, ModelError):
                cached = None
        if cached is not None and cached.exists():
            try:
                # Already optimized offline for this machine: do not optimize again.
                return ort.InferenceSession(str(cached), session_options(threads, optimize=False),
                                            providers=providers)
            except Exception as e:  # a stale or torn cache file: rebuild it
                log.warning("ignoring optimized-model cache %s (%s)", cached, e)
                cached.unlink(missing_ok=True)
        opt_path = None
        if cached is not None:
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                opt_path = str(cached) + f".{os.getpid()}.tmp"
            except OSError as e:
                log.info("optimized-model cache disabled: %s", e)
        sess = open_session(self.path, options=session_options(threads, opt_path))
        if opt_path and os.path.exists(opt_path):
            try:
                os.replace(opt_path, cached)
            except OSError:
                pass
        return sess

    def _bind(self, parity: int, k: int):
        """A binding of the first ``k`` rows of every buffer (all of a mono model's)."""
        b = self.session.io_binding()
        card = self.card
        rowed = card.voices > 1

        def bind(fn, name, arr, rows=rowed):
            view = arr[:k] if rows else arr
            fn(name, "cpu", 0, view.dtype, list(view.shape), view.ctypes.data)

        if card.controls_input:
            bind(b.bind_input, card.controls_input, self._controls, True)
        if card.audio_input:  # (a model that takes audio is never batched)
            bind(b.bind_input, card.audio_input, self._audio_in, False)
        if card.audio_output:
            bind(b.bind_output, card.audio_output, self._audio, True)
        if card.latent_output:
            bind(b.bind_output, card.latent_output, self._latent, False)
        for (s_in, s_out), bufs in zip(card.state, self._state):
            bind(b.bind_input, s_in, bufs[parity])
            bind(b.bind_output, s_out, bufs[1 - parity])
        for name, arr in self._scratch.items():
            bind(b.bind_output, name, arr, name in self._rowed_scratch)
        return b

    # -- the hot path -----------------------------------------------------------------

    def step(self) -> np.ndarray:
        """Run one block: reads :attr:`controls` (and :attr:`audio_in`) and the state,
        writes :attr:`audio` (an encoder: :attr:`latent`)."""
        # No RunOptions: passing any costs ~45 µs per call (onnxruntime 1.32, measured).
        self._run(self._bound[self._parity], None)
        self._parity ^= 1
        self.blocks += 1
        return self.audio

    def set_rows(self, k: int) -> None:
        """Run the first ``k`` rows (1..rows) from the next :meth:`step` on: one store."""
        self._bound = self._by_rows[k - 1]
        self.active = k

    def reset_row(self, r: int) -> None:
        """Row ``r`` back to the initial (zero) state: a new voice starts there."""
        for views in self._row_views[self._parity]:
            views[r].fill(0)

    def move_row(self, src: int, dst: int) -> None:
        """Row ``src``'s state into row ``dst`` (keeping the active voices in the first
        rows when one in between has ended)."""
        for views in self._row_views[self._parity]:
            np.copyto(views[dst], views[src])

    # -- helpers ----------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the initial (zero) state, e.g. after the model emitted NaN."""
        for a, b in self._state:
            a.fill(0)
            b.fill(0)

    def set_defaults(self) -> None:
        for i, c in enumerate(self.card.controls):
            self._controls[:, i, :] = c.default

    def warmup(self, blocks: int) -> None:
        """Run a few blocks so onnxruntime has planned its memory, then reset. With rows,
        ``blocks`` at every row count from the most down to one (each shape planned once);
        :attr:`warmup_rtf` is for all :attr:`rows`."""
        saved = self._controls.copy()
        times = []
        for k in range(self.rows, 0, -1):
            self.set_rows(k)
            for _ in range(max(0, blocks) if k == self.rows else min(max(0, blocks), 2)):
                t0 = time.perf_counter()
                self.step()
                if k == self.rows:
                    times.append(time.perf_counter() - t0)
        if times:  # the last half (the first runs plan memory); the fastest, since being
            # preempted by another process only ever adds time: this is the model's own cost
            tail = times[len(times) // 2:]
            self.warmup_rtf = min(tail) / (self.card.block_size / self.card.sample_rate)
        self.set_rows(self.rows)
        self.reset()
        self._controls[...] = saved
        self._parity = 0
        self.blocks = 0

    def state_arrays(self) -> list[np.ndarray]:
        """The current state (what the next :meth:`step` reads), for tests and tools."""
        return [bufs[self._parity] for bufs in self._state]

    def render(self, controls: np.ndarray) -> np.ndarray:
        """Offline helper: controls ``[n_blocks, n_controls, control_frames]`` → audio
        ``[channels, n_blocks * block_size]``, one call per block, state carried."""
        n = controls.shape[0]
        out = np.empty((self.card.channels, n * self.card.block_size), np.float32)
        bs = self.card.block_size
        for k in range(n):
            self.controls[...] = controls[k]
            out[:, k * bs:(k + 1) * bs] = self.step()
        return out
