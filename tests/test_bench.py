"""The benchmark harness runs and reports what it promises (never a timed assertion)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from pi_synth import bench

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))  # the benchmark suite's own code, tested here

import _harness as harness  # noqa: E402


quantize = pytest.importorskip("pi_synth.tools.quantize")


def test_graph_flops_counts_the_organ(organ):
    pytest.importorskip("onnx")
    f = harness.graph_flops(organ())
    assert f["flops"] > 0 and f["flops"] == 2 * f["macs"] + f["elementwise_flops"]
    assert f["nodes"] > 0 and f["unknown_shape_ops"] == []


def test_graph_flops_counts_conv_and_matmul_exactly(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((8, 4, 3), np.float32), "w")
    m = numpy_helper.from_array(np.zeros((10, 5), np.float32), "m")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"]), helper.make_node("MatMul", ["y", "m"], ["z"]),
         helper.make_node("Relu", ["z"], ["out"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 12])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 5])], [w, m])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    f = harness.graph_flops(path)
    conv = 1 * 8 * 10 * 4 * 3  # output [1, 8, 10] × (C_in 4 × kernel 3)
    matmul = 1 * 8 * 5 * 10  # output [1, 8, 5] × K 10
    assert f["macs_by_op"] == {"Conv": conv, "MatMul": matmul}
    assert f["elementwise_flops"] == 40  # Relu on [1, 8, 5]


def test_flops_report_and_projection_keys(organ):
    pytest.importorskip("onnx")
    r = harness.flops_report(organ(), block_ms_median=0.1)
    for k in ("flops_per_block", "mflops_per_audio_second", "gflops_achieved"):
        assert k in r and r[k] > 0
    assert r["mmacs_per_audio_second"] == 0  # the organ is additive synthesis: no conv, no matmul
    p = harness.project(r["flops_per_block"], 0.1, r["block_size"], r["sample_rate"])
    assert set(p) == {"pi4", "pi5", "zero2w"}
    for v in p.values():
        assert v["block_ms"] >= v["scaled_ms"] and v["rtf"] > 0 and v["headroom"] > 0


def test_snr():
    x = np.sin(np.linspace(0, 100, 4800)).astype(np.float32)
    assert bench.snr_db(x, x) == math.inf
    assert 19.9 < bench.snr_db(x, x * 1.1) < 20.1  # error = 0.1 × signal


def test_compare_precisions_same_file_is_identical(organ):
    p = organ()
    r = bench.compare_precisions(p, p, blocks=20, seconds=0.2)
    assert r["snr_db"] == math.inf
    for k in ("speedup", "fp32_block_ms_median", "int8_block_ms_median"):
        assert r[k] > 0


def test_compare_files_alternates_and_reads_git_revisions(organ, tmp_path):
    """benchmarks/compare.py: each file's stats in the order given, the first the baseline, and
    ``REV:path`` read out of git (the committed fallback organ, byte for byte)."""
    sys.path.insert(0, str(BENCH_DIR))
    import compare

    committed = compare.resolve("HEAD:src/pi_synth/data/organ.onnx", tmp_path)
    assert committed.read_bytes() == (BENCH_DIR.parent / "src/pi_synth/data/organ.onnx").read_bytes()
    with pytest.raises(SystemExit, match="not in git"):
        compare.resolve("HEAD:no/such.onnx", tmp_path)
    rows = compare.compare([organ("a"), organ("b", block_size=512), committed], ["a", "b", "head"], blocks=50, threads=1)
    assert [r["file"] for r in rows] == ["a", "b", "head"]
    assert [r["block_size"] for r in rows] == [256, 512, 256]
    assert rows[0]["speedup_vs_first"] == 1.0
    for r in rows:
        assert r["block_ms_median"] > 0 and r["rtf"] > 0


def test_int8_ceiling_frees_exactly_the_quantized_ops(tmp_path):
    """The int8 ceiling's graph: the shipped morph voice with its quantized residual convs
    made free and what it keeps in float32 (the input and output layers, the synthesis'
    MatMuls) untouched; it still plays (same I/O, finite audio)."""
    import onnx

    from pi_synth.model.runtime import Runtime

    models = Path(__file__).resolve().parents[1] / "models"
    convs = [f"/net/convs.{i}/conv/Conv" for i in range(4)]
    # the shipped int8 file is made from the fp32 graph with these convs as MatMuls (convs_as_matmul)
    # (morph_export.fp32_layer may keep one of them fp32: its int8 rounding cost the most SNR)
    names = quantize.quantized_nodes(models / "morph.int8.onnx")
    kept = {n.split("/conv/")[0] for n in names}
    assert len(kept) >= 3 and kept <= {c.split("/conv/")[0] for c in convs}, names
    names = [c for c in convs if c.split("/conv/")[0] in kept]
    # the flute: some of its residual convs (each a MatMul over its taps) int8, those its export found
    # cheapest (note_export.py); the synthesis' MatMuls and the input and output layers stay float32
    flute = quantize.quantized_nodes(models / "flute.int8.onnx")
    assert flute and set(flute) <= {f"/net/convs.{i}/MatMul" for i in range(4)}, flute
    free = tmp_path / "free.onnx"
    assert quantize.without_nodes(models / "morph.fp32.onnx", names, free) == len(names)
    left = {n.name for n in onnx.load(str(free)).graph.node if n.op_type in ("Conv", "MatMul")}
    assert left == {"/net/inp/Conv", "/net/out/Conv", "/synth/MatMul", "/synth/MatMul_1"} | (set(convs) - set(names))
    rt = Runtime(free)
    for _ in range(4):
        audio = rt.step()
    assert audio.shape == (1, 512) and np.isfinite(audio).all()


def test_quantized_nodes_reads_both_int8_formats(tmp_path):
    """QDQ marks a quantized conv by the DequantizeLinear feeding it, QOperator replaces it
    with a QLinearConv named after it: the same fp32 nodes either way, so the ceiling
    (those nodes made free) is the same for both formats."""
    import onnx

    from pi_synth.tools.quantize import _quantize, _session, control_sequence, read_card, render

    fp32 = Path(__file__).resolve().parents[1] / "models" / "morph.fp32.onnx"
    card = read_card(onnx.load(str(fp32)))
    feeds = []
    render(_session(fp32, 1), card, control_sequence(card, 6, seed=1), feeds_out=feeds)
    graph = onnx.load(str(fp32)).graph.node
    convs = [n.name for n in graph if n.op_type == "Conv"]
    kept = [convs[0], convs[-1]] + [n.name for n in graph if n.op_type == "MatMul"]  # the synthesis' too
    found = {}
    for fmt in ("qdq", "qoperator", "dynamic"):
        _quantize(fp32, tmp_path / f"{fmt}.onnx", fmt, feeds, kept)
        found[fmt] = sorted(quantize.quantized_nodes(tmp_path / f"{fmt}.onnx"))
    assert found["qdq"] == found["qoperator"] == found["dynamic"] == sorted(set(convs) - set(kept))


def test_convs_as_matmul_is_the_same_function_and_quantizes_dynamically(tmp_path):
    """The morph decoder's residual convs (cache + one new frame) rewritten as MatMuls play the same audio;
    dynamic int8 of the rewrite runs one fused int8 kernel per conv (the shipped morph int8 file's recipe)."""
    import onnx

    from pi_synth.tools.quantize import (_quantize, _session, control_sequence, convs_as_matmul,
                                         default_exclude, read_card, render)

    fp32 = Path(__file__).resolve().parents[1] / "models" / "morph.fp32.onnx"
    card = read_card(onnx.load(str(fp32)))
    convs = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv" and "/convs." in n.name]
    mm = tmp_path / "mm.onnx"
    done = convs_as_matmul(fp32, mm, convs)
    assert sorted(done) == sorted(convs) and len(convs) == 4
    ctl = control_sequence(card, 40, seed=3)
    a, b = render(_session(fp32), card, ctl), render(_session(mm), card, ctl)
    assert np.abs(a).max() > 1e-3 and np.abs(a - b).max() < 1e-4 * np.abs(a).max()
    with pytest.raises(quantize.ModelError):
        convs_as_matmul(fp32, tmp_path / "x.onnx", ["/net/no/Conv"])
    q = tmp_path / "dyn.onnx"
    _quantize(mm, q, "dynamic", [], default_exclude(onnx.load(str(mm))))
    assert quantize.int8_kernels_on_arm(q) == {"quantized_ops": 4, "int8_kernels": 4}


def test_shipped_int8_files_run_int8_kernels_under_the_arm_rule():
    """On this x86 CPU onnxruntime keeps S8S8 QDQ in float; under its ARM rule every
    quantized op of the shipped int8 files becomes an int8 kernel (the graph a Pi runs)."""
    models = Path(__file__).resolve().parents[1] / "models"
    morph = quantize.int8_kernels_on_arm(models / "morph.int8.onnx")
    assert morph["quantized_ops"] >= 3 and morph["int8_kernels"] == morph["quantized_ops"], morph
    flute = quantize.int8_kernels_on_arm(models / "flute.int8.onnx")
    assert flute["quantized_ops"] >= 1 and flute["int8_kernels"] == flute["quantized_ops"], flute


def test_bench_sweep_rows_per_thread_count(organ):
    rows = harness.bench_sweep(organ(), threads=(1, 2), blocks=20)
    assert [r["threads"] for r in rows] == [1, 2]
    for r in rows:
        for k in ("rtf", "block_ms_median", "block_ms_p99", "block_ms_max", "wrapper_overhead_ratio"):
            assert k in r


def test_engine_overhead_on_the_null_pcm(organ):
    r = harness.engine_overhead(organ(), blocks=200, repeats=3)
    assert r["engine_blocks"] >= 200 and r["engine_mode"] == "direct"  # auto: what pi-synth run picks
    for k in ("engine_cpu_ratio", "pure_us_per_block", "engine_us_per_block", "engine_mode"):
        assert k in r
    assert len(r["engine_cpu_ratios"]) == 3 and len(r["pure_us_per_block_runs"]) == 4
    assert r["engine_us_per_block"] == min(r["engine_us_per_block_runs"])
    assert r["engine_cpu_ratio"] == pytest.approx(r["engine_us_per_block"] / min(r["pure_us_per_block_runs"]))


def test_block_breakdown_stages(organ):
    r = harness.block_breakdown(organ(), blocks=50)
    stages = ("hooks_and_bank_us", "runtime_step_us", "copy_and_guard_us", "backend_write_us")
    assert all(r[k] > 0 for k in stages)  # each stage did work: a skipped stage would read 0
    outside = r["hooks_and_bank_us"] + r["copy_and_guard_us"] + r["backend_write_us"]
    assert r["outside_model_us"] == pytest.approx(outside)
    assert r["outside_model_ratio"] == pytest.approx((outside + r["runtime_step_us"]) / r["runtime_step_us"])


def test_latency_onset_detection():
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import latency
    finally:
        sys.path.remove(str(BENCH_DIR))
    sr = 48000
    x = np.zeros(sr, np.float32)
    x[1000:] = 0.5 * np.sin(np.arange(sr - 1000) * 2 * np.pi * 440 / sr)
    on = latency.onset(x, 900, sr)
    assert on is not None and 1000 <= on <= 1010
    assert latency.onset(np.zeros(sr, np.float32), 100, sr) is None


def test_run_report_renders_targets(organ):
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import run
    finally:
        sys.path.remove(str(BENCH_DIR))
    R = {"started_utc": "now", "machine": {"cpu": "x", "machine": "y", "cores": 1, "python": "3",
                                          "onnxruntime": "1"},
         "loadavg_start": [0], "loadavg_end": [0],
         "precision": [{"model": "m", "speedup": 2.0, "snr_db": 40.0, "fp32_block_ms_median": 1.0,
                        "int8_block_ms_median": 0.5}],
         "engine": [{"file": "m.onnx", "engine_mode": "direct", "engine_cpu_ratio": 1.2,
                     "engine_us_per_block": 120.0, "pure_us_per_block": 100.0}]}
    rows = run.targets_table(R)
    assert ["int8 vs fp32 speed, m", "≥ 1.5×", "2.00×", "pass"] in rows
    assert rows[-1][-1] == "**miss**"
    assert "| m.onnx | direct |" in run.markdown(R)
    # a soak with xruns after machine stalls, a latency run with an xrun part-way: both
    # graded on every xrun and event, with what the stall probe and the split say beside
    R["soak"] = {"busy0": {"minutes": 10, "busy_cores": 0, "model": "m", "engine_mode": "direct", "xruns": 2,
                           "late_periods": 0, "jack_xrun_reports": 9, "xruns_after_machine_stall": 2,
                           "xruns_without_machine_stall": 0, "stall_match_chance": 0.05,
                           "machine_stalls": {"long_ms": 3.33, "long_stalls_per_min": 12.0, "longest_ms": 40.0}}}
    onset = {"n": 4, "median_samples": 900.0, "max_samples": 1000.0, "median_ms": 18.8, "max_ms": 20.8}
    R["latency"] = {"default": {"budget": {"target_frames": 768, "target_ms": 16.0}, "live": {
        "model": "m", "transport": "din", "engine_mode": "direct", "render_changes_s": [[2.5, True]],
        "knob": {"onset_40db": onset, "onset_40db_just_in_time": {"n": 2},
                 "output_latency_40db": {"model_response_median": 4.0, "median_samples": 896.0,
                                         "max_samples": 996.0},
                 "output_latency_40db_just_in_time": {"model_response_median": 4.0,
                                                      "median_samples": 700.0, "max_samples": 740.0}}}}}
    rows = run.targets_table(R)
    soak = next(r for r in rows if r[0].startswith("xruns in 10 min"))
    assert soak[-1] == "**miss**" and "2 of 2 xruns came right after such a stall (a random instant: 5.0 %)" in soak[2]
    lat = next(r for r in rows if r[0].startswith("output latency, knob"))
    assert lat[-1] == "**miss**" and "**896 / 996**" in lat[2] and "2 of 4 rendered a period ahead after an xrun, the 2 just in time: 700 / 740" in lat[2]


def test_output_latency_is_live_less_the_models_own_response():
    """A slow-ramping model: 885 frames end to end, 150 of them its own ramp (rendered):
    output latency 735, within one block + two periods; the report grades that, and
    shows both."""
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import latency
        import run
    finally:
        sys.path.remove(str(BENCH_DIR))
    rendered = {"onset_40db": {"n": 3, "median_samples": 280.0, "max_samples": 400.0},
                "response_onset_40db": {"n": 3, "median_samples": 150.0, "max_samples": 170.0}}
    live = {"onset_40db": {"n": 3, "median_samples": 885.0, "max_samples": 913.0,
                           "median_ms": 18.4, "max_ms": 19.0}}
    o = latency.output_latency(rendered, live)
    assert o == {"model_response_median": 150.0, "median_samples": 735.0, "max_samples": 763.0}
    assert latency.output_latency({"onset_40db": {"n": 0}}, live) is None
    live["output_latency_40db"] = o
    R = {"latency": {"organ": {"budget": {"target_frames": 768, "target_ms": 16.0},
                               "rendered": {"knob": rendered},
                               "live": {"transport": "din", "model": "organ", "engine_mode": "direct",
                                        "knob": live}}}}
    (row,) = run.targets_table(R)
    assert row[-1] == "pass" and "885" in row[2] and "**735 / 763**" in row[2]
    machine = {"cpu": "x", "machine": "y", "cores": 1, "python": "3", "onnxruntime": "1"}
    md = run.markdown(dict(R, started_utc="now", machine=machine, loadavg_start=[0], loadavg_end=[0]))
    assert "| the model's own response | knob | 150 / 170 |" in md
    assert "| output latency, live (din) | knob | 735 / 763 | |" in md


def test_real_time_factor_by_block_size_is_measured_and_reported():
    """The organ built at each block size is timed (not a formula), and RAVE's converted-vs-
    TorchScript rows by block size land in the same table, apart from the per-file one."""
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import run
    finally:
        sys.path.remove(str(BENCH_DIR))
    from argparse import Namespace

    rows = run.speed_by_block(Namespace(blocks=60))
    assert [r["block_size"] for r in rows] == list(run.BLOCK_SIZES)
    assert all(r["by_block"] and r["rtf"] > 0 and r["block_ms_median"] > 0 for r in rows)
    ms = [r["block_ms_median"] for r in rows]
    assert ms[-1] > ms[0]  # 32× the frames cost more per call, if less per frame
    rave = {"by_block": [{"fixture": "v2", "block_size": 16384, "onnx_ms": 16.7, "onnx_rtf": 0.045,
                          "torchscript_ms": 47.7, "torchscript_rtf": 0.128, "speedup_vs_torchscript": 2.86}]}
    # a shipped voice at 2 frames per call (trained_by_block: needs .venv-train and the checkpoints)
    flute = [{"by_block": True, "voice": "flute fp32", "block_size": 512, "block_ms_median": 0.328, "rtf": 0.0307,
              "snr_vs_shipped_db": 124.4},
             {"by_block": True, "voice": "flute int8", "block_size": 512, "block_ms_median": 0.339, "rtf": 0.0318,
              "int8": {"format": "qdq", "quantized_ops": 1, "same_ops_as_shipped": True, "snr_db": 29.0}}]
    machine = {"cpu": "x", "machine": "y", "cores": 1, "python": "3", "onnxruntime": "1"}
    md = run.markdown({"started_utc": "now", "machine": machine, "loadavg_start": [0], "loadavg_end": [0],
                       "speed": rows + flute, "rave": rave})
    table = md.split("## Real-time factor by block size")[1]
    assert "| organ (procedural) | 2048 |" in table
    assert "| RAVE v2 | 16384 | 16.700 | 0.0450 | — | 47.700 | 0.1280 | 2.86× |" in table
    assert "| flute fp32 | 512 | 0.328 | 0.0307 | 124 dB | — | — | — |" in table
    assert "| flute int8 | 512 | 0.339 | 0.0318 | int8 29.0 dB vs its fp32, 1 ops int8 | — | — | — |" in table
    assert "built at block" not in md.split("## Real-time factor by block size")[0]  # not in the per-file table


def test_stall_probe_sees_its_cpu_taken_away(tmp_path):
    """benchmarks/_stallprobe.py: a probe that is stopped (SIGSTOP: as a host taking the
    vCPU would) logs the gap as one late wake-up; matching finds it before a time just after
    it and not before one 50 ms later."""
    import os
    import signal
    import time

    sys.path.insert(0, str(BENCH_DIR))
    from _stallprobe import StallProbe, chance, stall_before

    cpu = min(os.sched_getaffinity(0))
    with StallProbe(tmp_path, cpus=[cpu]) as probe:
        time.sleep(0.3)  # started, pinned, real-time where permitted
        os.kill(probe.procs[0].pid, signal.SIGSTOP)
        time.sleep(0.03)
        os.kill(probe.procs[0].pid, signal.SIGCONT)
        after = time.monotonic()
        time.sleep(0.2)
    stalls = probe.stalls()
    assert probe.realtime is not None  # the probe said how it runs
    longest = max(stalls, key=lambda s: s[1])
    assert 25.0 <= longest[1] < 200.0 and longest[2] == cpu
    assert abs(longest[0] - after) < 0.02  # it logs when the stall ended
    near, far = stall_before([after + 0.005, after + 0.05], stalls, window_s=0.021)
    assert near >= 25.0 and far < 25.0
    assert 0.0 < chance(stalls, probe.started_at, probe.stopped_at, 0.021, 25.0) < 0.2
    s = probe.summary(25.0)
    assert s["long_stalls"] >= 1 and s["longest_ms"] >= 25.0


def test_backend_keeps_when_each_xrun_happened():
    """Backend.last_xrun_times: the time of each counted xrun, oldest first, the last
    XRUN_LOG of them (a ring: the audio thread never allocates for it)."""
    import time

    from pi_synth.audio.backends.base import Backend

    b = Backend()
    t0 = time.monotonic()
    for _ in range(3):
        b._count_xrun()
    times = b.last_xrun_times()
    assert b.xruns == 3 and len(times) == 3 and t0 <= times[0] <= times[1] <= times[2] <= time.monotonic()
    for _ in range(Backend.XRUN_LOG):
        b._count_xrun()
    later = b.last_xrun_times()
    assert len(later) == Backend.XRUN_LOG and later[0] >= times[2] and later == sorted(later)


def test_pi_synth_bench_measures_a_file(organ, cli):
    """``pi-synth bench FILE``: the JSON keys PRODUCT.md promises, from a real run; a file
    given by path is one precision, so there is nothing to compare."""
    import json

    p = cli("bench", organ(), "--blocks", "60", "--json", check=0)
    res = json.loads(p.stdout)
    assert 0 < res["rtf"] < 1 and 0 < res["block_ms_median"] <= res["block_ms_p99"]
    assert res["blocks"] == 60 and "int8_vs_fp32" not in res


def test_pi_synth_bench_compares_a_voices_two_precisions(cli, tmp_path):
    """``pi-synth bench NAME`` for a voice with both files: int8 against fp32 timed in
    alternation, its SNR, and which file ``precision = "auto"`` plays on this machine:
    the figures a Pi owner needs and our x86 runs cannot give."""
    import json
    import shutil

    from pi_synth.model.library import shipped_dir

    models = tmp_path / "models"
    models.mkdir()
    for kind in ("int8", "fp32"):
        shutil.copy(shipped_dir() / f"morph.{kind}.onnx", models / f"morph.{kind}.onnx")
    env = {"PI_SYNTH_MODELS": str(models)}
    res = json.loads(cli("bench", "morph", "--blocks", "50", "--json", env=env, check=0).stdout)
    cmp = res["int8_vs_fp32"]
    assert Path(res["path"]).name == cmp["auto_plays"]  # the file that plays here is benched …
    assert cmp["int8"].endswith("morph.int8.onnx") and cmp["fp32"].endswith("morph.fp32.onnx")
    assert 30.0 <= cmp["snr_db"] < 60.0  # … and really quantized, within its card's promise
    assert cmp["speedup"] == pytest.approx(cmp["fp32_block_ms_median"] / cmp["int8_block_ms_median"])
    assert cmp["auto_plays"] in ("morph.int8.onnx", "morph.fp32.onnx")
    text = cli("bench", "morph", "--blocks", "50", env=env, check=0).stdout
    assert "int8 vs fp32, alternating" in text and f'plays {cmp["auto_plays"]}' in text


def test_retry_after_stall_retries_only_when_the_machine_stopped(retry_after_stall, machine_stalls):
    """The tests' real-time retry: a failure with no machine stall is final; one during
    which the probe saw the machine stop (here: its probe stopped by SIGSTOP for 30 ms,
    as a host would take the CPU) gets another attempt, up to three in all; the last
    result stands."""
    import os
    import signal
    import time

    time.sleep(0.3)  # the probes are up
    calls = []

    def fails_once_quietly():
        calls.append(1)
        assert len(calls) > 1, "first attempt"

    with pytest.raises(AssertionError, match="first attempt"):
        retry_after_stall(fails_once_quietly, min_ms=25.0)
    assert len(calls) == 1

    def fails_once_during_a_stall():
        calls.append(2)
        if calls.count(2) == 1:
            os.kill(machine_stalls.procs[0].pid, signal.SIGSTOP)
            time.sleep(0.03)
            os.kill(machine_stalls.procs[0].pid, signal.SIGCONT)
            time.sleep(0.02)
            raise AssertionError("an xrun")

    with pytest.warns(UserWarning, match=r"retried \(1\)"):
        retry_after_stall(fails_once_during_a_stall, min_ms=25.0)
    assert calls.count(2) == 2

    def always_fails():
        calls.append(3)
        os.kill(machine_stalls.procs[0].pid, signal.SIGSTOP)
        time.sleep(0.03)
        os.kill(machine_stalls.procs[0].pid, signal.SIGCONT)
        time.sleep(0.02)
        raise AssertionError("broken")

    with pytest.raises(AssertionError, match="broken"), pytest.warns(UserWarning):
        retry_after_stall(always_fails, min_ms=25.0)
    assert calls.count(3) == 3


def test_pinned_soak_puts_the_stand_in_dac_beside_the_instrument_and_still_counts_its_xruns(tmp_path, monkeypatch):
    """benchmarks/soak.py --cpus: jackd, the engine's audio thread and libjack's process
    thread all on one CPU (a host stopping that vCPU then stops the stand-in DAC too), the
    rest of the process where it was. The rig still fails the instrument: a 25 ms stall of
    the audio thread alone (a block hook sleeping) is an xrun."""
    import os
    import time

    from pi_synth.audio.engine import Engine

    sys.path.insert(0, str(BENCH_DIR))
    try:
        import soak
    finally:
        sys.path.remove(str(BENCH_DIR))
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "unset")  # the soak's server sets these; restored after
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    start, calls = Engine.start, [0]

    def stall_once(position):
        calls[0] += 1
        if calls[0] == 400:  # ~2 s in: the audio thread alone stops for 25 ms
            time.sleep(0.025)

    def start_with_stall(self, *a, **k):
        self.synth.hooks.append(stall_once)
        return start(self, *a, **k)

    monkeypatch.setattr(Engine, "start", start_with_stall)
    mine = sorted(os.sched_getaffinity(0))
    cpu = mine[-1]
    res = soak.soak(0.1, cpus=[cpu], out=tmp_path)
    assert res["cpus"] == [cpu] and res["jackd_cpus"] == [cpu]
    threads = res["threads"]
    audio = [t for name, t in threads.items() if name.startswith("pi-synth-audio/")]
    assert audio and audio[0]["cpus"] == [cpu]
    assert all(t["cpus"] == [cpu] for t in threads.values() if t["policy"].startswith(("fifo", "rr")))
    assert next(t for name, t in threads.items() if name.startswith("MainThread/"))["cpus"] == mine
    assert calls[0] > 400 and res["xruns"] >= 1 and res["crashes"] == 0


