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


def noise_tables(seed: int = 0, lens=None) -> list[np.ndarray]:
    """Circular white-noise tables of coprime lengths (``NOISE_LENS`` unless given)."""
    rng = np.random.default_rng(seed)
    out = []
    for n in lens or NOISE_LENS:
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


# ------------------------------------------------------------------------------------------------ streaming
# The exported graph: voices are its batch rows (a dynamic leading dimension, each row with its own state),
# and four timbre controls act as DSP after the network, so they need no training.

TABLE = 1024  # wavetable length (a cycle): linear interpolation keeps harmonic k's images ~(k/TABLE)² below it
LN10_20 = math.log(10.0) / 20.0  # dB -> natural-log amplitude
# graph-side clamps (wider than the card's knob ranges: the card says what a knob sweeps, these keep
# anything a caller feeds finite and bounded; the network never heard the flute louder than about -12 dB,
# and above -5 dB its output grows past any use)
CLAMPS = {"pitch": (20.0, 8000.0), "loudness": (-120.0, -5.0), "breath": (-60.0, 30.0),
          "brightness": (-24.0, 24.0), "vibrato_depth": (0.0, 200.0), "vibrato_rate": (0.0, 20.0)}
CONTROLS = tuple(CLAMPS)  # the order of the controls input's rows
VIBRATO_GATE_DB, VIBRATO_DELAY, VIBRATO_FADE = -70.0, 0.25, 0.2  # dB; seconds after the note starts


class _GatherRows(torch.autograd.Function):
    """``out[v, t, s] = data[v, t, index[v, t, s, 0]]``: one ONNX GatherND (batch_dims 2), where
    torch's own export of it would be Expand + GatherElements, several times slower per voice."""

    @staticmethod
    def forward(ctx, data, index):
        return torch.gather(data, 2, index.expand(-1, -1, -1, data.shape[-1]))

    @staticmethod
    def symbolic(g, data, index):
        return g.op("GatherND", data, index, batch_dims_i=2)


def gather_rows(data, index):
    return _GatherRows.apply(data, index)


class StreamConv(nn.Module):
    """A :class:`CausalConv` (kernel k, dilation d) as one MatMul over its k taps, channels last.

    With voices as the batch and one frame per call, onnxruntime's Conv runs one small GEMV per
    voice; gathering the taps (``[voices, frames, k·C]``) makes all voices one GEMM."""

    def __init__(self, conv: CausalConv, frames: int):
        super().__init__()
        w = conv.conv.weight.detach()  # [out, in, k]
        self.k, self.c = w.shape[2], w.shape[1]
        self.pad, self.frames = conv.pad, frames
        self.weight = nn.Parameter(w.permute(2, 1, 0).reshape(self.k * self.c, w.shape[0]).clone())  # row j·C + c
        self.bias = nn.Parameter(conv.conv.bias.detach().clone())
        d = conv.conv.dilation[0]
        self.register_buffer("taps", (torch.arange(frames)[:, None] + torch.arange(self.k)[None] * d).reshape(-1),
                             persistent=False)

    def forward(self, a, cache):
        """a [V, T, C]; cache [V, pad, C] (the last pad input frames) -> [V, T, C], new cache."""
        xc = torch.cat([cache, a], 1)
        taps = xc[:, self.taps].reshape(-1, self.frames, self.k * self.c)
        return torch.matmul(taps, self.weight) + self.bias, xc[:, self.frames :]


