"""Check an uploaded model before it is installed: ``python -m pi_synth.web.check FILE``.

Runs in a process of its own, started by the web process with resource limits
(:func:`limits`: address space, CPU seconds, open files, no file writes, low priority,
off the audio threads' CPUs), so a hostile or broken file can at worst kill this
process. It loads the file the way the instrument would and checks, in order:

1. the model card (``model/card.py``: every key, with the key's name on failure);
2. the graph against the card (inputs, outputs, shapes, state pairs);
3. the first blocks are finite — at the card's defaults and on moving controls;
4. its speed here: a block must render in well under the block period (90% of blocks
   under :data:`MAX_RTF` of it in CPU time), as ``pi-synth bench`` judges "plays in real time".

Prints one JSON object: ``{"ok": true, "name", "kind", "controls", "rtf", "rtf_p90",
"block_ms", "period_ms"}`` or ``{"ok": false, "error": "one line"}``; exit 0 or 2. The file is only
read (never executed, never written) and onnxruntime's graph cache is off.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

MAX_RTF = 0.7  # as `pi-synth bench`: above this a model does not play reliably in real time
FINITE_BLOCKS = 16
SPEED_BLOCKS = 64


def limits(seconds: float, memory_mb: int, cpus: set[int] | None = None) -> None:
    """Resource limits for the checking process (``preexec_fn``: runs in the child)."""
    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    cpu = max(1, int(seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # writes no file (stdout is a pipe)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.nice(10)
    if cpus:
        free = set(os.sched_getaffinity(0)) - cpus
        if free:
            os.sched_setaffinity(0, free)


def check(path: str) -> dict:
    import numpy as np

    from pi_synth.bench import control_sequence
    from pi_synth.model.card import load_card
    from pi_synth.model.runtime import Runtime

    card = load_card(path)  # CardError names the key
    rt = Runtime(path, threads=1, warmup_blocks=0, use_cache=False)  # check_graph inside
    for k in range(FINITE_BLOCKS):
        if not np.isfinite(rt.step()).all():
            return {"ok": False, "error": f"the model's output is not finite (NaN or inf) in block {k + 1} "
                                          "at the card's default controls; it would only play silence"}
    rt.reset()
    ctl = control_sequence(card, FINITE_BLOCKS, seed=3)
    for k in range(FINITE_BLOCKS):
        rt.controls[...] = ctl[k]
        if not np.isfinite(rt.step()).all():
            return {"ok": False, "error": f"the model's output is not finite (NaN or inf) in block {k + 1} "
                                          "on moving controls"}
    rt.reset()
    cpu = block_cpu_times(rt, control_sequence(card, SPEED_BLOCKS + 8, seed=5))[8:]
    period = card.block_size / card.sample_rate
    p90, median = float(np.percentile(cpu, 90)), float(np.median(cpu))
    if p90 > MAX_RTF * period:
        return {"ok": False, "error": f"too slow on this machine: a block takes {p90 * 1e3:.2f} ms of CPU of its "
                                      f"{period * 1e3:.2f} ms, more than {MAX_RTF:.0%}; it would click and drop out"}
    return {"ok": True, "name": card.name, "kind": card.kind, "sample_rate": card.sample_rate,
            "block_size": card.block_size, "channels": card.channels,
            "controls": list(card.control_names), "rtf": median / period, "rtf_p90": p90 / period,
            "block_ms": median * 1e3, "period_ms": period * 1e3}


def block_cpu_times(rt, controls):
    """CPU seconds of this thread for each block: the model's own cost, whatever else the
    machine runs meanwhile (the instrument's audio threads run at real-time priority and
    are not preempted by the ordinary processes that make wall-clock times noisy here)."""
    import numpy as np

    out = np.empty(len(controls))
    clock = time.thread_time
    for k, c in enumerate(controls):
        rt.controls[...] = c
        t0 = clock()
        rt.step()
        out[k] = clock() - t0
    return out


def main(argv: list[str] | None = None) -> int:
    """``[--seconds S] [--memory-mb M] [--avoid-cpus 2,3] FILE``: limits first, then the check."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m pi_synth.web.check")
    p.add_argument("--seconds", type=float, default=120.0, help="CPU seconds allowed")
    p.add_argument("--memory-mb", type=int, default=2048, help="address space allowed")
    p.add_argument("--avoid-cpus", default="", help="CPUs the audio threads are pinned to")
    p.add_argument("--name", default="the file", help="what errors call the file (the uploaded name)")
    p.add_argument("file")
    a = p.parse_args(argv)
    cpus = {int(c) for c in a.avoid_cpus.split(",") if c.strip()}
    limits(a.seconds, a.memory_mb, cpus)
    from pi_synth.errors import PiSynthError

    try:
        result = check(a.file)
    except PiSynthError as e:
        result = {"ok": False, "error": str(e).replace(a.file + ": ", "").replace(a.file, a.name)}
    except MemoryError:
        result = {"ok": False, "error": "the model needs more memory than this Pi can give it"}
    except Exception as e:  # onnxruntime's own refusals (a graph it cannot load): one line
        line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        result = {"ok": False, "error": f"onnxruntime cannot load it: {line[:300]}".replace(a.file, a.name)}
    print(json.dumps(result))
    return 0 if result["ok"] else 2


if __name__ == "__main__":
    sys.exit(main())
