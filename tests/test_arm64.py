"""pi-synth's C code and the shipped models on the Pi's instruction set (qemu-user, arm64).

``benchmarks/arm64.py`` runs Debian's arm64 Python with the aarch64 wheels of this venv's
versions, ``_kernels.c`` and pyalsaaudio cross-compiled, as a Pi 4 (cortex-a72: also the
Zero 2 W's int8 path; the C kernels' tests and the commands run there) and a Pi 5
(cortex-a76: dot-product int8; the models). Slow: the first run
downloads an arm64 Debian and the wheels into ``work/arm64-cache/`` (deb.debian.org, PyPI).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import arm64  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    try:
        return arm64.check(tmp_path_factory.mktemp("arm64"), list(arm64.CPUS))
    except arm64.EmulationError as e:
        pytest.fail(str(e))


@pytest.mark.timeout(1800)  # the first run also builds the cache
def test_c_kernels_build_and_pass_their_tests_on_arm64(result):
    for cpu, r in result["cpus"].items():
        assert r["kernels"] == "c", f"{cpu}: _kernels did not load on arm64"
    t = result["cpus"]["cortex-a72"]["tests"]  # the C code runs the same on every arm64 CPU
    assert t["returncode"] == 0 and " passed" in t["summary"] and "skipped" not in t["summary"], t


@pytest.mark.timeout(1800)
def test_shipped_models_sound_the_same_on_arm64(result):
    # a difference 90 dB down is far below the int8 files' own 30+ dB against fp32: what
    # the Pi plays is what the model cards measured here
    for cpu, r in result["cpus"].items():
        assert set(r["models"]) == {p.name for p in arm64.shipped()}
        for name, m in r["models"].items():
            assert m["finite"] and m["peak"] > 1e-3, (cpu, name, m)
            assert m["snr_vs_x86_db"] >= 90.0 or math.isinf(m["snr_vs_x86_db"]), (cpu, name, m)


@pytest.mark.timeout(1800)
def test_int8_convolutions_run_as_int8_on_arm64(result):
    # and never fewer than here: onnxruntime fuses a QDQ file's S8S8 convs and matmuls into
    # int8 kernels (QLinearConv, QLinearMatMul / MatMulInteger…) on arm64 (the flute's: its
    # causal convs are MatMuls over their taps), where on x86 it runs them dequantized in float;
    # a dynamic-int8 file (morph) runs DynamicQuantizeMatMul on both
    for cpu, r in result["cpus"].items():
        for name, m in r["models"].items():
            if ".int8." in name:
                assert sum(m["int8_ops"].values()) >= 1, (cpu, name, m)
                for op in m["int8_ops"]:
                    here, there = m["ops_differ"].get(op, (None, None))
                    assert here is None or there > here, (cpu, name, op, m)
            else:
                assert not m["int8_ops"] and not m["ops_differ"], (cpu, name, m)


@pytest.mark.timeout(1800)
def test_the_instrument_runs_on_arm64(result):
    # every runtime dependency installed from aarch64 wheels (pyalsaaudio built from its
    # source), and the commands a Pi runs: an offline render equal to this machine's to
    # the last bit of rounding, and `pi-synth run` to its end
    r = result["cpus"]["cortex-a72"]
    render, run = r["cli"]["render"], r["cli"]["run"]
    assert render["returncode"] == 0 and render["same_length"], render
    assert render["peak_lsb"] > 1000 and render["max_lsb_diff"] <= 2, render
    assert run["returncode"] == 0 and run["played"] and " 0 xruns" in run["played"], run
