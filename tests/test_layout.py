"""The layout holds: straight hallways between the folders, and one file per new part.

* ``audio/`` and ``control/`` never import each other (both depend on ``model/``);
* no import cycle anywhere in ``src/`` (module-level or inside functions);
* the firmware never reaches ``tools/`` (desktop tools: onnx, torch) — only the CLI's own
  tool commands import a tool, when they run; ``import pi_synth.app`` and a whole
  ``pi-synth render`` import no ``tools``, ``torch`` or ``onnx``;
* a new ADC chip and a new audio backend are one file each, with no other edit.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
# The only doors from the firmware into tools/: the CLI commands that run a tool.
TOOL_DOORS = {("pi_synth.cli", "cmd_quantize"), ("pi_synth.cli", "cmd_convert_rave")}


def _modules() -> dict[str, Path]:
    mods = {}
    for p in (SRC / "pi_synth").rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _imports(mods: dict[str, Path]) -> list[tuple[str, str, str | None]]:
    """(importer, imported module, enclosing function or None) for every import in src."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    out = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]

        def visit(node, func):
            for child in ast.iter_child_nodes(node):
                f = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and func is None \
                    else func
                if isinstance(child, ast.Import):
                    names = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        b = pkg.split(".")[: len(pkg.split(".")) - child.level + 1]
                        base = ".".join(b + ([base] if base else []))
                    names = [f"{base}.{a.name}" for a in child.names]
                else:
                    visit(child, f)
                    continue
                for n in names:
                    target = resolve(n)
                    if target and target != mod:
                        out.append((mod, target, func))

        visit(tree, None)
    return out


def test_audio_and_control_never_import_each_other():
    crossings = [(a, b) for a, b, _ in _imports(_modules())
                 if (a.startswith("pi_synth.audio") and b.startswith("pi_synth.control"))
                 or (a.startswith("pi_synth.control") and b.startswith("pi_synth.audio"))]
    assert crossings == []


def test_no_import_cycle_anywhere():
    graph: dict[str, set[str]] = {}
    for a, b, _ in _imports(_modules()):
        graph.setdefault(a, set()).add(b)
    # Tarjan's strongly connected components: a component of two or more is a cycle
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_firmware_reaches_tools_only_through_the_cli_tool_commands():
    doors = {(a, f) for a, b, f in _imports(_modules())
             if b.startswith("pi_synth.tools") and not a.startswith("pi_synth.tools")}
    assert doors <= TOOL_DOORS, doors - TOOL_DOORS


def _imported(code: str, *args: str) -> set[str]:
    """Modules a fresh interpreter imported running ``code`` (``python -X importtime``)."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *args], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    names = set()
    for line in p.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def _desktop_only(names: set[str]) -> list[str]:
    return sorted(n for n in names if n.startswith("pi_synth.tools") or n.split(".")[0] in ("torch", "onnx"))


def test_importing_the_instrument_imports_no_desktop_tool():
    names = _imported("import pi_synth.app, pi_synth.cli, pi_synth.doctor")
    assert {"pi_synth.app", "pi_synth.patch", "pi_synth.model.runtime"} <= names  # it looked at the real thing
    assert _desktop_only(names) == []


def test_a_whole_render_imports_no_desktop_tool(tmp_path):
    code = ("import sys; from pi_synth.cli import main; "
            "sys.exit(main(['render', 'organ', '-o', sys.argv[1], '--seconds', '0.2']))")
    names = _imported(code, str(tmp_path / "x.wav"))
    assert (tmp_path / "x.wav").stat().st_size > 44
    assert "pi_synth.app" in names and "pi_synth.audio.engine" in names
    assert _desktop_only(names) == []


TOY_CHIP = '''
    """A toy 2-channel ADC on I2C: register N holds channel N's reading, 0..255."""
    from pi_synth.control.chips import AdcReader, ChipSpec


    class ToyReader(AdcReader):
        def __init__(self, spec, board, *, bus_number, address, vref):
            self.chip, self.channels, self.bits, self.address = spec.name, spec.channels, spec.bits, address
            self.bus = board.i2c(spec, bus_number=bus_number, address=address, vref=vref)

        def read(self, channel):
            return self.bus.read_i2c_block_data(self.address, channel, 1)[0] / 255.0


    class ToyTwin:
        def __init__(self, spec, *, address, vref):
            self.address, self.codes, self.reads = address, [0, 0], 0

        def read_i2c_block_data(self, addr, reg, length):
            self.reads += 1
            return [self.codes[reg]]

        def write_i2c_block_data(self, addr, reg, data):
            pass


    CHIPS = [ChipSpec("toy2", "i2c", 2, 8, ToyReader, ToyTwin)]
