"""Train the note voice (DDSP-style harmonic + noise) on the rendered flute data.

Usage: python scripts/models/note_train.py [--data work/note] [--steps 4000] [--threads 1]
Writes {data}/note_voice.pt and {data}/train_log.json.
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
from note_model import BLOCK, FIR_TAPS, NoteVoice  # noqa: E402

WARM = 32  # frames that only warm up the causal convs (receptive field 31 frames)


def crops(d, rng, batch, frames, active_p=0.9):
    F = len(d["f0"])
    loud = d["loudness"]
    starts = []
    while len(starts) < batch:
        s = int(rng.integers(0, F - WARM - frames))
        if loud[s + WARM : s + WARM + frames].max() > -50 or rng.random() > active_p:
            starts.append(s)
    idx = np.array(starts)[:, None] + np.arange(WARM + frames)[None, :]
    pitch = torch.from_numpy(d["f0"][idx])
    loud_t = torch.from_numpy(loud[idx])
    a = np.stack([d["audio"][(s + WARM) * BLOCK : (s + WARM + frames) * BLOCK] for s in starts])
    return pitch, loud_t, torch.from_numpy(a)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=WORK / "note")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)
    train = dict(np.load(args.data / "train.npz"))
    test = dict(np.load(args.data / "test.npz"))
    vrng = np.random.default_rng(99)
    val = [crops(test, vrng, 8, args.frames) for _ in range(4)]
    model = NoteVoice()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(args.seed)
    log = []
    t0, cpu0 = time.time(), time.process_time()

    def evaluate():
        model.eval()
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            tot = 0.0
            for p, l, a in val:
                src = torch.randn(a.shape[0], a.shape[1] + FIR_TAPS - 1, generator=g)
                ph = torch.rand(a.shape[0], 1, dtype=torch.float64, generator=g)
                tot += float(spectral_distance(model.train_forward(p, l, WARM, src, ph), a))
        model.train()
        return tot / len(val)

    bar = tqdm(range(args.steps), desc="train note voice")
    ema = None
    for step in bar:
        p, l, a = crops(train, rng, args.batch, args.frames)
        src = torch.randn(a.shape[0], a.shape[1] + FIR_TAPS - 1, generator=gen)
        ph = torch.rand(a.shape[0], 1, dtype=torch.float64, generator=gen)
        loss = spectral_distance(model.train_forward(p, l, WARM, src, ph), a)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        sched.step()
        lv = loss.item()
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        bar.set_postfix(loss=f"{ema:.3f}")
        if (step + 1) % 250 == 0 or step + 1 == args.steps:
            v = evaluate()
            log.append({"step": step + 1, "train": ema, "val": v, "seconds": time.time() - t0})
            tqdm.write(json.dumps(log[-1]))
    torch.save(model.state_dict(), args.data / "note_voice.pt")
    (args.data / "train_log.json").write_text(json.dumps({"threads": args.threads, "seconds": time.time() - t0,
                                                          "cpu_seconds": time.process_time() - cpu0,
                                                          "steps": args.steps, "log": log}, indent=2))


if __name__ == "__main__":
    main()
