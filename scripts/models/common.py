"""Shared helpers for the model scripts: FluidSynth rendering, f0/loudness analysis, spectral distance.

Everything here is deterministic (fixed seeds, no downloads). The only data source is Debian's
``fluid-soundfont-gm`` (FluidR3_GM.sf2, MIT licence) rendered with ``fluidsynth``.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import tempfile
from pathlib import Path

import mido
import numpy as np

SR = 48000
SF2 = os.environ.get("PI_SYNTH_SF2", "/usr/share/sounds/sf2/FluidR3_GM.sf2")
ROOT = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("PI_SYNTH_WORK", ROOT / "work"))
TICKS_PER_SECOND = 960  # tempo 500000 us/beat and 480 ticks/beat


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def midi_from_events(events: list[tuple[float, mido.Message]]) -> mido.MidiFile:
    """Build a one-track MIDI file from (seconds, message) pairs (any order)."""
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    now = 0
    for t, msg in sorted(events, key=lambda e: e[0]):
        tick = int(round(t * TICKS_PER_SECOND))
        track.append(msg.copy(time=max(0, tick - now)))
        now = max(now, tick)
    track.append(mido.MetaMessage("end_of_track", time=TICKS_PER_SECOND))
    return mid


def render_midi(mid: mido.MidiFile, seconds: float | None = None) -> np.ndarray:
    """Render with FluidSynth (dry: no reverb, no chorus), return mono float32 at SR."""
    import scipy.io.wavfile as wavfile

    if not Path(SF2).exists():
        raise SystemExit(f"{SF2} not found: apt-get install fluidsynth fluid-soundfont-gm")
    with tempfile.TemporaryDirectory() as tmp:
        mpath, wpath = Path(tmp, "in.mid"), Path(tmp, "out.wav")
        mid.save(mpath)
        subprocess.run(
            ["fluidsynth", "-ni", "-g", "1.0", "-R", "0", "-C", "0", "-F", str(wpath), "-r", str(SR), SF2, str(mpath)],
            check=True,
            capture_output=True,
        )
        sr, x = wavfile.read(wpath)
    assert sr == SR, sr
    x = x.astype(np.float32) / 32768.0
    if x.ndim == 2:
        x = x.mean(axis=1)
    if seconds is not None:
        n = int(seconds * SR)
        x = np.pad(x, (0, max(0, n - len(x))))[:n]
    return x.astype(np.float32)


def frame_centers(n_frames: int, hop: int) -> np.ndarray:
    """Frame i describes the END of block i (sample (i+1)*hop): the synth ramps towards it."""
    return (np.arange(n_frames) + 1) * hop


# The note voice's loudness looks no further than the end of its block. A window centred on the
# block end (1024 samples: 512 of lookahead) rose two blocks before each onset in the data, so the
# model learned to answer a loudness step one block late: 263 samples from a note-on to its first
# sound. With no lookahead the model must sound in the block where loudness rises.
NOTE_LOUDNESS = {"win": 512, "lookahead": 0}


def loudness_db(x: np.ndarray, hop: int, win: int = 1024, floor: float = -80.0,
                lookahead: int | None = None) -> np.ndarray:
    """Plain dB RMS (dBFS) of a Hann `win` window per frame, clipped at `floor`. The window reaches
    `lookahead` samples past the frame's block end (default win/2: centred on it)."""
    n_frames = len(x) // hop
    ahead = win // 2 if lookahead is None else int(lookahead)
    xp = np.pad(x, (win, win))
    idx = frame_centers(n_frames, hop)[:, None] + np.arange(win)[None, :] + ahead
    w = np.hanning(win).astype(np.float32)
    frames = xp[idx] * w
    rms = np.sqrt((frames**2).sum(1) / (w**2).sum() + 1e-12)
    return np.maximum(20 * np.log10(rms), floor).astype(np.float32)