'''

TOY_BACKEND = '''
    """A toy backend that keeps every frame it is given."""
    import numpy as np

    from pi_synth.audio.backends.base import Backend


    class ToyBackend(Backend):
        name = "toy"
        kept = []

        def _write(self, data):
            ToyBackend.kept.append(np.array(data))
            return data.shape[0]


    BACKEND = ToyBackend
'''


@pytest.fixture
def toys(tmp_path, monkeypatch):
    """Drop one file for a chip and one for a backend beside the package's own (their
    folders' search path, as a plugin folder would be), nothing else."""
    import pi_synth.audio.backends as backends
    import pi_synth.control.chips as chips

    for pkg, name, text in ((chips, "toychip", TOY_CHIP), (backends, "toy", TOY_BACKEND)):
        d = tmp_path / pkg.__name__.replace(".", "_")
        d.mkdir()
        (d / f"{name}.py").write_text(textwrap.dedent(text))
        monkeypatch.setattr(pkg, "__path__", list(pkg.__path__) + [str(d)])
    yield
    for name in ("pi_synth.control.chips.toychip", "pi_synth.audio.backends.toy"):
        sys.modules.pop(name, None)


def test_a_new_chip_and_a_new_backend_are_one_file_each(toys, organ, tmp_path):
    from pi_synth import config as config_mod
    from pi_synth.app import Instrument
    from pi_synth.audio.backends import backend_class
    from pi_synth.audio.engine import Engine
    from pi_synth.control.board import EmulatedBoard, use_board
    from pi_synth.control.events import parse_events
    from pi_synth.control.rig import Rig

    conf = tmp_path / "toy.toml"
    conf.write_text('[audio]\nbackend = "toy"\nrealtime = false\n[knobs]\nchip = "toy2"\nchannels = [0, 1]\n'
                    "smooth_ms = 0.0\n")
    cfg = config_mod.load(str(conf))  # the config accepts both names: its choices follow the folders
    board = use_board(EmulatedBoard())
    try:
        twin = board.attach_adc("toy2")
        twin.codes = [255, 0]  # knob1 full up
        note = parse_events([{"t": 0.0, "midi": [0x90, 69, 120]}])  # so the organ sounds
        inst = Instrument(cfg, model=str(organ()), events=note, seconds=0.5)
        backend = backend_class(cfg.audio.backend)(cfg.audio.device)
        engine = inst.engine = Engine(inst.player, backend, period=256, periods=2, realtime=False)
        rig = Rig.from_config(cfg, inst.router, status_fn=engine.status)
        rig.poll_once()  # the knob is read before the (unpaced) backend races through the half second
        engine.start()
        assert engine.wait(10)
        rig.close()
        engine.stop()
    finally:
        use_board(None)
    assert twin.reads >= 2  # the toy chip was read through the board's bus
    assert inst.synth.bank.get("brightness") == pytest.approx(1.0)  # knob1 → the organ's brightness
    played = np.concatenate(type(backend).kept)
    assert played.shape[0] >= 0.5 * 48000 and np.abs(played).max() > 1000  # S16 frames, sounding
