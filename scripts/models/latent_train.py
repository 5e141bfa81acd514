"""Train the latent voice (VAE, multi-scale spectral loss + KL) on the rendered pad/strings/choir data.

Usage: python scripts/models/latent_train.py [--data work/latent] [--steps 4000] [--threads 1]
Writes {data}/latent_vae.pt and {data}/train_log.json.
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
from latent_model import BLOCK, LatentVAE  # noqa: E402

WARM = 4  # latent frames that only warm up the decoder caches


def crops(audio, loud, rng, batch, frames, active_p=0.9):
    F = len(audio) // BLOCK
    out = []
    while len(out) < batch:
        s = int(rng.integers(0, F - frames - WARM))
        if loud[s + WARM : s + WARM + frames].max() > -50 or rng.random() > active_p:
            out.append(audio[s * BLOCK : (s + WARM + frames) * BLOCK])
    return torch.from_numpy(np.stack(out))


def step_loss(model, x, beta, gen=None):
    mean, logvar = model.encoder(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)
    y, _ = model.decoder(z, model.decoder.zero_caches(x.shape[0]))
    rec = spectral_distance(y[:, 0, WARM * BLOCK :], x[:, WARM * BLOCK :])
    kl = 0.5 * (mean**2 + logvar.exp() - logvar - 1).sum(1).mean()
    return rec, kl


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=WORK / "latent")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--beta", type=float, default=0.02)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)
    train = dict(np.load(args.data / "train.npz"))
    test = dict(np.load(args.data / "test.npz"))
    vrng = np.random.default_rng(99)
    val = [crops(test["audio"], test["loudness"], vrng, 8, args.frames) for _ in range(3)]
    model = LatentVAE()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(args.seed)
    log, ema, t0 = [], None, time.time()
    bar = tqdm(range(args.steps), desc="train latent voice")
    for step in bar:
        x = crops(train["audio"], train["loudness"], rng, args.batch, args.frames)
        beta = args.beta * min(1.0, step / (0.3 * args.steps))  # KL warm-up
        rec, kl = step_loss(model, x, beta, gen)
        loss = rec + beta * kl
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        sched.step()
        rv = rec.item()
        ema = rv if ema is None else 0.98 * ema + 0.02 * rv
        bar.set_postfix(rec=f"{ema:.3f}", kl=f"{kl.item():.2f}")
        if (step + 1) % 250 == 0 or step + 1 == args.steps:
            model.eval()
            with torch.no_grad():
                g = torch.Generator().manual_seed(7)
                v = float(np.mean([float(step_loss(model, x, beta, g)[0]) for x in val]))
            model.train()
            log.append({"step": step + 1, "train_rec": ema, "val_rec": v, "kl": kl.item(), "seconds": time.time() - t0})
            tqdm.write(json.dumps(log[-1]))
    torch.save(model.state_dict(), args.data / "latent_vae.pt")
    (args.data / "train_log.json").write_text(json.dumps({"threads": args.threads, "seconds": time.time() - t0,
                                                          "steps": args.steps, "log": log}, indent=2))


if __name__ == "__main__":
    main()
