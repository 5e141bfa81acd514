"""RAVE-style latent voice: a VAE whose decoder streams audio from a small latent, one 1024-sample block
(one latent frame) per call.

The decoder is made only of causal Conv1d layers whose last (k-1)*dilation input frames are explicit state;
upsampling is Conv1d to r*C channels followed by a reshape (pixel shuffle), never ConvTranspose, so every
layer has an int8 kernel. The encoder (log-magnitude STFT -> conv stack -> mean/logvar) is only used in training.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

SR = 48000
BLOCK = 1024
LATENT = 8
RATIOS = (4, 4, 4, 4, 4)
CHANNELS = (256, 256, 128, 64, 32, 16)
N_FFT = 2048


class CausalConv(nn.Module):
    def __init__(self, cin, cout, kernel, dilation=1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, dilation=dilation)
        self.pad = (kernel - 1) * dilation
        self.cin = cin

    def forward(self, x, cache):
        xc = torch.cat([cache, x], -1)
        return self.conv(xc), xc[..., xc.shape[-1] - self.pad :]


def pixel_shuffle_1d(x, r):
    """[B, r*C, T] -> [B, C, r*T]: channel group j becomes sample j of each r-sample step."""
    B, RC, T = x.shape
    return x.reshape(B, RC // r, r, T).transpose(2, 3).reshape(B, RC // r, T * r)


class Decoder(nn.Module):
    def __init__(self, latent=LATENT, channels=CHANNELS, ratios=RATIOS):
        super().__init__()
        self.ratios = ratios
        self.inp = CausalConv(latent, channels[0], 3)
        self.ups = nn.ModuleList(CausalConv(channels[i], channels[i + 1] * r, 3) for i, r in enumerate(ratios))
        self.res = nn.ModuleList(
            nn.ModuleList([CausalConv(c, c, 3, 1), CausalConv(c, c, 3, 3)]) for c in channels[1:])
        self.out = CausalConv(channels[-1], 2, 7)
        self.act = nn.LeakyReLU(0.2)

    def layers(self):
        yield self.inp
        for up, res in zip(self.ups, self.res):
            yield up
            yield from res
        yield self.out

    def cache_shapes(self):
        return [(1, l.cin, l.pad) for l in self.layers()]

    def zero_caches(self, batch):
        return [torch.zeros(batch, l.cin, l.pad) for l in self.layers()]

    def forward(self, z, caches):
        caches = list(caches)
        new = []

        def run(layer, x):
            y, c = layer(x, caches[len(new)])
            new.append(c)
            return y

        h = run(self.inp, z)
        for up, res, r in zip(self.ups, self.res, self.ratios):
            h = pixel_shuffle_1d(run(up, self.act(h)), r)
            for layer in res:
                h = h + run(layer, self.act(h))
        o = run(self.out, self.act(h))
        audio = torch.tanh(o[:, :1]) * torch.sigmoid(o[:, 1:2])
        return audio, new  # [B, 1, T*BLOCK]


class Encoder(nn.Module):
    def __init__(self, latent=LATENT, hidden=256):
        super().__init__()
        self.register_buffer("win", torch.hann_window(N_FFT), persistent=False)
        self.net = nn.Sequential(
            nn.Conv1d(N_FFT // 2 + 1, hidden, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv1d(hidden, hidden, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv1d(hidden, 2 * latent, 1))

    def forward(self, audio):
        """audio [B, T*BLOCK] -> mean, logvar [B, latent, T]; frame t is centred on block t."""
        x = F.pad(audio, ((N_FFT - BLOCK) // 2, (N_FFT - BLOCK) // 2 + BLOCK))
        s = torch.stft(x, N_FFT, BLOCK, window=self.win, center=False, return_complex=True).abs()
        s = torch.log(s[..., : audio.shape[-1] // BLOCK] + 1e-4)
        mean, logvar = self.net(s).chunk(2, 1)
        return mean, logvar.clamp(-10, 4)


class LatentVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = Decoder()


class StreamingDecoder(nn.Module):
    """One latent frame -> one block. The export folds the latents' PCA into the first conv beforehand, so the
    controls are PCA coordinates and control 0 is the most-used direction."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, controls, *caches):
        z = torch.clamp(controls, -8.0, 8.0)  # [1, latent, 1]
        audio, new = self.decoder(z, caches)
        return (audio, *new)