def test_rave_floors_hold_the_models_weight_bytes_and_multiply_adds():
    """bench_rave's ceiling (TorchScript ÷ the larger floor) is only a bound if its two floor graphs
    read as many weight bytes and do as many multiply-adds as the model's matrix products."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import numpy_helper

    import bench_rave

    ws = [numpy_helper.from_array(np.ones((96, 48), np.float32), "a"),
          numpy_helper.from_array(np.ones((600, 40), np.int8), "b")]
    macs = {False: 4 * 96 * 48, True: 16 * 600 * 40}
    floors = bench_rave._floors(ws, macs, cols=32)
    sizes = {(i.name, tuple(i.dims)) for i in floors["read"].graph.initializer}
    assert sizes == {("w_fp32", (144, 32)), ("w_int8", (750, 32))}  # 96·48 and 600·40 elements, rounded up
    feeds = {"read": {"x_fp32": [1, 144], "x_int8": [1, 750]}, "arithmetic": {"x_fp32": [64, 9], "x_int8": [64, 188]}}
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    for k, g in floors.items():
        se = ort.InferenceSession(g.SerializeToString(), so, providers=["CPUExecutionProvider"])
        assert {i.name: i.shape for i in se.get_inputs()} == feeds[k]
        done = {i.name: i.shape[0] * i.shape[1] * 32 for i in se.get_inputs()}
        if k == "arithmetic":  # at least the model's multiply-adds, less than one more row's worth
            assert macs[False] <= done["x_fp32"] < macs[False] + 64 * 32
            assert macs[True] <= done["x_int8"] < macs[True] + 64 * 32
        x = {i.name: np.ones(i.shape, np.uint8 if "int8" in i.name else np.float32) for i in se.get_inputs()}
        assert all(np.isfinite(y).all() for y in se.run(None, x))


def test_rave_products_alone_reports_floors_under_the_whole_model(tmp_path):
    """The products' graph and both floors run beside the whole model and the TorchScript callable
    in one loop, and the ceiling is computed from that loop's own times."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    import bench_rave

    w1 = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(np.random.default_rng(1).standard_normal((128, 32)).astype(np.float32), "w2")
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])], [w1, w2])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    calls = []
    r = bench_rave.matrix_products_alone(path, runs=60, torchscript=lambda: calls.append(1))
    assert r["products"] == 2 and r["multiply_adds"] == 4 * (64 * 128 + 128 * 32)
    assert r["weight_mb"] == round((64 * 128 + 128 * 32) * 4 / 1e6, 2)
    assert len(calls) == 60 and r["torchscript_us"] >= 0
    assert r["floor_us"] == max(r["weight_read_floor_us"], r["arithmetic_floor_us"]) > 0
    assert r["ceiling_vs_torchscript"] == round(r["torchscript_us"] / r["floor_us"], 2)


