#!/usr/bin/env python3
"""pi-synth's own code on the Pi's instruction set, emulated: same numbers as here?

Every speed figure for a Pi is a projection from this x86 machine. What this checks is
the part that does not need a Pi's clock: that the code a Pi runs gives the sound we
measured here. ``qemu-aarch64-static`` runs Debian's arm64 Python 3.11 (what Raspberry Pi
OS bookworm ships) with every runtime dependency installed from its aarch64 wheel at the
same version as ``.venv`` (which also checks that each has one), pyalsaaudio built from its
sdist and ``_kernels.c`` with pyproject's flags, against the sysroot's headers. For each
emulated CPU:

- **the tests** (first CPU): ``tests/test_kernels.py`` runs under pytest on arm64: the C guard, sample
  conversion and ALSA sink (real arm64 libasound and pyalsaaudio) against the numpy
  reference;
- **the sound:** each shipped model, both precisions, renders the same 24 blocks of
  moving controls on arm64 and here; the difference is given as an SNR;
- **the commands** (first CPU): ``pi-synth render`` of the demo tune (its WAV against this machine's) and
  ``pi-synth run`` on the null device;
- **the kernels:** onnxruntime's profile on arm64 says which op kernels ran — for the
  int8 files, that the quantized convolutions run as int8 (QLinearConv) there. (They may
  run more int8 kernels than here: onnxruntime fuses a QDQ file's S8S8 convs into
  QLinearConv on arm64 only; on x86 it dequantizes and runs them in float.)

CPUs: ``cortex-a72`` (Pi 4; its NEON int8 path is also the Zero 2 W's and Pi 3's, whose
cores have the same features) and ``cortex-a76`` (Pi 5: dot-product int8 kernels).
onnxruntime sizes itself from ``/proc/cpuinfo``, which qemu-user passes through from the
host (an x86 one crashes its arm64 parser), so each run sees a Pi's, bind-mounted in a
private mount namespace (``unshare -m``: root, or user namespaces).

Emulated time is not a Pi's time: no speed is measured here.

    .venv/bin/python benchmarks/arm64.py [--out DIR] [--cpu cortex-a72 cortex-a76]

The first run builds ``work/arm64-cache/`` (debootstrap's arm64 download and the wheels,
~150 MB, needs deb.debian.org and PyPI); later runs reuse it. Needs ``qemu-user-static``,
``gcc-aarch64-linux-gnu`` and ``debootstrap`` (``scripts/install.sh --dev`` installs them).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _env import ROOT, write_json  # noqa: E402

from pi_synth.tools.quantize import snr_db  # noqa: E402

CACHE = ROOT / "work" / "arm64-cache"
SUITE = "bookworm"  # Raspberry Pi OS bookworm's Debian, and its Python 3.11
PY = "usr/bin/python3.11"
QEMU = "qemu-aarch64-static"
CC = "aarch64-linux-gnu-gcc"
BUILT = ("pyalsaaudio",)  # no aarch64 wheel: the Pi builds it from source, and so do we
TEST_TOOLS = ("onnx", "pytest", "pytest-timeout")  # the organ builder and the test runner
DEBS = ("python3.11", "libpython3.11-dev", "libasound2-dev")  # the interpreter, and headers to build against
TESTS = ("tests/test_kernels.py",)  # our C code; the models are checked by their renders

# the lines of /proc/cpuinfo onnxruntime (cpuinfo) reads, for the CPUs qemu emulates
CPUS = {
    "cortex-a72": ("0xd08", "fp asimd evtstrm crc32 cpuid", "Raspberry Pi 4 Model B Rev 1.4"),
    "cortex-a76": ("0xd0b", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                   "asimdrdm lrcpc dcpop asimddp", "Raspberry Pi 5 Model B Rev 1.0"),
}


class EmulationError(RuntimeError):
    """A tool or download this check needs is missing: the message says which."""


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise EmulationError(f"{tool} is not installed: apt-get install {package} (scripts/install.sh --dev does)")
    return path


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise EmulationError(f"{' '.join(map(str, cmd[:4]))} … failed ({p.returncode}):\n"
                             f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p


def sysroot() -> Path:
    """Debian arm64 with Python 3.11 and its headers, unpacked (not installed: nothing in
    it runs but the interpreter, through qemu)."""
    def build(tmp: Path) -> None:
        _need("debootstrap", "debootstrap")
        _run(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase",
              "--include=" + ",".join(DEBS), SUITE, str(tmp), "http://deb.debian.org/debian"],
             timeout=1800)
        for deb in sorted((tmp / "var/cache/apt/archives").glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(tmp)])
        shutil.rmtree(tmp / "var/cache/apt/archives", ignore_errors=True)

    return _cached(f"{SUITE}-arm64-" + hashlib.sha256(" ".join(DEBS).encode()).hexdigest()[:8], build)


def requirements() -> list[str]:
    """pi-synth's runtime dependencies (pyproject's list) and the test tools, at this venv's
    versions: each must have an aarch64 wheel on PyPI, or be in BUILT."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0] for d in deps]
    return [f"{n}=={metadata.version(n)}" for n in [*names, *TEST_TOOLS] if n not in BUILT]


