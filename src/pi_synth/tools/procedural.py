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


def organ_card(block_size: int, sample_rate: int, name: str = "organ", control_frames: int = 1,
               voices: int = 1) -> dict:
    card = {
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
    if voices > 1:
        card["voices"] = voices
    return card


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
    voices: int = 1,
    stereo: bool = False,
):
    """Build the organ model; write it to ``path`` if given; return the ModelProto.

    ``stereo`` makes a 2-channel model, the right channel at half the left's level (so a
    mix-down or a swapped pair shows).
    ``gain`` scales the output (``gain=100`` makes a dangerously loud model);
    ``fault`` = ``"nan"`` or ``"inf"`` poisons the output from the first block;
    ``"nan_loud"`` only while loudness is above -3 dB — for testing the output guard;
    ``"slow_loud"`` runs ``burn_matmuls`` 384² matrix products per block while loudness
    is above -3 dB — an overload to test graceful degradation; ``"slow"`` always.
    ``voices`` > 1 exports a batched note model: every input and output gets a dynamic
    leading dimension ``voices`` (one row per voice, rows independent) and the card says
    ``"voices": N``; 1 is the mono model, batch 1 (the same graph, the same samples).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    B, H, sr, F = block_size, harmonics, float(sample_rate), control_frames
    if B % F:
        raise ValueError("block_size must be a multiple of control_frames")
    L = B // F
    j = np.arange(1, L + 1, dtype=np.float64)
    inits = {
        "ramp": (j / L).astype(np.float32).reshape(1, 1, L, 1),
        "n": j.reshape(1, 1, L),
        "cn": (j * (j + 1) / (2 * L)).reshape(1, 1, L),
        "L_d": np.array(float(L)),
        "L1h": np.array((L + 1) / 2.0),
        "inv_sr": np.array(1.0 / sr),
        "k_d": np.arange(1, H + 1, dtype=np.float64).reshape(1, 1, H),
        "k_f": np.arange(1, H + 1, dtype=np.float32).reshape(1, 1, H),
        "km1": np.arange(0, H, dtype=np.float32).reshape(1, 1, H),
        "two_pi": np.array(2 * math.pi, np.float32),
        "nyq": np.array(0.45 * sr, np.float32),
        "one": np.array(1.0, np.float32),
        "tilt_a": np.array(-1.6, np.float32),
        "tilt_b": np.array(-0.15, np.float32),
        "db2ln": np.array(math.log(10) / 20, np.float32),
        "half": np.array(0.5 * gain, np.float32),
        "eps": np.array(1e-6, np.float32),
        # 0 in a Reshape target copies the input's dimension: the rows, whatever their number
        "shape_vb3": np.array([0, B, 3], np.int64),
        "shape_vb": np.array([0, B], np.int64),
        "shape_out": np.array([0, 1, B], np.int64),
        "i0": np.array(0, np.int64),
        "i1": np.array(1, np.int64),
        "i2": np.array(2, np.int64),
        "fm1": np.array([F - 1], np.int64),
        "f_end": np.array([F], np.int64),
        "ax2": np.array([2], np.int64),
        "defaults": np.array([[[220.0, -80.0, 0.5]]], np.float32),
        "defaults_col": np.array([[[220.0], [-80.0], [0.5]]], np.float32),
        "last": np.array([B - 1], np.int64),
    }
    N = []

    def node(op, ins, out, **kw):
        N.append(helper.make_node(op, ins, [out], **kw))
        return out

    # Every tensor has the voices first ([V, …]); each row is one voice, computed alone.
    # per-frame control rows: P (value at the frame start), C (at its end), D = C - P: [V, F, 3]
    C = node("Transpose", ["controls"], "C", perm=[0, 2, 1])
    # the state holds the previous controls minus the defaults, so the all-zero initial
    # state means "the defaults" (a first block never ramps from 0 Hz / 0 dB)
    prev_row = node("Add", [node("Transpose", ["prev_in"], "prev_d", perm=[0, 2, 1]), "defaults"], "prev_row")
    if F == 1:
        P = prev_row
    else:
        inits.update(zero1=np.array([0], np.int64), ax1=np.array([1], np.int64))
        head = node("Slice", [C, "zero1", "fm1", "ax1"], "C_head")
        P = node("Concat", [prev_row, head], "P", axis=1)
    D = node("Sub", [C, P], "D")
    cur = node("Add", [node("Unsqueeze", [P, "ax2"], "P3"),
                       node("Mul", [node("Unsqueeze", [D, "ax2"], "D3"), "ramp"], "Dr")], "cur3")
    cur = node("Reshape", [cur, "shape_vb3"], "cur")  # [V,B,3]
    f = node("Gather", [cur, "i0"], "f", axis=2)  # [V,B]
    loud = node("Gather", [cur, "i1"], "loud", axis=2)
    bright = node("Gather", [cur, "i2"], "bright", axis=2)
    # phase in cycles, float64, closed form: within frame m, sample j (1..L):
    #   base_m + (j*f0_m + d_m*j(j+1)/(2L)) / sr,   base_m = phase0 + sum_{i<m} advance_i
    f0 = node("Cast", [node("Gather", [P, "i0"], "f0_f", axis=2)], "f0", to=TensorProto.DOUBLE)  # [V,F]
    df = node("Cast", [node("Gather", [D, "i0"], "df_f", axis=2)], "df", to=TensorProto.DOUBLE)
    adv = node("Mul", [node("Add", [node("Mul", [f0, "L_d"], "Lf0"), node("Mul", [df, "L1h"], "dL")], "adv0"), "inv_sr"], "adv")
    base = node("Add", [node("CumSum", [adv, "i1"], "adv_cum", exclusive=1), "phase_in"], "base")  # [V,F]
    acc = node("Add", [node("Mul", ["n", node("Unsqueeze", [f0, "ax2"], "f0c")], "nf0"),
                       node("Mul", ["cn", node("Unsqueeze", [df, "ax2"], "dfc")], "cdf")], "acc")  # [V,F,L]
    ph = node("Add", [node("Unsqueeze", [base, "ax2"], "basec"), node("Mul", [acc, "inv_sr"], "acc_s")], "ph_fl2")
    ph = node("Reshape", [ph, "shape_vb"], "ph")  # [V,B]
    ph = node("Sub", [ph, node("Floor", [ph], "ph_fl")], "ph_w")
    node("Gather", [ph, "last"], "phase_out", axis=1)  # [V,1]
    phk = node("Mul", [node("Unsqueeze", [ph, "ax2"], "ph_col"), "k_d"], "phk")  # [V,B,H]
    phk = node("Sub", [phk, node("Floor", [phk], "phk_fl")], "phk_w")
    s = node("Sin", [node("Mul", [node("Cast", [phk], "phk_f", to=TensorProto.FLOAT), "two_pi"], "arg")], "s")
    # spectral tilt: weight_k = exp(km1 * (a*(1-b) + b_min)) masked above 0.45 sr
    slope = node("Add", [node("Mul", [node("Sub", ["one", bright], "inv_b"), "tilt_a"], "sl0"), "tilt_b"], "slope")
    w = node("Exp", [node("Mul", ["km1", node("Unsqueeze", [slope, "ax2"], "sl_col")], "lw")], "w")
    fk = node("Mul", [node("Unsqueeze", [f, "ax2"], "f_col"), "k_f"], "fk")
    mask = node("Cast", [node("Less", [fk, "nyq"], "below")], "mask", to=TensorProto.FLOAT)
    w = node("Mul", [w, mask], "w_m")
    num = node("ReduceSum", [node("Mul", [s, w], "sw"), "ax2"], "num", keepdims=0)
    den = node("Add", [node("ReduceSum", [w, "ax2"], "den0", keepdims=0), "eps"], "den")
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
        then_g = helper.make_graph(body, "heavy", [], [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, None)],
                                   initializer=[w, numpy_helper.from_array(np.array(0.0, np.float32), "zero_f")])
        else_g = helper.make_graph([helper.make_node("Identity", [y], ["else_y"])], "light", [],
                                   [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, None)])
        loud_max = node("ReduceMax", [loud], "loud_max", keepdims=0)
        above = -3.0 if fault == "slow_loud" else -1e9  # "slow": always
        cond = node("Greater", [loud_max, node("Constant", [], "m3s", value=numpy_helper.from_array(np.array(above, np.float32)))], "heavy_on")
        y = node("If", [cond], "y_slow", then_branch=then_g, else_branch=else_g)
    if stereo:
        inits["half"] = np.array(0.5, np.float32)
        left = node("Reshape", [y, "shape_out"], "left")
        node("Concat", [left, node("Mul", [left, "half"], "right")], "audio", axis=1)
    else:
        node("Reshape", [y, "shape_out"], "audio")
    node("Sub", [node("Slice", ["controls", "fm1", "f_end", "ax2"], "last_ctl"), "defaults_col"], "prev_out")

    V = "voices" if voices > 1 else 1
    graph = helper.make_graph(
        N,
        "organ",
        [
            helper.make_tensor_value_info("controls", TensorProto.FLOAT, [V, 3, F]),
            helper.make_tensor_value_info("phase_in", TensorProto.DOUBLE, [V, 1]),
            helper.make_tensor_value_info("prev_in", TensorProto.FLOAT, [V, 3, 1]),
        ],
        [
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, [V, 2 if stereo else 1, B]),
            helper.make_tensor_value_info("phase_out", TensorProto.DOUBLE, [V, 1]),
            helper.make_tensor_value_info("prev_out", TensorProto.FLOAT, [V, 3, 1]),
        ],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pi-synth"
    )
    model.ir_version = 8
    if card is None:
        card = organ_card(block_size, sample_rate, control_frames=F, voices=voices)
        card["channels"] = 2 if stereo else 1
    helper.set_model_props(model, {CARD_KEY: json.dumps(card)})
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model


# -- audio in: a procedural encoder for the organ, and two effects ----------------------


def encoder_card(block_size: int, sample_rate: int, control_frames: int = 1, name: str = "organ-encoder",
                 latent_controls=("loudness", "brightness")) -> dict:
    return {
        "format": 1,
        "name": name,
        "kind": "encoder",
        "description": "procedural encoder: loudness (dB RMS) and brightness (a slope ratio) of the input, "
                       "for the organ (no training)",
        "sample_rate": sample_rate,
        "block_size": block_size,
        "channels": 1,
        "control_frames": control_frames,
        "controls": [],
        "latent_controls": list(latent_controls),
        "inputs": {"audio": "audio_in"},
        "outputs": {"latent": "latent"},
        "state": [["prev_in", "prev_out"]],
        "latency_samples": 0,
        "license": "MIT",
        "source": "pi_synth.tools.procedural.build_encoder (procedural, no training data)",
    }


def build_encoder(path=None, *, block_size: int = 256, sample_rate: int = 48000, control_frames: int = 1,
                  smooth: float = 0.5, order=("loudness", "brightness"), opset: int = 17):
    """An encoder for the organ: per control frame, the input's loudness (dB of its RMS,
    −80..0) and brightness (RMS of its first difference over its RMS, halved, 0..1), each
    smoothed against the last block's (``smooth``: the old value's weight; the state
    carried). ``order``: the latent_controls the two are written as (any order of the
    organ's "loudness" and "brightness"). Write to ``path`` if given; return the ModelProto."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    B, F = block_size, control_frames
    if B % F:
        raise ValueError("block_size must be a multiple of control_frames")
    L = B // F
    inits = {
        "shape_fl": np.array([F, L], np.int64),
        "ax1": np.array([1], np.int64),
        "eps": np.array(1e-5, np.float32),
        "db": np.array(20.0 / math.log(10.0), np.float32),
        "lo": np.array(-80.0, np.float32),
        "hi": np.array(0.0, np.float32),
        "zero": np.array(0.0, np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
        "s0": np.array([0], np.int64),
        "s1": np.array([1], np.int64),
        "e1": np.array([L - 1], np.int64),
        "eL": np.array([L], np.int64),
        "a": np.array(smooth, np.float32),
        "b": np.array(1.0 - smooth, np.float32),
        "shape_out": np.array([1, 2, F], np.int64),
        "f_last": np.array([F - 1], np.int64),
        "f_end": np.array([F], np.int64),
        "ax2": np.array([2], np.int64),
    }
    N = []

    def node(op, ins, out, **kw):
        N.append(helper.make_node(op, ins, [out], **kw))
        return out

    x = node("Reshape", ["audio_in", "shape_fl"], "x")  # [F, L]
    ms = node("ReduceMean", [node("Mul", [x, x], "x2")], "ms", axes=[1], keepdims=0)  # [F]
    rms = node("Sqrt", [node("Add", [ms, "eps"], "ms_e")], "rms")
    loud = node("Clip", [node("Mul", [node("Log", [rms], "ln_rms"), "db"], "loud0"), "lo", "hi"], "loud")
    d = node("Sub", [node("Slice", [x, "s1", "eL", "ax1"], "x_next"), node("Slice", [x, "s0", "e1", "ax1"], "x_prev")], "dx")
    dms = node("ReduceMean", [node("Mul", [d, d], "d2")], "dms", axes=[1], keepdims=0)
    ratio = node("Div", [node("Sqrt", [node("Add", [dms, "eps"], "dms_e")], "drms"), rms], "ratio")
    bright = node("Clip", [node("Mul", [ratio, "half"], "bright0"), "zero", "one"], "bright")
    rows = {"loudness": loud, "brightness": bright}
    if sorted(order) != ["brightness", "loudness"]:
        raise ValueError("order: loudness and brightness, in either order")
    un = [node("Unsqueeze", [rows[n], "s0"], f"{n}_row") for n in order]
    raw = node("Reshape", [node("Concat", un, "raw0", axis=0), "shape_out"], "raw")  # [1, 2, F]
    z = node("Add", [node("Mul", ["prev_in", "a"], "old"), node("Mul", [raw, "b"], "new")], "latent")
    node("Slice", [z, "f_last", "f_end", "ax2"], "prev_out")
    graph = helper.make_graph(
        N, "organ-encoder",
        [helper.make_tensor_value_info("audio_in", TensorProto.FLOAT, [1, 1, B]),
         helper.make_tensor_value_info("prev_in", TensorProto.FLOAT, [1, 2, 1])],
        [helper.make_tensor_value_info("latent", TensorProto.FLOAT, [1, 2, F]),
         helper.make_tensor_value_info("prev_out", TensorProto.FLOAT, [1, 2, 1])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pi-synth")
    model.ir_version = 8
    helper.set_model_props(model, {CARD_KEY: json.dumps(
        encoder_card(B, sample_rate, F, latent_controls=order))})
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model


def build_effect(path=None, *, kind: str = "drive", block_size: int = 256, sample_rate: int = 48000,
                 delay: int = 0, opset: int = 17):
    """A model that takes audio itself (``inputs.audio``): ``kind="drive"``, ``tanh`` of the
    input times ``1 + 20·drive`` (a control), or ``kind="delay"``, the input ``delay``
    samples late (the last ``delay`` samples carried as state; the card says
    ``latency_samples = delay``, so a dry/wet mix of the two lines up exactly)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    B = block_size
    N, inits = [], {}

    def node(op, ins, out, **kw):
        N.append(helper.make_node(op, ins, [out], **kw))
        return out

    ins = [helper.make_tensor_value_info("audio_in", TensorProto.FLOAT, [1, 1, B]),
           helper.make_tensor_value_info("controls", TensorProto.FLOAT, [1, 1, 1])]
    outs = [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 1, B])]
    state = []
    if kind == "drive":
        controls = [{"name": "drive", "unit": "", "min": 0.0, "max": 1.0, "default": 0.5}]
        inits.update(k20=np.array(20.0, np.float32), one=np.array(1.0, np.float32), out_g=np.array(0.8, np.float32),
                     shape11=np.array([1, 1, 1], np.int64))
        g = node("Add", [node("Mul", [node("Reshape", ["controls", "shape11"], "drv"), "k20"], "g0"), "one"], "g")
        node("Mul", [node("Tanh", [node("Mul", ["audio_in", g], "xg")], "y0"), "out_g"], "audio")
    elif kind == "delay":
        if not 0 < delay:
            raise ValueError("a delay effect needs delay > 0")
        controls = [{"name": "mix", "unit": "", "min": 0.0, "max": 1.0, "default": 1.0}]
        inits.update(s0=np.array([0], np.int64), sB=np.array([B], np.int64), sE=np.array([B + delay], np.int64),
                     ax2=np.array([2], np.int64), shape11=np.array([1, 1, 1], np.int64))
        ins.append(helper.make_tensor_value_info("tail_in", TensorProto.FLOAT, [1, 1, delay]))
        outs.append(helper.make_tensor_value_info("tail_out", TensorProto.FLOAT, [1, 1, delay]))
        full = node("Concat", ["tail_in", "audio_in"], "full", axis=2)  # [1, 1, delay + B]
        y = node("Slice", [full, "s0", "sB", "ax2"], "late")
        node("Mul", [y, node("Reshape", ["controls", "shape11"], "m")], "audio")
        node("Slice", [full, "sB", "sE", "ax2"], "tail_out")
        state = [["tail_in", "tail_out"]]
    else:
        raise ValueError("kind: drive or delay")
    graph = helper.make_graph(N, f"effect-{kind}", ins, outs,
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pi-synth")
    model.ir_version = 8
    card = {"format": 1, "name": kind, "kind": "", "description": f"procedural {kind} effect (audio in)",
            "sample_rate": sample_rate, "block_size": B, "channels": 1, "control_frames": 1,
            "controls": controls, "inputs": {"controls": "controls", "audio": "audio_in"},
            "outputs": {"audio": "audio"}, "state": state, "latency_samples": delay if kind == "delay" else 0,
            "license": "MIT", "source": f"pi_synth.tools.procedural.build_effect(kind={kind!r})"}
    helper.set_model_props(model, {CARD_KEY: json.dumps(card)})
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model