class StreamLinear(nn.Module):
    """A 1×1 Conv1d as a MatMul, channels last."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach()[:, :, 0].t().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())

    def forward(self, x):
        return torch.matmul(x, self.weight) + self.bias


class StreamNet(nn.Module):
    """:class:`NoteNet` for streaming, channels last, voices as the batch: the same function."""

    def __init__(self, net: NoteNet, frames: int):
        super().__init__()
        self.inp = StreamLinear(net.inp)
        self.convs = nn.ModuleList(StreamConv(c, frames) for c in net.convs)
        self.out = StreamLinear(net.out)
        self.act = nn.LeakyReLU(0.2)

    def cache_shapes(self):
        """Per voice: [pad, channels] (the leading voices dimension is added by the exporter)."""
        return [(c.pad, c.c) for c in self.convs]

    def forward(self, pitch, loud, caches):
        x = torch.stack([torch.log2(pitch / 440.0), (loud + 40.0) / 40.0], -1)  # [V, T, 2]
        h = self.inp(x)
        new = []
        for conv, cache in zip(self.convs, caches):
            y, c = conv(self.act(h), cache)
            h = h + y
            new.append(c)
        return self.out(self.act(h)), new  # [V, T, 1+H+N]


class StreamSynth(nn.Module):
    """:class:`Synth` for streaming, voices as the batch, with the timbre controls, made cheap per voice
    (onnxruntime's per-node cost is paid once per call, the arithmetic once per voice):

    - the harmonics are read from a wavetable: each block's start and end harmonic amplitudes become
      two single-cycle tables (one MatMul with a fixed sine basis), read at the oscillator phase with
      linear interpolation: 4 table reads a sample replace 48 sines. A sum of sines is odd about half
      its cycle, so only half a cycle is built and the other half read mirrored and negated (half the
      MACs). The export measures the result against the 48 sines (about 95 dB SNR at TABLE = 1024,
      and the same held-out spectral distance; 256 and 512 cost 0.09 and 0.01 of it);
    - the band-filtered noise is read from tables filtered once at export (:func:`filtered_table`), at
      rows counted from one modulo per voice;
    - timbre: ``brightness`` tilts the harmonic amplitudes by dB per octave of harmonic number and
      rescales them to the same power (loudness stays put); ``breath`` is a dB gain on the noise
      bands, up to 6 dB under the tone at most (so no knob setting, even at loudness the network never
      saw, makes the noise explode). Both act on the gains at the block's end, which ramp from the previous block's (in
      ``prev``), so moving a knob never steps the sound.

    Under the module name ``synth``, so :func:`pi_synth.tools.quantize.default_exclude` keeps it float32."""

    def __init__(self, synth: Synth, frames: int, table: int = TABLE):
        super().__init__()
        self.frames, self.n_harm, self.n_noise, self.sr, self.table = frames, synth.n_harm, synth.n_noise, synth.sr, table
        self.decode = synth.decode
        t1, t2 = noise_tables()
        fir = synth.fir[:, 0].numpy()
        n = frames * BLOCK
        # each filtered table runs on by one call's samples past its end (a copy of its start), so a call
        # reads rows start .. start+n-1 with start = position mod length, and no sample needs a modulo
        f1, f2 = (torch.from_numpy(filtered_table(t, fir)) for t in (t1, t2))
        self.register_buffer("f1", torch.cat([f1, f1[:n]]))  # [L1 + n, N]
        self.register_buffer("f2", torch.cat([f2, f2[:n]]))
        self.register_buffer("offs", torch.arange(n, dtype=torch.float32).reshape(1, frames, BLOCK))
        n1, tri = synth.n1, synth.tri
        self.register_buffer("from_start", (n1 - tri) / synth.sr)  # cycles per Hz of the start pitch
        self.register_buffer("from_end", tri / synth.sr)
        k = torch.arange(1, synth.n_harm + 1, dtype=torch.float64)
        rows = table // 2 + 1  # half a cycle: a sum of sines is odd about it (t[TABLE - x] = -t[x])
        ph = (torch.arange(rows)[:, None] + torch.arange(2)[None]).reshape(-1).double() / table  # i, i+1 for each i
        sines = torch.sin(2 * math.pi * k[:, None] * ph[None]).float().reshape(synth.n_harm, rows, 2, 1)
        # [start gains | end gains] @ basis -> a row per table entry i: (start[i], end[i], start[i+1], end[i+1])
        basis = torch.zeros(2, synth.n_harm, rows, 2, 2)
        basis[0, ..., 0:1], basis[1, ..., 1:2] = sines, sines
        self.register_buffer("basis", basis.reshape(2 * synth.n_harm, rows * 4))  # [2H, (TABLE/2+1)·4]
        w = synth.w2[0, 0, :, 1]  # the end gains' weight at each sample of the block
        # a sample is row · (at + frac · slope): the table's two entries meet the block's two gains
        self.register_buffer("at", torch.stack([1 - w, w, 0 * w, 0 * w], -1))  # [block, 4]
        self.register_buffer("slope", torch.stack([w - 1, -w, 1 - w, w], -1))
        self.register_buffer("tilt", (torch.log2(k) * LN10_20).float())  # ln-amplitude per dB/octave
        self.register_buffer("k_all", torch.cat([synth.k32, torch.zeros(synth.n_noise)]))
        self.register_buffer("w2", synth.w2[0, 0])  # [block, 2]: weights of the start and end gains
        self.period = float(NOISE_LENS[0] * NOISE_LENS[1])

    def forward(self, pitch, raw, breath, brightness, prev, phase, noise_pos):
        """pitch [V,T] Hz (with vibrato); raw [V,T,1+H+N] (the net's output); breath [V,T] dB;
        brightness [V,T] dB/octave; prev [V,1+H+N]; phase, noise_pos [V,1] float64.
        Returns audio [V, 1, T*block], new prev, phase and noise position."""
        T, H, n = self.frames, self.n_harm, self.frames * BLOCK
        harm, noise = self.decode(raw, pitch)
        tilted = harm * torch.exp(brightness.unsqueeze(-1) * self.tilt)
        power = (harm * harm).sum(-1, keepdim=True) / torch.clamp((tilted * tilted).sum(-1, keepdim=True), min=1e-30)
        harm = tilted * torch.sqrt(power)  # at 0 dB/octave: exactly the trained amplitudes
        breathy = noise * torch.exp(breath.unsqueeze(-1) * LN10_20)
        # breath brings the noise up to 6 dB under the tone at most (or leaves it where the network put it):
        # a band's noise has 1/N of unit power, a harmonic of amplitude a has a²/2
        ceiling = torch.maximum((noise * noise).sum(-1, keepdim=True), (self.n_noise / 8) * (harm * harm).sum(-1, keepdim=True))
        power = (breathy * breathy).sum(-1, keepdim=True)
        noise = breathy * torch.sqrt(torch.clamp(ceiling / torch.clamp(power, min=1e-30), max=1.0))
        gains = torch.cat([harm, noise], -1)  # [V,T,H+N]: each frame's gains, reached at its block's end
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
        phi = phi - torch.floor(phi)  # [V,T,block] cycles, wrapped
        # A harmonic above Nyquist at the block's start has amplitude 0 there (the decoder already
        # zeroed it at the end): it ramps in or out across the block, no step at a moving pitch.
        g0 = g0 * (self.k_all * fs.unsqueeze(-1) < self.sr / 2).float()
        half = self.table // 2
        tab = torch.matmul(torch.cat([g0[..., :H], harm], -1), self.basis).reshape(-1, T, half + 1, 4)
        x = half - phi.float() * self.table  # the second half cycle reads the first, mirrored and negated
        xr = half - torch.abs(x)  # in [0, half]: rows up to half, entries up to half + 1
        i = torch.floor(xr)
        rows = gather_rows(tab, i.long().unsqueeze(-1))  # [V,T,block,4]
        harmonic = torch.sign(x) * ((rows * self.at).sum(-1) + (xr - i) * (rows * self.slope).sum(-1))  # [V,T,block]
        rows = [(torch.fmod(noise_pos, m).float().unsqueeze(-1) + self.offs).long() for m in NOISE_LENS]  # [V,T,block]
        bands = self.f1[rows[0]] + self.f2[rows[1]]  # float32 counts rows exactly: they stay below 2^24
        noisy = torch.matmul(bands, torch.stack([g0[..., H:], noise], -1))  # [V,T,block,2]
        audio = harmonic + (noisy * self.w2).sum(-1)  # ramp from the start gains to the end gains
        last = start + per_frame if T == 1 else start[:, -1:] + per_frame[:, -1:]
        pos = noise_pos + n
        return (audio.reshape(-1, 1, n), torch.cat([pitch[:, -1:], gains[:, -1]], 1), last - torch.floor(last),
                torch.fmod(pos, self.period))


class StreamingNoteVoice(nn.Module):
    """One call per ``frames`` control frames (``frames`` × 256 samples) for any number of voices (the
    batch rows), all state explicit: the graph that is exported to ONNX. A call of k frames makes the
    same samples as k calls of one (the shipped file: one); row v depends only on row v's controls
    and state.

    Controls (rows of ``controls [voices, 6, frames]``, :data:`CONTROLS`): pitch (Hz), loudness (dB),
    breath (dB on the noise), brightness (dB/octave), vibrato_depth (cents), vibrato_rate (Hz).
    Vibrato: an LFO whose phase is a float64 state like the oscillator's, so blocks join; it fades in
    as the data's does (FluidR3's flute starts its vibrato about 0.3 s into a note): ``vibrato_age``
    counts the seconds a voice has sounded (loudness above :data:`VIBRATO_GATE_DB`; legato keeps
    counting). The network hears the pitch with its vibrato, as it heard the data's own in its f0."""

    def __init__(self, voice: NoteVoice, frames: int = 1, table: int = TABLE):
        super().__init__()
        self.net = StreamNet(voice.net, frames)
        self.synth = StreamSynth(voice.synth, frames, table)
        self.frames = frames

    def state_specs(self):
        """[(in_name, out_name, shape per voice, dtype)]"""
        p = 1 + N_HARM + N_NOISE
        specs = [("phase_in", "phase_out", (1,), torch.float64), ("noise_pos_in", "noise_pos_out", (1,), torch.float64),
                 ("vibrato_phase_in", "vibrato_phase_out", (1,), torch.float64),
                 ("vibrato_age_in", "vibrato_age_out", (1,), torch.float32),
                 ("prev_in", "prev_out", (p,), torch.float32)]
        for i, shp in enumerate(self.net.cache_shapes()):
            specs.append((f"cache{i}_in", f"cache{i}_out", shp, torch.float32))
        return specs

    def forward(self, controls, phase, noise_pos, vibrato_phase, vibrato_age, prev, c0, c1, c2, c3):
        c = [torch.clamp(controls[:, i], *CLAMPS[name]) for i, name in enumerate(CONTROLS)]  # each [V, frames]
        pitch, loud, breath, brightness, depth, rate = c
        step = rate.double() * (BLOCK / SR)  # LFO cycles per block
        lfo = vibrato_phase + (step if self.frames == 1 else torch.cumsum(step, 1))  # at each frame's end
        lfo = lfo - torch.floor(lfo)
        ages, age = [], vibrato_age
        for t in range(self.frames):  # a reset inside the call is a recurrence: unrolled (shipped: 1 frame)
            age = torch.where(loud[:, t : t + 1] > VIBRATO_GATE_DB, torch.clamp(age + BLOCK / SR, max=10.0), 0 * age)
            ages.append(age)
        fade = torch.clamp((torch.cat(ages, 1) - VIBRATO_DELAY) / VIBRATO_FADE, 0.0, 1.0)
        cents = depth * fade * torch.sin(2 * math.pi * lfo.float())
        pitch = pitch * torch.exp(cents * (math.log(2.0) / 1200.0))
        raw, caches = self.net(pitch, loud, [c0, c1, c2, c3])
        audio, new_prev, new_phase, pos = self.synth(pitch, raw, breath, brightness, prev, phase, noise_pos)
        return (audio, new_phase, pos, lfo[:, -1:], age, new_prev, *caches)