def site_packages() -> Path:
    """The aarch64 wheels of this venv's versions, installed by this pip for arm64."""
    reqs = requirements()
    plats = [a for p in ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_17_aarch64")
             for a in ("--platform", p)]

    def build(tmp: Path) -> None:
        _run([sys.executable, "-m", "pip", "install", "-q", "--target", str(tmp), *plats,
              "--python-version", "3.11", "--implementation", "cp", "--only-binary=:all:", *reqs], timeout=1800)

    return _cached("site-" + hashlib.sha256(" ".join(reqs).encode()).hexdigest()[:12], build)


def _cached(name: str, build) -> Path:
    """``work/arm64-cache/NAME``, built once by ``build(tmp)`` into a temporary folder and renamed
    into place when complete (an interrupted build leaves nothing that looks done)."""
    dest = CACHE / name
    if (dest / ".complete").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=name + ".", dir=CACHE))
    build(tmp)
    (tmp / ".complete").write_text(name + "\n")
    tmp.rename(dest)
    return dest


def python_cmd(root: Path, cpu: str, cpuinfo: Path) -> list[str]:
    """argv prefix that runs the arm64 interpreter as a Pi with ``cpu``."""
    _need(QEMU, "qemu-user-static")
    _need("unshare", "util-linux")
    script = 'mount --bind "$0" /proc/cpuinfo && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, str(cpuinfo), QEMU, "-cpu", cpu, "-L", str(root),
            str(root / PY)]


def fake_cpuinfo(cpu: str, where: Path) -> Path:
    part, features, model = CPUS[cpu]
    block = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {p}\nCPU revision\t: 3\n\n")
    path = where / f"cpuinfo-{cpu}"
    path.write_text("".join(block.format(i=i, f=features, p=part) for i in range(4))
                    + f"Hardware\t: BCM2835\nModel\t\t: {model}\n")
    return path


def build_package(root: Path, dest: Path) -> Path:
    """A copy of ``src/pi_synth`` with ``_kernels`` compiled for arm64 with pyproject's
    flags, and pyalsaaudio (the same version as here) from its source."""
    pkg = dest / "pi_synth"
    shutil.rmtree(pkg, ignore_errors=True)
    shutil.copytree(ROOT / "src" / "pi_synth", pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (ext,) = [e for e in conf["tool"]["setuptools"]["ext-modules"] if e["name"] == "pi_synth.audio._kernels"]
    _cross_compile(root, [ROOT / s for s in ext["sources"]], pkg / "audio" / "_kernels",
                   ext.get("extra-compile-args", []), ["-lm"])
    version = metadata.version("pyalsaaudio")
    sdist = dest / "sdist"
    _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
          f"pyalsaaudio=={version}", "-d", str(sdist)], timeout=600)
    (tgz,) = sdist.glob("pyalsaaudio-*.tar.gz")
    _run(["tar", "xzf", str(tgz), "-C", str(sdist)])
    (src,) = sdist.glob("pyalsaaudio-*/alsaaudio.c")
    _cross_compile(root, [src], dest / "alsaaudio", [], ["-lasound"])
    return dest


