"""Property-based fuzzing of the front doors, under one contract.

The doors: the config file, the events JSON and the command line of ``render``, ``run``,
``info`` and ``calibrate`` (each driven through ``pi_synth.cli.main`` in this process, as a
user's command line would), and the live surfaces: OSC datagrams on a real socket into a
real instrument, and raw MIDI bytes through the one byte parser into the voice and the
model. The contract, whatever comes in:

* exit 0 or 2 — never 1 (a bug), never an exception out of ``main``;
* no traceback and no Python warning reaches the user (stderr, the log, ``warnings``);
* within a bound in seconds;
* nothing written except the output the command line names (and the state file a
  ``calibrate`` is for): no stray file, no temp file left behind;
* the live surfaces keep serving, and the model's controls stay finite and in range.

Examples are **derandomized** and the example database is off, so CI runs the same bounded
set every time and depends on nothing outside git. To hunt for new failures locally:
``PI_SYNTH_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/test_fuzz.py`` (random
examples, database in ``.hypothesis/``, which git ignores).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pi_synth import cli
from pi_synth import config as config_mod

EXPLORE = int(os.environ.get("PI_SYNTH_FUZZ_EXAMPLES", "0") or 0)
BOUND_S = 45.0  # per example: a hang or a runaway render fails here (0.1–2 s is typical)
HIDDEN = (DeprecationWarning, PendingDeprecationWarning, ResourceWarning)  # Python hides these


def budget(n: int):
    """Hypothesis settings: ``n`` examples in CI (same ones every run), more when exploring."""
    if EXPLORE:
        return settings(max_examples=EXPLORE, deadline=None,
                        suppress_health_check=list(HealthCheck))
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


# -- the harness ---------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / n
            try:
                s = p.lstat()
            except OSError:
                continue
            out[str(p.relative_to(root))] = (s.st_size, s.st_mtime_ns)
    return out


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("pi-synth: %(levelname)s: %(message)s"))

    def emit(self, record):
        self.lines.append(self.format(record))


def front_door(argv: list[str], workdir: Path, *, may_write=(), bound_s: float = BOUND_S) -> tuple[int, str]:
    """``pi-synth ARGV`` in this process, in ``workdir``; asserts the contract, returns
    (exit code, stderr). ``may_write``: paths under ``workdir`` the command may create."""
    before = _tree(workdir)
    out, err = io.StringIO(), io.StringIO()
    records = _Records()
    root = logging.getLogger()
    root.addHandler(records)
    thread_errors = []
    old_hook = threading.excepthook
    threading.excepthook = lambda a: thread_errors.append(f"{a.thread}: {a.exc_type.__name__}: {a.exc_value}")
    threads = set(threading.enumerate())
    t0 = time.monotonic()
    cwd = os.getcwd()
    os.chdir(workdir)
    stdin, sys.stdin = sys.stdin, io.StringIO("")  # a closed input, as a script or a service has
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            warnings.simplefilter("always")
            try:
                code = cli.main(list(argv))
            except SystemExit as e:  # argparse: bad flags are exit 2
                code = e.code if isinstance(e.code, int) else 2
    finally:
        sys.stdin = stdin
        os.chdir(cwd)
        threading.excepthook = old_hook
        root.removeHandler(records)
    dt = time.monotonic() - t0
    event(f"{argv[0]}: exit {code}")  # --hypothesis-show-statistics: how many got through
    if os.environ.get("FUZZ_SHOW"):
        print(code, argv, err.getvalue().strip().splitlines()[-1:] , file=sys.__stderr__)
    text = err.getvalue()
    log = "\n".join(records.lines)
    said = f"argv={argv!r}\nexit {code} after {dt:.1f} s\nstderr:\n{text}\nlog:\n{log}"
    assert code in (0, 2), said
    assert dt < bound_s, said
    assert "Traceback" not in text and "Traceback" not in log and "unexpected error" not in text, said
    assert not thread_errors, f"{thread_errors}\n{said}"
    shown = [w for w in caught if not issubclass(w.category, HIDDEN)]
    assert not shown, f"{[f'{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})' for w in shown]}\n{said}"
    assert "Warning:" not in text, said
    if code == 2:  # one line saying what is wrong (argparse adds its usage lines before it)
        last = text.strip().splitlines()[-1] if text.strip() else ""
        assert last.startswith(("pi-synth: ", "pi-synth run: error", "pi-synth render: error",
                                "pi-synth info: error", "pi-synth calibrate: error", "pi-synth: error")), said
    after = _tree(workdir)
    allowed = {str(Path(p)) for p in may_write}
    changed = {p for p in after if before.get(p) != after[p]} | (set(before) - set(after))
    stray = {p for p in changed if p not in allowed and not p.startswith(("cache/", "state/"))}
    assert not stray, f"wrote {sorted(stray)}\n{said}"
    assert not [p for p in after if p.endswith(".tmp")], said
    deadline = time.monotonic() + 3.0  # the threads a run started end with it
    ours = ("pi-synth-audio", "pi-synth-inference", "pi-synth-output", "pi-synth-poll", "pi-synth-panel", "osc-")
    while True:
        extra = [t for t in set(threading.enumerate()) - threads
                 if t.is_alive() and (not t.daemon or t.name.startswith(ours))]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not extra, f"threads left running: {extra}\n{said}"
    return code, text


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """What every example shares: a model, a short MIDI file, a small valid config and
    events file (read-only inputs in their own folder)."""
    from pi_synth.tools.procedural import build_organ

    d = tmp_path_factory.mktemp("fuzz-inputs")
    build_organ(d / "organ.onnx")
    mid = mido.MidiFile()
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.Message("note_on", note=64, velocity=90, time=0))
    tr.append(mido.Message("note_off", note=64, velocity=0, time=120))  # 0.125 s
    mid.save(d / "short.mid")
    (d / "garbage.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\xff\xff" + bytes(range(40)))
    (d / "ok.toml").write_text('[audio]\nperiod = 128\n[midi]\nports = ""\n')
    (d / "ok.json").write_text('[{"t": 0, "midi": [144, 60, 100]}, {"t": 0.1, "set": {"brightness": 0.3}}]')
    (d / "sub").mkdir()
    return d


@pytest.fixture
def workdir(tmp_path_factory, monkeypatch):
    """A fresh folder per test; each example runs in its own subfolder of it."""
    d = tmp_path_factory.mktemp("fuzz-work")
    monkeypatch.setenv("PI_SYNTH_CACHE_DIR", str(d / "cache"))
    monkeypatch.setenv("PI_SYNTH_STATE_DIR", str(d / "state"))
    counter = iter(range(10**9))

    def fresh() -> Path:
        p = d / f"ex{next(counter)}"
        p.mkdir()
        return p

    return fresh


# -- 1. the config file --------------------------------------------------------------------

_weird_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", "a\u0000b", "\x1b[2J", "é∂🎹", "x" * 5000, "../../etc/passwd", "-1", "default",
                     "all", "mcp3008", "ads1115", "none", "null", "wav", "direct", "threaded", "poly"]),
)
_number = st.one_of(
    st.integers(-10, 70000), st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, 1, -1, 0.5, 1e308, -1e-308, 2**53 + 1]),
)


def _toml(v) -> str:
    if isinstance(v, _Raw):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(x)}" for k, x in v.items()) + "}"
    return str(v)  # a date-time literal


class _Raw(str):
    """A TOML literal written as it is (dates)."""


_value = st.recursive(
    st.one_of(_number, st.booleans(), _weird_text,
              st.sampled_from(["1979-05-27T07:32:00Z", "07:32:00", "1979-05-27"]).map(lambda s: _Raw(s))),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(["a", "b", "pin"]), inner, max_size=3)),
    max_leaves=8,
)


def _valid(key: str, spec: config_mod.Key):
    """A value the key should accept (so examples also get past the checks and play)."""
    choices = spec.allowed()
    if choices:
        return st.sampled_from(list(choices))
    if spec.type is bool:
        return st.booleans()
    if spec.type is int:
        return st.integers(int(spec.lo), int(spec.hi)) if spec.lo is not None else st.integers(-5, 5)
    if spec.type is float:
        return st.floats(spec.lo, spec.hi) if spec.lo is not None else st.floats(-5, 5)
    if spec.type is list:
        return st.lists(st.integers(int(spec.lo), int(spec.hi)), max_size=3)
    return st.sampled_from(["", "x", "default"])


SAFE = {("midi", "din"): ["", "no-such-tty"], ("audio", "device"): ["default", "x"],
        ("model", "path"): ["", "organ"], ("osc", "enabled"): [False]}  # no real ports, devices or files


@st.composite
def configs(draw):
    lines = []
    tables = list(config_mod.SCHEMA) + list(config_mod.ARRAYS) + ["junk", "audio.sub"]
    for table in draw(st.lists(st.sampled_from(tables), max_size=4, unique=True)):
        array = table in config_mod.ARRAYS
        for _ in range(draw(st.integers(1, 2)) if array else 1):
            lines.append(f"[[{table}]]" if array else f"[{table}]")
            schema = config_mod.ARRAYS.get(table) or config_mod.SCHEMA.get(table) or {}
            keys = list(schema) + ["nonsense", "perod", "a.b"]
            for key in draw(st.lists(st.sampled_from(keys), max_size=6, unique=True)):
                spec = schema.get(key)
                if (table, key) in SAFE:
                    v = draw(st.sampled_from(SAFE[(table, key)]))
                elif spec is not None and draw(st.integers(0, 9)) < 8:  # mostly valid: get past the checks
                    v = draw(_valid(key, spec))
                else:
                    v = draw(_value)
                lines.append(f"{key} = {_toml(v)}")
    if draw(st.integers(0, 9)) == 9:  # now and then, a line that is not TOML
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(
            ["[", "x =", "= 1", "[[map]", "a = [[[[1]]]]", "a = " + "[" * 2000 + "]" * 2000, "\x00", "key = 'unterminated"])))
    if draw(st.integers(0, 19)) == 19:  # now and then, thousands of unknown keys
        lines += ["[audio]"] + [f"k{i} = 1" for i in range(draw(st.integers(100, 5000)))]
    return "\n".join(lines) + "\n"


@budget(60)
@given(text=configs(), command=st.sampled_from(["run", "render"]))
def test_fuzz_config_file(world, workdir, text, command):
    d = workdir()
    conf = d / "fuzz.toml"
    conf.write_text(text, encoding="utf-8")
    model = str(world / "organ.onnx")
    if command == "run":
        front_door(["run", "--config", "fuzz.toml", "--model", model, "--backend", "unpaced",
                    "--seconds", "0.05"], d)
    else:
        front_door(["render", model, "-o", "out.wav", "--config", "fuzz.toml", "--seconds", "0.05"], d,
                   may_write=["out.wav"])


# -- 2. the events JSON ----------------------------------------------------------------------

_t = st.one_of(st.floats(0, 1.0), st.sampled_from([0, -1, 1e308, -0.0, 86400.5, 1e7, 2**70, True, None, "0.5", [1]]))
_byte = st.one_of(st.integers(0, 255), st.sampled_from([-1, 256, 3.5, True, "90", None, 10**30]))
_event = st.fixed_dictionaries({"t": _t}, optional={
    "midi": st.lists(_byte, max_size=12),
    "set": st.one_of(st.dictionaries(st.sampled_from(["pitch", "loudness", "brightness", "nope", ""]),
                                     st.one_of(_number, _weird_text, st.none()), max_size=3),
                     _weird_text, st.lists(st.integers())),
    "source": st.one_of(st.sampled_from(["knob1", "knob2", "knob9", "cc74", "cv1", ""]), _number),
    "value": st.one_of(st.floats(0, 1), _number, _weird_text, st.none()),
    "junk": _value,
})


_good_event = st.one_of(  # events that should play: most examples get through to the sound
    st.fixed_dictionaries({"t": st.floats(0, 1), "midi": st.lists(st.integers(0, 255), min_size=1, max_size=6)}),
    st.fixed_dictionaries({"t": st.floats(0, 1), "set": st.fixed_dictionaries(
        {}, optional={"pitch": st.floats(30, 4000), "loudness": st.floats(-80, 0), "brightness": st.floats(0, 1)})
        .filter(bool)}),
    st.fixed_dictionaries({"t": st.floats(0, 1), "source": st.sampled_from(["knob1", "knob2", "knob3"]),
                           "value": st.floats(0, 1)}),
)


@st.composite
def events_files(draw):
    kind = draw(st.integers(0, 9))
    if kind == 9:  # deep nesting, of lists or objects
        n = draw(st.sampled_from([10, 1000, 100000]))
        return ("[" * n + "]" * n) if draw(st.booleans()) else ('{"a":' * n + "1" + "}" * n)
    if kind == 8:  # not JSON, or not text
        return draw(st.one_of(st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
                              st.sampled_from(["", "[", "null", "{}", "[1,2,3]", "NaN", "[Infinity]"])))
    if kind <= 4:
        items = draw(st.lists(_good_event, max_size=12))
    else:
        items = draw(st.lists(st.one_of(_good_event, _event, _value), max_size=12))
    return json.dumps(items, allow_nan=True)


@budget(80)
@given(text=events_files(), with_seconds=st.booleans())
def test_fuzz_events_json(world, workdir, text, with_seconds):
    d = workdir()
    (d / "ev.json").write_text(text, encoding="utf-8", errors="surrogatepass")
    argv = ["render", str(world / "organ.onnx"), "-o", "out.wav", "--events", "ev.json"]
    if with_seconds:
        argv += ["--seconds", "0.2"]
    front_door(argv, d, may_write=["out.wav"])


# -- 3. the command lines of render, run, info and calibrate ----------------------------------

_junk_arg = st.sampled_from(["", "-", "--", "-x", "--nope", "é", " ", "0", "-1", "1e400", "nan", "inf",
                             "86401", "a=b=c", "=3", "pitch=", "pitch=nan", "pitch=1e308", "../up.wav"])


def _mostly(good, bad, p_good: int = 8):
    """``good`` nine times in ten (``p_good`` in 10), else ``bad``: most examples should get
    past the checks and play, the rest poke at them."""
    return st.integers(0, 9).flatmap(lambda i: good if i < p_good else bad)  # 0 is what hypothesis tries most


def _opt(flag, values):
    return st.tuples(st.just(flag), values).map(list)


def _flags(draw, options, max_size=4):
    parts = draw(st.lists(st.one_of(*options), max_size=max_size))
    if draw(st.integers(0, 9)) == 9:
        parts.append([draw(_junk_arg)])  # a stray argument
    return [a for p in parts for a in p]


@st.composite
def render_argv(draw, world):
    organ = str(world / "organ.onnx")
    model = draw(_mostly(st.sampled_from([organ, "organ"]),
                         st.sampled_from(["nosuch", str(world / "sub"), str(world / "short.mid"), ""])))
    out = draw(_mostly(st.just("out.wav"), st.sampled_from(["", "sub/none/out.wav", ".", "/dev/null", "out"])))
    argv = ["render", model, "-o", out] + _flags(draw, [
        _opt("--seconds", _mostly(st.sampled_from(["0.01", "0.2", "0.5"]),
                                  st.sampled_from(["0", "-1", "abc", "1e400", "86401", "nan"]))),
        _opt("--midi", _mostly(st.just(str(world / "short.mid")),
                               st.sampled_from([str(world / "garbage.mid"), "nosuch.mid", str(world / "sub"),
                                                str(world / "ok.toml"), "demo"]))),
        _opt("--events", _mostly(st.just(str(world / "ok.json")),
                                 st.sampled_from(["nosuch.json", str(world / "sub"), str(world / "short.mid")]))),
        _opt("--set", _mostly(st.sampled_from(["pitch=440", "loudness=-6", "brightness=0.2"]),
                              st.one_of(st.sampled_from(["brightness=2", "nope=1", "pitch"]), _junk_arg))),
        _opt("--format", _mostly(st.sampled_from(["S16_LE", "S32_LE", "FLOAT_LE"]), st.sampled_from(["MP3", ""]))),
        _opt("--config", _mostly(st.just(str(world / "ok.toml")),
                                 st.sampled_from([str(world / "sub"), "/dev/null", "nosuch.toml"]))),
    ])
    if "--seconds" not in argv or "demo" in argv:
        argv += ["--seconds", "0.3"]  # the demo phrase (13 s): still a short render here
    return argv, [out] if out not in ("", ".", "/dev/null") else []


@st.composite
def run_argv(draw, world):
    backend = draw(_mostly(st.sampled_from(["null", "unpaced", "wav"]), st.sampled_from(["cassette", ""])))
    model = draw(_mostly(st.sampled_from([str(world / "organ.onnx"), "organ"]), st.sampled_from(["nosuch", ""])))
    argv = ["run", "--model", model, "--backend", backend]
    writes = []
    if backend == "wav":
        dev = draw(_mostly(st.just("rec.wav"), st.sampled_from(["", "sub/none/rec.wav", "/dev/null"]), 6))
        argv += ["--device", dev]
        writes = None if dev == "" else [dev] if dev == "rec.wav" else []  # "": a dated file here
    argv += _flags(draw, [
        _opt("--midi", _mostly(st.just(str(world / "short.mid")),
                               st.sampled_from([str(world / "garbage.mid"), "nosuch.mid"]))),
        _opt("--events", _mostly(st.just(str(world / "ok.json")), st.just("nosuch.json"))),
        _opt("--set", _mostly(st.sampled_from(["pitch=440", "brightness=0.9"]),
                              st.sampled_from(["pitch=1e308", "nope=1", "x"]))),
        _opt("--period", _mostly(st.sampled_from(["64", "128", "512"]), st.sampled_from(["0", "-5", "999999", "x"]))),
        _opt("--config", _mostly(st.just(str(world / "ok.toml")), st.sampled_from([str(world / "sub"), "/dev/null"]))),
        st.just(["--emulate"]), st.just(["--no-panel"]), st.just(["--loop"]),
    ])
    # a run that nothing tells to stop plays until stopped: each example is bounded here
    argv += ["--seconds", draw(_mostly(st.sampled_from(["0.05", "0.3"]), st.sampled_from(["0", "abc"])))]
    if argv[-1] in ("0", "abc"):
        argv += ["--seconds", "0.3"]
    return argv, writes


@st.composite
def info_argv(draw, world):
    model = draw(_mostly(st.sampled_from([str(world / "organ.onnx"), "organ", "default"]),
                         st.sampled_from(["nosuch", str(world / "sub"), str(world / "short.mid"), "", "/dev/null"])))
    argv = ["info", model] + _flags(draw, [
        st.just(["--json"]),
        _opt("--precision", _mostly(st.sampled_from(["auto", "int8", "fp32"]), st.just("bogus"))),
        st.just(["-q"]),
    ], max_size=2)
    return argv, []


@st.composite
def calibrate_argv(draw, world):
    channel = draw(_mostly(st.sampled_from(["0", "3", "7", "cv1"]),
                           st.one_of(st.sampled_from(["cv0", "cv9", "8", "-1", "x", ""]), _junk_arg)))
    points = draw(_mostly(
        st.one_of(st.just("0.25:-2.5,0.5:0,0.75:2.5"),  # readings and volts rising together
                  st.tuples(st.lists(st.floats(0, 1), min_size=2, max_size=6, unique=True),
                            st.lists(st.floats(-10, 10), min_size=6, max_size=6, unique=True)).map(
                      lambda rv: ",".join(f"{r!r}:{v!r}" for r, v in zip(sorted(rv[0]), sorted(rv[1]))))),
        st.one_of(st.just(None),
                  st.sampled_from(["0.5:0,0.5:1", "0.5:0", "x", "", "1:nan,2:inf", "0.1:0,0.9:1e308", ":", ",,,"]),
                  st.lists(st.tuples(st.floats(-2, 2), st.floats(-12, 12)), max_size=5).map(
                      lambda pts: ",".join(f"{r!r}:{v!r}" for r, v in pts)))))
    argv = ["calibrate", channel] + (["--points", points] if points is not None else [])
    argv += _flags(draw, [st.just(["--emulate"]), _opt("--volts", st.sampled_from(["0,1", "x", ""])),
                          _opt("--config", st.sampled_from([str(world / "ok.toml"), "/dev/null"]))], max_size=2)
    return argv, []


@budget(100)
@given(data=st.data())
def test_fuzz_command_lines(world, workdir, data):
    kind = data.draw(st.sampled_from(["render", "run", "info", "calibrate"]))
    argv, writes = data.draw({"render": render_argv, "run": run_argv, "info": info_argv,
                              "calibrate": calibrate_argv}[kind](world))
    d = workdir()
    (d / "sub").mkdir()
    if writes is None:  # a dated recording here: whatever its name, nothing else
        before = set(os.listdir(d))
        code, _ = front_door(argv, d, may_write=[n for n in _dated_names()])
        made = set(os.listdir(d)) - before
        assert all(n.startswith("pi-synth-") and n.endswith(".wav") for n in made) and len(made) <= 1
        return
    with contextlib.redirect_stdout(io.StringIO()):
        front_door(argv, d, may_write=writes)


def _dated_names():
    """Names a dated recording can have in the next minute."""
    now = time.time()
    return [time.strftime("pi-synth-%Y%m%d-%H%M%S.wav", time.localtime(now + s)) for s in range(-5, 60)]


# -- 4. the live surfaces: OSC datagrams and MIDI bytes, in this process ---------------------


@pytest.fixture(scope="module")
def live(world, tmp_path_factory):
    """A real instrument (organ) with its OSC server on an ephemeral port."""
    from pi_synth.app import Instrument
    from pi_synth.control.sources.osc import OscSource

    inst = Instrument(config_mod.load(), model=str(world / "organ.onnx"))
    from pi_synth.control.presets import PresetStore

    inst.presets = PresetStore(tmp_path_factory.mktemp("live-presets"))  # what preset_save writes
    src = OscSource(inst.router, port=0, status_fn=inst.status)
    src.open()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield inst, src, sock
    sock.close()
    src.close()
    # program changes load models on threads of their own: let them finish before the
    # interpreter does (onnxruntime aborts a process that exits under a running session)
    deadline = time.monotonic() + 60
    while any(t.name.endswith(("(swap)", "(_step_model)")) for t in threading.enumerate()) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    inst.collect_retired()


def _controls_sane(inst):
    card = inst.card
    for c in card.controls:
        v = inst.synth.bank.get(c.name)
        lo, hi = min(c.min, c.max), max(c.min, c.max)
        assert math.isfinite(v) and lo - 1e-3 * abs(lo) - 1e-6 <= v <= hi + 1e-3 * abs(hi) + 1e-6, (c.name, v)


_osc_arg = st.one_of(st.integers(-(2**31), 2**31 - 1), st.floats(width=32),
                     st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=10),  # OSC strings end at NUL, and are UTF-8
                     st.binary(min_size=1, max_size=16), st.booleans(), st.none())
_address = st.one_of(
    st.sampled_from(["/pi-synth/control/pitch", "/pi-synth/control/brightness", "/pi-synth/control/nope",
                     "/pi-synth/source/knob1", "/pi-synth/note", "/pi-synth/midi", "/pi-synth/status",
                     "/pi-synth/action/preset_save", "/pi-synth/action/preset_recall", "/pi-synth/action/program",
                     "/pi-synth/action/learn", "/pi-synth/action/panic", "/pi-synth/action/nope", "/x", "/"]),
    st.text(alphabet="/abcdefghijklmnopqrstuvwxyz-_0123456789", max_size=30).map(lambda s: "/pi-synth/" + s),
)


@st.composite
def datagrams(draw):
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
    from pythonosc.osc_message_builder import OscMessageBuilder

    def message():
        b = OscMessageBuilder(address=draw(_address))
        for a in draw(st.lists(_osc_arg, max_size=4)):
            b.add_arg(a)
        return b.build()

    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        raw = bytearray(message().dgram)
        for _ in range(draw(st.integers(1, 4))):  # a few flipped bytes
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] = draw(st.integers(0, 255))
        return bytes(raw)
    if kind == 2:
        bb = OscBundleBuilder(draw(st.sampled_from([IMMEDIATELY, 0, time.time() + 1e8])))
        for _ in range(draw(st.integers(0, 4))):
            bb.add_content(message())
        return bb.build().dgram
    return message().dgram


@budget(300)
@given(grams=st.lists(datagrams(), min_size=1, max_size=5))
def test_fuzz_osc_datagrams(live, grams):
    inst, src, sock = live
    before = (src.packets, src.messages + src.garbage + src.unknown)
    errors = src.status().get("errors", 0)
    records = _Records()
    logging.getLogger().addHandler(records)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for g in grams:
            sock.sendto(g[:65000], ("127.0.0.1", src.port))
        deadline = time.monotonic() + 10
        while src.packets < before[0] + len(grams) and time.monotonic() < deadline:
            time.sleep(0.002)
        inst.player.next_block()  # the audio thread's side of what arrived
    logging.getLogger().removeHandler(records)
    assert src.packets == before[0] + len(grams), "the server stopped taking datagrams"
    # only pi-synth's own lines, each said once (python-osc's root-logger complaints stay off)
    assert all(line.startswith("pi-synth: WARNING: OSC: ") or "INFO" in line or "crossfad" in line
               or "model not changed" in line or "preset" in line for line in records.lines), records.lines
    assert src.status().get("errors", 0) == errors  # nothing raised inside the server
    assert not [w for w in caught if not issubclass(w.category, HIDDEN)]
    _controls_sane(inst)
    sock.setblocking(False)
    try:  # replies the fuzzed status requests asked for
        while True:
            sock.recvfrom(65536)
    except (socket.timeout, BlockingIOError):
        pass
    from pythonosc.osc_message_builder import OscMessageBuilder

    sock.settimeout(10)  # and a reply still comes back: the server is alive and well
    sock.sendto(OscMessageBuilder(address="/pi-synth/status").build().dgram, ("127.0.0.1", src.port))
    data, _ = sock.recvfrom(65536)
    assert b"/pi-synth/status" in data and b'"model"' in data


@budget(150)
@given(chunks=st.lists(st.one_of(
    st.binary(max_size=64),
    st.lists(st.sampled_from([0x90, 0x80, 0xB0, 0xE0, 0xF0, 0xF7, 0xF8, 0xFF, 0xC0, 0xD0, 0xA0, 0x3C, 0x7F, 0x00,
                              0x40, 0x7B, 0x79]), max_size=64).map(bytes),
), min_size=1, max_size=8))
def test_fuzz_midi_byte_stream(live, chunks):
    """Any bytes on a MIDI cable: parsed, counted, played — the voice and the model's
    controls stay finite and in range, and the model's output stays finite."""
    inst, _, _ = live
    r = inst.router
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for c in chunks:
            r.midi_bytes(c)
            block = inst.player.next_block()
            # finite, each model within ±1 (a crossfade sums two with equal-power gains,
            # and the sample conversion saturates what passes full scale)
            assert np.isfinite(block).all() and np.abs(block).max() <= 1.5
    assert not [w for w in caught if not issubclass(w.category, HIDDEN)]
    _controls_sane(inst)
    v = r.voice
    poly = v is not None and hasattr(v, "voices")  # a batched note model (the flute): its rows
    if poly:
        assert all(math.isfinite(x["pitch_hz"]) and math.isfinite(x["loudness_db"]) for x in v.voices())
    elif v is not None:
        assert math.isfinite(v.pitch_hz) and math.isfinite(v.loudness_db)
    r.midi_bytes(bytes([0xB0, 123, 0, 0x90, 72, 100]))  # all notes off, then a clean note: heard
    for _ in range(3):
        inst.player.next_block()
    if poly:
        assert 72 in [x["note"] for x in v.voices() if x["gate"]]
    elif v is not None:
        assert v.note == 72
    r.midi_bytes(bytes([0x80, 72, 0]))
