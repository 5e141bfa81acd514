"""Real-time steps on the real kernel: granted where permitted, refused (once, never fatal) where not.

The refusal cases run a child process without CAP_SYS_NICE and CAP_IPC_LOCK
(``setpriv --bounding-set``) and with RLIMIT_RTPRIO / RLIMIT_MEMLOCK set as an
unprivileged service user would have them. Setting that up needs root and setpriv
(util-linux); they are skipped otherwise.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest

from pi_synth.service import realtime


def _in_thread(fn):
    out = {}

    def body():
        out["result"] = fn()
    t = threading.Thread(target=body)
    t.start()
    t.join(10)
    return out["result"]


def _can_fifo() -> bool:
    return realtime._has_cap(23) or resource.getrlimit(resource.RLIMIT_RTPRIO)[0] > 0


@pytest.mark.skipif(not _can_fifo(), reason="no CAP_SYS_NICE and RLIMIT_RTPRIO is 0 here")
def test_promote_applies_to_the_calling_thread_only():
    main_before = realtime.current_policy()

    def audio_thread():
        ok = realtime.promote_current_thread(42)
        mine = realtime.current_policy()
        child = {}
        # a thread spawned by a real-time thread starts as SCHED_OTHER (SCHED_RESET_ON_FORK)
        t = threading.Thread(target=lambda: child.update(p=realtime.current_policy()))
        t.start()
        t.join()
        return ok, mine, child["p"]

    ok, mine, child = _in_thread(audio_thread)
    assert ok
    assert mine == ("fifo", 42)
    assert child[0] == "other"
    assert realtime.current_policy() == main_before  # the main thread is untouched
    assert main_before[0] == "other"


def _unprivileged(code: str, **limits) -> subprocess.CompletedProcess:
    def pre():
        for name, value in limits.items():
            resource.setrlimit(getattr(resource, name), (value, value))
    return subprocess.run(
        ["setpriv", "--bounding-set", "-sys_nice,-ipc_lock", sys.executable, "-c",
         textwrap.dedent(code)],
        preexec_fn=pre, capture_output=True, text=True, timeout=30)


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to drop capabilities")

CHILD = """
    import logging, threading
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from pi_synth.service import realtime
    res = []
    for _ in range(3):
        t = threading.Thread(target=lambda: res.append(realtime.promote_current_thread(70)))
        t.start(); t.join()
    res.append(realtime.lock_memory())
    res.append(realtime.lock_memory())
    print(res)
"""


@needs_root
def test_refused_when_unprivileged_logged_once_never_fatal():
    p = _unprivileged(CHILD, RLIMIT_RTPRIO=0, RLIMIT_MEMLOCK=64 * 1024)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[False, False, False, False, False]"
    assert p.stderr.count("real-time scheduling refused") == 1, p.stderr
    assert "LimitRTPRIO" in p.stderr
    assert p.stderr.count("memory not locked") == 1, p.stderr
    assert "LimitMEMLOCK=infinity" in p.stderr


def _can_raise_limits() -> bool:
    code = ("import resource as r; r.setrlimit(r.RLIMIT_RTPRIO, (95, 95)); "
            "r.setrlimit(r.RLIMIT_MEMLOCK, (r.RLIM_INFINITY, r.RLIM_INFINITY))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


@needs_root
@pytest.mark.skipif(not _can_raise_limits(), reason="this sandbox may not raise hard rlimits")
def test_granted_by_limits_alone_as_the_service_user_would_be():
    """What the unit gives the pisynth user: LimitRTPRIO=95, LimitMEMLOCK=infinity."""
    p = _unprivileged(CHILD.replace("promote_current_thread(70)", "promote_current_thread(99)"),
                   RLIMIT_RTPRIO=95, RLIMIT_MEMLOCK=resource.RLIM_INFINITY)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[True, True, True, True, True]"
    assert p.stderr.count("capped at 95") == 1, p.stderr


def test_affinity():
    allowed = os.sched_getaffinity(0)
    one = {min(allowed)}

    def pin():
        ok = realtime.set_affinity(one)
        return ok, os.sched_getaffinity(0)
    ok, got = _in_thread(pin)
    assert ok and got == one
    assert os.sched_getaffinity(0) == allowed  # only the calling thread
    assert realtime.set_affinity(None) is True
    assert _in_thread(lambda: realtime.set_affinity({10_000})) is False