def _cross_compile(root: Path, sources: list[Path], out: Path, extra: list[str], libs: list[str]) -> Path:
    """One C extension for arm64: Debian's arm64 Python's own flags (what ``pip install`` on
    the Pi uses), against the Pi's libc, Python and ALSA headers in the sysroot."""
    _need(CC, "gcc-aarch64-linux-gnu")
    conf = _arm_sysconfig(root)
    out = out.with_name(out.name + conf["EXT_SUFFIX"])
    _run([CC, *f"{conf['CFLAGS']} {conf['CCSHARED']}".split(), *extra, f"--sysroot={root}",
          "-I=/usr/include/python3.11", "-shared", "-o", str(out), *map(str, sources), *libs])
    return out


@functools.cache
def _arm_sysconfig(root: Path) -> dict[str, str]:
    """The build variables of the arm64 interpreter's own sysconfig (read once, under qemu)."""
    names = ["CFLAGS", "CCSHARED", "EXT_SUFFIX"]
    code = f"import sysconfig, json; print(json.dumps({{n: sysconfig.get_config_var(n) or '' for n in {names!r}}}))"
    return json.loads(_run([QEMU, "-L", str(root), str(root / PY), "-c", code]).stdout)


# ---- what runs on arm64 (and the same here) --------------------------------------------------

RENDER = r"""
import json, sys, numpy as np, onnxruntime as ort, collections, os
from pi_synth.audio import safety
from pi_synth.model.runtime import Runtime
from pi_synth.model.session import session_options
from pi_synth.bench import control_sequence
out, blocks = sys.argv[1], int(sys.argv[2])
res = {"kernels": safety.KERNELS, "onnxruntime": ort.__version__}
for path in sys.argv[3:]:
    rt = Runtime(path, use_cache=False, warmup_blocks=0)
    audio = rt.render(control_sequence(rt.card, blocks, seed=7))
    name = os.path.basename(path)
    np.save(os.path.join(out, name + ".npy"), audio)
    so = session_options(1)
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(out, "profile-" + name)
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape],
                              np.float64 if "double" in i.type else np.float32) for i in s.get_inputs()}
    s.run(None, feeds)
    ops = collections.Counter()
    for e in json.load(open(s.end_profiling())):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            ops[e["args"]["op_name"]] += 1
    res[name] = {"ops": dict(ops)}
json.dump(res, open(os.path.join(out, "render.json"), "w"))
"""


def shipped() -> list[Path]:
    """The shipped voices (an encoder, NAME.encoder.onnx, takes audio, not the control sequence
    rendered here: not covered on arm64 yet)."""
    return sorted(p for p in (ROOT / "models").glob("*.onnx") if ".encoder." not in p.name)


