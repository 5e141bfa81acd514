"""Procedural pi-synth models: an additive organ voice built as an ONNX graph.

No training: a handful of harmonics whose tilt follows a ``brightness`` control. It
exists so that the whole path (card → runtime → engine → backend) can be exercised
with models of any block size, sample rate or fault, and as a fallback voice when no
neural model is installed. Needs the ``onnx`` package (dev extra), not on the Pi.

The oscillator phase is carried as float64 state and computed in closed form inside
the block (a float32 running sum drifts), and the controls are ramped linearly from
the previous block's values (kept as state too) so control changes never step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pi_synth.model.card import CARD_KEY


def organ_card(block_size: int, sample_rate: int, name: str = "organ", control_frames: int = 1) -> dict:
    return {
        "format": 1,
        "name": name,
        "kind": "note",
        "description": "procedural additive organ: pitch, loudness and brightness (no training)",
        "sample_rate": sample_rate,
        "block_size": block_size,
        "channels": 1,
        "control_frames": control_frames,
        "controls": [
            {"name": "pitch", "unit": "hz", "min": 30.0, "max": 4000.0, "default": 220.0,
             "curve": "log"},
            {"name": "loudness", "unit": "db", "min": -80.0, "max": 0.0, "default": -80.0},
            {"name": "brightness", "unit": "", "min": 0.0, "max": 1.0, "default": 0.5},
        ],
        "inputs": {"controls": "controls"},
        "outputs": {"audio": "audio"},
        "state": [["phase_in", "phase_out"], ["prev_in", "prev_out"]],
        "latency_samples": 0,
        "license": "MIT",
        "source": "pi_synth.tools.procedural.build_organ (procedural, no training data)",
    }


def build_organ(
    path: str | Path | None = None,
    *,
    block_size: int = 256,
    sample_rate: int = 48000,
    control_frames: int = 1,
    harmonics: int = 12,
    gain: float = 1.0,
    fault: str | None = None,
    card: dict | None = None,
    opset: int = 17,
    burn_matmuls: int = 6,
):
    """Build the organ model; write it to ``path`` if given; return the ModelProto.

    ``gain`` scales the output (``gain=100`` makes a dangerously loud model);
    ``fault`` = ``"nan"`` or ``"inf"`` poisons the output from the first block;
    ``"nan_loud"`` only while loudness is above -3 dB — for testing the output guard;
    ``"slow_loud"`` runs ``burn_matmuls`` 384² matrix products per block while loudness
    is above -3 dB — an overload to test graceful degradation; ``"slow"`` always.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    B, H, sr, F = block_size, harmonics, float(sample_rate), control_frames
    if B % F:
        raise ValueError("block_size must be a multiple of control_frames")
    L = B // F
    j = np.arange(1, L + 1, dtype=np.float64)
    inits = {
        "ramp": (j / L).astype(np.float32).reshape(1, L, 1),
        "n": j.reshape(1, L),
        "cn": (j * (j + 1) / (2 * L)).reshape(1, L),
        "L_d": np.array(float(L)),
        "L1h": np.array((L + 1) / 2.0),
        "inv_sr": np.array(1.0 / sr),
        "k_d": np.arange(1, H + 1, dtype=np.float64).reshape(1, H),
        "k_f": np.arange(1, H + 1, dtype=np.float32).reshape(1, H),
        "km1": np.arange(0, H, dtype=np.float32).reshape(1, H),
        "two_pi": np.array(2 * math.pi, np.float32),
        "nyq": np.array(0.45 * sr, np.float32),
        "one": np.array(1.0, np.float32),
        "tilt_a": np.array(-1.6, np.float32),
        "tilt_b": np.array(-0.15, np.float32),
        "db2ln": np.array(math.log(10) / 20, np.float32),
        "half": np.array(0.5 * gain, np.float32),
        "eps": np.array(1e-6, np.float32),
        "shape_3f": np.array([3, F], np.int64),
        "shape_13": np.array([1, 3], np.int64),
        "shape_b3": np.array([B, 3], np.int64),
        "shape1": np.array([1], np.int64),
        "shape1b": np.array([B], np.int64),
        "shape_out": np.array([1, 1, B], np.int64),
        "shape_ph": np.array([1, 1], np.int64),
        "i0": np.array(0, np.int64),
        "i1": np.array(1, np.int64),
        "i2": np.array(2, np.int64),
        "zero0": np.array(0, np.int64),
        "zero1": np.array([0], np.int64),
        "fm1": np.array([F - 1], np.int64),
        "f_end": np.array([F], np.int64),
        "ax1": np.array([1], np.int64),
        "ax2": np.array([2], np.int64),
        "defaults": np.array([[220.0, -80.0, 0.5]], np.float32),
        "defaults_col": np.array([[[220.0], [-80.0], [0.5]]], np.float32),
        "last": np.array([B - 1], np.int64),
    }
    N = []

    def node(op, ins, out, **kw):
        N.append(helper.make_node(op, ins, [out], **kw))
        return out

    # per-frame control rows: P (value at the frame start), C (at its end), D = C - P
    C = node("Transpose", [node("Reshape", ["controls", "shape_3f"], "c3f")], "C", perm=[1, 0])
    # the state holds the previous controls minus the defaults, so the all-zero initial
    # state means "the defaults" (a first block never ramps from 0 Hz / 0 dB)
    prev_row = node("Add", [node("Reshape", ["prev_in", "shape_13"], "prev_d"), "defaults"], "prev_row")
    if F == 1:
        P = prev_row
    else:
        head = node("Slice", [C, "zero1", "fm1", "zero1"], "C_head")
        P = node("Concat", [prev_row, head], "P", axis=0)
    D = node("Sub", [C, P], "D")
    cur = node("Add", [node("Unsqueeze", [P, "ax1"], "P3"),
                       node("Mul", [node("Unsqueeze", [D, "ax1"], "D3"), "ramp"], "Dr")], "cur3")
    cur = node("Reshape", [cur, "shape_b3"], "cur")  # [B,3]
    f = node("Gather", [cur, "i0"], "f", axis=1)  # [B]
    loud = node("Gather", [cur, "i1"], "loud", axis=1)
    bright = node("Gather", [cur, "i2"], "bright", axis=1)
    # phase in cycles, float64, closed form: within frame m, sample j (1..L):
    #   base_m + (j*f0_m + d_m*j(j+1)/(2L)) / sr,   base_m = phase0 + sum_{i<m} advance_i
    f0 = node("Cast", [node("Gather", [P, "i0"], "f0_f", axis=1)], "f0", to=TensorProto.DOUBLE)
    df = node("Cast", [node("Gather", [D, "i0"], "df_f", axis=1)], "df", to=TensorProto.DOUBLE)
    adv = node("Mul", [node("Add", [node("Mul", [f0, "L_d"], "Lf0"), node("Mul", [df, "L1h"], "dL")], "adv0"), "inv_sr"], "adv")
    base = node("Add", [node("CumSum", [adv, "zero0"], "adv_cum", exclusive=1),
                        node("Reshape", ["phase_in", "shape1"], "ph0")], "base")  # [F]
    acc = node("Add", [node("Mul", ["n", node("Unsqueeze", [f0, "ax1"], "f0c")], "nf0"),
                       node("Mul", ["cn", node("Unsqueeze", [df, "ax1"], "dfc")], "cdf")], "acc")  # [F,L]
    ph = node("Add", [node("Unsqueeze", [base, "ax1"], "basec"), node("Mul", [acc, "inv_sr"], "acc_s")], "ph_fl2")
    ph = node("Reshape", [ph, "shape1b"], "ph")  # [B]
    ph = node("Sub", [ph, node("Floor", [ph], "ph_fl")], "ph_w")
    ph_last = node("Gather", [ph, "last"], "ph_last", axis=0)
    node("Reshape", [ph_last, "shape_ph"], "phase_out")
    phk = node("Mul", [node("Unsqueeze", [ph, "ax1"], "ph_col"), "k_d"], "phk")  # [B,H]
    phk = node("Sub", [phk, node("Floor", [phk], "phk_fl")], "phk_w")
    s = node("Sin", [node("Mul", [node("Cast", [phk], "phk_f", to=TensorProto.FLOAT), "two_pi"], "arg")], "s")
    # spectral tilt: weight_k = exp(km1 * (a*(1-b) + b_min)) masked above 0.45 sr
    slope = node("Add", [node("Mul", [node("Sub", ["one", bright], "inv_b"), "tilt_a"], "sl0"), "tilt_b"], "slope")
    w = node("Exp", [node("Mul", ["km1", node("Unsqueeze", [slope, "ax1"], "sl_col")], "lw")], "w")
    fk = node("Mul", [node("Unsqueeze", [f, "ax1"], "f_col"), "k_f"], "fk")
    mask = node("Cast", [node("Less", [fk, "nyq"], "below")], "mask", to=TensorProto.FLOAT)
    w = node("Mul", [w, mask], "w_m")
    num = node("ReduceSum", [node("Mul", [s, w], "sw"), "ax1"], "num", keepdims=0)
    den = node("Add", [node("ReduceSum", [w, "ax1"], "den0", keepdims=0), "eps"], "den")
    amp = node("Exp", [node("Mul", [loud, "db2ln"], "lnamp")], "amp")
    y = node("Mul", [node("Mul", [node("Div", [num, den], "y0"), amp], "y1"), "half"], "y")
    if fault == "nan":
        y = node("Div", [node("Sub", [y, y], "zero"), node("Sub", [y, y], "zero2")], "y_nan")
    elif fault == "inf":
        y = node("Div", [y, node("Sub", [y, y], "zero")], "y_inf")
    elif fault == "nan_loud":  # NaN only while loudness is above -3 dB: a fault you can play
        loud_hi = node("Greater", [loud, node("Constant", [], "m3", value=numpy_helper.from_array(np.array(-3.0, np.float32)))], "loud_hi")
        nan = node("Constant", [], "nan", value=numpy_helper.from_array(np.array(np.nan, np.float32)))
        y = node("Where", [loud_hi, nan, y], "y_nanloud")
    if fault in ("slow_loud", "slow"):  # heavy work while loudness is above -3 dB: an overload you can play
        heavy_n = 384
        w = numpy_helper.from_array(np.full((heavy_n, heavy_n), 1e-3, np.float32), "heavy_w")
        # depend on the block's audio, or onnxruntime folds the constant products away
        body = [helper.make_node("ReduceSum", [y], ["ysum"], keepdims=0),
                helper.make_node("Mul", ["ysum", "zero_f"], ["ysum0"]),
                helper.make_node("Add", ["heavy_w", "ysum0"], ["m0"])]
        for i in range(burn_matmuls):
            body.append(helper.make_node("MatMul", [f"m{i}", "heavy_w"], [f"m{i + 1}"]))
        body.append(helper.make_node("ReduceSum", [f"m{burn_matmuls}"], ["hs"], keepdims=0))
        body.append(helper.make_node("Mul", ["hs", "zero_f"], ["hz"]))
        body.append(helper.make_node("Add", [y, "hz"], ["then_y"]))
        then_g = helper.make_graph(body, "heavy", [], [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, [B])],
                                   initializer=[w, numpy_helper.from_array(np.array(0.0, np.float32), "zero_f")])
        else_g = helper.make_graph([helper.make_node("Identity", [y], ["else_y"])], "light", [],
                                   [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, [B])])
        loud_max = node("ReduceMax", [loud], "loud_max", keepdims=0)
        above = -3.0 if fault == "slow_loud" else -1e9  # "slow": always
        cond = node("Greater", [loud_max, node("Constant", [], "m3s", value=numpy_helper.from_array(np.array(above, np.float32)))], "heavy_on")
        y = node("If", [cond], "y_slow", then_branch=then_g, else_branch=else_g)
    node("Reshape", [y, "shape_out"], "audio")
    node("Sub", [node("Slice", ["controls", "fm1", "f_end", "ax2"], "last_ctl"), "defaults_col"], "prev_out")

    graph = helper.make_graph(
        N,
        "organ",
        [
            helper.make_tensor_value_info("controls", TensorProto.FLOAT, [1, 3, F]),
            helper.make_tensor_value_info("phase_in", TensorProto.DOUBLE, [1, 1]),
            helper.make_tensor_value_info("prev_in", TensorProto.FLOAT, [1, 3, 1]),
        ],
        [
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 1, B]),
            helper.make_tensor_value_info("phase_out", TensorProto.DOUBLE, [1, 1]),
            helper.make_tensor_value_info("prev_out", TensorProto.FLOAT, [1, 3, 1]),
        ],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pi-synth"
    )
    model.ir_version = 8
    card = card if card is not None else organ_card(block_size, sample_rate, control_frames=F)
    helper.set_model_props(model, {CARD_KEY: json.dumps(card)})
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model
