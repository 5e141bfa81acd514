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
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from pi_synth.model.card import check_graph, load_card
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
    what you keep.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        threads: int = 1,
        warmup_blocks: int = 4,
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
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
        self._controls = np.zeros((1, len(card.controls), card.control_frames), np.float32)
        self.controls = self._controls[0]
        for i, c in enumerate(card.controls):
            self.controls[i, :] = c.default
        self._audio = np.zeros((1, card.channels, card.block_size), np.float32)
        self.audio = self._audio[0]
        # Two buffers per state pair: ping-pong between calls.
        self._state = [
            (
                np.zeros(self.specs[s_in][0], self.specs[s_in][1]),
                np.zeros(self.specs[s_in][0], self.specs[s_in][1]),
            )
            for s_in, _ in card.state
        ]
        names = {card.audio_output} | {s_out for _, s_out in card.state}
        self._scratch = {
            n: np.zeros(shape, dtype) for n, (shape, dtype) in self.specs.items()
            if n not in names and n in {o.name for o in self.session.get_outputs()}
        }
        self._bindings = [self._bind(p) for p in (0, 1)]
        # onnxruntime's Python run_with_iobinding checks for WebGPU graph capture on every
        # call (1.6 µs per block here, more on a Pi); on the CPU provider that is never on, so call
        # the C++ session directly when this onnxruntime has the usual private names
        sess_c = getattr(self.session, "_sess", None)
        binds_c = [getattr(b, "_iobinding", None) for b in self._bindings]
        if sess_c is not None and hasattr(sess_c, "run_with_iobinding") and all(binds_c):
            self._run, self._bound = sess_c.run_with_iobinding, binds_c
        else:
            self._run, self._bound = self.session.run_with_iobinding, self._bindings
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
                digest = hashlib.sha256(Path(self.path).read_bytes()).hexdigest()[:24]
                key = f"{digest}-ort{ort.__version__}-{platform.machine()}.onnx"
                cached = Path(cache_dir) if cache_dir else default_cache_dir()
                cached = cached / "optimized" / key
            except OSError:
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

    def _bind(self, parity: int):
        b = self.session.io_binding()
        card = self.card

        def bind(fn, name, arr):
            fn(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)

        bind(b.bind_input, card.controls_input, self._controls)
        bind(b.bind_output, card.audio_output, self._audio)
        for (s_in, s_out), bufs in zip(card.state, self._state):
            bind(b.bind_input, s_in, bufs[parity])
            bind(b.bind_output, s_out, bufs[1 - parity])
        for name, arr in self._scratch.items():
            bind(b.bind_output, name, arr)
        return b

    # -- the hot path -----------------------------------------------------------------

    def step(self) -> np.ndarray:
        """Run one block: reads :attr:`controls` and the state, writes :attr:`audio`."""
        # No RunOptions: passing any costs ~45 µs per call (onnxruntime 1.32, measured).
        self._run(self._bound[self._parity], None)
        self._parity ^= 1
        self.blocks += 1
        return self.audio

    # -- helpers ----------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the initial (zero) state, e.g. after the model emitted NaN."""
        for a, b in self._state:
            a.fill(0)
            b.fill(0)

    def set_defaults(self) -> None:
        for i, c in enumerate(self.card.controls):
            self.controls[i, :] = c.default

    def warmup(self, blocks: int) -> None:
        """Run a few blocks so onnxruntime has planned its memory, then reset."""
        saved = self.controls.copy()
        times = []
        for _ in range(max(0, blocks)):
            t0 = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - t0)
        if times:  # the last half (the first runs plan memory); the fastest, since being
            # preempted by another process only ever adds time: this is the model's own cost
            tail = times[len(times) // 2:]
            self.warmup_rtf = min(tail) / (self.card.block_size / self.card.sample_rate)
        self.reset()
        self.controls[...] = saved
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