def test_bench_times_the_block_cadence_too(organ):
    """Besides back-to-back blocks, `bench` plays blocks one per block period, asleep in
    between, as the instrument calls the model: the figure a shared or busy machine's
    cooling caches show (3-4x the back-to-back time on the test VM)."""
    import time

    from pi_synth.bench import bench_model

    t0 = time.perf_counter()
    res = bench_model(organ(), blocks=40, bare=False)
    c = res["at_cadence"]
    period = res["block_size"] / res["sample_rate"]
    assert c["blocks"] == 40 and time.perf_counter() - t0 >= 45 * period  # paced: 5 warm-up + 40 blocks
    assert 0 < c["block_ms_median"] <= c["block_ms_p99"] and c["rtf"] == pytest.approx(
        c["block_ms_median"] / 1e3 / period)


def test_pi_synth_bench_and_quantize_take_an_encoder(cli, tmp_path):
    """An encoder (audio in, latents out) is benched on a recording-like input, both ways
    (it crashed: the bare run fed controls it has none of); ``quantize`` on one quantizes its
    matrix products as ``convert rave --quantize`` does, or says in one line why not (it
    crashed on the missing ``controls``)."""
    import json

    from test_cli import one_line_error

    from pi_synth.model.library import shipped_dir

    enc = shipped_dir() / "morph.encoder.onnx"
    res = json.loads(cli("bench", enc, "--blocks", "40", "--json", check=0).stdout)
    assert 0 < res["rtf"] < 1 and res["blocks"] == 40 and res["at_cadence"]["block_ms_median"] > 0
    assert res["bare_block_ms_median"] > 0 and res["wrapper_overhead_ratio"] > 0
    one_line_error(cli("quantize", enc, "-o", tmp_path / "e.encoder.int8.onnx"), "no matrix product",
                   "play the fp32 model")
    assert not (tmp_path / "e.encoder.int8.onnx").exists()
    # an encoder's int8 file under a decoder's name (it overwrote the decoder's int8 file)
    one_line_error(cli("quantize", enc, "-o", tmp_path / "morph.int8.onnx"), "NAME.encoder.int8.onnx")


