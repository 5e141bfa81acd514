"""The morph voice: a latent voice that keeps pitch and harmonics, and its streaming encoder.

Decoder (the voice, ``kind: latent``): per 512-sample frame, controls pitch (Hz), loudness (dB RMS) and
``LATENT`` timbre latents z0, z1, ... -> a causal conv net -> harmonic amplitudes + noise-band gains -> the flute's
harmonic-plus-filtered-noise synthesizer (:class:`note_model.Synth`: closed-form float64 phase, amplitudes
ramped within the block). The level is the loudness control itself (``10^(dB/20)``, times a learned
correction in 0..2), gated to exact silence at the -100 dB floor, so the net only shapes the spectrum.

Encoder (``kind: encoder``): audio -> pitch (YIN, in the graph, at 24 kHz), loudness (the data's own
measure: dB RMS of a 1024-sample Hann window centred on the frame's end), and the z latents from a small causal
conv net over a log-mel spectrum of the same window. The window reaches 512 samples past the frame's end,
so the encoder answers one block late: ``latency_samples`` 512.

Both stream one frame per call with every piece of state explicit (conv caches, the encoder's last 2048
input samples, its last voiced pitch; the synth's phase, noise position and last frame's gains).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from note_model import NOISE_LENS, CausalConv, Synth, filtered_table, noise_tables

SR = 48000
BLOCK = 512
N_HARM = 96
N_NOISE = 32
FIR_TAPS = 64
LATENT = 6  # timbre latents z0..z5; the cards' texts and tests/test_morph.py (N_Z) follow it
WORDS = {6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}  # for the cards' prose
HIDDEN = 192
DILATIONS = (1, 2, 4, 8)
FLOOR_DB = -100.0
# encoder
BUF = 2048  # input samples the encoder keeps (the current block included)
WIN = 1024  # loudness / mel window, centred on the frame's end: its last 512 samples are lookahead
N_MELS = 48
YIN_W, YIN_MIN, YIN_MAX = 480, 18, 360  # at 24 kHz: a 20 ms window, lags for 1333 .. 67 Hz
YIN_THRESHOLD = 0.2
DECIM_TAPS = 31
ENC_HIDDEN = 128
ENC_DILATIONS = (1, 2, 4)
VOICED_DB = -60.0
DEFAULT_HZ = 220.0
# The streamed noise: two white tables of coprime prime lengths (repeating after 8191 x 8179 samples,
# 23 minutes), band-filtered once at export. Shorter than the flute's (note_model.NOISE_LENS), which
# would make the file larger than a shipped model may be (8 MB) with twice its noise bands; the
# training read the flute's tables, the same white noise through the same filters.
STREAM_NOISE_LENS = (8191, 8179)


def stream_noise_tables(seed: int = 0) -> list[np.ndarray]:
    return noise_tables(seed, STREAM_NOISE_LENS)


def mel_filters(n_fft=WIN, n_mels=N_MELS, fmin=40.0, fmax=16000.0) -> np.ndarray:
    def hz2mel(f):
        return 2595 * np.log10(1 + f / 700)

    mels = np.linspace(hz2mel(fmin), hz2mel(fmax), n_mels + 2)
    hz = 700 * (10 ** (mels / 2595) - 1)
    f = np.fft.rfftfreq(n_fft, 1 / SR)
    fb = np.zeros((n_mels, len(f)))
    for m in range(n_mels):
        lo, c, hi = hz[m], hz[m + 1], hz[m + 2]
        fb[m] = np.clip(np.minimum((f - lo) / (c - lo), (hi - f) / (hi - c)), 0, None)
    return fb.astype(np.float32)


def halfband(taps=DECIM_TAPS) -> np.ndarray:
    n = np.arange(taps) - (taps - 1) / 2
    h = 0.45 * np.sinc(0.45 * n) * np.hanning(taps + 2)[1:-1]
    return (h / h.sum()).astype(np.float32)


class Features(nn.Module):
    """Input buffers [B, BUF] (the last BUF samples, newest last) -> pitch [B] Hz (0 when unvoiced),
    loudness [B] dB, log-mel [B, N_MELS]. The frame they describe ends 512 samples before the newest."""

    def __init__(self):
        super().__init__()
        w = torch.hann_window(WIN, periodic=False, dtype=torch.float64)
        n = torch.arange(WIN, dtype=torch.float64)
        k = torch.arange(WIN // 2 + 1, dtype=torch.float64)
        ang = 2 * math.pi * n[:, None] * k[None] / WIN
        self.register_buffer("dft", torch.cat([torch.cos(ang), -torch.sin(ang)], 1).mul(w[:, None]).float())
        self.register_buffer("w2", (w * w).float())
        self.w2sum = float((w * w).sum())
        self.register_buffer("mel", torch.from_numpy(mel_filters()).t().contiguous())  # [bins, mels]
        self.register_buffer("lp", torch.from_numpy(halfband()).reshape(1, 1, -1))
        self.register_buffer("lags", torch.arange(YIN_MAX + 1, dtype=torch.float32))

    def forward(self, buf):
        x = buf[:, BUF - WIN :]
        ms = torch.matmul(x * x, self.w2) / self.w2sum
        loud = torch.clamp(10.0 * torch.log10(ms + 1e-12), min=FLOOR_DB)
        spec = torch.matmul(x, self.dft)
        re, im = spec[:, : WIN // 2 + 1], spec[:, WIN // 2 + 1 :]
        logmel = torch.log(torch.matmul(re * re + im * im, self.mel) + 1e-6)
        # YIN on the newest samples, decimated to 24 kHz
        need = 2 * (YIN_W + YIN_MAX + 1) + DECIM_TAPS
        y = F.conv1d(buf[:, None, BUF - need :], self.lp, stride=2)[:, 0]  # [B, >= YIN_W + YIN_MAX + 1]
        y = y[:, y.shape[1] - (YIN_W + YIN_MAX) :]
        B = y.shape[0]
        a = y[:, :YIN_W]
        r = F.conv1d(y.reshape(1, B, -1), a.reshape(B, 1, YIN_W), groups=B)[0]  # [B, YIN_MAX + 1]
        c = torch.cumsum(torch.cat([torch.zeros_like(y[:, :1]), y * y], 1), 1)
        e = c[:, YIN_W : YIN_W + YIN_MAX + 1] - c[:, : YIN_MAX + 1]
        d = torch.clamp(e[:, :1] + e - 2 * r, min=0.0)[:, 1:]  # lags 1..YIN_MAX
        cm = d * self.lags[1:] / (torch.cumsum(d, 1) + 1e-9)
        valid = self.lags[1:] >= YIN_MIN
        cm = torch.where(valid, cm, torch.full_like(cm, 10.0))
        below = (cm < YIN_THRESHOLD).float()
        first = torch.argmax(below, 1, keepdim=True).float()  # the first lag under the threshold
        anyb = below.max(1, keepdim=True)[0]
        lag1 = self.lags[1:]
        win = (lag1 >= first) & (lag1 <= first * 1.25 + 2)
        local = torch.where(win, cm, torch.full_like(cm, 10.0))
        pick = torch.where(anyb > 0, torch.argmin(local, 1, keepdim=True), torch.argmin(cm, 1, keepdim=True))
        pick = torch.clamp(pick, 1, YIN_MAX - 2)
        y0, y1, y2 = (torch.gather(cm, 1, pick + o) for o in (-1, 0, 1))
        den = y0 - 2 * y1 + y2
        shift = torch.where(den > 1e-6, 0.5 * (y0 - y2) / torch.clamp(den, min=1e-6), torch.zeros_like(den))
        tau = pick.float() + 1.0 + torch.clamp(shift, -1.0, 1.0)
        hz = (SR / 2) / tau
        voiced = (y1 < YIN_THRESHOLD) & (loud[:, None] > VOICED_DB)
        return torch.where(voiced, hz, torch.zeros_like(hz))[:, 0], loud, logmel


class ResidualStack(nn.Module):
    """1x1 in, causal dilated residual convs (cached), 1x1 out: the encoder's and the decoder's body."""

    def __init__(self, n_in, hidden, dilations, n_out):
        super().__init__()
        self.hidden = hidden
        self.inp = nn.Conv1d(n_in, hidden, 1)
        self.convs = nn.ModuleList(CausalConv(hidden, 3, d) for d in dilations)
        self.out = nn.Conv1d(hidden, n_out, 1)
        self.act = nn.LeakyReLU(0.2)

    def cache_shapes(self):
        return [(1, self.hidden, c.pad) for c in self.convs]

    def zero_caches(self, batch):
        return [torch.zeros(batch, self.hidden, c.pad) for c in self.convs]

    def body(self, x, caches):
        h = self.inp(x)
        new = []
        for conv, cache in zip(self.convs, caches):
            y, c = conv(self.act(h), cache)
            h = h + y
            new.append(c)
        return self.out(self.act(h)), new


class ZNet(ResidualStack):
    """Per frame: log-mel (level removed), loudness, log pitch -> z [B, LATENT, T]. Causal, cached."""

    def __init__(self):
        super().__init__(N_MELS + 2, ENC_HIDDEN, ENC_DILATIONS, LATENT)

    def forward(self, pitch, loud, logmel, caches):
        """pitch, loud [B, T]; logmel [B, N_MELS, T]."""
        shape = logmel - logmel.mean(1, keepdim=True)
        x = torch.cat([shape * 0.2, ((loud + 40.0) / 40.0)[:, None], torch.log2(pitch / 440.0)[:, None]], 1)
        return self.body(x, caches)


class DecoderNet(ResidualStack):
    """Controls per frame (pitch Hz, loudness dB, z) -> raw synth parameters [B, T, 1 + H + N]."""

    def __init__(self):
        super().__init__(2 + LATENT, HIDDEN, DILATIONS, 1 + N_HARM + N_NOISE)

    def forward(self, pitch, loud, z, caches):
        x = torch.cat([torch.log2(pitch / 440.0)[:, None], ((loud + 40.0) / 40.0)[:, None], z], 1)
        out, new = self.body(x, caches)
        return out.transpose(1, 2), new


def gains(raw, pitch, loud):
    """raw [B,T,1+H+N] -> harmonic amplitudes [B,T,H], noise gains [B,T,N]: the level is the loudness
    control's (RMS 10^(dB/20), times a learned 0..2 correction), exact silence at the floor."""
    k = torch.arange(1, N_HARM + 1, dtype=raw.dtype)
    rms = torch.exp(loud * (math.log(10.0) / 20.0)) * torch.clamp((loud - FLOOR_DB) / 6.0, 0.0, 1.0)
    level = (2.0 * torch.sigmoid(raw[..., 0]) * rms).unsqueeze(-1)
    mask = (k * pitch.unsqueeze(-1) < SR / 2).float()
    dist = torch.softmax(raw[..., 1 : 1 + N_HARM], -1) * mask
    dist = dist / (dist.sum(-1, keepdim=True) + 1e-7)
    noise = torch.sigmoid(raw[..., 1 + N_HARM :] - 3.0) * level * math.sqrt(N_NOISE)
    return dist * level * math.sqrt(2.0), noise