def yin_f0(x: np.ndarray, hop: int, expected_hz: np.ndarray, win: int = 1536, search_semitones: float = 1.5,
           threshold: float = 0.35, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """YIN f0 per frame, searched only within +-search_semitones of the expected pitch.

    The note number is only a prior: FluidR3's flute has vibrato, so the returned f0 follows the audio.
    Frames where no clear period is found fall back to the expected pitch. Returns (f0, periodicity).
    """
    n_frames = len(expected_hz)
    max_lag = int(np.ceil(SR / (expected_hz.min() * 2 ** (-search_semitones / 12)))) + 2
    span = win + max_lag
    xp = np.pad(x, (span, span))
    centers = frame_centers(n_frames, hop) + span - win // 2 - max_lag // 2
    f0 = np.empty(n_frames, np.float32)
    per = np.empty(n_frames, np.float32)
    nfft = 1 << int(np.ceil(np.log2(span * 2)))
    for s in range(0, n_frames, chunk):
        c = centers[s : s + chunk]
        fr = xp[c[:, None] + np.arange(span)[None, :]].astype(np.float64)
        # d(tau) = sum_{j<win} (x_j - x_{j+tau})^2 via FFT cross-correlation
        a = fr[:, :win]
        F = np.fft.rfft(fr, nfft)
        A = np.fft.rfft(a, nfft)
        r = np.fft.irfft(np.conj(A) * F, nfft)[:, : max_lag + 1]
        e0 = (a**2).sum(1, keepdims=True)
        cs = np.concatenate([np.zeros((len(fr), 1)), np.cumsum(fr**2, 1)], 1)
        etau = cs[:, np.arange(max_lag + 1) + win] - cs[:, np.arange(max_lag + 1)]
        d = e0 + etau - 2 * r
        d[:, 0] = 0
        cm = d[:, 1:] * np.arange(1, max_lag + 1) / (np.cumsum(d[:, 1:], 1) + 1e-12)
        cm = np.concatenate([np.ones((len(fr), 1)), cm], 1)
        exp = expected_hz[s : s + chunk]
        lo = np.floor(SR / (exp * 2 ** (search_semitones / 12))).astype(int)
        hi = np.ceil(SR / (exp * 2 ** (-search_semitones / 12))).astype(int)
        for i in range(len(fr)):
            seg = cm[i, lo[i] : hi[i] + 1]
            k = int(np.argmin(seg))
            tau = lo[i] + k
            if 0 < k < len(seg) - 1:
                y0, y1, y2 = seg[k - 1], seg[k], seg[k + 1]
                den = y0 - 2 * y1 + y2
                tau = tau + (0.5 * (y0 - y2) / den if den > 1e-12 else 0.0)
            per[s + i] = 1 - seg[k]
            f0[s + i] = SR / tau if seg[k] < threshold else exp[i]
    return f0, per


def saw_baseline(f0: np.ndarray, loud: np.ndarray, hop: int, **loudness_kw) -> np.ndarray:
    """Band-limited sawtooth at the given f0 and loudness (dB RMS per frame, measured the way
    ``loudness_kw`` says, as the data's was): the reference baseline."""
    n = len(f0) * hop
    t_frames = frame_centers(len(f0), hop)
    f = np.interp(np.arange(n), t_frames, f0)
    phase = np.cumsum(f / SR)
    y = np.zeros(n)
    for k in range(1, int(SR / 2 / f.min()) + 1):
        mask = (k * f) < SR / 2
        y += mask * np.sin(2 * np.pi * k * phase) / k
    y *= 2 / np.pi
    ly = loudness_db(y.astype(np.float32), hop, floor=-200, **loudness_kw)
    gain_db = np.interp(np.arange(n), t_frames, loud - ly)
    gain = 10 ** (gain_db / 20) * np.interp(np.arange(n), t_frames, (loud > -79.9).astype(float))
    return (y * gain).astype(np.float32)


FFT_SIZES = (2048, 1024, 512, 256, 128, 64)


def spectral_distance(a, b, fft_sizes=FFT_SIZES, eps: float = 1e-5):
    """Multi-scale spectral distance (DDSP loss): sum over FFT sizes of mean|S-S'| + mean|log S - log S'|.

    Works on torch tensors [batch, samples] (differentiable) or numpy arrays (returns a float).
    """
    import torch

    as_np = isinstance(a, np.ndarray)
    if as_np:
        a = torch.from_numpy(np.asarray(a, np.float32)).reshape(1, -1)
        b = torch.from_numpy(np.asarray(b, np.float32)).reshape(1, -1)
    total = 0.0
    for n in fft_sizes:
        win = torch.hann_window(n, device=a.device)
        sa = torch.stft(a, n, n // 4, window=win, return_complex=True, center=True).abs()
        sb = torch.stft(b, n, n // 4, window=win, return_complex=True, center=True).abs()
        total = total + (sa - sb).abs().mean() + (torch.log(sa + eps) - torch.log(sb + eps)).abs().mean()
    return float(total) if as_np else total


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
