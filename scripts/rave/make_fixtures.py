"""Build real RAVE streaming exports (random weights) for the converter's tests and benchmarks.

Run inside the RAVE venv (``scripts/rave/make-fixtures.sh`` does it):

    .venv-rave/bin/python scripts/rave/make_fixtures.py [--out work/rave-fixtures] [NAME ...]

For each fixture it builds ``rave.RAVE`` from the package's own gin configs, writes a run folder
(``runs/NAME/config.gin`` = ``gin.operative_config_str()``, ``runs/NAME/version_0/checkpoints/last.ckpt``
= ``{"state_dict": ...}``) and then calls the *unmodified* ``rave export --run runs/NAME --streaming``,
exactly as a musician would after training. Two things an untrained model gets wrong are set by hand:

- ``fidelity`` (all zeros untrained, so export would keep 1 latent): a ramp chosen so that export keeps
  128 latents (``*-l128``: exact comparison, no ``randn`` fill) or 8 latents (``*-l8``: the fill path);
- ``warmed_up = True`` (untrained, v1's noise synth is silently off);
- a discrete model's codebooks (k-means fills them on the first training batch; untrained, all
  zeros): random codes spread like the encoder's latents on a few test tones, so the codes the
  encoder picks change with its input;
- v2's noise synthesizer's convolutions scaled up 30× each (untrained, its noise is ~1e-8 of the
  output, too little for a comparison to tell whether it is right);
- for ``v3-adain-l128``, the adaptive instance normalisations' source and target statistics (as
  nn~'s learn_source / learn_target leave them; untrained, each is the identity).

The ``-l8`` fixtures also get a random orthogonal ``latent_pca`` and a random ``latent_mean``, so the
converter's PCA path is exercised. Existing ``.ts`` files are kept (delete to rebuild).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

# name -> (gin configs, causal, latents kept by export)
FIXTURES = {
    "raspberry-l128": (["configs/raspberry.gin"], False, 128),
    "raspberry-causal-l128": (["configs/raspberry.gin", "configs/causal.gin"], True, 128),
    "v2-l128": (["configs/v2.gin"], False, 128),
    "v2-causal-l128": (["configs/v2.gin", "configs/causal.gin"], True, 128),
    "raspberry-l8": (["configs/raspberry.gin"], False, 8),
    # with their noise synthesizers (v1's warmed up): stochastic branches, checked with the .ts's own noise
    "v1-noise-l8": (["configs/v1.gin"], False, 8),
    "v2-small-noise-l128": (["configs/v2_small.gin"], False, 128),
    # v3: v2 with Snake activations and adaptive instance normalisation (the config many shared models use)
    "v3-l128": (["configs/v3.gin"], False, 128),
    # v3 whose adaptive instance normalisations have learned a source and a target (nn~'s
    # learn_source / learn_target, saved in the buffers): each is then an affine map per channel
    "v3-adain-l128": (["configs/v3.gin"], False, 128),
    # Wasserstein (v2 + wasserstein.gin): 16 latents and 128 channels of noise augmentation, drawn in decode
    "v2-wasserstein-l16": (["configs/v2.gin", "configs/wasserstein.gin"], False, 16),
    # spherical (v2 + spherical.gin): 16 latents on the unit sphere, played as 15 angles
    "v2-spherical-l16": (["configs/v2.gin", "configs/spherical.gin"], False, 16),
    # onnx.gin: v1 at capacity 32 without its noise synthesizer
    "onnx-l128": (["configs/onnx.gin"], False, 128),
    # a 24 kHz model exported with --sr 48000: RAVE's resampler (2x) around the model, as nn~ users do
    "raspberry-sr48k-l128": (["configs/raspberry.gin"], False, 128),
    # stereo models (trained with `rave train --channels 2`: the PQMF and the nets per channel)
    "raspberry-stereo-l8": (["configs/raspberry.gin"], False, 8),
    "v2-small-stereo-l16": (["configs/v2_small.gin"], False, 16),
    "raspberry-stereo-sr48k-l8": (["configs/raspberry.gin"], False, 8),  # stereo, 24 kHz, exported with --sr 48000
    # discrete (v2 + discrete.gin): 16 residual quantizers of 1024 codes, 128 channels of noise augmentation
    "v2-discrete-q16": (["configs/v2.gin", "configs/discrete.gin"], False, 16),
    # v2_with_augs.gin: the encoder reads a mel spectrogram (not converted: the decoder plays without it)
    "v2-mel-l16": (["configs/v2_with_augs.gin"], False, 16),
    # hybrid.gin: a mel encoder (not converted) and a GRU in the decoder
    "v2-hybrid-l16": (["configs/hybrid.gin"], False, 16),
    # exported without --streaming: the converter must refuse it and say how to re-export
    "raspberry-nonstreaming-l8": (["configs/raspberry.gin"], False, 8),
}
DEFAULT = list(FIXTURES)
# gin bindings and `rave export` flags beyond the defaults
# (the v2-based variants at a third of v2's width: the same modules, ~9x fewer weights to build,
# convert and check in the suite)
SMALL = ["CAPACITY = 32"]
BINDINGS = {"raspberry-sr48k-l128": ["SAMPLING_RATE = 24000"], "v3-l128": SMALL, "v3-adain-l128": SMALL,
            "v2-wasserstein-l16": SMALL, "v2-spherical-l16": SMALL,
            "v2-discrete-q16": SMALL, "v2-mel-l16": SMALL, "v2-hybrid-l16": SMALL,
            "raspberry-stereo-l8": ["RAVE.n_channels = 2"],
            "raspberry-stereo-sr48k-l8": ["RAVE.n_channels = 2", "SAMPLING_RATE = 24000"], "v2-small-stereo-l16": ["RAVE.n_channels = 2"]}
EXPORT_ARGS = {"raspberry-sr48k-l128": ["--sr", "48000"], "raspberry-stereo-sr48k-l8": ["--sr", "48000"]}
NOISE_GAIN = 30.0  # v2's noise net: each convolution's weights ×30 (see the docstring)


def fidelity_curve(keep: int, n: int):
    """A fidelity curve for which ``rave export`` (fidelity .95) keeps ``keep`` latents."""
    import numpy as np

    # export: latent_size = 2 ** ceil(log2(max(argmax(fidelity > .95), 1)))
    first = keep - 1 if keep > 1 else 1  # first index above .95
    f = np.minimum(0.999, 0.96 * (np.arange(n) + 1) / (first + 1))
    return f.astype("float32")


def build(name: str, out: Path, seed: int = 0) -> Path:
    configs, _causal, keep = FIXTURES[name]
    ts = out / f"{name}.ts"
    if ts.exists():
        print(f"fixture {name}: exists ({ts})")
        return ts
    import gin
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import cached_conv as cc
    import rave

    t0 = time.time()
    torch.manual_seed(seed)
    gin.clear_config()
    cc.use_cached_conv(False)
    gin.parse_config_files_and_bindings(configs, BINDINGS.get(name, []))
    model = rave.RAVE()
    n = model.latent_size
    with torch.no_grad():
        model.fidelity.copy_(torch.from_numpy(fidelity_curve(keep, n)))
        if keep < n:
            q, _ = torch.linalg.qr(torch.randn(n, n))
            model.latent_pca.copy_(q)
            model.latent_mean.copy_(0.1 * torch.randn(n))
    for mod in model.modules():
        if type(mod).__name__ == "NoiseGeneratorV2":  # untrained, its amplitude is sigmoid(-5)²·³: ~1e-8 of
            with torch.no_grad():  # its convolutions have no bias: each one's gain raised
                for c in mod.net:
                    if hasattr(c, "weight"):
                        c.weight *= NOISE_GAIN  # so the noise is heard and --check's comparison tests its path
    books = [mod for mod in model.modules() if type(mod).__name__ == "EuclideanCodebook"]
    if books:  # k-means fills a codebook from the first batch's latents; untrained, all zeros (one code)
        with torch.no_grad():  # codes spread like the encoder's latents on a few test signals, as k-means would
            t = torch.arange(16384) / 44100.0
            x = torch.stack([a * torch.sin(2 * math.pi * f * t) + 0.1 * a * torch.randn(t.shape)
                             for a in (0.05, 0.3, 1.0) for f in (110.0, 440.0, 1760.0)]).unsqueeze(1)
            z = model.encoder(model.pqmf(x)).permute(0, 2, 1).reshape(-1, model.latent_size)
            mu, sd = z.mean(0), z.std(0)
            for mod in books:
                mod.embed.copy_(mu + sd * torch.randn_like(mod.embed))
                mod.embed_avg.copy_(mod.embed)
                mod.inited.fill_(1.0)
    if "adain" in name:
        for mod in model.modules():
            if type(mod).__name__ == "AdaptiveInstanceNormalization":
                with torch.no_grad():
                    for b in ("mean_x", "mean_y"):
                        getattr(mod, b).normal_(0.0, 0.3)
                    for b in ("std_x", "std_y"):
                        getattr(mod, b).uniform_(0.5, 2.0)
                    mod.num_update_x.fill_(1)
                    mod.num_update_y.fill_(1)
    model.warmed_up = True
    model.decoder.set_warmed_up(True)
    run = out / "runs" / name
    ckpt = run / "version_0" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    (run / "config.gin").write_text(gin.operative_config_str())
    torch.save({"state_dict": model.state_dict()}, ckpt)
    del model
    rave_bin = Path(sys.executable).parent / "rave"
    streaming = "nonstreaming" not in name
    cmd = [str(rave_bin), "export", "--run", str(run), *(["--streaming"] if streaming else []),
           "--output", str(out), "--name", name, *EXPORT_ARGS.get(name, [])]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    made = out / (f"{name}_streaming.ts" if streaming else f"{name}.ts")
    if r.returncode != 0 and "Unknown command line flag 'output'" in r.stderr + r.stdout:
        # RAVE before 2.2 (what most shared models were exported with) writes into the run folder
        cmd = [str(rave_bin), "export", "--run", str(run), *(["--streaming"] if streaming else []),
               *EXPORT_ARGS.get(name, [])]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        made = run / (f"{name}_streaming.ts" if streaming else f"{name}.ts")
    if r.returncode != 0 or not made.exists():
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
        raise SystemExit(f"fixture {name}: rave export failed ({' '.join(cmd)})")
    if made != ts:
        made.rename(ts)
    print(f"fixture {name}: {ts} ({ts.stat().st_size / 1e6:.1f} MB, {time.time() - t0:.0f} s)")
    return ts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", default=DEFAULT, help=f"fixtures (default: {' '.join(DEFAULT)})")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[2] / "work" / "rave-fixtures"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        if name not in FIXTURES:
            raise SystemExit(f"unknown fixture {name!r}; known: {', '.join(FIXTURES)}")
        build(name, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
