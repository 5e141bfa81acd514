"""DDSP-style note voice: a small causal conv net predicts harmonic + noise parameters per frame, and a
harmonic-plus-filtered-noise synthesizer (inside the ONNX graph) turns them into audio.

Streaming rules that make consecutive blocks join without clicks:
- every control/parameter is ramped linearly within a block from the previous frame's value (kept in state);
- oscillator phase is computed in closed form per block, in cycles, wrapped, with the phase state in float64
  (a float32 running sum of per-sample f0 drifts);
- every causal conv keeps its last (k-1)*dilation input frames as explicit state;
- noise comes from two fixed white-noise tables of coprime length indexed by a float64 sample counter, so the
  output is deterministic and repeats only after ~6 hours.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SR = 48000
BLOCK = 256
N_HARM = 48
N_NOISE = 16
FIR_TAPS = 64
HIDDEN = 128
DILATIONS = (1, 2, 4, 8)
KERNEL = 3
NOISE_LENS = (32749, 32719)  # primes: the summed tables repeat after L1*L2 samples


def scaled_sigmoid(x):
    return 2.0 * torch.sigmoid(x) ** math.log(10.0) + 1e-7


def band_firs(n_bands: int, taps: int) -> np.ndarray:
    """Linear-phase band-pass FIRs (differences of Hann-windowed low-passes) that sum to a delayed impulse."""
    edges = np.linspace(0, 0.5, n_bands + 1)  # cycles/sample
    n = np.arange(taps) - (taps - 1) / 2
    win = np.hanning(taps + 2)[1:-1]

    def lowpass(fc):
        return 2 * fc * np.sinc(2 * fc * n) * win

    lps = [np.zeros(taps)] + [lowpass(fc) for fc in edges[1:-1]]
    full = np.zeros(taps)
    full[(taps - 1) // 2] = 1.0  # all-pass (ends at Nyquist)
    lps.append(full)
    return np.stack([lps[i + 1] - lps[i] for i in range(n_bands)]).astype(np.float32)


class CausalConv(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation)
        self.pad = (kernel - 1) * dilation

    def forward(self, x, cache):
        xc = torch.cat([cache, x], -1)
        return self.conv(xc), xc[..., xc.shape[-1] - self.pad :]


class NoteNet(nn.Module):
    """Controls (pitch Hz, loudness dB) per frame -> raw synth parameters per frame. The part that is quantized."""

    def __init__(self, hidden=HIDDEN, dilations=DILATIONS, kernel=KERNEL, n_out=1 + N_HARM + N_NOISE):
        super().__init__()
        self.inp = nn.Conv1d(2, hidden, 1)
        self.convs = nn.ModuleList(CausalConv(hidden, kernel, d) for d in dilations)
        self.out = nn.Conv1d(hidden, n_out, 1)
        self.act = nn.LeakyReLU(0.2)

    def cache_shapes(self):
        return [(1, c.conv.in_channels, c.pad) for c in self.convs]

    def zero_caches(self, batch):
        return [torch.zeros(batch, c.conv.in_channels, c.pad) for c in self.convs]

    def forward(self, pitch_hz, loud_db, caches):
        x = torch.stack([torch.log2(pitch_hz / 440.0), (loud_db + 40.0) / 40.0], 1)  # [B, 2, T]
        h = self.inp(x)
        new = []
        for conv, cache in zip(self.convs, caches):
            y, c = conv(self.act(h), cache)
            h = h + y
            new.append(c)
        return self.out(self.act(h)).transpose(1, 2), new  # [B, T, P]


class Synth(nn.Module):
    """Harmonic + filtered-noise synthesis of T blocks from per-frame parameters (vectorised over frames)."""

    def __init__(self, n_harm=N_HARM, n_noise=N_NOISE, block=BLOCK, sr=SR, taps=FIR_TAPS):
        super().__init__()
        self.n_harm, self.n_noise, self.block, self.sr, self.taps = n_harm, n_noise, block, sr, taps
        n1 = torch.arange(1, block + 1, dtype=torch.float64)
        self.register_buffer("n1", n1, persistent=False)
        self.register_buffer("tri", n1 * (n1 + 1) / (2 * block), persistent=False)
        self.register_buffer("w", (n1 / block).float().reshape(1, 1, block, 1), persistent=False)
        self.register_buffer("w2", torch.cat([1 - self.w, self.w], -1), persistent=False)
        self.register_buffer("k32", torch.arange(1, n_harm + 1, dtype=torch.float32), persistent=False)
        self.register_buffer("fir", torch.from_numpy(band_firs(n_noise, taps)).unsqueeze(1), persistent=False)

    def decode(self, raw, f0):
        """raw [B,T,1+H+N] -> harmonic amplitudes [B,T,H] (masked below Nyquist), noise gains [B,T,N]."""
        amp = scaled_sigmoid(raw[..., :1])
        mask = (self.k32 * f0.unsqueeze(-1) < self.sr / 2).float()
        dist = torch.softmax(raw[..., 1 : 1 + self.n_harm], -1) * mask
        dist = dist / (dist.sum(-1, keepdim=True) + 1e-7)
        noise = scaled_sigmoid(raw[..., 1 + self.n_harm :] - 5.0)
        return amp * dist, noise

    def forward(self, f0, harm, noise, prev, phase, noise_src):
        """f0 [B,T] Hz; harm [B,T,H]; noise [B,T,N]; prev [B,1+H+N] (last frame's f0|harm|noise);
        phase [B,1] float64 cycles; noise_src [B, T*block + taps - 1] white noise.
        Returns audio [B, T*block], new prev, new phase."""
        B, T = f0.shape
        H = self.n_harm
        fe = f0.detach()  # pitch is a control: no gradient flows through the oscillators
        fs = torch.cat([prev[:, :1], f0[:, :-1]], 1).detach()
        fs = torch.where(fs > 0, fs, fe)  # initial state: start at the target pitch, no chirp from 0 Hz
        hs = torch.cat([prev[:, None, 1 : 1 + H], harm[:, :-1]], 1)
        ns = torch.cat([prev[:, None, 1 + H :], noise[:, :-1]], 1)
        # closed-form phase in cycles: f ramps linearly from fs to fe over the block
        fs64, fe64 = fs.double().unsqueeze(-1), fe.double().unsqueeze(-1)
        cyc = (self.n1 * fs64 + (fe64 - fs64) * self.tri) / self.sr  # [B,T,N]
        per_frame = cyc[..., -1]
        start = phase + torch.cumsum(per_frame, 1) - per_frame  # exclusive cumsum, [B,T]
        phi = cyc + start.unsqueeze(-1)
        phi = phi - torch.floor(phi)
        hp = phi.float().unsqueeze(-1) * self.k32  # [B,T,N,H]; phi is wrapped to [0,1) so float32 is exact enough
        hp = hp - torch.floor(hp)
        sines = torch.sin(2 * math.pi * hp)
        # A harmonic above Nyquist at the block's start or end has amplitude 0 at that end and ramps in/out
        # across the block: muting it for the whole block would step its amplitude (a click) at a rising pitch.
        m0 = (self.k32 * fs.unsqueeze(-1) < self.sr / 2).float()
        m1 = (self.k32 * fe.unsqueeze(-1) < self.sr / 2).float()
        ends = torch.stack([hs * m0, harm * m1], -1)  # [B,T,H,2]: amplitudes at block start and end
        harmonic = (torch.matmul(sines, ends) * self.w2).sum(-1)  # [B,T,N], amplitudes ramped within the block
        harmonic = harmonic.reshape(B, T * self.block)
        bands = F.conv1d(noise_src.unsqueeze(1), self.fir)  # [B,N,T*block]
        g = ns.unsqueeze(2) * (1 - self.w) + noise.unsqueeze(2) * self.w  # [B,T,block,N]
        g = g.reshape(B, T * self.block, self.n_noise).transpose(1, 2)
        audio = harmonic + (bands * g).sum(1)
        last = start + per_frame if T == 1 else start[:, -1:] + per_frame[:, -1:]
        new_phase = last - torch.floor(last)
        new_prev = torch.cat([fe[:, -1:], harm[:, -1], noise[:, -1]], 1)
        return audio, new_prev, new_phase


class NoteVoice(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = NoteNet()
        self.synth = Synth()

    def params(self, pitch, loud, caches):
        raw, caches = self.net(pitch, loud, caches)
        harm, noise = self.synth.decode(raw, pitch)
        return harm, noise, caches

    def train_forward(self, pitch, loud, warm: int, noise_src, phase):
        """pitch/loud [B, warm+T]; frames before `warm` only warm the convs; frame warm-1 is the ramp start."""
        harm, noise, _ = self.params(pitch, loud, self.net.zero_caches(pitch.shape[0]))
        prev = torch.cat([pitch[:, warm - 1 : warm], harm[:, warm - 1], noise[:, warm - 1]], 1)
        audio, _, _ = self.synth(pitch[:, warm:], harm[:, warm:], noise[:, warm:], prev, phase, noise_src)
        return audio


def noise_tables(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for n in NOISE_LENS:
        t = rng.standard_normal(n)
        out.append(((t - t.mean()) / t.std() / math.sqrt(2)).astype(np.float32))
    return out


def filtered_table(table: np.ndarray, fir: np.ndarray) -> np.ndarray:
    """``table`` (a circular white-noise table) through each band FIR: ``[len(table), bands]``.

    Filtering is linear, so filtering the circular table once equals filtering the samples
    read from it: ``out[j, b] = Σ_k fir[b, k] · table[(j - taps + 1 + k) mod L]`` is what
    ``conv1d`` over the samples ending at ``j`` gives. Computed in float64."""
    taps = fir.shape[1]
    ext = np.concatenate([table[len(table) - (taps - 1):], table]).astype(np.float64)
    return np.stack([np.correlate(ext, f.astype(np.float64), "valid") for f in fir], 1).astype(np.float32)


class StreamSynth(nn.Module):
    """:class:`Synth` for streaming: the same samples from the net's raw output, with fewer and cheaper
    graph nodes, since per-node dispatch, not arithmetic, is most of a 256-sample block's time
    (onnxruntime: ~0.6 µs a node on an x86 server core, several times that on a Pi):

    - the band-filtered noise is read from tables filtered once at export (:func:`filtered_table`),
      not filtered per block: two gathers replace gather, add and a 64-tap 16-band conv;
    - harmonics and noise bands are one basis ``[block, H+N]`` that meets the block's start and end
      gains in one MatMul, and one ramp-and-sum makes the block;
    - the decoder's amplitudes at the block's end are already zero above Nyquist (its mask at the
      same pitch), so only the start is masked; the noise bands have harmonic number 0 there,
      which the mask always passes;
    - with one frame per call there is no running sum of phase across frames.

    Under the module name ``synth``, so :func:`pi_synth.tools.quantize.default_exclude` keeps it float32."""

    def __init__(self, synth: Synth, frames: int):
        super().__init__()
        self.frames, self.n_harm, self.n_noise, self.sr = frames, synth.n_harm, synth.n_noise, synth.sr
        self.decode = synth.decode
        t1, t2 = noise_tables()
        fir = synth.fir[:, 0].numpy()
        self.register_buffer("f1", torch.from_numpy(filtered_table(t1, fir)))  # [L1, N]
        self.register_buffer("f2", torch.from_numpy(filtered_table(t2, fir)))
        self.register_buffer("offs", torch.arange(frames * BLOCK, dtype=torch.float64).reshape(1, frames, BLOCK))
        n1, tri = synth.n1, synth.tri
        self.register_buffer("from_start", (n1 - tri) / synth.sr)  # cycles per Hz of the start pitch
        self.register_buffer("from_end", tri / synth.sr)
        self.register_buffer("k32", synth.k32)
        self.register_buffer("k_all", torch.cat([synth.k32, torch.zeros(synth.n_noise)]))
        self.register_buffer("w2", synth.w2)
        self.period = float(NOISE_LENS[0] * NOISE_LENS[1])

    def forward(self, pitch, raw, prev, phase, noise_pos):
        """pitch [1,T] Hz; raw [1,T,1+H+N] (the net's output); prev [1,1+H+N]; phase, noise_pos [1,1]
        float64. Returns audio [1, T*block], new prev, phase and noise position."""
        T, n = self.frames, self.frames * BLOCK
        harm, noise = self.decode(raw, pitch)
        gains = torch.cat([harm, noise], -1)  # [1,T,H+N]: each frame's gains, reached at its block's end
        idx = noise_pos + self.offs
        bands = self.f1[torch.fmod(idx, NOISE_LENS[0]).long()] + self.f2[torch.fmod(idx, NOISE_LENS[1]).long()]  # [1,T,block,N]
        if T == 1:
            fs, start, g0 = prev[:, :1], phase, prev[:, None, 1:]
        else:
            fs = torch.cat([prev[:, :1], pitch[:, :-1]], 1)
            g0 = torch.cat([prev[:, None, 1:], gains[:, :-1]], 1)
        fs = torch.where(fs > 0, fs, pitch)  # initial state: start at the target pitch, no chirp from 0 Hz
        cyc = fs.double().unsqueeze(-1) * self.from_start + pitch.double().unsqueeze(-1) * self.from_end
        per_frame = cyc[..., -1]
        if T > 1:
            start = phase + torch.cumsum(per_frame, 1) - per_frame
        phi = cyc + start.unsqueeze(-1)
        phi = phi - torch.floor(phi)
        hp = phi.float().unsqueeze(-1) * self.k32  # [1,T,block,H]; phi is wrapped, so float32 is exact enough
        hp = hp - torch.floor(hp)
        basis = torch.cat([torch.sin(2 * math.pi * hp), bands], -1)
        g0 = g0 * (self.k_all * fs.unsqueeze(-1) < self.sr / 2).float()  # above Nyquist at the start: 0 there
        audio = (torch.matmul(basis, torch.stack([g0, gains], -1)) * self.w2).sum(-1)
        last = start + per_frame if T == 1 else start[:, -1:] + per_frame[:, -1:]
        pos = noise_pos + n
        return (audio.reshape(1, 1, n), torch.cat([pitch[:, -1:], gains[:, -1]], 1), last - torch.floor(last),
                torch.fmod(pos, self.period))


class StreamingNoteVoice(nn.Module):
    """One call per ``frames`` control frames (``frames`` × 256 samples), all state explicit: the
    graph that is exported to ONNX. The synthesis is vectorised over frames, so a call of k frames
    makes the same samples as k calls of one (the shipped file: one). It makes the samples the
    training-time :class:`Synth` makes (the export checks it), through :class:`StreamSynth`."""

    PMIN, PMAX, LMIN, LMAX = 20.0, 8000.0, -120.0, 12.0

    def __init__(self, voice: NoteVoice, frames: int = 1):
        super().__init__()
        self.net = voice.net
        self.synth = StreamSynth(voice.synth, frames)
        self.frames = frames

    def state_specs(self):
        """[(in_name, out_name, shape, dtype)]"""
        p = 1 + N_HARM + N_NOISE
        specs = [("phase_in", "phase_out", (1, 1), torch.float64), ("noise_pos_in", "noise_pos_out", (1, 1), torch.float64),
                 ("prev_in", "prev_out", (1, p), torch.float32)]
        for i, shp in enumerate(self.net.cache_shapes()):
            specs.append((f"cache{i}_in", f"cache{i}_out", shp, torch.float32))
        return specs

    def forward(self, controls, phase, noise_pos, prev, c0, c1, c2, c3):
        pitch = torch.clamp(controls[:, 0], self.PMIN, self.PMAX)  # [1, frames]
        loud = torch.clamp(controls[:, 1], self.LMIN, self.LMAX)
        raw, caches = self.net(pitch, loud, [c0, c1, c2, c3])
        audio, new_prev, new_phase, pos = self.synth(pitch, raw, prev, phase, noise_pos)
        return (audio, new_phase, pos, new_prev, *caches)
