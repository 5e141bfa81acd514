#!/usr/bin/env python3
"""Polyphony as a batch: block time of N voices of one note model in one onnxruntime call.

    .venv/bin/python benchmarks/bench_voices.py [--models models] [--name flute] [--voices 1 2 4 8 16]
                                                [--out benchmarks/results/voices] [--quick]

A note model whose card says ``"voices": N`` has a dynamic leading dimension ``voices`` on its
controls, state and audio: row v is voice v, with its own state rows (``docs/model-format.md``).
This measures, 1 onnxruntime thread, in one run:

- the curve: median (and p99) µs per block at 1 … 16 voices, fp32 and int8, every (file, voices)
  pair stepped in alternation, ``--per`` blocks at a time, so a slow spell of a shared machine
  hits them all alike; each voice plays its own moving controls (notes, knobs);
- the ratio that says whether batching pays: 8 voices against 1 voice of the same file (goal ≤ 3×);
- the same file with ``voices`` fixed at 1 and at 8 (a static shape), against the dynamic file at
  the same row count: what the dynamic dimension costs;
- where the time goes: onnxruntime's profiler, per node and per op type, at 1 and 8 voices (the
  profiler adds a few µs to every node, so read it as shares, not as totals);
- the first call at each new row count (onnxruntime plans a shape's memory then: warm every row
  count up at load);
- a *projection* (not a measurement) of 8 voices on a Pi 4 / Pi 5 / Zero 2 W
  (:func:`_harness.project`: FLOPs of the 8-voice graph and this machine's 8-voice block
  time, each against an assumed Pi figure).

Writes ``voices.json`` and ``voices.png`` (the curve) to ``--out``. ``benchmarks/run.py`` runs it
as its ``voices`` section. Needs onnxruntime, numpy and onnx (dev extra); matplotlib for the plot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))

VOICES = (1, 2, 3, 4, 6, 8, 12, 16)
DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64}


def read_card(path) -> dict:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return json.loads(next(p.value for p in m.metadata_props if p.key == "pi_synth"))


def session(path, threads: int = 1, profile: bool = False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"pisynth_voices_{os.getpid()}")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def zero_state(sess, card: dict, voices: int) -> dict:
    """Zero state for ``voices`` rows (a fixed leading dimension must equal ``voices``)."""
    ins = {a.name: a for a in sess.get_inputs()}
    out = {}
    for s_in, _ in card["state"]:
        a = ins[s_in]
        out[s_in] = np.zeros([voices] + [int(d) for d in a.shape[1:]], DTYPES[a.type])
    return out


def voice_controls(card: dict, voices: int, blocks: int, seed: int = 0) -> np.ndarray:
    """[blocks, voices, n_controls, frames]: each voice its own realistic moving controls
    (notes with envelopes and legato, knobs wandering over their ranges)."""
    from pi_synth.tools.quantize import control_sequence

    return np.stack([control_sequence(card, blocks, seed=seed + 101 * v) for v in range(voices)], 1)


class Player:
    """Steps one session at ``voices`` rows, its state carried, through a control sequence."""

    def __init__(self, sess, card: dict, voices: int, blocks: int = 400, seed: int = 0):
        self.sess, self.card = sess, card
        self.cin = card["inputs"]["controls"]
        self.outs = [card["outputs"]["audio"]] + [o for _, o in card["state"]]
        self.ins = [i for i, _ in card["state"]]
        self.state = zero_state(sess, card, voices)
        self.ctl = voice_controls(card, voices, blocks, seed)
        self.k = 0

    def step(self) -> np.ndarray:
        res = self.sess.run(self.outs, {self.cin: self.ctl[self.k % len(self.ctl)], **self.state})
        self.state = dict(zip(self.ins, res[1:]))
        self.k += 1
        return res[0]


def curve(paths: dict, voices=VOICES, *, rounds: int = 20, per: int = 25, threads: int = 1) -> dict:
    """{label: {voices: {"us_median", "us_best", "us_p99", "cpu_us_median"}}} for each file in ``paths`` ({label: path, or
    label: (path, its own row counts)}) at each row count, all stepped in alternation (``per``
    blocks each, ``rounds`` times) after a warm-up."""
    players = []
    for label, entry in paths.items():
        path, rows = entry if isinstance(entry, tuple) else (entry, voices)
        card = read_card(path)
        sess = session(path, threads)
        for v in rows:
            players.append((label, v, Player(sess, card, v)))
    times, cpu, best = defaultdict(list), defaultdict(list), defaultdict(list)
    for _label, _v, p in players:
        for _ in range(10):
            p.step()
    for _ in range(rounds):
        for label, v, p in players:
            p.step()
            one = []
            for _ in range(per):
                t0, c0 = time.perf_counter(), time.thread_time()
                p.step()
                cpu[(label, v)].append(time.thread_time() - c0)
                one.append(time.perf_counter() - t0)
            times[(label, v)] += one
            best[(label, v)].append(np.median(one))
    out: dict = {}
    for (label, v), ts in times.items():
        us = np.array(ts) * 1e6
        out.setdefault(label, {})[v] = {"us_median": round(float(np.median(us)), 1),
                                        # the quietest round's median: what a busy machine's other work
                                        # leaves least of (the figure the ratios and the projection use)
                                        "us_best": round(float(np.min(best[(label, v)]) * 1e6), 1),
                                        "us_p99": round(float(np.percentile(us, 99)), 1),
                                        # this thread's CPU time (1 intra-op thread: onnxruntime runs in it);
                                        # a busy machine's preemption stays out of it, a busy host's steal not
                                        "cpu_us_median": round(float(np.median(cpu[(label, v)]) * 1e6), 1)}
    return out


def first_calls(path, voices=VOICES) -> dict:
    """µs of the first call at each new row count on a fresh session (stepping 1 … 16), against the
    steady call at 16: onnxruntime plans a shape's memory on its first run, so a player should run
    every row count once at load, not in the audio thread."""
    card = read_card(path)
    sess = session(path)
    out = {}
    for v in voices:
        p = Player(sess, card, v)
        t0 = time.perf_counter()
        p.step()
        out[v] = round((time.perf_counter() - t0) * 1e6, 1)
    p = Player(sess, card, voices[-1])
    steady = []
    for _ in range(30):
        t0 = time.perf_counter()
        p.step()
        steady.append(time.perf_counter() - t0)
    return {"first_call_us": out, f"steady_us_at_{voices[-1]}": round(float(np.median(steady)) * 1e6, 1)}


def fixed_copy(path, voices: int, out) -> Path:
    """The same model with the ``voices`` dimension fixed (a static shape onnxruntime plans once)."""
    import onnx

    m = onnx.load(str(path))
    for v in list(m.graph.input) + list(m.graph.output):
        d = v.type.tensor_type.shape.dim[0]
        if d.dim_param == "voices":
            d.ClearField("dim_param")
            d.dim_value = voices
    onnx.save(m, str(out))
    return Path(out)


def node_profile(path, voices: int, calls: int = 300) -> dict:
    """onnxruntime's profiler: median µs per node over ``calls`` calls (the median resists other
    processes' preemption), summed by op type. The profiler's own cost is in every node."""
    sess = session(path, profile=True)
    p = Player(sess, read_card(path), voices)
    for _ in range(calls):
        p.step()
    f = sess.end_profiling()
    try:
        events = json.loads(Path(f).read_text())
    finally:
        Path(f).unlink(missing_ok=True)
    by_node, op = defaultdict(list), {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            name = e["name"][: -len("_kernel_time")]
            by_node[name].append(e["dur"])
            op[name] = e["args"].get("op_name", "?")
    med = {k: float(np.median(v[len(v) // 4 :])) for k, v in by_node.items()}  # skip the warm-up quarter
    by_op: dict = defaultdict(float)
    for k, v in med.items():
        by_op[op[k]] += v
    total = sum(med.values())
    top = sorted(med.items(), key=lambda kv: -kv[1])[:15]
    return {"voices": voices, "nodes": len(med), "profiled_us_per_call": round(total, 1),
            "by_op_us": {k: round(v, 1) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
            "top_nodes_us": {k: round(v, 2) for k, v in top}}


def graph_flops_at(path, voices: int) -> dict:
    from _harness import graph_flops

    with tempfile.TemporaryDirectory() as d:
        return graph_flops(fixed_copy(path, voices, Path(d) / "fixed.onnx"))


def projection(path, voices: int, block_ms_here: float) -> dict:
    """A projection, not a measurement: :func:`_harness.project` on the graph at ``voices`` rows."""
    from _harness import project

    card = read_card(path)
    f = graph_flops_at(path, voices)
    return {"voices": voices, "flops_per_block": f["flops"], "block_ms_here": block_ms_here,
            "pi": project(f["flops"], block_ms_here, card["block_size"], card["sample_rate"])}


# Power of a Raspberry Pi 4 B at the wall: about 1.6 W idle and 5 W with all four cores busy (Jeff
# Geerling's SBC reviews, as docs/workshop.md cites them), so ~0.85 W for each busy core. Assumptions.
PI4_IDLE_W, PI4_CORE_W = 1.6, 0.85


def pi4_watts(rtf: float) -> float:
    """Projected Pi 4 power while playing at a projected real-time factor ``rtf`` on one core."""
    return PI4_IDLE_W + PI4_CORE_W * min(1.0, rtf)


def measure(models: Path, name: str, voices=VOICES, *, rounds: int = 20, per: int = 25,
            profile_calls: int = 300) -> dict:
    fp32, int8 = models / f"{name}.fp32.onnx", models / f"{name}.int8.onnx"
    card = read_card(fp32)
    block_s = card["block_size"] / card["sample_rate"]
    res: dict = {"model": name, "card_voices": card.get("voices"), "voices": list(voices), "threads": 1,
                 "block_size": card["block_size"], "rounds": rounds, "blocks_per_round": per}
    with tempfile.TemporaryDirectory() as d:
        paths = {"fp32": fp32, "int8": int8, "fp32 fixed at 1": fixed_copy(fp32, 1, Path(d) / "f1.onnx"),
                 "fp32 fixed at 8": fixed_copy(fp32, 8, Path(d) / "f8.onnx")}
        c = curve({k: paths[k] for k in ("fp32", "int8")}, voices, rounds=rounds, per=per)
        # what the dynamic dimension costs: the dynamic file against itself fixed, same rows, in a run of its own
        fx = curve({"dynamic": fp32, "fixed1": (paths["fp32 fixed at 1"], (1,)),
                    "fixed8": (paths["fp32 fixed at 8"], (8,))}, (1, 8), rounds=rounds, per=per)
    res["curve_us"] = c
    res["ratio_8_vs_1"] = {k: round(c[k][8]["us_best"] / c[k][1]["us_best"], 3) for k in c if 8 in c[k]}
    res["ratio_8_vs_1_all_blocks"] = {k: round(c[k][8]["us_median"] / c[k][1]["us_median"], 3) for k in c if 8 in c[k]}
    res["ratio_8_vs_1_cpu"] = {k: round(c[k][8]["cpu_us_median"] / c[k][1]["cpu_us_median"], 3) for k in c if 8 in c[k]}
    res["loadavg"] = list(os.getloadavg())
    res["rtf_1_voice"] = {k: round(c[k][1]["us_best"] * 1e-6 / block_s, 4) for k in c}
    res["us_per_voice_over_8"] = {k: round(c[k][8]["us_best"] / 8, 1) for k in c if 8 in c[k]}
    res["dynamic_vs_fixed"] = {
        "1": {"dynamic_us": fx["dynamic"][1]["us_best"], "fixed_us": fx["fixed1"][1]["us_best"]},
        "8": {"dynamic_us": fx["dynamic"][8]["us_best"], "fixed_us": fx["fixed8"][8]["us_best"]},
        "what": "the fp32 file with voices dynamic against a copy with voices fixed, same rows; "
                "timed in their own alternation (not comparable with the curve's absolute figures)"}
    res["profile"] = {f"{v}": node_profile(fp32, v, profile_calls) for v in (1, 8)}
    res["first_calls"] = first_calls(fp32, voices)
    ms8 = c["int8"][8]["us_best"] / 1e3
    res["projection_8_voices"] = projection(int8, 8, ms8)
    res["projection_8_voices"]["pi4_watts"] = round(pi4_watts(res["projection_8_voices"]["pi"]["pi4"]["rtf"]), 2)
    res["projection_8_voices"]["pi4_watts_assumed"] = {"idle_w": PI4_IDLE_W, "per_busy_core_w": PI4_CORE_W}
    res["projection_8_voices"]["what"] = ("a projection, not a measurement: the int8 file (what a Pi plays by "
                                          "default) at 8 voices, this machine's block time × an assumed "
                                          "slowdown, or its FLOPs / an assumed sustained rate, whichever is larger")
    return res


def _curve(res: dict) -> dict:
    """The curve with integer voice counts (JSON makes them strings)."""
    return {k: {int(v): x for v, x in d.items()} for k, d in res["curve_us"].items()}


def plot(res: dict, out: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    c = _curve(res)
    for label, pts in c.items():
        vs = sorted(pts)
        ax.plot(vs, [pts[v]["us_best"] / pts[vs[0]]["us_best"] for v in vs], "o-",
                label=f"{res['model']}.{label} (1 voice: {pts[vs[0]]['us_best']:.0f} µs)")
    vs = res["voices"]
    ax.plot(vs, vs, ":", color="gray", label="N separate calls (N×)")
    ax.axhline(3.0, color="red", lw=0.8, ls="--")
    ax.axvline(8, color="red", lw=0.8, ls="--")
    ax.set_xlabel("voices in one onnxruntime call (batch rows)")
    ax.set_ylabel("block time / 1-voice block time")
    ax.set_ylim(0, max(6, 1.1 * max(p[max(p)]["us_best"] / p[min(p)]["us_best"] for p in c.values())))
    ax.set_title("Block time by voice count (1 thread; goal: 8 voices ≤ 3× one)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "voices.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


def lines(res: dict) -> list[str]:
    """The markdown section (``benchmarks/run.py`` prints it in results.md)."""
    c = _curve(res)
    L = ["", "## Voices per call (polyphony as a batch, 1 thread)", "",
         f"`{res['model']}` runs N voices as N batch rows of one onnxruntime call (its card: "
         f"`\"voices\": {res['card_voices']}`). Every (file, voices) pair stepped in alternation, "
         f"{res['rounds']} rounds of {res['blocks_per_round']} blocks; each voice its own moving notes and knobs. "
         "µs/block: the quietest round's median (all blocks' median, p99). "
         "Goal: 8 voices ≤ 3× one voice of the same file.", "",
         "| voices | " + " | ".join(f"{k} µs/block (median, p99)" for k in c) + " | " + " | ".join(f"{k} × 1 voice" for k in c)
         + " |", "|---|" + "---|" * (2 * len(c))]
    for v in res["voices"]:
        cells = [f"{c[k][v]['us_best']:.0f} ({c[k][v]['us_median']:.0f}, {c[k][v]['us_p99']:.0f})" for k in c]
        ratios = [f"{c[k][v]['us_best'] / c[k][res['voices'][0]]['us_best']:.2f}" for k in c]
        L.append(f"| {v} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    r, rc = res["ratio_8_vs_1"], res.get("ratio_8_vs_1_cpu", {})
    L += ["", "8 voices / 1 voice: " + ", ".join(f"{k} **{v:.2f}×** ({'meets' if v <= 3 else 'misses'} ≤3×)"
                                               for k, v in r.items())
          + (" (thread CPU time: " + ", ".join(f"{k} {v:.2f}×" for k, v in rc.items()) + ")" if rc else "")
          + (f"; load average {res['loadavg'][0]:.1f} on {os.cpu_count()} CPUs during the run." if res.get("loadavg") else ".")]
    dv = res["dynamic_vs_fixed"]
    L.append(f"Dynamic `voices` against a fixed shape (fp32, same rows): 1 voice {dv['1']['dynamic_us']:.0f} vs "
             f"{dv['1']['fixed_us']:.0f} µs, 8 voices {dv['8']['dynamic_us']:.0f} vs {dv['8']['fixed_us']:.0f} µs.")
    pj = res["projection_8_voices"]
    pi = pj["pi"]
    L.append("**Projection, not a measurement** (int8 file, 8 voices): " + ", ".join(
        f"{p['cpu']}: {p['block_ms']:.2f} ms per 5.3 ms block (RTF {p['rtf']:.2f})" for p in pi.values())
             + f"; Pi 4 power ≈ {pj['pi4_watts']} W (assumed {PI4_IDLE_W} W idle + {PI4_CORE_W} W per busy core).")
    return L


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--name", default="flute")
    ap.add_argument("--voices", type=int, nargs="*", default=list(VOICES))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "voices")
    ap.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    a = ap.parse_args(argv)
    if 1 not in a.voices or 8 not in a.voices:
        ap.error("--voices must include 1 and 8 (the ratio)")
    a.out.mkdir(parents=True, exist_ok=True)
    res = measure(a.models, a.name, tuple(a.voices), rounds=4 if a.quick else 20, profile_calls=60 if a.quick else 300)
    res["plot"] = plot(res, a.out)
    (a.out / "voices.json").write_text(json.dumps(res, indent=2) + "\n")
    print("\n".join(lines(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
