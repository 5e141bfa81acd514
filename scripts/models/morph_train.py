"""Train the morph voice: the z encoder and the harmonic-plus-noise decoder together, as an autoencoder,
on the multi-scale spectral distance the evaluation uses (common.spectral_distance) plus a per-frame
harmonic-to-noise match (:func:`hnr_loss`, ``--hnr-weight``). The spectral distance alone rewards noise in the
gaps between harmonics (its 64..256-point FFTs cannot resolve them): the decoder trained on it alone put its
output 8.6 dB below the reference's HNR on held-out material, its harmonics alone 16 dB above it.
Runs (42 min each, 1 thread): ``--hnr-weight 1`` came within 0.67 dB of the reference's HNR (spectral
0.2917), but at the default knobs (220 Hz, z = 0) its fundamental fell below the second harmonic — YIN
heard 440 Hz; ``--hnr-weight 0.4`` alone (2026-12-06) let the fundamental die (softmax logit ~-90 dB at every
pitch; a held-out clip played an octave up, int8 worst 29.99 dB). The shipped files (2026-12-06, issue 22)
are ``--hnr-weight 0.4 --fundamental-weight 0.3``, the defaults, so build-all.sh reproduces them: HNR +0.26 dB
from the reference's, spectral 0.2768. :func:`fundamental_loss` matches the fundamental's share of the
harmonic energy (in bels, so its gradient does not vanish with the harmonic), so the HNR match cannot
trade the fundamental for the octave.

The encoder's DSP half (pitch, loudness, log-mel) has no weights: it is computed once over the data
(morph_model.offline_features, the same module the streaming encoder runs). The decoder hears the data's
f0 (YIN around the score's note) in training and the encoder's pitch when played.

Usage: python scripts/models/morph_train.py [--data work/morph] [--minutes 42] [--threads 2]
Writes {data}/morph.pt, {data}/features.npz and {data}/train_log.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, seed_everything, spectral_distance  # noqa: E402
from morph_model import BLOCK, Morph, held_pitch, offline_features  # noqa: E402

WARM = 32  # frames that only warm the causal convs (the decoder sees 31 frames back)


def prepare(model, d, cache=None, part=""):
    """The encoder's DSP features of a data set (no weights: the same every run; ``cache``, a features.npz
    of an earlier run over the same data, is reused when its frame count matches)."""
    n = len(d["audio"]) // BLOCK
    c = dict(np.load(cache)) if cache is not None and cache.exists() else {}
    if len(c.get(f"{part}_loud", ())) == n:
        p, l, m = c[f"{part}_raw_pitch"], c[f"{part}_loud"], c[f"{part}_logmel"]
    else:
        p, l, m = offline_features(model.features, d["audio"])
    return {"f0": d["f0"].astype(np.float32), "pitch_enc": held_pitch(p).astype(np.float32), "raw_pitch": p,
            "loud": l.astype(np.float32), "logmel": m.astype(np.float32), "audio": d["audio"],
            "per": d["periodicity"].astype(np.float32), "loud_data": d["loudness"].astype(np.float32)}


def crops(f, rng, batch, frames, active_p=0.9):
    n = len(f["loud"])
    starts = []
    while len(starts) < batch:
        s = int(rng.integers(0, n - WARM - frames))
        if f["loud"][s + WARM : s + WARM + frames].max() > -50 or rng.random() > active_p:
            starts.append(s)
    idx = np.array(starts)[:, None] + np.arange(WARM + frames)[None]
    a = np.stack([f["audio"][(s + WARM) * BLOCK : (s + WARM + frames) * BLOCK] for s in starts])
    t = {k: torch.from_numpy(f[k][idx]) for k in ("f0", "pitch_enc", "loud", "per", "loud_data")}
    t["logmel"] = torch.from_numpy(f["logmel"][idx]).transpose(1, 2)
    return t, torch.from_numpy(a)


HNR_FFT = 4096  # as morph_export.hnr_db measures it


def frame_hnr(x, f0, n=HNR_FFT):
    """Per 512-sample frame the harmonic-to-noise ratio in bels, as morph_export.hnr_db measures it
    (energy within f0/4 of a harmonic against the rest, 100 Hz .. 16 kHz, an n-point Hann centred on the
    frame's end), differentiable. x [B, T*BLOCK]; f0 [B, T] Hz (frame t describes the end of block t).
    Returns [B, T - 1] for the frames t = 0 .. T-2 (the last one's window runs past the crop)."""
    win = torch.hann_window(n, periodic=False, dtype=x.dtype)
    spec = torch.stft(x, n, BLOCK, window=win, return_complex=True, center=True, pad_mode="constant")
    p = spec.real**2 + spec.imag**2  # [B, bins, frames]; frame j is centred on sample j*BLOCK
    p = p[:, :, 1 : f0.shape[1]]  # centred on the ends of blocks 0 .. T-2
    f = torch.fft.rfftfreq(n, 1 / 48000.0).to(x.dtype)
    g = f0[:, : p.shape[2], None]  # [B, T-1, 1]
    dist = torch.abs(f / g - torch.round(f / g)) * g
    band = ((f > 100) & (f < 16000)).to(x.dtype)
    harm = (dist <= g / 4).to(x.dtype) * band
    pt = p.transpose(1, 2)
    h = (pt * harm).sum(-1)
    nz = (pt * (band - harm)).sum(-1)
    return torch.log10((h + 1e-20) / (nz + 1e-20))


def hnr_loss(y, a, c, warm, edge=HNR_FFT // (2 * BLOCK)):
    """Mean |HNR(y) - HNR(a)| (bels) over the crop's voiced frames (periodicity > 0.8, loudness > -50 dB,
    as the evaluation picks them) whose window lies inside the crop; also the signed mean difference (dB)."""
    return _voiced_match(frame_hnr, y, a, c, warm, edge)


def _voiced_match(measure, y, a, c, warm, edge):
    """Mean |measure(y) - measure(a)| (bels) over the crop's voiced frames whose window lies inside
    the crop, and the signed mean difference (dB): what :func:`hnr_loss` and :func:`fundamental_loss` share."""
    f0 = c["f0"][:, warm:]
    my, ma = measure(y, f0), measure(a, f0)
    t = torch.arange(my.shape[1])
    keep = (c["per"][:, warm : warm + my.shape[1]] > 0.8) & (c["loud_data"][:, warm : warm + my.shape[1]] > -50)
    keep = keep & (t >= edge - 1)[None] & (t < my.shape[1] - edge)[None]
    if not bool(keep.any()):
        return y.sum() * 0.0, 0.0
    d = (my - ma)[keep]
    return d.abs().mean(), float(10 * d.mean())


def frame_fundamental_share(x, f0, n=HNR_FFT):
    """Per 512-sample frame the fundamental's share of the harmonic energy in bels: energy within f0/4 of
    f0 against energy within f0/4 of any harmonic below 16 kHz (the same n-point Hann as :func:`frame_hnr`,
    no 100 Hz floor, so an 82 Hz fundamental counts). Shapes as :func:`frame_hnr`."""
    win = torch.hann_window(n, periodic=False, dtype=x.dtype)
    spec = torch.stft(x, n, BLOCK, window=win, return_complex=True, center=True, pad_mode="constant")
    p = (spec.real**2 + spec.imag**2)[:, :, 1 : f0.shape[1]].transpose(1, 2)  # [B, T-1, bins]
    f = torch.fft.rfftfreq(n, 1 / 48000.0).to(x.dtype)
    g = f0[:, : p.shape[1], None]
    r = torch.round(f / g)
    near = (torch.abs(f / g - r) * g <= g / 4) & (r >= 1) & (f < 16000)
    h = (p * near.to(x.dtype)).sum(-1)
    h1 = (p * (near & (r == 1)).to(x.dtype)).sum(-1)
    return torch.log10((h1 + 1e-20) / (h + 1e-20))


def fundamental_loss(y, a, c, warm, edge=HNR_FFT // (2 * BLOCK)):
    """Mean |share(y) - share(a)| (bels) of :func:`frame_fundamental_share` over the frames :func:`hnr_loss`
    keeps; also the signed mean difference (dB). Why (issue 22): the HNR match alone (``--hnr-weight 1``) let
    the decoder move harmonic energy from the fundamental to the second harmonic, so that at the default knobs
    (220 Hz, z = 0) YIN heard the octave above; this ties the fundamental's level to the reference's."""
    return _voiced_match(frame_fundamental_share, y, a, c, warm, edge)


def run(model, c, a, gen, z_noise=0.0):
    pos = torch.randint(0, 1 << 30, (a.shape[0],), generator=gen)
    ph = torch.rand(a.shape[0], 1, dtype=torch.float64, generator=gen)
    return model.train_forward(c["pitch_enc"], c["f0"], c["loud"], c["logmel"], WARM, pos, ph, z_noise, gen)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=WORK / "morph")
    ap.add_argument("--steps", type=int, default=20000, help="at most this many steps")
    ap.add_argument("--minutes", type=float, default=38.0,
                    help="wall-time budget of the training loop: the learning-rate schedule runs on the fraction "
                         "of it spent, so a shared machine gets fewer steps, not a longer run")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--z-noise", type=float, default=0.05)
    ap.add_argument("--z-l2", type=float, default=1e-3)
    ap.add_argument("--hnr-weight", type=float, default=0.4,
                    help="weight of the per-frame harmonic-to-noise match (hnr_loss, bels): the multi-scale "
                         "distance alone, whose small FFTs cannot tell harmonics from noise, let the noise "
                         "bands fill the gaps between harmonics (8.6 dB below the reference's HNR); 0.4 = the shipped recipe")
    ap.add_argument("--fundamental-weight", type=float, default=0.3,
                    help="weight of the per-frame match of the fundamental's share of the harmonic energy "
                         "(fundamental_loss, bels): keeps the HNR match from trading the fundamental for the "
                         "second harmonic (the --hnr-weight 1 run played an octave up at the default knobs); "
                         "0.3 = the shipped recipe")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    t0, cpu0 = time.time(), time.process_time()
    model = Morph()
    train = prepare(model, dict(np.load(args.data / "train.npz")), args.data / "features.npz", "train")
    test = prepare(model, dict(np.load(args.data / "test.npz")), args.data / "features.npz", "test")
    np.savez(args.data / "features.npz", **{f"{s}_{k}": v[k] for s, v in (("train", train), ("test", test))
                                            for k in ("pitch_enc", "raw_pitch", "loud", "logmel")})
    feat_s = time.time() - t0
    rng = np.random.default_rng(args.seed)
    vrng = np.random.default_rng(99)
    val = [crops(test, vrng, 8, args.frames) for _ in range(4)]
    params = [p for n, p in model.named_parameters()]
    opt = torch.optim.Adam(params, lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    log, ema, ema_gap, ema_fgap, done = [], None, None, None, 0

    def evaluate():
        model.eval()
        g = torch.Generator().manual_seed(7)
        rec, gap, fgap = [], [], []
        with torch.no_grad():
            for c, a in val:
                y = run(model, c, a, g)[0]
                rec.append(float(spectral_distance(y, a)))
                gap.append(hnr_loss(y, a, c, WARM)[1])
                fgap.append(fundamental_loss(y, a, c, WARM)[1])
        model.train()
        return float(np.mean(rec)), float(np.mean(gap)), float(np.mean(fgap))

    budget = 60.0 * args.minutes
    t_loop = time.time()
    bar = tqdm(range(args.steps), desc="train morph", mininterval=10)
    for step in bar:
        frac = (time.time() - t_loop) / budget
        if frac >= 1.0:
            break
        # one cycle on the time spent: 5% warm-up, then cosine down to lr/100
        lr = args.lr * (frac / 0.05 if frac < 0.05 else 0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * (frac - 0.05) / 0.95)))
        for g in opt.param_groups:
            g["lr"] = lr
        c, a = crops(train, rng, args.batch, args.frames)
        y, z = run(model, c, a, gen, args.z_noise)
        rec = spectral_distance(y, a)
        loss = rec + args.z_l2 * (z**2).mean()
        if args.hnr_weight:
            hl, gap = hnr_loss(y, a, c, WARM)
            loss = loss + args.hnr_weight * hl
            ema_gap = gap if ema_gap is None else 0.98 * ema_gap + 0.02 * gap
        if args.fundamental_weight:
            fl, fgap = fundamental_loss(y, a, c, WARM)
            loss = loss + args.fundamental_weight * fl
            ema_fgap = fgap if ema_fgap is None else 0.98 * ema_fgap + 0.02 * fgap
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 2.0)
        opt.step()
        done = step + 1
        ema = rec.item() if ema is None else 0.98 * ema + 0.02 * rec.item()
        bar.set_postfix(rec=f"{ema:.3f}")
        if (step + 1) % 250 == 0:
            v, vgap, vfgap = evaluate()
            log.append({"step": step + 1, "train": ema, "train_hnr_gap_db": ema_gap, "val": v, "val_hnr_gap_db": vgap,
                        "train_fund_gap_db": ema_fgap, "val_fund_gap_db": vfgap, "seconds": time.time() - t0})
            tqdm.write(json.dumps(log[-1]))
            torch.save(model.state_dict(), args.data / "morph.pt")
    torch.save(model.state_dict(), args.data / "morph.pt")
    (args.data / "train_log.json").write_text(json.dumps(
        {"threads": args.threads, "seconds": time.time() - t0, "cpu_seconds": time.process_time() - cpu0,
         "features_seconds": feat_s, "steps": done, "minutes_budget": args.minutes, "batch": args.batch, "frames": args.frames,
         "lr": args.lr, "hnr_weight": args.hnr_weight, "fundamental_weight": args.fundamental_weight, "z_noise": args.z_noise,
         "loadavg_end": open("/proc/loadavg").read().split()[:3], "log": log}, indent=2))


if __name__ == "__main__":
    main()