def _render(cmd: list[str], pkg: Path, site: Path | None, out: Path, models: list[Path], blocks: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    script = out / "render.py"
    script.write_text(RENDER)
    env = _env(pkg, site, out)
    _run([*cmd, str(script), str(out), str(blocks), *map(str, models)], env=env, timeout=1800)
    return json.loads((out / "render.json").read_text())


def _env(pkg: Path, site: Path | None, work: Path) -> dict:
    """``pkg`` and ``site`` on the path; cache, config and state in ``work`` (as the tests isolate them)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "PI_SYNTH_CONFIG"}
    env["PYTHONPATH"] = ":".join(str(p) for p in (pkg, site) if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(PI_SYNTH_CACHE_DIR=str(work / "cache"), PI_SYNTH_STATE_DIR=str(work / "state"),
               XDG_CONFIG_HOME=str(work / "config"))
    return env


# the instrument's own commands: an offline render of the demo tune (MIDI file → voice →
# model → guard → WAV), and the instrument itself on the null device (config, control
# sources, precision choice, engine threads)
RENDER_ARGS = ["render", str(ROOT / "models" / "flute.int8.onnx"), "--midi",
               str(ROOT / "src" / "pi_synth" / "data" / "demo.mid"), "--seconds", "2"]
RUN_ARGS = ["run", "--backend", "unpaced", "--seconds", "2"]  # as fast as qemu allows


def _wav(path: Path):
    import wave

    import numpy as np

    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.int32)


def _cli_checks(cmd: list[str], pkg: Path, site: Path, work: Path, native_wav: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    env = _env(pkg, site, work)
    wav = work / "render.wav"
    p = subprocess.run([*cmd, "-m", "pi_synth", *RENDER_ARGS, "-o", str(wav)], env=env,
                       capture_output=True, text=True, timeout=1800)
    res: dict = {"render": {"command": "pi-synth " + " ".join(RENDER_ARGS[:2]) + " …", "returncode": p.returncode,
                            "stderr_tail": p.stderr.strip().splitlines()[-1:]}}
    if p.returncode == 0 and wav.exists():
        a, n = _wav(wav), _wav(native_wav)
        res["render"].update(samples=len(a), same_length=len(a) == len(n),
                             max_lsb_diff=int(abs(a - n).max()) if len(a) == len(n) else None,
                             peak_lsb=int(abs(n).max()))
    p = subprocess.run([*cmd, "-m", "pi_synth", *RUN_ARGS], env=env, capture_output=True, text=True, timeout=1800)
    played = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.startswith("played ")]
    res["run"] = {"command": "pi-synth " + " ".join(RUN_ARGS), "returncode": p.returncode,
                  "played": played[-1] if played else None,
                  "warnings": [ln for ln in p.stderr.splitlines() if "WARNING" in ln or "ERROR" in ln]}
    return res


#: op kernels that compute in int8 (what a profile names them after onnxruntime's fusions)
INT8_OPS = ("QLinear", "ConvInteger", "MatMulInteger", "DynamicQuantizeMatMul")


def check(out: Path, cpus: list[str], blocks: int = 24, tests: bool = True) -> dict:
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    root, site = sysroot(), site_packages()
    work = Path(tempfile.mkdtemp(prefix="arm64-", dir=out))
    pkg = build_package(root, work / "arm64-src")
    models = shipped()
    # here: this venv's Python and the package as installed (x86 _kernels)
    native = _render([sys.executable], ROOT / "src", None, work / "x86_64", models, blocks)
    native_wav = work / "x86_64" / "render.wav"
    _run([sys.executable, "-m", "pi_synth", *RENDER_ARGS, "-o", str(native_wav)],
         env=_env(ROOT / "src", None, work / "x86_64"), timeout=600)
    res: dict = {"kind": "arm64-emulation", "qemu": _run([QEMU, "--version"]).stdout.splitlines()[0],
                 "python": SUITE + " arm64 " + PY.rsplit("/", 1)[-1], "packages": requirements(),
                 "blocks": blocks, "native": {"kernels": native["kernels"]}, "cpus": {}}
    for n, cpu in enumerate(cpus):
        cmd = python_cmd(root, cpu, fake_cpuinfo(cpu, work))
        r: dict = {}
        # our C code and the commands on the first CPU; on the others the models and the op
        # kernels onnxruntime picks for them (the only part that differs: int8 dot product)
        full = n == 0
        if tests and full:
            t1 = time.monotonic()
            p = subprocess.run([*cmd, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                               cwd=ROOT, env=_env(pkg, site, work / cpu), capture_output=True, text=True,
                               timeout=3600)
            tail = [ln for ln in p.stdout.strip().splitlines() if ln.strip()][-1:] or [p.stderr[-300:]]
            r["tests"] = {"files": list(TESTS), "returncode": p.returncode, "summary": tail[0],
                          "seconds": round(time.monotonic() - t1, 1)}
            if p.returncode != 0:
                (out / f"pytest-{cpu}.log").write_text(p.stdout + p.stderr)
        arm = _render(cmd, pkg, site, work / cpu, models, blocks)
        r["kernels"] = arm["kernels"]
        r["models"] = {}
        for m in models:
            a = np.load(work / cpu / f"{m.name}.npy")
            n = np.load(work / "x86_64" / f"{m.name}.npy")
            ops = arm[m.name]["ops"]
            r["models"][m.name] = {
                "snr_vs_x86_db": snr_db(n, a), "max_abs_diff": float(np.abs(a - n).max()),
                "peak": float(np.abs(n).max()), "finite": bool(np.isfinite(a).all()),
                # int8 kernels: a QDQ file's fused ops, and a dynamic-int8 file's (morph's convs as
                # MatMuls: DynamicQuantizeMatMul, the same kernel on x86)
                "int8_ops": {k: v for k, v in ops.items() if k.startswith(INT8_OPS)},
                "float_convs": ops.get("Conv", 0) + ops.get("FusedConv", 0),
                # op kernels that ran a different number of times here (x86, arm64): onnxruntime
                # fuses per platform (e.g. QDQ pairs it has an arm64-only kernel for)
                "ops_differ": {k: (native[m.name]["ops"].get(k, 0), ops.get(k, 0))
                               for k in sorted(set(ops) | set(native[m.name]["ops"]))
                               if ops.get(k, 0) != native[m.name]["ops"].get(k, 0)},
            }
        if full:
            r["cli"] = _cli_checks(cmd, pkg, site, work / cpu, native_wav)
        res["cpus"][cpu] = r
    shutil.rmtree(work, ignore_errors=True)
    res["seconds"] = round(time.monotonic() - t0, 1)
    write_json(out / "arm64.json", res)
    (out / "arm64.md").write_text(table(res))
    return res


def table(res: dict) -> str:
    lines = ["| CPU | model | SNR vs x86 | max diff | int8 kernels on arm64 | float convs | kernels unlike x86 (x86, arm64) |",
             "|---|---|---|---|---|---|---|"]
    for cpu, r in res["cpus"].items():
        for name, m in r["models"].items():
            snr = "identical" if m["snr_vs_x86_db"] == float("inf") else f"{m['snr_vs_x86_db']:.0f} dB"
            int8 = ", ".join(f"{k} ×{v}" for k, v in sorted(m["int8_ops"].items())) or "—"
            diff = ", ".join(f"{k} {a}→{b}" for k, (a, b) in m["ops_differ"].items()) or "none"
            lines.append(f"| {cpu} | {name} | {snr} | {m['max_abs_diff']:.1e} | {int8} | {m['float_convs']} | {diff} |")
    tests = "; ".join(f"{cpu}: {r['tests']['summary']} ({r['tests']['seconds']} s)"
                      for cpu, r in res["cpus"].items() if "tests" in r)
    kern = ", ".join(f"{cpu}: {r['kernels']}" for cpu, r in res["cpus"].items())
    cli = "; ".join(
        f"{cpu}: render exit {r['cli']['render']['returncode']}, "
        f"{r['cli']['render'].get('max_lsb_diff', '?')} LSB max from x86's WAV "
        f"(peak {r['cli']['render'].get('peak_lsb', '?')}); run exit {r['cli']['run']['returncode']}"
        f"{', ' + str(len(r['cli']['run']['warnings'])) + ' warnings' if r['cli']['run']['warnings'] else ''}"
        for cpu, r in res["cpus"].items() if "cli" in r)
    return ("\n".join(lines) + f"\n\nAudio kernels on arm64: {kern}. Tests on arm64 ({', '.join(TESTS)}): "
            f"{tests}. The commands on arm64 (`pi-synth {' '.join(RENDER_ARGS[:1])} flute.int8 --midi demo.mid`, "
            f"`pi-synth {' '.join(RUN_ARGS)}`): {cli}.\n\n{res['qemu']}; {res['python']}; {', '.join(res['packages'])}. Emulated time is "
            "not a Pi's time: no speed is measured here.\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "arm64")
    ap.add_argument("--cpu", nargs="+", default=list(CPUS), choices=list(CPUS))
    ap.add_argument("--blocks", type=int, default=24)
    ap.add_argument("--no-tests", action="store_true", help="only the renders and the kernel profile")
    a = ap.parse_args(argv)
    try:
        res = check(a.out, a.cpu, a.blocks, tests=not a.no_tests)
    except EmulationError as e:
        print(f"arm64: {e}", file=sys.stderr)
        return 2
    print(table(res))
    bad = [c for c, r in res["cpus"].items() if r.get("tests", {}).get("returncode", 0) != 0]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
