"""RAVE streaming TorchScript export (``rave export --streaming``) → streaming pi-synth ONNX model.

Works from the ``.ts`` alone. The scripted module cannot be exported (``torch.onnx.export`` fails
on ``self.pad[:x.shape[0]]``) and tracing an eager copy with its caches as buffers drops every
``copy_``. So this module *reads* the scripted model — submodule classes (``original_name``),
parameters, buffers and attributes — and rebuilds the decode path from the blocks in
:mod:`pi_synth.tools.convert.stream`, with every cached_conv cache as an explicit state input/output
(batch 1, static shapes, zero-width caches dropped), then traces it with
``torch.onnx.export(..., dynamo=False)``.

What is folded on the way: weight norm is already removed by ``rave export``; the PQMF inverse's
``× n_band`` and channel flip go into its convolution weights; the latent PCA/mean becomes one
1×1 convolution (skipped when it is the identity); transposed convolutions with kernel
``2·stride`` become kernel-2 convolutions with a one-frame cache.

Deterministic by design: ``decode`` in the ``.ts`` fills the latent dims it does not expose with
``randn``; the converted model fills them with **zeros** (the mean of that noise), so a render is
repeatable. The noise synthesizers (v1 ``NoiseGenerator``, v2_small ``NoiseGeneratorV2``) convert,
with a seeded ``RandomUniformLike``. The encoder outputs the posterior **mean** (no sampling).
Initial state is zeros.

Supported: ``VariationalScriptedRAVE``, ``WasserteinScriptedRAVE`` (its noise augmentation too),
``SphericalScriptedRAVE`` (angles as controls) and ``DiscreteScriptedRAVE`` (the quantizers'
code indices as controls; the encoder's residual quantization gives them) with ``Generator`` (v1, onnx, raspberry) or
``GeneratorV2`` (v2, v2_small, v3) decoders, PQMF or raw output, mono or stereo (``rave train
--channels 2``: a stereo card; the encoder hears the mono input on both channels), exported by
RAVE 2.1–2.3, with or without ``--sr`` (RAVE's resampler converted too), with hybrid's GRU.
Refused with a message naming the config: more than two channels, ``--channels`` exports that
change a model's channel count. The encoder reads PQMF bands or a mel spectrogram (ONNX
``STFT``); one of another input mode is skipped (the decoder converts, and the summary says why).
See ``docs/rave.md``.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from pi_synth.errors import ModelError

OPSET = 17
# The rows form up to this many frames per block (then channels-first ``Conv``): at ``--frames 1``
# a RAVE decoder (2048 samples, 16 bands) ends at 128 frames, so it runs in rows all the way.
# Measured against 16 (onnxruntime 1.32, 1 thread): raspberry fp32 0.42 vs 0.44-0.46 ms a block,
# v2 3.6 vs 3.8 ms; and every matrix product is then a Gemm that ``--quantize`` can make int8
# (v2 int8 1.3 vs 1.9 ms).
ROWS_FRAMES = 128
CONTROL_RANGE_STD = 3.0  # controls span ±3 std of the (unit-variance) latent prior


class ConvertError(ModelError):
    """The ``.ts`` cannot be converted (not a RAVE streaming export, or an unsupported config)."""


# -------------------------------------------------------------------------------- reading the .ts


def _torch():
    try:
        import torch
    except ImportError:
        raise ConvertError(
            "converting a RAVE model needs torch: pip install 'pi-synth[convert]' "
            "(on a desktop machine, never on the Pi)"
        ) from None
    torch.set_num_threads(1)
    return torch


def _what_it_is(path: str, error: Exception) -> str:
    """What a file torch cannot load is, in a few words: people hand over their WAVs,
    ONNX files and zips by mistake."""
    import zipfile

    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return f"cannot read it: {e.strerror}"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "it is a WAV recording"
    if path.endswith(".onnx"):
        return "it is an ONNX file: already converted, play it or give it a card with 'pi-synth card FILE --init'"
    if not zipfile.is_zipfile(path):
        return "not a ZIP archive, as TorchScript files are; is it truncated?" if head else "the file is empty"
    msg = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return msg if len(msg) <= 120 else msg[:120].rsplit(" ", 1)[0] + " …"


def _is_checkpoint(path: str) -> bool:
    """A ``torch.save`` file (a ZIP holding ``data.pkl``, no TorchScript code) or a legacy
    pickle, which people mistake for an export."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        return any(n.endswith("data.pkl") for n in names) and not any("/code/" in n for n in names)
    except (OSError, zipfile.BadZipFile):
        try:
            with open(path, "rb") as f:
                return f.read(2) == b"\x80\x02"  # torch.save(_use_new_zipfile_serialization=False)
        except OSError:
            return False


def load_ts(path: str | os.PathLike):
    """Load a ``.ts`` file and check that it is a RAVE streaming export."""
    torch = _torch()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConvertError(f"{path}: no such file")
    try:
        m = torch.jit.load(path, map_location="cpu")
    except Exception as e:
        if _is_checkpoint(path):
            raise ConvertError(f"{path}: a PyTorch checkpoint (torch.save, e.g. a training run's .ckpt), not an "
                               "export; export the run first with 'rave export --run RUN --streaming' and convert "
                               "the .ts it writes") from None
        raise ConvertError(f"{path}: not a TorchScript file ({_what_it_is(path, e)}); expected the .ts written by "
                           "'rave export --run RUN --streaming'") from None
    m.eval()
    if _name(m) == "TraceModel" and hasattr(m, "pretrained"):
        raise ConvertError(f"{path}: a RAVE prior's export (it generates latents), not a RAVE model; "
                           "convert the model it was trained on")
    if _name(m) == "TraceModel":
        raise ConvertError(f"{path}: a RAVE 1 export (export_rave.py, 2021-22), which pi-synth does not convert; "
                           "it converts exports of RAVE 2.1-2.3 ('rave export --streaming')")
    missing = [a for a in ("decode", "encode", "decoder", "decode_params") if not hasattr(m, a)]
    if missing:
        raise ConvertError(
            f"{path}: not a RAVE export (no {', '.join(missing)}); expected the .ts written by "
            "'rave export --run RUN --streaming' (another model: export it with torch.onnx.export and give "
            "it a card with 'pi-synth card MODEL.onnx --init')"
        )
    if not any(_name(s) == "CachedPadding1d" for s in m.decoder.modules()):
        raise ConvertError(
            f"{path}: a RAVE export without streaming caches; re-export it with "
            "'rave export --run RUN --streaming'"
        )
    return m


def _name(mod) -> str:
    return getattr(mod, "original_name", type(mod).__name__)


def _attr(mod, name, default=None):
    try:
        return getattr(mod, name)
    except (AttributeError, RuntimeError):
        return default


def _children(mod) -> list:
    kids = list(mod.named_children())
    if all(k.isdigit() for k, _ in kids):
        kids.sort(key=lambda kv: int(kv[0]))
    return [c for _, c in kids]


def _first(v):
    return int(v[0]) if isinstance(v, (tuple, list)) else int(v)


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe(m) -> dict:
    """What the converter needs to know about a loaded RAVE ``.ts``."""
    kind = _name(m)
    dp = [int(v) for v in m.decode_params.tolist()]  # [in_channels, in_ratio, out_channels, out_ratio]
    ep = [int(v) for v in m.encode_params.tolist()] if hasattr(m, "encode_params") else None
    info = {
        "class": kind,
        "latent_size": int(_attr(m, "latent_size", dp[0])),
        "full_latent_size": int(_attr(m, "full_latent_size", dp[0])),
        "sample_rate": int(_attr(m, "sr", 44100)),
        "ratio": dp[1],
        "out_channels": dp[2],
        "n_channels": int(_attr(m, "n_channels", 1)),
        "decoder": _name(m.decoder),
        "encoder": _name(_attr(m.encoder, "encoder", m.encoder)) if hasattr(m, "encoder") else None,
        "encode_params": ep,
        "pqmf_bands": int(_attr(m.pqmf, "n_band", 1)) if _attr(m, "pqmf") is not None else 1,
        "resample": _resample_factor(m, dp[1]),
    }
    if kind == "DiscreteScriptedRAVE":
        info["codebook_size"] = int(_children(m.encoder.rvq.layers)[0].codebook_size)
    return info


def _resample_factor(m, ratio: int) -> int:
    """1 without ``--sr``; else ``r``, the model running at ``sample_rate / r`` inside RAVE's
    resampler (whose filters convert); 0 for a resampler of another shape."""
    res = _attr(m, "resampler")
    if res is None:
        return 1
    up, down = _attr(res, "upsample"), _attr(res, "downsample")
    r = int(up.weight.shape[0]) if up is not None and _attr(up, "weight") is not None else 0
    return r if r >= 2 and down is not None and ratio % r == 0 else 0


def _check_supported(m, where: str) -> dict:
    info = describe(m)
    kind = info["class"]
    if kind not in ("VariationalScriptedRAVE", "WasserteinScriptedRAVE", "SphericalScriptedRAVE", "DiscreteScriptedRAVE"):
        raise ConvertError(f"{where}: unknown RAVE export class {kind!r}; expected a RAVE 2 export "
                           "(VariationalScriptedRAVE and its kin, from 'rave export --streaming')")
    if info["resample"] == 0:
        raise ConvertError(f"{where}: exported with --sr, with a resampler this converter does not know; "
                           "re-export without --sr")
    c = info["n_channels"]
    if c not in (1, 2):
        raise ConvertError(f"{where}: a {c}-channel RAVE model; pi-synth plays mono and stereo models")
    if info["out_channels"] != c or int(_attr(m, "target_channels", c)) != c:
        raise ConvertError(f"{where}: exported with --channels {info['out_channels']} for a {c}-channel model; "
                           f"re-export it without --channels (pi-synth plays a mono model on both speakers)")
    if bool(_attr(m, "stereo_mode", False)):
        raise ConvertError(f"{where}: stereo_mode is set in this export; re-export it")
    return info


# ---------------------------------------------------------------------------- rebuilding the graph