def test_bench_times_an_encoder_on_moving_input(tmp_path):
    """The bare ``session.run`` and the runtime see the same blocks of input: their outputs
    differ from block to block (a model fed silence would be timed on one easy case)."""
    from pi_synth.model.library import shipped_dir
    from pi_synth.model.runtime import Runtime

    rt = Runtime(shipped_dir() / "morph.encoder.onnx", use_cache=False)
    x = bench.input_sequence(rt.card, 6)
    assert x.shape == (6, rt.card.block_size) and np.abs(x).max() > 0.1 and not np.allclose(x[0], x[1])
    lat = []
    for k in range(6):
        rt.audio_in[:] = x[k]
        rt.step()
        lat.append(rt.latent.copy())
    assert not np.allclose(lat[2], lat[5])
    assert bench.bench_bare(rt, blocks=10, warmup=2)["block_ms_median"] > 0


def test_quantize_names_the_weights_it_cannot_make_int8(tmp_path):
    """A decoder whose weights sit in ConvTranspose (no int8 kernel in onnxruntime): the
    report said "0.14 MB fp32 -> 0.14 MB int8" and named only the two small Convs it kept."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from pi_synth.tools.quantize import _no_kernel_line, no_int8_kernel

    rng = np.random.default_rng(0)
    w_up = numpy_helper.from_array(rng.standard_normal((16, 16, 16)).astype(np.float32), "w_up")  # 16 KB
    w_in = numpy_helper.from_array(rng.standard_normal((16, 2, 1)).astype(np.float32), "w_in")  # 128 B
    nodes = [helper.make_node("Conv", ["x", "w_in"], ["h"]),
             helper.make_node("ConvTranspose", ["h", "w_up"], ["y"], strides=[8])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w_up, w_in])
    path = tmp_path / "up.onnx"
    onnx.save(helper.make_model(g), path)
    nk = no_int8_kernel(path)
    assert nk == {"ops": {"ConvTranspose": 1}, "weight_share": round(16384 / (16384 + 128), 3)}
    line = _no_kernel_line(nk)[0]
    assert "ConvTranspose ×1 (99% of the weights)" in line and "cannot make this model much smaller" in line