class Morph(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = Features()
        self.znet = ZNet()
        self.net = DecoderNet()
        self.synth = Synth(n_harm=N_HARM, n_noise=N_NOISE, block=BLOCK, sr=SR, taps=FIR_TAPS)

    def train_forward(self, pitch_enc, pitch, loud, logmel, warm, noise_pos, phase, z_noise=0.0, gen=None):
        """Frames [B, warm+T]; the first `warm` frames only warm the convs; noise_pos [B] table positions.
        Returns audio [B, T*BLOCK], z."""
        z, _ = self.znet(pitch_enc, loud, logmel, self.znet.zero_caches(pitch.shape[0]))
        zin = z + z_noise * torch.randn(z.shape, generator=gen) if z_noise else z
        raw, _ = self.net(pitch, loud, zin, self.net.zero_caches(pitch.shape[0]))
        harm, noise = gains(raw, pitch, loud)
        prev = torch.cat([pitch[:, warm - 1 : warm], harm[:, warm - 1], noise[:, warm - 1]], 1)
        return self.synth_frames(pitch[:, warm:], harm[:, warm:], noise[:, warm:], prev, phase, noise_pos), z

    def noise_bands(self, noise_pos, n):
        """The band-filtered noise the streaming decoder reads: [B, n, N] from table positions noise_pos [B]."""
        if not hasattr(self, "_tables"):
            fir = self.synth.fir[:, 0].numpy()
            self._tables = [torch.from_numpy(filtered_table(t, fir)) for t in noise_tables()]
        out = 0
        for tab, m in zip(self._tables, NOISE_LENS):
            rows = torch.remainder(noise_pos[:, None] + torch.arange(n)[None], m)
            out = out + tab[rows]
        return out

    def synth_frames(self, f0, harm, noise, prev, phase, noise_pos):
        """:meth:`note_model.Synth.forward` with the noise read from the filtered tables (as streamed)."""
        s = self.synth
        B, T = f0.shape
        fe = f0.detach()
        fs = torch.cat([prev[:, :1], f0[:, :-1]], 1).detach()
        fs = torch.where(fs > 0, fs, fe)
        hs = torch.cat([prev[:, None, 1 : 1 + N_HARM], harm[:, :-1]], 1)
        ns = torch.cat([prev[:, None, 1 + N_HARM :], noise[:, :-1]], 1)
        fs64, fe64 = fs.double().unsqueeze(-1), fe.double().unsqueeze(-1)
        cyc = (s.n1 * fs64 + (fe64 - fs64) * s.tri) / SR
        per_frame = cyc[..., -1]
        start = phase + torch.cumsum(per_frame, 1) - per_frame
        phi = cyc + start.unsqueeze(-1)
        phi = phi - torch.floor(phi)
        hp = phi.float().unsqueeze(-1) * s.k32
        sines = torch.sin(2 * math.pi * (hp - torch.floor(hp)))
        m0 = (s.k32 * fs.unsqueeze(-1) < SR / 2).float()
        ends = torch.stack([hs * m0, harm], -1)  # [B,T,H,2]
        harmonic = (torch.matmul(sines, ends) * s.w2).sum(-1).reshape(B, T * BLOCK)
        bands = self.noise_bands(noise_pos, T * BLOCK).reshape(B, T, BLOCK, N_NOISE)
        nends = torch.stack([ns, noise], -1)  # [B,T,N,2]
        noisy = (torch.matmul(bands, nends) * s.w2).sum(-1).reshape(B, T * BLOCK)
        return harmonic + noisy


def held_pitch(hz: np.ndarray) -> np.ndarray:
    """The encoder's pitch: an unvoiced frame (0) holds the last voiced pitch (DEFAULT_HZ before any)."""
    out = np.empty_like(hz)
    last = DEFAULT_HZ
    for i, h in enumerate(hz):
        if h > 0:
            last = h
        out[i] = last
    return out


def offline_features(feat: Features, audio: np.ndarray, chunk: int = 256):
    """Every frame's encoder features at once (what the streaming encoder computes call by call):
    raw pitch (0 unvoiced), loudness, log-mel [frames, N_MELS]."""
    n = len(audio) // BLOCK
    xp = torch.from_numpy(np.pad(audio, (BUF, 2 * BLOCK)).astype(np.float32))
    ps, ls, ms = [], [], []
    with torch.no_grad():
        for s in range(0, n, chunk):
            t = torch.arange(s, min(n, s + chunk))
            idx = (t[:, None] + 2) * BLOCK + torch.arange(BUF)[None]  # buffer ending at (t+2)*BLOCK
            p, l, m = feat(xp[idx])
            ps.append(p.numpy()), ls.append(l.numpy()), ms.append(m.numpy())
    return np.concatenate(ps), np.concatenate(ls), np.concatenate(ms)


# ------------------------------------------------------------------------------------------------ streaming
class StreamSynth(nn.Module):
    """The synthesizer of one streamed frame (under the module name ``synth``, so the quantizer's
    default keeps it float32): harmonics as sines of a float64 phase, amplitudes ramped across the
    block from the last frame's; the noise read from two band-filtered tables (filtered once here, as
    in training, :data:`STREAM_NOISE_LENS`) at a float64 position."""

    def __init__(self, synth: Synth):
        super().__init__()
        t1, t2 = stream_noise_tables()
        fir = synth.fir[:, 0].numpy()
        f1, f2 = (torch.from_numpy(filtered_table(t, fir)) for t in (t1, t2))
        self.register_buffer("f1", torch.cat([f1, f1[:BLOCK]]))
        self.register_buffer("f2", torch.cat([f2, f2[:BLOCK]]))
        self.register_buffer("offs", torch.arange(BLOCK, dtype=torch.float32))
        n1, tri = synth.n1, synth.tri
        self.register_buffer("from_start", (n1 - tri) / SR)
        self.register_buffer("from_end", tri / SR)
        self.register_buffer("k", torch.arange(1, N_HARM + 1, dtype=torch.float32))
        self.register_buffer("w2", synth.w2[0, 0])  # [BLOCK, 2]
        self.period = float(STREAM_NOISE_LENS[0] * STREAM_NOISE_LENS[1])

    def forward(self, pitch, harm, noise, prev, phase, noise_pos):
        """pitch [1,1] Hz; harm [1,1,H]; noise [1,1,N]; prev [1,1+H+N]; phase, noise_pos [1,1] float64."""
        fs = prev[:, :1]
        fs = torch.where(fs > 0, fs, pitch)
        cyc = fs.double() * self.from_start + pitch.double() * self.from_end  # [1, BLOCK]
        phi = cyc + phase
        phi = phi - torch.floor(phi)
        hp = phi.float().reshape(BLOCK, 1) * self.k
        hp = hp - torch.floor(hp)
        sines = torch.sin(2 * math.pi * hp)  # [BLOCK, H]
        m0 = (self.k * fs < SR / 2).float()
        ends = torch.stack([prev[0, 1 : 1 + N_HARM] * m0[0], harm[0, 0]], -1)  # [H, 2]
        harmonic = (torch.matmul(sines, ends) * self.w2).sum(-1)
        rows = [(torch.fmod(noise_pos, m).float() + self.offs).long()[0] for m in STREAM_NOISE_LENS]
        bands = self.f1[rows[0]] + self.f2[rows[1]]  # [BLOCK, N]
        nends = torch.stack([prev[0, 1 + N_HARM :], noise[0, 0]], -1)
        noisy = (torch.matmul(bands, nends) * self.w2).sum(-1)
        audio = (harmonic + noisy).reshape(1, 1, BLOCK)
        last = cyc[:, -1:] + phase
        new_prev = torch.cat([pitch, harm[:, 0], noise[:, 0]], 1)
        return audio, last - torch.floor(last), torch.fmod(noise_pos + BLOCK, self.period), new_prev


class StreamingDecoder(nn.Module):
    """One frame per call: controls [1, 2 + LATENT, 1] -> audio [1, 1, BLOCK], state explicit."""

    def __init__(self, model: Morph, clamps: dict):
        super().__init__()
        self.net = model.net
        self.clamps = clamps
        self.synth = StreamSynth(model.synth)

    def state_specs(self):
        specs = [("phase_in", "phase_out", (1, 1), torch.float64), ("noise_pos_in", "noise_pos_out", (1, 1), torch.float64),
                 ("prev_in", "prev_out", (1, 1 + N_HARM + N_NOISE), torch.float32)]
        for i, shp in enumerate(self.net.cache_shapes()):
            specs.append((f"cache{i}_in", f"cache{i}_out", shp, torch.float32))
        return specs

    def forward(self, controls, phase, noise_pos, prev, c0, c1, c2, c3):
        pitch = torch.clamp(controls[:, 0], *self.clamps["pitch"])  # [1, 1]
        loud = torch.clamp(controls[:, 1], *self.clamps["loudness"])
        z = torch.clamp(controls[:, 2:], -self.clamps["z"], self.clamps["z"])
        raw, caches = self.net(pitch, loud, z, [c0, c1, c2, c3])
        harm, noise = gains(raw, pitch, loud)  # [1,1,H], [1,1,N]
        audio, new_phase, pos, new_prev = self.synth(pitch, harm, noise, prev, phase, noise_pos)
        return (audio, new_phase, pos, new_prev, *caches)


class StreamingEncoder(nn.Module):
    """One block per call: audio [1, 1, BLOCK] -> latent [1, 2 + LATENT, 1] (pitch, loudness, z in the
    decoder's PCA coordinates), describing the frame that ended one block ago."""

    def __init__(self, model: Morph, z_mean: np.ndarray, rot: np.ndarray):
        super().__init__()
        self.features = model.features
        self.znet = model.znet
        self.register_buffer("z_mean", torch.tensor(z_mean, dtype=torch.float32).reshape(1, LATENT, 1))
        self.register_buffer("rot_t", torch.tensor(rot, dtype=torch.float32).t().contiguous())  # [out, in]

    def state_specs(self):
        specs = [("buffer_in", "buffer_out", (1, BUF - BLOCK), torch.float32),
                 ("pitch_in", "pitch_out", (1, 1), torch.float32)]
        for i, shp in enumerate(self.znet.cache_shapes()):
            specs.append((f"zcache{i}_in", f"zcache{i}_out", shp, torch.float32))
        return specs

    def forward(self, audio, buffer, last_pitch, c0, c1, c2):
        buf = torch.cat([buffer, audio[:, 0]], 1)  # [1, BUF]
        hz, loud, logmel = self.features(buf)
        held = torch.where(last_pitch > 0, last_pitch, torch.full_like(last_pitch, DEFAULT_HZ))
        pitch = torch.where(hz[:, None] > 0, hz[:, None], held)  # [1, 1]
        z, caches = self.znet(pitch, loud[:, None], logmel[:, :, None], [c0, c1, c2])
        zp = torch.matmul(self.rot_t, z - self.z_mean)  # [1, LATENT, 1]
        latent = torch.cat([pitch[:, :, None], loud[:, None, None], zp], 1)
        return (latent, buf[:, BLOCK:], pitch, *caches)