class _Builder:
    """Maps scripted RAVE/cached_conv modules onto :mod:`stream` blocks."""

    def __init__(self, where: str, frames: int = 1, cl_frames: int = 16, pre=None, noise: str = "random",
                 rows: bool = False):
        from pi_synth.tools.convert import stream

        self.s = stream
        self.rows = rows
        self.noise = noise
        self.has_noise = False
        self.where = where
        self.frames = frames
        self.cl_frames = cl_frames
        self.pre = pre

    def net(self, mod, path):
        """The decoder trunk (after the latent preprocessing), with layouts chosen per block."""
        s = self.s
        trunk = self.build(mod, path)
        if self.rows:
            return s.RowsThenCF(s.Seq([self.pre, *trunk.blocks]), self.frames, self.cl_frames)
        return s.layout(s.Seq([self.pre, *trunk.blocks]), self.frames, self.cl_frames)

    def fail(self, path, what):
        raise ConvertError(f"{self.where}: {path}: {what}")

    def conv(self, mod, path):
        torch = _torch()
        if _name(mod) != "CachedConv1d":
            self.fail(path, f"expected a cached convolution, found {_name(mod)}")
        if _first(mod.padding) != 0:
            self.fail(path, "cached convolution with op padding (not a cached_conv export)")
        pc = int(mod.cache.padding)
        pd = int(mod.downsampling_delay.padding)
        if bool(mod.cache.crop) or not bool(mod.downsampling_delay.crop) and pd:
            self.fail(path, "unexpected cached padding layout")
        w = _attr(mod, "weight")
        if w is None:
            g, v = _attr(mod, "weight_g"), _attr(mod, "weight_v")
            if g is None or v is None:
                self.fail(path, "convolution without weights")
            w = torch._weight_norm(v, g, 0)
        return self.s.Conv(w, _attr(mod, "bias"), _first(mod.stride), _first(mod.dilation), int(mod.groups),
                           pc=pc, pd=pd, label=path)

    def delay(self, pad_mod, path):
        p = int(pad_mod.padding)
        if p and not bool(pad_mod.crop):
            self.fail(path, "branch padding without crop")
        return self.s.Delay(p, path)

    def build(self, mod, path):  # noqa: C901 - one branch per module class
        s, torch = self.s, _torch()
        n = _name(mod)
        if n in ("CachedSequential", "Sequential"):
            return s.Seq([self.build(c, f"{path}.{i}") for i, c in enumerate(_children(mod))])
        if n in ("UpsampleLayer", "ResidualLayer", "ResidualBlock", "DilatedUnit"):
            return self.build(mod.net, f"{path}.net")
        if n == "Identity":
            return None
        if n == "LeakyReLU":
            slope = float(mod.negative_slope)
            return s.Fn(lambda x: torch.nn.functional.leaky_relu(x, slope), "leaky_relu")
        if n == "Snake":
            alpha = mod.alpha.detach().float().reshape(1, -1, 1)
            inv = (alpha + 1e-9).reciprocal()
            return s.Fn(lambda x, a, i: x + i * (a * x).sin().pow(2), "snake", [alpha, inv])
        if n == "CachedConv1d":
            return self.conv(mod, path)
        if n == "CachedConvTranspose1d":
            if _first(mod.output_padding) or _first(mod.dilation) != 1 or int(mod.groups) != 1:
                self.fail(path, "transposed convolution with output padding, dilation or groups")
            return s.ConvT(mod.weight, _attr(mod, "bias"), _first(mod.stride), _first(mod.padding), label=path)
        if n == "Residual":
            al = mod.aligned
            br, paddings = _children(al.branches), _children(al.paddings)
            if len(br) != 2 or _name(br[1]) != "Identity":
                self.fail(path, "residual whose second branch is not the identity")
            return s.Residual(self.build(br[0], f"{path}.aligned.branches.0"),
                              self.delay(paddings[0], f"{path}.aligned.paddings.0"),
                              self.delay(paddings[1], f"{path}.aligned.paddings.1"))
        if n == "ResidualStack":
            al = mod.net
            br, paddings = _children(al.branches), _children(al.paddings)
            return s.SumBranches([self.build(b, f"{path}.net.branches.{i}") for i, b in enumerate(br)],
                                 [self.delay(p, f"{path}.net.paddings.{i}") for i, p in enumerate(paddings)])
        if n == "AdaptiveInstanceNormalization":
            if bool(mod.num_update_x.item()) and bool(mod.num_update_y.item()):
                mx, sx = mod.mean_x[:1].detach(), mod.std_x[:1].detach()
                my, sy = mod.mean_y[:1].detach(), mod.std_y[:1].detach()
                scale = sy / (sx + 1e-5)
                shift = my - mx * scale
                return s.Fn(lambda x, a, b: x * a + b, "adain", [scale.reshape(1, -1, 1), shift.reshape(1, -1, 1)])
            return None
        if n == "GRU":
            return self.recurrent(mod, path)
        if n == "Generator":
            return self.generator_v1(mod, path)
        if n == "GeneratorV2":
            return self.generator_v2(mod, path)
        self.fail(path, f"module {n!r} is not supported by the RAVE converter")

    def recurrent(self, mod, path):
        """RAVE's ``blocks.GRU`` (``hybrid.gin``'s decoder): an ``nn.GRU`` over the frames of one
        call, from a zero hidden state every call, as the ``.ts`` runs it (its ``gru_state``
        buffer is never used, so nothing carries from one block to the next: the converted
        block is stateless too, exported as ONNX ``GRU``)."""
        s, torch = self.s, _torch()
        if not bool(_attr(mod, "enabled", True)):
            return None
        g = _attr(mod, "gru")
        if g is None or _name(g) != "GRU" or bool(_attr(g, "bidirectional", False)) or not bool(_attr(g, "batch_first", True)):
            self.fail(path, "a recurrent layer that is not RAVE's one-way GRU")
        layers, hidden, size = int(g.num_layers), int(g.hidden_size), int(g.input_size)
        gru = torch.nn.GRU(size, hidden, num_layers=layers, batch_first=True, bias=bool(_attr(g, "bias", True)))
        with torch.no_grad():
            for name, p in gru.named_parameters():
                p.copy_(getattr(g, name).detach().float())
                p.requires_grad_(False)  # traced as constants of the graph
        gru.eval()

        class Recurrent(s.Block):
            def __call__(self, x, ctx):
                if self.cl:  # [1, T, C]
                    return gru(x)[0]
                return gru(x.transpose(1, 2))[0].transpose(1, 2)

            def rows(self, x, ctx):  # [T, C]
                return gru(x.unsqueeze(0))[0][0]

            def macs(self, t):
                return t * 3 * hidden * (size + hidden + (layers - 1) * 2 * hidden), t

        return Recurrent()

    def generator_v1(self, mod, path):
        s, torch = self.s, _torch()
        net = self.net(mod.net, f"{path}.net")
        synth = mod.synth
        br, paddings = _children(synth.branches), _children(synth.paddings)
        use_noise = bool(mod.use_noise)
        warmed = bool(int(mod.warmed_up.item())) if hasattr(mod, "warmed_up") else True
        noise = None
        if use_noise and warmed and self.noise != "off":
            noise = s.Seq([self.delay(paddings[2], f"{path}.synth.paddings.2"),
                           self.noise_v1(br[2], f"{path}.synth.branches.2")])
            self.has_noise = True
        wave = s.Seq([self.delay(paddings[0], f"{path}.synth.paddings.0"), self.conv(br[0], f"{path}.synth.branches.0")])
        loud = s.Seq([self.delay(paddings[1], f"{path}.synth.paddings.1"), self.conv(br[1], f"{path}.synth.branches.1")])
        stride = int(mod.loud_stride)

        class Gen(s.Block):
            def __call__(self, x, ctx):
                return self.tail(net(x, ctx), ctx)

            def tail(self, x, ctx):
                w = wave(x, ctx)
                ld = loud(x, ctx)
                if stride != 1:
                    ld = ld.unsqueeze(-1).expand(*ld.shape, stride).reshape(1, 1, -1)
                y = torch.tanh(w) * (2 * torch.sigmoid(ld) ** 2.3 + 1e-7)
                if noise is not None:
                    y = y + noise(x, ctx)
                return y

            def rows(self, x, ctx):
                x = net.rows(x, ctx)
                if x.dim() == 3:  # the trunk ended channels-first
                    return self.tail(x, ctx)
                w, ld = wave.rows(x, ctx), loud.rows(x, ctx)  # [T, M], [T / stride, 1]
                if stride != 1:
                    ld = ld.expand(ld.shape[0], stride).reshape(-1, 1)
                y = torch.tanh(w) * (2 * torch.sigmoid(ld) ** 2.3 + 1e-7)
                if noise is not None:
                    y = y + noise(x.transpose(0, 1).unsqueeze(0), ctx)[0].transpose(0, 1)
                return y

            def macs(self, t):
                m1, t = net.macs(t)
                m2, _ = wave.macs(t)
                m3, _ = loud.macs(t)
                m4 = noise.macs(t)[0] if noise is not None else 0
                return m1 + m2 + m3 + m4, t

        return Gen()

    def noise_v1(self, mod, path):
        """v1's ``NoiseGenerator``: filtered uniform noise, one FIR per band and frame.

        ``amp_to_impulse_response`` (irfft of a real spectrum, roll, Hann window, pad, roll) is
        linear in the band amplitudes, so it is one constant matrix, computed here by pushing the
        identity through the same operations. ``fft_convolve`` (zero-padded FFT product, second
        half) is the causal linear convolution truncated to ``target_size`` samples: a Toeplitz
        matrix of the noise (one Gather with constant indices, masked) times the impulse response.
        The noise comes from ONNX ``RandomUniformLike`` with a fixed seed, so renders repeat.
        """
        s, torch = self.s, _torch()
        mode = self.noise
        net = self.build(mod.net, f"{path}.net")
        ds = int(mod.data_size) * int(_attr(mod, "n_channels", 1))
        n = int(mod.target_size.item())
        c_out = int(_children(mod.net)[-1].weight.shape[0])
        nb = c_out // ds
        mat = amp_to_ir_matrix(nb, n)  # [nb, n]
        j = torch.arange(n)
        idx = (j.reshape(-1, 1) - j.reshape(1, -1)).clamp(min=0)  # [n', j] -> n' - j
        mask = (j.reshape(-1, 1) >= j.reshape(1, -1)).float()

        class Noise(s.Block):
            def __call__(self, x, ctx):
                a = net(x, ctx)  # [1, ds*nb, F]
                f = a.shape[-1]
                amp = 2 * torch.sigmoid(a - 5) ** 2.3 + 1e-7
                amp = amp.permute(0, 2, 1).reshape(1, f, ds, nb)
                ir = amp @ mat  # [1, F, ds, n]
                if mode == "input":  # --check only: the .ts's uniform noise, fed from outside
                    u = ctx.read(tuple(ir.shape), "noise", ir)
                    ctx.write(u * 1)
                else:
                    u = torch.rand_like(ir)
                u = u * 2 - 1
                toep = u[..., idx] * mask  # [1, F, ds, n, n]
                y = (toep @ ir.unsqueeze(-1)).squeeze(-1)  # [1, F, ds, n]
                return y.permute(0, 2, 1, 3).reshape(1, ds, f * n)

            def macs(self, t):
                m, f = net.macs(t)
                return m + f * ds * (nb * n + n * n), t

        return Noise()

    def generator_v2(self, mod, path):
        s, torch = self.s, _torch()
        noise = wave = None
        if _attr(mod, "noise_module") is not None:
            if self.noise != "off":
                noise = self.noise_v1(mod.noise_module, f"{path}.noise_module")
                self.has_noise = True
            wave = self.conv(mod.waveform_module, f"{path}.waveform_module")
        net = self.net(mod.net, f"{path}.net")
        am = bool(mod.amplitude_modulation)

        class Gen(s.Block):
            def __call__(self, x, ctx):
                return self.tail(net(x, ctx), ctx)

            def tail(self, x, ctx):
                n = noise(x, ctx) if noise is not None else None
                if wave is not None:
                    x = wave(x, ctx)
                if am:
                    c = x.shape[1] // 2
                    x = x[:, :c] * torch.sigmoid(x[:, c:])
                if n is not None:
                    x = x + n
                return torch.tanh(x)

            def rows(self, x, ctx):
                x = net.rows(x, ctx)
                if x.dim() == 3:  # the trunk ended channels-first
                    return self.tail(x, ctx)
                n = noise(x.transpose(0, 1).unsqueeze(0), ctx)[0].transpose(0, 1) if noise is not None else None
                if wave is not None:
                    x = wave.rows(x, ctx)
                if am:
                    c = x.shape[1] // 2
                    x = x[:, :c] * torch.sigmoid(x[:, c:])
                if n is not None:
                    x = x + n
                return torch.tanh(x)

            def macs(self, t):
                m, t = net.macs(t)
                if noise is not None:
                    m += noise.macs(t)[0]
                if wave is not None:
                    m += wave.macs(t)[0]
                return m, t

        return Gen()


def amp_to_ir_matrix(n_bands: int, target_size: int):
    """RAVE's ``amp_to_impulse_response`` as a matrix ``[n_bands, target_size]`` (it is linear)."""
    torch = _torch()
    amp = torch.eye(n_bands)
    amp = torch.view_as_complex(torch.stack([amp, torch.zeros_like(amp)], -1))
    ir = torch.fft.irfft(amp)
    fs = ir.shape[-1]
    ir = torch.roll(ir, fs // 2, -1) * torch.hann_window(fs, dtype=ir.dtype)
    ir = torch.nn.functional.pad(ir, (0, int(target_size) - int(fs)))
    return torch.roll(ir, -fs // 2, -1).contiguous()


def pqmf_polyphase(w, tol: float = 1e-5):
    """Factor the PQMF synthesis convolution ``w`` ``[M, M, K]`` (output band-phase ``m``, input
    band ``b``, tap ``j``) as ``w[m, b, j] = g[m, j] · c[j mod 2, m, b]``, or None if it does not
    factor (checked to ``tol`` of its largest weight: the bank is computed in float32, so its
    blocks are rank one to ≈ 1e-6).

    A cosine-modulated bank's taps ``j`` and ``j + 2`` of one polyphase component differ only in
    sign across every band (the modulation advances by an odd multiple of π), so per output
    phase and tap parity the ``[M, K/2]`` block of weights has rank one. The convolution
    (``M·M·K`` multiply-adds a frame) then becomes a ``[2M, M]`` matrix (``2M·M``) and ``2M``
    single-channel filters of ``K`` taps, half of them zero (``2M·K``): 5× fewer here (16 bands,
    33 taps), and the single-channel filters run as onnxruntime's depthwise convolution."""
    w64 = w.double()
    m_out, m_in, k = w64.shape
    c = w64.new_zeros(2, m_out, m_in)
    g = w64.new_zeros(m_out, k)
    for m in range(m_out):
        for par in (0, 1):
            blk = w64[m, :, par::2]  # [M, taps of this parity]
            u, sv, vt = np.linalg.svd(blk.numpy(), full_matrices=False)
            c[par, m] = w64.new_tensor(u[:, 0] * sv[0])
            g[m, par::2] = w64.new_tensor(vt[0])
    rec = g.unsqueeze(1) * c[(np.arange(k) % 2)].permute(1, 2, 0)  # [M, M, K]
    if float((rec - w64).abs().max()) > tol * float(w64.abs().max()):
        return None
    return c.reshape(2 * m_out, m_in).float(), g.float()


def _pqmf_inverse(b: _Builder, pqmf, t_sub: int):
    """``CachedPQMF.inverse`` with ``× n_band`` and the channel flip folded into the conv.

    Channels-first, the synthesis convolution runs factored (:func:`pqmf_polyphase`): one
    ``MatMul`` to ``2M`` channels, one depthwise ``Conv``, the two halves added; the cache is
    the same ``[1, M, K - 1]`` history of the bands as the plain convolution's."""
    s, torch = b.s, _torch()
    m = int(pqmf.hk.shape[0])
    conv = b.conv(pqmf.inverse_conv, "pqmf.inverse_conv")
    conv.w = (conv.w * m).flip(0).contiguous()
    if conv.b is not None:
        conv.b = (conv.b * m).flip(0)
    mask = torch.ones(1, m, t_sub)
    mask[..., 1::2, ::2] = -1
    fac = None  # the legacy layout keeps the plain convolution (comparisons of before and after)
    if b.rows and conv.stride == 1 and conv.dilation == 1 and conv.groups == 1 and conv.pd == 0:
        fac = pqmf_polyphase(conv.w)
    if fac is not None:
        cmat, g = fac
        k = conv.w.shape[-1]
        dw = torch.zeros(2 * m, 1, 1, k)
        dw[:m, 0, 0, 0::2] = g[:, 0::2]
        dw[m:, 0, 0, 1::2] = g[:, 1::2]

    class Inv(s.Block):
        def __call__(self, x, ctx):
            if fac is None:
                y = conv(x * mask, ctx)  # [1, M, T]
                return y.transpose(1, 2).reshape(1, 1, -1)
            t = x.shape[2]
            full = s.cached_concat(ctx, x * mask, conv.pc, conv.label)  # [1, M, T + K - 1]
            u = (cmat @ full[0]).reshape(1, 2 * m, 1, -1)
            v = torch.nn.functional.conv2d(u, dw, None, groups=2 * m).reshape(2 * m, t)
            even, odd = torch.split(v, m)
            y = even + odd  # [M, T]
            if conv.b is not None:
                y = y + conv.b.reshape(-1, 1)
            return y.transpose(0, 1).reshape(1, 1, -1)

        def rows(self, x, ctx):
            if x.dim() == 3:
                return self(x, ctx)
            if fac is not None:  # one Transpose to the factored form's channels-first
                return self(x.transpose(0, 1).unsqueeze(0), ctx)
            return conv.rows(x * mask[0].transpose(0, 1), ctx)  # [T, M]: row-major is the audio order

        def macs(self, t):
            if fac is None:
                mc, t = conv.macs(t)
                return mc, t * m
            k = conv.w.shape[-1]
            return 2 * m * m * (t + conv.pc) + 2 * m * k * t, t * m

    return Inv()


def _pqmf_forward(b: _Builder, pqmf, t_sub: int):
    """``CachedPQMF.forward`` (analysis): strided conv then ``reverse_half``.

    The strided convolution (``M`` bands, ``K`` taps, stride ``M``: ``M·K`` multiply-adds a
    frame, a quarter of a RAVE v1 encoder's time) runs polyphase when it factors: the input
    cut into ``M`` phases, each phase filtered by two depthwise filters (its even and odd taps,
    :func:`pqmf_polyphase` on the phases), then one ``[M, 2M]`` matrix; ``2M·(K/M) + 2M·M``
    multiply-adds a frame, 8× fewer for 16 bands and 513 taps."""
    s, torch = b.s, _torch()
    conv = b.conv(pqmf.forward_conv, "pqmf.forward_conv")
    m = int(pqmf.hk.shape[0])
    mask = torch.ones(1, m, t_sub)
    mask[..., 1::2, ::2] = -1
    band_cnt, c_in, k = conv.w.shape
    nq = -(-k // m)  # taps per phase
    fac = None
    if (band_cnt == m and c_in == 1 and conv.stride == m and conv.dilation == 1 and conv.groups == 1
            and conv.b is None):
        h = torch.nn.functional.pad(conv.w[:, 0], (0, nq * m - k))  # [band, nq·M]
        fac = pqmf_polyphase(h.reshape(m, nq, m).permute(2, 0, 1).contiguous())  # [phase, band, q]
    if fac is not None:
        cmat, g = fac  # cmat[(parity, phase), band], g[phase, q]
        dw = torch.zeros(2 * m, 1, 1, nq)  # output channel 2·phase + parity (groups = M)
        dw[0::2, 0, 0, 0::2] = g[:, 0::2]
        dw[1::2, 0, 0, 1::2] = g[:, 1::2]
        mix = cmat.reshape(2, m, m).permute(2, 1, 0).reshape(m, 2 * m).contiguous()  # [band, 2·phase + parity]

    class Fwd(s.Block):
        def __call__(self, x, ctx):
            if fac is None:
                return conv(x, ctx) * mask
            t_out = conv.t_out(x.shape[2])
            full = s.cached_concat(ctx, x, conv.pc + conv.pd, conv.label)  # [1, 1, L]
            n = t_out - 1 + nq
            if n * m > full.shape[2] - conv.pd:
                raise RuntimeError("polyphase PQMF analysis: too few samples")  # pragma: no cover
            phases = full[0, 0, : n * m].reshape(n, m).transpose(0, 1).reshape(1, m, 1, n)
            v = torch.nn.functional.conv2d(phases, dw, None, groups=m).reshape(2 * m, t_out)
            return (mix @ v).reshape(1, m, t_out) * mask

        def macs(self, t):
            if fac is None:
                return conv.macs(t)
            t_out = conv.t_out(t)
            return 2 * m * nq * t_out + 2 * m * m * t_out, t_out

    return Fwd()


def _per_channel(b: _Builder, block, n: int):
    """RAVE's multichannel layout: channel ``c``'s bands are channels ``c·M … c·M + M − 1`` of
    the decoder's output (``_pqmf_decode``: a reshape to a batch of ``n``), so ``block`` (the PQMF
    inverse, the resampler) runs once per channel, each call with its own caches, and the
    ``[1, 1, N]`` results are stacked to ``[1, n, N]``. ``block`` None: the channels as they are
    (a model without a PQMF). Mono: ``block`` itself."""
    s, torch = b.s, _torch()
    if n == 1:
        return block

    def one(y):
        return y.transpose(0, 1).reshape(1, 1, -1) if y.dim() == 2 and block is None else y.reshape(1, 1, -1)

    class PerChannel(s.Block):
        def __call__(self, x, ctx):
            return torch.cat([one(block(p, ctx) if block else p) for p in torch.chunk(x, n, 1)], 1)

        def rows(self, x, ctx):  # [T, n·M] (or already [1, n·M, T])
            return torch.cat([one(block.rows(p, ctx) if block else p) for p in torch.chunk(x, n, 1)], 1)

        def macs(self, t):
            if block is None:
                return 0, t
            mc, t_out = block.macs(t)
            return n * mc, t_out

    return PerChannel()


def _rvq_tables(m):
    """A discrete model's residual quantizers as ``[Q·S, D]`` (each layer's ``S`` codes through
    its ``project_out``: decoding is a lookup then that linear map, so the map is applied to the
    table once) and per layer what the encoder needs: ``(project_in`` as ``(weight, bias or None)``
    or None, the codebook ``[S, D']``, its decoded codes ``[S, D])``."""
    torch = _torch()
    tables, layers = [], []
    for lay in _children(m.encoder.rvq.layers):
        emb = lay._codebook.embed.detach().float()
        p_in, p_out = lay.project_in, lay.project_out
        w_in = None
        if _name(p_in) == "Linear":
            bias = _attr(p_in, "bias")
            w_in = (p_in.weight.detach().float(), bias.detach().float() if bias is not None else None)
        out = emb
        if _name(p_out) == "Linear":
            out = emb @ p_out.weight.detach().float().T
            if _attr(p_out, "bias") is not None:
                out = out + p_out.bias.detach().float()
        tables.append(out)
        layers.append((w_in, emb, out))
    return torch.cat(tables).contiguous(), layers


def _codes_to_latent(s, m):
    """``DiscreteScriptedRAVE.pre_process_latent`` without its noise: the controls are code
    indices (clamped to the codebook, truncated as ``.long()`` does), one lookup in all the
    quantizers' tables at once (index + layer·S), summed over the layers."""
    torch = _torch()
    table, layers = _rvq_tables(m)
    q = len(layers)
    size = int(layers[0][1].shape[0])
    offset = (torch.arange(q) * size).reshape(1, q)

    class Codes(s.Block):
        def rows(self, x, ctx):  # [T, Q] codes → [T, D]
            idx = torch.clamp(x, 0, size - 1).long() + offset
            return table[idx].sum(1)

        def __call__(self, x, ctx):
            if self.cl:  # [1, T, Q]
                return self.rows(x[0], ctx).unsqueeze(0)
            return self.rows(x[0].transpose(0, 1), ctx).transpose(0, 1).unsqueeze(0)

    return Codes()


def _latent_to_codes(m):
    """``ResidualVectorQuantization.encode``: per layer, the nearest code (largest
    ``2·x·e − |e|²``: the same argmax as RAVE's ``−|x − e|²``, the per-row ``|x|²`` left out)
    of the residual, then the residual minus that code's decoded vector. ``[1, D, T]`` → code
    indices as floats ``[1, Q, T]``. Two codes within float32 rounding of each other may come
    out the other way round than in torch (the check counts such codes)."""
    torch = _torch()
    _, layers = _rvq_tables(m)

    def encode(z):
        r = z[0].transpose(0, 1)  # [T, D]
        codes = []
        for w_in, emb, out in layers:
            x = r if w_in is None else r @ w_in[0].T + (w_in[1] if w_in[1] is not None else 0)
            score = 2 * (x @ emb.T) - (emb * emb).sum(1)
            i = torch.argmax(score, 1)  # [T]
            codes.append(i)
            r = r - out[i]
        return torch.stack(codes, 0).unsqueeze(0).float()

    return encode


def _resample_up(b: _Builder, res):
    """RAVE's ``Resampler.from_model_sampling_rate`` (an export with ``--sr``): one cached
    convolution of the audio to ``r`` polyphase outputs, interleaved. Channels-first in both
    forms: in rows form the im2col of one channel would be a ``Gather`` of single elements
    (0.4 ms a block for 21 taps at 2048 samples; a ``Conv`` is a few µs)."""
    s = b.s
    conv = b.conv(res.upsample, "resampler.upsample")

    class Up(s.Block):
        def __call__(self, x, ctx):
            y = conv(x.reshape(1, 1, -1), ctx)  # [1, r, N]
            return y.transpose(1, 2).reshape(1, 1, -1)

        def rows(self, x, ctx):
            return self(x, ctx)

        def macs(self, t):
            return conv.macs(t)[0], t * int(conv.w.shape[0])

    return Up()


def build_decoder(m, where: str, frames: int = 1, cl_frames: int = 16, noise: str = "random",
                  rows: bool = True):
    """The streaming decode block: latent ``[1, k, frames]`` → audio ``[1, 1, frames·ratio]``.

    ``rows`` (the default) builds the blocks' rows form (``[T, C]`` activations), exported with
    all caches in one state (:class:`~pi_synth.tools.convert.stream.PackedCtx`); otherwise the
    channels-last/channels-first layouts with one state per cache (the encoder's form)."""
    torch = _torch()
    info = _check_supported(m, where)
    from pi_synth.tools.convert import stream as s

    k, full = info["latent_size"], info["full_latent_size"]
    pre = None
    if info["class"] == "VariationalScriptedRAVE":
        pca = m.latent_pca.detach().float()
        mean = m.latent_mean.detach().float()
        a = pca.T[:, :k]  # the unused dims are filled with zeros (the ts fills randn)
        if not (k == full and torch.equal(a, torch.eye(full)) and not mean.any()):
            pre = s.Conv(a.unsqueeze(-1).contiguous(), mean, label="latent_pca")
    augmented = ("WasserteinScriptedRAVE", "DiscreteScriptedRAVE")
    aug = int(_attr(m.encoder, "noise_augmentation", 0) or 0) if info["class"] in augmented else 0
    if aug:
        pre = s.LatentNoise(aug, noise)
    if info["class"] == "DiscreteScriptedRAVE":  # the controls are code indices
        pre = s.Seq([_codes_to_latent(s, m), pre])
    if info["class"] == "SphericalScriptedRAVE":  # the controls are angles; the decoder reads the unit vector

        class SphereFromAngles(s.Block):
            def __call__(self, x, ctx):
                return vector_of_angles(x, 2 if self.cl else 1)

            def rows(self, x, ctx):  # [T, n]
                return vector_of_angles(x, 1)

        pre = SphereFromAngles()
    b = _Builder(where, frames, cl_frames, pre, noise, rows=rows)
    dec = b.build(m.decoder, "decoder")
    info["noise"] = b.has_noise or bool(aug)
    info["noise_augmentation"] = aug
    ratio = info["ratio"] // info["resample"]  # samples a latent frame at the model's own rate
    bands = info["pqmf_bands"]
    post = None
    n = info["n_channels"]
    if _attr(m, "pqmf") is not None and bands > 1:
        post = _pqmf_inverse(b, m.pqmf, frames * ratio // bands)
    post = _per_channel(b, post, n)
    up = _per_channel(b, _resample_up(b, m.resampler), n) if info["resample"] > 1 else None
    blocks = s.Seq([dec, post, up])
    if rows:
        blocks = RowsDecoder(blocks, n)
    return blocks, info


class RowsDecoder:
    """Latent ``[1, k, frames]`` → ``[frames, k]`` → the decoder's rows form → audio ``[1, n, N]``
    (the last ``[T, bands]`` read row by row is the PQMF's band interleaving)."""

    packed = True

    def __init__(self, seq, channels: int = 1):
        self.seq = seq
        self.channels = channels

    def __call__(self, x, ctx):
        x = x[0].transpose(0, 1) if x.shape[2] > 1 else x.reshape(1, -1)
        return self.seq.rows(x, ctx).reshape(1, self.channels, -1)

    def macs(self, t):
        return self.seq.macs(t)


def encoder_unsupported(m) -> str | None:
    """Why this export's encoder cannot convert (its decoder still can), or None."""
    mode = str(_attr(m, "input_mode", "pqmf"))
    if mode == "mel":
        sp = _attr(m, "spectrogram")
        st = _attr(sp, "spectrogram") if sp is not None else None
        fb = _attr(_attr(sp, "mel_scale"), "fb") if sp is not None else None
        if st is None or fb is None or _name(sp) != "MelSpectrogram":
            return "its encoder reads a mel spectrogram of a form pi-synth does not know"
        if float(st.power) != 2.0 or int(st.pad) != 0 or not bool(st.center) or not bool(st.onesided):
            return "its encoder's mel spectrogram is not a centred power spectrogram, which pi-synth does not convert"
        return None
    if mode != "pqmf":
        return f"its encoder reads {mode} input (input_mode {mode!r}), which pi-synth does not convert yet"
    return None


def _mel_spectrogram(b: _Builder, sp, t_out: int):
    """torchaudio's ``MelSpectrogram`` as a ``mel``-input RAVE's ``encode`` runs it on each call:
    the block alone, reflect-padded by ``n_fft / 2`` on both sides (``center``), its power STFT
    (ONNX ``STFT``), divided by the window's energy when ``normalized``, through the stored mel
    filterbank, the last frame dropped and ``log1p``: ``[1, 1, N]`` → ``[1, n_mels, t_out]``.
    Nothing carries between calls, as in the ``.ts``."""
    s, torch = b.s, _torch()
    st = sp.spectrogram
    n_fft, hop, win = int(st.n_fft), int(st.hop_length), st.window.detach().float().clone()
    fb = sp.mel_scale.fb.detach().float().T.contiguous()  # [n_mels, n_fft / 2 + 1]
    norm = float(win.pow(2).sum()) if bool(st.normalized) else 1.0
    mode = str(st.pad_mode)

    class Mel(s.Block):
        def __call__(self, x, ctx):
            with warnings.catch_warnings():  # return_complex=False: what the ONNX exporter takes
                warnings.simplefilter("ignore")
                spec = torch.stft(x.reshape(1, -1), n_fft, hop, int(st.win_length), win, center=True, pad_mode=mode,
                                  normalized=False, onesided=True, return_complex=False)  # [1, F, T + 1, 2]
            power = spec.pow(2).sum(-1)[:, :, :t_out] / norm  # [1, F, T]
            return torch.log1p(torch.matmul(fb, power[0])).unsqueeze(0)

        def macs(self, t):
            return t * (n_fft * int(math.log2(n_fft)) * 2 + fb.numel()), t_out

    return Mel()


def build_encoder(m, where: str, frames: int = 1):
    """The streaming encode block: audio ``[1, 1, frames·ratio]`` → latent mean ``[1, k, frames]``."""
    torch = _torch()
    info = _check_supported(m, where)
    b = _Builder(where)
    s = b.s
    why = encoder_unsupported(m)
    if why:
        raise ConvertError(f"{where}: {why}")
    ratio = info["ratio"] // info["resample"]
    bands = info["pqmf_bands"]
    mel = str(_attr(m, "input_mode", "pqmf")) == "mel"
    if mel:  # the encoder's frames are the spectrogram's: one a hop
        bands = int(m.spectrogram.spectrogram.hop_length)
        pre = _mel_spectrogram(b, m.spectrogram, frames * ratio // bands)
    else:
        pre = _pqmf_forward(b, m.pqmf, frames * ratio // bands) if bands > 1 else None
    if info["resample"] > 1:  # the resampler's anti-alias filter and decimation come first
        pre = s.Seq([b.conv(m.resampler.downsample, "resampler.downsample"), pre])
    nch = info["n_channels"]
    if nch > 1:  # a stereo model hears the (mono) input on both channels: its bands once, repeated
        pre = s.Seq([pre, s.Fn(lambda x: x.repeat(1, nch, 1), "to_channels")])
    venc = m.encoder
    enc = _attr(venc, "encoder", venc)
    layers = []
    for i, c in enumerate(_children(enc.net)):
        n, p = _name(c), f"encoder.encoder.net.{i}"
        if n == "BatchNorm1d":
            scale = (c.weight / torch.sqrt(c.running_var + c.eps)).detach()
            shift = (c.bias - c.running_mean * scale).detach()
            if layers and isinstance(layers[-1], s.Conv):
                _scale_conv(layers[-1], scale, shift)  # folded: no Mul/Add after the conv
            else:
                layers.append(s.Fn(lambda x, a, b: x * a + b, "bn", [scale.reshape(1, -1, 1), shift.reshape(1, -1, 1)]))
        elif n == "SampleNorm":
            layers.append(s.Fn(lambda x: x / torch.norm(x, 2, 1, keepdim=True), "sample_norm"))
        else:
            layers.append(b.build(c, p))
    layers = [x for x in layers if x is not None]
    k = info["latent_size"]
    kind = info["class"]
    pca = m.latent_pca.detach().float() if hasattr(m, "latent_pca") else None
    mean = m.latent_mean.detach().float() if hasattr(m, "latent_mean") else None
    folded = kind == "VariationalScriptedRAVE" and _fold_latent(s, layers, pca, mean, k)
    codes = _latent_to_codes(m) if kind == "DiscreteScriptedRAVE" else None
    t_sub = frames * ratio // bands if bands > 1 else frames * ratio
    net = s.CFThenRows(s.Seq(layers), t_sub, ROWS_FRAMES)
    if folded:
        return s.Seq([pre, net]), info

    class Post(s.Block):
        def __call__(self, z, ctx):
            if kind == "VariationalScriptedRAVE":
                z = z[:, : z.shape[1] // 2]  # posterior mean (the .ts samples mean + std·randn)
                z = torch.nn.functional.conv1d(z - mean.reshape(1, -1, 1), pca.unsqueeze(-1))
            elif kind == "SphericalScriptedRAVE":
                z = angles_of_vector(z, 1)
            elif kind == "DiscreteScriptedRAVE":
                z = codes(z)
            return z[:, :k]

    return s.Seq([pre, net, Post()]), info


def vector_of_angles(a, axis: int):
    """RAVE's ``angles_to_unit_norm_vector`` (a spherical model's ``pre_process_latent``): ``n``
    angles in [-1, 1) along ``axis`` → a unit vector of ``n + 1``; the running product of the
    sines unrolled (ONNX has no ``CumProd``), so it rounds as torch's ``cumprod``."""
    torch = _torch()
    n = a.shape[axis]
    a = a / 2 + 0.5
    a = a - torch.floor(a)  # % 1
    shape = [1] * a.dim()
    shape[axis] = n
    scale = torch.full((n,), math.pi)
    scale[-1] = 2 * math.pi
    a = a * scale.reshape(shape)
    cos, sin = torch.cos(a), torch.sin(a)
    parts = list(torch.split(sin, 1, axis))
    for j in range(1, n):
        parts[j] = parts[j - 1] * parts[j]
    one = torch.ones_like(parts[0])
    return torch.cat([cos, one], axis) * torch.cat([one, *parts], axis)


def angles_of_vector(x, axis: int):
    """RAVE's ``unit_norm_vector_to_angles`` (a spherical model's ``post_process_latent``), in the
    same order of operations: ``n + 1`` values along ``axis`` → ``n`` angles in [-1, 1). Where
    the rest of the vector is all zero (silence in: a v2 encoder has no biases) the ``.ts``
    divides 0 by 0 and gives NaN; here the norm is at least 1e-20, so those angles are 0 (the last
    one -0.5)."""
    torch = _torch()
    n1 = x.shape[axis]
    tails = torch.flip(torch.cumsum(torch.flip(x * x, [axis]), axis), [axis])  # Σ_{j ≥ i} x_j²
    norms = torch.clamp(torch.sqrt(torch.narrow(tails, axis, 0, n1 - 1)), min=1e-20)
    ang = torch.arccos(torch.narrow(x, axis, 0, n1 - 1) / norms)
    first, last = torch.split(ang, [n1 - 2, 1], axis)
    last = torch.where(torch.narrow(x, axis, n1 - 1, 1) >= 0, last, 2 * math.pi - last)
    ang = torch.cat([first / math.pi, last / (2 * math.pi)], axis)
    return 2 * (ang - 0.5)


def _scale_conv(conv, scale, shift) -> None:
    """``conv(x) * scale + shift`` (per output channel) as one convolution."""
    conv.w = (conv.w * scale.reshape(-1, 1, 1)).contiguous()
    conv.b = shift.clone() if conv.b is None else conv.b * scale + shift
    conv._wcl = None


def _fold_latent(s, layers, pca, mean, k: int) -> bool:
    """The posterior mean, centred and PCA-projected to ``k`` latents, folded into the last
    convolution: it computes only the ``k`` projected means, not the scale half the stream
    discards. With two groups (RAVE v1) the means read only the first group's inputs, so the
    convolution before it computes only those channels too. False (layers untouched) when
    the encoder does not end that way."""
    last = layers[-1] if layers else None
    if not isinstance(last, s.Conv) or last.pd or pca is None or mean is None:
        return False
    co, ci, kw = last.w.shape
    half = co // 2
    if half != pca.shape[0]:
        return False
    if last.groups == 2:
        prev = [j for j, x in enumerate(layers[:-1]) if not (isinstance(x, s.Fn) and not x.per_channel
                                                            and x.name == "leaky_relu")]
        j = prev[-1] if prev else -1
        if j < 0 or not isinstance(layers[j], s.Conv) or layers[j].groups != 1 or layers[j].w.shape[0] != 2 * ci:
            return False
        layers[j].w = layers[j].w[:ci].contiguous()
        layers[j].b = None if layers[j].b is None else layers[j].b[:ci].clone()
        layers[j]._wcl = None
    elif last.groups != 1:
        return False
    w, b = last.w[:half], (last.b[:half] if last.b is not None else last.w.new_zeros(half))
    p = pca[:k]
    last.w = (p @ w.reshape(half, -1)).reshape(k, ci, kw).contiguous()
    last.b = p @ (b - mean)
    last.groups = 1
    last._wcl = None
    return True


# ---------------------------------------------------------------------------------- export


def _export(block, inp_shape, out_path, input_name, output_name, progress=None):
    """Plan the state, trace ``block`` and write an ONNX file. Returns the state pairs and shapes.

    A ``packed`` block (the rows decoder) gets all its caches as one state vector,
    ``state_in_0`` → ``state_out_0``, and its noise inputs as further pairs; any other block one
    pair per cache."""
    torch = _torch()
    from pi_synth.tools.convert.stream import Ctx, PackedCtx, pack_layout

    x0 = torch.zeros(inp_shape)
    plan = Ctx(plan=True)
    with torch.no_grad():
        y0 = block(x0, plan)
    n = len(plan.shapes)
    if len(plan.outputs) != n:
        raise RuntimeError(f"state plan mismatch: {n} reads, {len(plan.outputs)} writes")
    packed = bool(getattr(block, "packed", False))
    if packed:
        pack = pack_layout(plan.shapes, plan.labels)
        size = pack["size"]
        extra = [tuple(plan.shapes[j]) for j in pack["extra"]]
        shapes = ([(size,)] if size else []) + extra
        labels = (["caches"] if size else []) + [plan.labels[j] for j in pack["extra"]]

        class Wrapper(torch.nn.Module):
            def forward(self, x, *states):
                if not size:
                    states = (torch.zeros(0), *states)
                ctx = PackedCtx(states[0], list(states[1:]), plan.shapes, plan.labels)
                y = block(x, ctx)
                outs = ctx.finish()
                return (y, *(outs if size else outs[1:]))
    else:
        shapes, labels = plan.shapes, plan.labels

        class Wrapper(torch.nn.Module):
            def forward(self, x, *states):
                ctx = Ctx(inputs=list(states))
                y = block(x, ctx)
                return (y, *ctx.outputs)

    n = len(shapes)
    states = [torch.zeros(sh) for sh in shapes]
    ins = [input_name] + [f"state_in_{i}" for i in range(n)]
    outs = [output_name] + [f"state_out_{i}" for i in range(n)]
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Wrapper(), (x0, *states), str(out_path), input_names=ins, output_names=outs,
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
    _seed_random_nodes(out_path)
    _constants_to_initializers(out_path)
    return {
        "state": [[f"state_in_{i}", f"state_out_{i}"] for i in range(n)],
        "state_shapes": shapes,
        "state_labels": labels,
        "output_shape": list(y0.shape),
    }


NOISE_SEED = 20261125.0


def _constants_to_initializers(path) -> None:
    """Move the traced graph's ``Constant`` nodes (every weight: the blocks hold plain tensors,
    not parameters) into initializers, where ONNX tools look for weights (quantizers skip a
    ``Gemm`` whose weight is a node). onnxruntime runs either the same."""
    import onnx

    model = onnx.load(str(path))
    if _move_constants(model):
        onnx.save(model, str(path))


def _move_constants(model) -> int:
    """:func:`_constants_to_initializers` on a loaded model; returns how many moved."""
    import onnx

    g = model.graph
    keep, moved = [], 0
    for node in g.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(node.attribute[0].t)
            t.name = node.output[0]
            g.initializer.append(t)
            moved += 1
        else:
            keep.append(node)
    if moved:
        del g.node[:]
        g.node.extend(keep)
    return moved


def _seed_random_nodes(path) -> None:
    """Give every random node a fixed seed, so a render (and int8 calibration) repeats."""
    import onnx

    model = onnx.load(str(path))
    changed = False
    for node in model.graph.node:
        if node.op_type.startswith("Random"):
            for a in list(node.attribute):
                if a.name == "seed":
                    node.attribute.remove(a)
            node.attribute.append(onnx.helper.make_attribute("seed", NOISE_SEED))
            changed = True
    if changed:
        onnx.save(model, str(path))


def _write_card(path, card: dict) -> None:
    from pi_synth.model.card import write_card

    write_card(path, card, producer="pi-synth convert rave")


def encoder_path(out_path) -> Path:
    """``X.onnx`` → ``X.encoder.onnx`` (``X.fp32.onnx`` → ``X.encoder.fp32.onnx``,
    ``X.int8.onnx`` → ``X.encoder.int8.onnx``: the names :func:`~pi_synth.model.library.find_encoder` tries)."""
    p = Path(out_path)
    name = p.name
    for suffix in (".fp32.onnx", ".int8.onnx", ".onnx"):
        if name.endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".encoder" + suffix)
    return p.with_name(name + ".encoder.onnx")


def convert(ts_path, out_path, *, frames: int = 1, encoder: bool = True, name: str | None = None,
            progress: bool = False, cl_frames: int | None = None, noise: str = "random", layout: str = "rows") -> dict:
    """Convert a RAVE streaming ``.ts`` into a pi-synth model (and its encoder). Returns a summary.

    ``cl_frames``: the decoder's blocks that see at most this many frames run in rows form, the
    rest channels-first (default :data:`ROWS_FRAMES`; 16 channels-last for ``legacy``).

    ``layout="legacy"`` writes the decoder as before the rows form (one state pair per cache,
    channels-last ``MatMul``s): for comparisons only."""
    ts_path, out_path = Path(ts_path), Path(out_path)
    where = str(ts_path)
    if frames < 1 or frames > 64:
        raise ConvertError(f"--frames must be 1..64, got {frames}")
    steps = ["load", "decoder", "encoder"] if encoder else ["load", "decoder"]
    bar = _bar(len(steps), progress)
    t0 = time.perf_counter()
    bar.set_description("load .ts")
    m = load_ts(ts_path)
    digest = sha256(ts_path)
    bar.update(1)
    bar.set_description("decoder")
    if layout not in ("rows", "legacy"):
        raise ConvertError(f"unknown decoder layout {layout!r}; expected rows or legacy")
    if cl_frames is None:
        cl_frames = ROWS_FRAMES if layout == "rows" else 16
    cl_frames = int(os.environ.get("PI_SYNTH_RAVE_CL_FRAMES", cl_frames))
    dec, info = build_decoder(m, where, frames, cl_frames, noise, rows=layout == "rows")
    k, ratio, sr = info["latent_size"], info["ratio"], info["sample_rate"]
    if frames * ratio > MAX_BLOCK:  # before the export, not as a temporary file's card error after it
        raise ConvertError(f"--frames {frames}: blocks of {frames} × {ratio} = {frames * ratio} samples, more than a "
                           f"block can be ({MAX_BLOCK}); this model takes --frames 1..{MAX_BLOCK // ratio}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + f".{os.getpid()}.tmp")
    try:
        ex = _export(dec, (1, k, frames), tmp, "controls", "audio")
        n = info["n_channels"]
        if ex["output_shape"] != [1, n, frames * ratio]:
            raise ConvertError(f"{where}: decoder makes {ex['output_shape']} per call, expected [1, {n}, {frames * ratio}]")
        name = name or _model_name(out_path)
        macs, _ = dec.macs(frames)
        fid = m.fidelity.detach().float().tolist() if hasattr(m, "fidelity") else None
        controls = []
        sphere = info["class"] == "SphericalScriptedRAVE"
        for i in range(k):
            c = {"name": f"z{i}", "unit": "", "min": -CONTROL_RANGE_STD, "max": CONTROL_RANGE_STD,
                 "default": 0.0, "curve": "lin"}
            if sphere:  # angles on the unit sphere: [-1, 1) goes once round
                c.update({"min": -1.0, "max": 1.0, "description": f"angle {i} of the latent on the unit sphere"})
            elif info["class"] == "DiscreteScriptedRAVE":  # a code index per residual quantizer
                c.update({"name": f"q{i}", "min": 0.0, "max": float(info["codebook_size"] - 1),
                          "description": f"code of quantizer {i} (0..{info['codebook_size'] - 1}, "
                                         "truncated to a whole number; quantizer 0 the coarsest)"})
            elif fid and info["class"] == "VariationalScriptedRAVE":
                c["description"] = f"latent dim {i} (PCA order); cumulative fidelity {fid[i]:.3f}"
            controls.append(c)
        skipped = encoder_unsupported(m) if encoder else None
        encoder = encoder and not skipped
        enc_file = encoder_path(out_path) if encoder else None
        card = {
            "format": 1,
            "name": name,
            "kind": "rave",
            **({"encoder": enc_file.name} if enc_file else {}),
            "description": (f"RAVE {info['decoder']} decoder{', stereo' if n == 2 else ''}, {k} latent "
                            f"controls, converted from {ts_path.name}"),
            "sample_rate": sr,
            "block_size": frames * ratio,
            "channels": n,
            "control_frames": frames,
            "controls": controls,
            "inputs": {"controls": "controls"},
            "outputs": {"audio": "audio"},
            "state": ex["state"],
            "latency_samples": 0,
            "license": "as the RAVE model it was converted from",
            "source": f"pi-synth convert rave {ts_path.name} (sha256 {digest})",
            "rave": {
                "ts": ts_path.name,
                "ts_sha256": digest,
                "class": info["class"],
                "decoder": info["decoder"],
                "latent_size": k,
                "full_latent_size": info["full_latent_size"],
                "unused_latents": "zeros",
                "ratio": ratio,
                "pqmf_bands": info["pqmf_bands"],
                "model_channels": n,
                "resampled": ({"model_sample_rate": sr // info["resample"], "factor": info["resample"]}
                              if info["resample"] > 1 else None),
                "initial_state": "zeros",
                "state": "packed" if getattr(dec, "packed", False) else "per cache",
                "noise": info["noise"],
                "noise_inputs": [f"state_in_{i}" for i, lb in enumerate(ex["state_labels"]) if lb.startswith("noise")],
                "normal_noise_inputs": [f"state_in_{i}" for i, lb in enumerate(ex["state_labels"]) if lb == "noise_normal"],
                "noise_augmentation": info.get("noise_augmentation", 0),
                "multiply_adds_per_block": int(macs),
                "encoder": enc_file.name if enc_file else None,
            },
        }
        _write_card(tmp, card)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    bar.update(1)
    summary = {"model": str(out_path), "card": card, "states": len(ex["state"]),
               "state_elements": int(sum(math.prod(s) for s in ex["state_shapes"])),
               "multiply_adds_per_block": int(macs)}
    if skipped:
        summary["encoder_skipped"] = f"{skipped}: the decoder plays from knobs, MIDI and OSC, not from audio in"
    if encoder:
        bar.set_description("encoder")
        summary["encoder"] = str(enc_file)
        summary["encoder_card"] = convert_encoder(m, info, enc_file, ts_path, digest, frames, name)
        bar.update(1)
    bar.close()
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def convert_encoder(m, info, enc_file, ts_path, digest, frames, name) -> dict:
    where = str(ts_path)
    enc, _ = build_encoder(m, where, frames)
    discrete = info["class"] == "DiscreteScriptedRAVE"
    enc.packed = True  # every cache in one state vector, as the decoder's
    k, ratio = info["latent_size"], info["ratio"]
    tmp = Path(str(enc_file) + f".{os.getpid()}.tmp")
    try:
        ex = _export(enc, (1, 1, frames * ratio), tmp, "audio_in", "latent")
        if ex["output_shape"] != [1, k, frames]:
            raise ConvertError(f"{where}: encoder makes {ex['output_shape']} per call, expected [1, {k}, {frames}]")
        card = {
            "format": 1,
            "name": f"{name}-encoder",
            "kind": "encoder",
            "description": f"RAVE encoder (audio → {k} latent means), converted from {ts_path.name}",
            "sample_rate": info["sample_rate"],
            "block_size": frames * ratio,
            "channels": 1,
            "control_frames": frames,
            "controls": [],
            "latent_controls": [f"{'q' if discrete else 'z'}{i}" for i in range(k)],
            "inputs": {"audio": "audio_in"},
            "outputs": {"latent": "latent"},
            "state": ex["state"],
            "latency_samples": 0,
            "license": "as the RAVE model it was converted from",
            "source": f"pi-synth convert rave {ts_path.name} (sha256 {digest})",
            "rave": {"ts": ts_path.name, "ts_sha256": digest, "latent_size": k, "ratio": ratio,
                     "latent": ("code indices of the residual quantizers" if discrete else
                                "posterior mean, PCA-projected (no sampling)"), "decoder_model": None,
                     "model_channels": info["n_channels"],
                     **({"input": "mono, heard on every channel of the model"} if info["n_channels"] > 1 else {})},
        }
        _write_card(tmp, card)
        os.replace(tmp, enc_file)
    finally:
        tmp.unlink(missing_ok=True)
    return card


def _model_name(out_path: Path) -> str:
    n = out_path.name
    for suffix in (".fp32.onnx", ".int8.onnx", ".onnx"):
        if n.endswith(suffix):
            return n[: -len(suffix)]
    return out_path.stem


class _NoBar:
    def update(self, n=1):
        pass

    def set_description(self, d):
        pass

    def close(self):
        pass


def _bar(total, progress):
    if not progress:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, unit="step", leave=False, bar_format="{desc:<10} {bar} {n_fmt}/{total_fmt} {elapsed}")


# ------------------------------------------------------------------------------------- int8

INT8_MIN_BYTES = 32_768  # a matrix product whose fp32 weights are at least this large goes int8


def _int8_gemms(fp32_path: Path, out_path: Path, min_bytes: int) -> tuple[list, int]:
    """Write ``out_path``: each plain ``Gemm`` of ``fp32_path`` whose weight has at least
    ``min_bytes`` as ``MatMul`` (+ ``Add``), quantized dynamically (int8 weights per output
    channel; onnxruntime fuses it into ``DynamicQuantizeMatMul``). Returns (the quantized
    nodes, their fp32 weight bytes)."""
    import onnx
    from onnx import helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32_path))
    _move_constants(model)  # a file converted before the weights were initializers
    g = model.graph
    weights = {i.name: i for i in g.initializer}
    nodes, chosen, fp32_bytes = [], [], 0
    for n in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        w = weights.get(n.input[1]) if n.op_type == "Gemm" and len(n.input) > 1 else None
        plain = not attrs.get("transA", 0) and not attrs.get("transB", 0) and attrs.get("alpha", 1.0) == 1.0 \
            and attrs.get("beta", 1.0) == 1.0
        size = 4 * math.prod(w.dims) if w is not None else 0
        if w is None or not plain or size < min_bytes:
            nodes.append(n)
            continue
        fp32_bytes += size
        mm = n.output[0] + "_int8_mm"
        chosen.append(n.name + "_int8")
        if len(n.input) > 2 and n.input[2]:
            nodes.append(helper.make_node("MatMul", n.input[:2], [mm], name=chosen[-1]))
            nodes.append(helper.make_node("Add", [mm, n.input[2]], [n.output[0]], name=n.name + "_int8_add"))
        else:
            nodes.append(helper.make_node("MatMul", n.input[:2], [n.output[0]], name=chosen[-1]))
    if not chosen:
        raise ConvertError(f"{fp32_path}: no matrix product with {min_bytes} bytes of weights or more; "
                           "int8 would not pay off here, play the fp32 model")
    del g.node[:]
    g.node.extend(nodes)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pi-synth-int8-") as tmp:
        mid = Path(tmp, "matmul.onnx")
        onnx.save(model, str(mid))
        import logging

        from pi_synth.tools.quantize import quiet_onnxruntime

        logging.disable(logging.INFO)  # the quantizer logs a line per tensor it leaves dynamic
        try:
            with quiet_onnxruntime():  # and its advice about pre-processing, through the root logger
                quantize_dynamic(str(mid), str(out_path), per_channel=True, weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul"], nodes_to_quantize=chosen)
        finally:
            logging.disable(logging.NOTSET)
    return chosen, fp32_bytes


MAX_BLOCK = 65536  # the card's largest block_size
INT8_MIN_SNR_DB = 30.0  # an int8 decoder further than this from its fp32 one is not written
DISCRETE_SAME_CODES = 0.99  # a discrete encoder goes int8 only if it picks the same code this often


def quantize_encoder(fp32_path, out_path, *, min_bytes: int = INT8_MIN_BYTES, threads: int = 1) -> dict:
    """int8 weights in a converted encoder's large matrix products (its tail runs as ``Gemm`` nodes,
    :class:`~pi_synth.tools.convert.stream.CFThenRows`), as :func:`quantize_decoder` does for
    the decoder: ``X.encoder.int8.onnx``, which ``X.int8.onnx`` finds first. The SNR is of the
    latents against the fp32 encoder's on :func:`test_signal`; the speed alternating."""
    from pi_synth.bench import snr_db, test_signal
    from pi_synth.model.card import card_json, write_card

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    card = card_json(fp32_path)
    if card.get("precision") == "int8":
        raise ConvertError(f"{fp32_path}: already int8; quantize the fp32 model")
    chosen, fp32_bytes = _int8_gemms(fp32_path, out_path, min_bytes)
    sess = {k: _ort_session(p, threads) for k, p in (("fp32", fp32_path), ("int8", out_path))}
    b = card["block_size"]
    x = test_signal(card["sample_rate"])
    x = x[: len(x) // b * b].reshape(-1, 1, 1, b)
    ain, lout = card["inputs"]["audio"], card["outputs"]["latent"]
    shapes = {a.name: a.shape for a in sess["fp32"].get_inputs()}
    outs = [lout] + [o for _, o in card["state"]]
    for _ in range(2):  # a second pass: the timed one, warm
        state = {k: {a: np.zeros(shapes[a], np.float32) for a, _ in card["state"]} for k in sess}
        lat, times = {k: [] for k in sess}, {k: [] for k in sess}
        for block in x:
            for k, se in sess.items():
                t0 = time.perf_counter()
                res = se.run(outs, {ain: block, **state[k]})
                times[k].append(time.perf_counter() - t0)
                lat[k].append(res[0])
                state[k] = {a: r for (a, _), r in zip(card["state"], res[1:])}
    snr = round(float(snr_db(np.concatenate(lat["fp32"]).ravel(), np.concatenate(lat["int8"]).ravel())), 2)
    us = {k: round(1e6 * float(np.median(v)), 1) for k, v in times.items()}
    if str(card.get("rave", {}).get("latent", "")).startswith("code indices"):
        # a discrete encoder picks the nearest code: int8 rounding moves its latent across code
        # boundaries, and a different code is a different sound, not a small error
        same = float(np.mean(np.concatenate(lat["fp32"]) == np.concatenate(lat["int8"])))
        if same < DISCRETE_SAME_CODES:
            out_path.unlink(missing_ok=True)
            return {"model": None, "skipped": True, "codes_equal_pct": round(100 * same, 1),
                    "why": f"int8 would change {100 * (1 - same):.1f}% of the codes the encoder picks "
                           f"(more than {100 * (1 - DISCRETE_SAME_CODES):.0f}%): it stays fp32"}
    write_card(out_path, dict(card, precision="int8", snr_db=snr, quant_format="dynamic"),
               producer="pi-synth convert rave --quantize")
    return {"model": str(out_path), "format": "dynamic", "snr_db": snr, "int8_nodes": len(chosen),
            "int8_weight_bytes_fp32": fp32_bytes, "fp32_bytes": fp32_path.stat().st_size,
            "int8_bytes": out_path.stat().st_size, "us_per_block": us,
            "speedup": round(us["fp32"] / us["int8"], 3), "threads": threads}


def quantize_decoder(fp32_path, out_path, *, min_bytes: int = INT8_MIN_BYTES, eval_blocks: int = 200,
                     threads: int = 1, encoder: str | None = None) -> dict:
    """int8 weights where the bytes are: a converted decoder → ``out_path`` (card copied, with
    ``precision: int8``, ``quant_format: dynamic`` and the measured ``snr_db``). Returns a report.

    A RAVE decoder at one latent frame per call reads each weight once per block, and most of
    its bytes sit in the matrix products of the first few layers (1–16 frames): those are bound
    by reading weights, not by arithmetic. Each ``Gemm`` whose weight has at least ``min_bytes``
    (raspberry: 16 products, a 1.2 MB file instead of 4.0 MB; v2: 28, 19.6 MB instead of 62 MB)
    becomes ``MatMul`` + ``Add`` and is
    quantized dynamically (onnxruntime's ``DynamicQuantizeMatMul``: int8 weights per output
    channel, the activation's scale measured on every call, so nothing is calibrated and a
    quiet latent loses no resolution); everything else stays fp32 (the small late layers,
    where int8 costs more in (de)quantizing than it saves, the PQMF and the output). The SNR
    is measured against the fp32 file on a held-out latent sequence, the speed alternating.
    ``encoder``: the file name the int8 card names as its encoder (the int8 encoder beside it).
    Needs onnx and onnxruntime only, no torch."""
    from pi_synth.bench import control_sequence, snr_db
    from pi_synth.model.card import card_json, write_card
    from pi_synth.tools import quantize as qz

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    card = card_json(fp32_path)
    if card.get("precision") == "int8":
        raise ConvertError(f"{fp32_path}: already int8; quantize the fp32 model")
    chosen, fp32_bytes = _int8_gemms(fp32_path, out_path, min_bytes)
    seq = control_sequence(card, eval_blocks, seed=2)
    ref = qz.render(qz._session(fp32_path, threads), card, seq)
    got = qz.render(qz._session(out_path, threads), card, seq)
    snr = round(float(snr_db(ref, got)), 2)
    if snr < INT8_MIN_SNR_DB:  # a sound worth hearing as fp32 is not made worse by default
        out_path.unlink(missing_ok=True)
        return {"model": None, "skipped": True, "snr_db": snr,
                "why": f"int8 would be {snr:.1f} dB against the fp32 model, under {INT8_MIN_SNR_DB:g} dB: the fp32 "
                       "model plays"}
    speed = qz.bench({"fp32": fp32_path, "int8": out_path}, card, seq, threads)
    write_card(out_path, dict(card, precision="int8", snr_db=snr, quant_format="dynamic",
                              **({"encoder": encoder} if encoder else {})),
               producer="pi-synth convert rave --quantize")
    return {"model": str(out_path), "format": "dynamic", "snr_db": snr, "int8_nodes": len(chosen),
            "int8_weight_bytes_fp32": fp32_bytes, "fp32_bytes": fp32_path.stat().st_size,
            "int8_bytes": out_path.stat().st_size, "speed": speed,
            "speedup": round(speed["fp32"]["us_per_block"] / speed["int8"]["us_per_block"], 3), "threads": threads}


# ------------------------------------------------------------------------------------ check


def _ort_session(path, threads=1):
    from pi_synth.model.session import open_session

    return open_session(path, threads)


def zero_caches(m) -> int:
    """Zero every cached_conv cache of a loaded ``.ts`` in place (same start as the ONNX model)."""
    torch = _torch()
    n = 0
    with torch.no_grad():
        for name, buf in m.named_buffers():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("pad", "cache"):
                buf.zero_()
                n += 1
    return n


def check(ts_path, onnx_path, *, blocks: int = 16, warmup: int = 3, seed: int = 0, encoder=None,
          layout: str = "rows") -> dict:
    """Run the ``.ts`` decode and the ONNX model side by side over ``blocks`` consecutive blocks.

    Both start from zero caches (the ``.ts`` caches are zeroed in place). When the export exposes
    fewer latents than it has, the ``.ts``'s ``randn`` fill is neutralized by zeroing the
    corresponding rows of its ``latent_pca`` (equivalent to the converter's zero fill). A model
    with a noise synthesizer is compared exactly too: a second conversion takes the uniform noise
    as an input, and each block gets the very numbers the ``.ts``'s ``rand_like`` draws (torch's
    generator reseeded per block on both sides); the speed is timed on the real model. Timing is
    per block, one thread each, medians after ``warmup`` calls (TorchScript's first calls JIT);
    the converted model runs as pi-synth plays it (:class:`~pi_synth.model.runtime.Runtime`).
    """
    torch = _torch()
    from pi_synth.model.card import load_card

    card = load_card(onnx_path)
    m = load_ts(ts_path)
    k = len(card.controls)
    frames = card.control_frames
    discrete = _name(m) == "DiscreteScriptedRAVE"
    full = k if discrete else int(_attr(m, "full_latent_size", k))  # a discrete .ts fills no latents
    if k < full and hasattr(m, "latent_pca"):
        with torch.no_grad():
            m.latent_pca[k:, :] = 0
    noisy = bool(card.extra.get("rave", {}).get("noise"))
    tmpd = None
    cmp_path = onnx_path
    if noisy:
        tmpd = tempfile.TemporaryDirectory(prefix="pi-synth-rave-check-")
        cmp_path = Path(tmpd.name) / "noise-input.onnx"
        convert(ts_path, cmp_path, frames=frames, encoder=False, noise="input", name="check", layout=layout)
    rng = np.random.default_rng(seed)
    zs = rng.standard_normal((blocks, 1, k, frames)).astype(np.float32)
    if discrete:  # codes, with some past either end of the codebook (clamped on both sides)
        zs = np.floor(rng.uniform(-8, card.controls[0].max + 8, zs.shape)).astype(np.float32)

    class Stream:
        def __init__(self, path):
            self.sess = _ort_session(path)
            self.card = load_card(path)
            specs = {a.name: a for a in self.sess.get_inputs()}
            self.zero = {a: np.zeros(specs[a].shape, np.float32) for a, _ in self.card.state}
            self.state = dict(self.zero)
            self.outs = [self.card.audio_output] + [b for _, b in self.card.state]

        def step(self, z, **override):
            res = self.sess.run(self.outs, {self.card.controls_input: z, **self.state, **override})
            self.state = {a: r for (a, _), r in zip(self.card.state, res[1:])}
            return res[0]

        def reset(self):
            self.state = dict(self.zero)

    class Played:
        """The converted model as pi-synth plays it: Runtime (io_binding, state ping-pong)."""

        def __init__(self, path):
            from pi_synth.model.runtime import Runtime

            self.rt = Runtime(path, use_cache=False, warmup_blocks=0)

        def step(self, z):
            self.rt.controls[...] = z[0]
            return self.rt.step()[None]

        def reset(self):
            self.rt.reset()

    timed = Played(onnx_path)
    cmp = Stream(cmp_path) if noisy else timed

    noise_in = cmp.card.extra.get("rave", {}).get("noise_inputs", []) if noisy else []
    noise_shapes = {a.name: a.shape for a in cmp.sess.get_inputs() if a.name in noise_in} if noisy else {}
    normal_in = set(cmp.card.extra.get("rave", {}).get("normal_noise_inputs", [])) if noisy else set()

    def ts_step(z, i=0):
        torch.manual_seed(1000 + i)
        with torch.no_grad():
            return m.decode(torch.from_numpy(z)).numpy()

    def ts_noise(i):
        """The uniform numbers the .ts's rand_like draws in block ``i`` (after its randn fill)."""
        torch.manual_seed(1000 + i)
        if k < full:
            torch.randn(1, full - k, frames)
        return {n: (torch.randn if n in normal_in else torch.rand)(*noise_shapes[n]).numpy() for n in noise_in}

    for i in range(warmup):  # warm-up on both sides, then back to zero state
        ts_step(zs[i % blocks])
        timed.step(zs[i % blocks])
        if noisy:
            cmp.step(zs[i % blocks])
    zero_caches(m)
    timed.reset()
    cmp.reset()
    t_ts, t_ort, err, peak = [], [], 0.0, 0.0
    for i in range(blocks):
        t0 = time.perf_counter()
        a = ts_step(zs[i], i)
        t1 = time.perf_counter()
        b = timed.step(zs[i])
        t2 = time.perf_counter()
        if noisy:
            b = cmp.step(zs[i], **ts_noise(i))
        t_ts.append(t1 - t0)
        t_ort.append(t2 - t1)
        a = a.reshape(b.shape)
        err = max(err, float(np.max(np.abs(a - b))))
        peak = max(peak, float(np.max(np.abs(a))))
    if tmpd is not None:
        tmpd.cleanup()
    ts_ms, ort_ms = 1e3 * float(np.median(t_ts)), 1e3 * float(np.median(t_ort))
    res = {"blocks": blocks, "max_abs_err": err, "peak": peak, "ts_ms": round(ts_ms, 3),
           "onnx_ms": round(ort_ms, 3), "speedup": round(ts_ms / ort_ms, 2),
           "noise": "the .ts's own random numbers fed to a noise-input copy" if noisy else None}
    if encoder is not None and os.path.exists(encoder):
        res["encoder"] = check_encoder(ts_path, encoder, blocks=blocks, seed=seed)
    return res


def check_encoder(ts_path, onnx_path, *, blocks: int = 16, seed: int = 0) -> dict:
    """Compare the encoder model with the ``.ts``'s own modules computing the posterior mean."""
    torch = _torch()
    from pi_synth.model.card import load_card

    card = load_card(onnx_path)
    m = load_ts(ts_path)
    zero_caches(m)
    k = int(m.latent_size)
    variational = _name(m) == "VariationalScriptedRAVE"
    sess = _ort_session(onnx_path)
    specs = {a.name: a for a in sess.get_inputs()}
    state = {s_in: np.zeros(specs[s_in].shape, np.float32) for s_in, _ in card.state}
    outs = ["latent"] + [s_out for _, s_out in card.state]
    rng = np.random.default_rng(seed + 1)
    bs = card.block_size
    err, diff, total = 0.0, 0, 0
    for _ in range(blocks):
        x = (0.3 * rng.standard_normal((1, 1, bs))).astype(np.float32)
        res = sess.run(outs, {"audio_in": x, **state})
        state = {s_in: r for (s_in, _), r in zip(card.state, res[1:])}
        with torch.no_grad():
            xt = torch.from_numpy(x)
            if _attr(m, "resampler") is not None:  # an export with --sr
                xt = m.resampler.to_model_sampling_rate(xt)
            n = int(_attr(m, "n_channels", 1))
            if n > 1:  # the mono input on every channel, as the converted encoder hears it
                xt = xt.repeat(1, n, 1)
            if str(_attr(m, "input_mode", "pqmf")) == "mel":  # as ScriptedRAVE.encode
                xt = torch.log1p(m.spectrogram(xt)[..., :-1]).reshape(1, -1, xt.shape[-1] // int(
                    m.spectrogram.spectrogram.hop_length))
            elif int(_attr(m.pqmf, "n_band", 1)) > 1:  # per channel, as ScriptedRAVE.encode
                xt = m.pqmf(xt.reshape(-1, 1, xt.shape[-1]))
                xt = xt.reshape(1, -1, xt.shape[-1])
            z = m.encoder(xt)
            if variational:  # the posterior mean, centred and projected (the .ts would sample it)
                z = z[:, : z.shape[1] // 2]
                z = torch.nn.functional.conv1d(z - m.latent_mean.reshape(1, -1, 1), m.latent_pca.unsqueeze(-1))
            else:  # Wasserstein: the latent itself; spherical: its angles; discrete: its codes
                z = m.post_process_latent(z)
            z = z[:, :k]
        err = max(err, float(np.max(np.abs(z.numpy() - res[0]))))
        diff += int(np.count_nonzero(z.numpy() != res[0]))
        total += int(z.numel())
    res = {"blocks": blocks, "max_abs_err": err}
    if _name(m) == "DiscreteScriptedRAVE":
        res["codes_differing"] = [diff, total]
    return res


def format_check(res: dict) -> str:
    s = (f"check over {res['blocks']} blocks: max abs error {res['max_abs_err']:.2e} "
         f"(peak {res['peak']:.3f}); per block TorchScript {res['ts_ms']:.3f} ms, "
         f"onnxruntime {res['onnx_ms']:.3f} ms: {res['speedup']:.2f}× (1 thread each, warm-up excluded)")
    if res.get("noise"):
        s += f"\n(noise synthesizer compared exactly: {res['noise']})"
    if "encoder" in res:
        s += f"\nencoder check: max abs error {res['encoder']['max_abs_err']:.2e}"
        if "codes_differing" in res["encoder"]:
            d, n = res["encoder"]["codes_differing"]
            s += f" ({d} of {n} codes differ: near-ties of two codes)" if d else f" (all {n} codes equal)"
    return s


def tmpdir():
    return tempfile.mkdtemp(prefix="pi-synth-rave-")
