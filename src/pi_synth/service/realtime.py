"""Real-time discipline, where the system permits it: never fatal, each refusal logged once.

Which threads are real-time — decided on purpose:

* **Only the engine's output and inference threads.** Each calls
  :func:`promote_current_thread` as its first statement. The output thread should get the higher priority (it feeds
  the device: 75 vs 70 for inference, as the engine asks) so a slow block cannot starve a
  period write.
* **Not** the main thread, the monitor loop, control sources or MIDI readers: they
  log, allocate and block, and must never preempt audio.
* ``os.sched_setscheduler(0, …)`` applies to the *calling thread* on Linux, and
  threads created afterwards by that thread inherit its policy. We set
  ``SCHED_RESET_ON_FORK`` too, so anything the audio threads spawn starts as
  ``SCHED_OTHER``. onnxruntime's pool is created with the session in the main
  thread, before the audio threads exist, and is configured with 1 intra-op thread
  and spinning off (``pi_synth.model.runtime``): no pool thread runs real-time or spins.

:func:`lock_memory` calls ``mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)``:
``MCL_ONFAULT`` (Linux ≥ 4.4) locks pages as they are touched instead of populating
every mapping at once (8 MB thread stacks, allocator arenas), which matters with
512 MB of RAM. It is refused, with the fix, when ``RLIMIT_MEMLOCK`` is finite and we
lack CAP_IPC_LOCK: with MCL_FUTURE, every later allocation past that limit would
fail. The unit sets ``LimitMEMLOCK=infinity`` and ``LimitRTPRIO=95``.

:func:`set_affinity` pins the calling thread (e.g. the audio threads to the CPUs
``isolcpus=``/``nohz_full`` left quiet); ``None`` leaves it alone.

All three return True when the step took effect, False otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import resource
import threading

log = logging.getLogger(__name__)

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
_logged: set[str] = set()
_lock = threading.Lock()


def _once(key: str, msg: str, *args) -> None:
    with _lock:
        if key in _logged:
            return
        _logged.add(key)
    log.warning(msg, *args)


def _has_cap(bit: int) -> bool:
    """Whether the effective capability set holds ``bit`` (CAP_SYS_NICE 23, CAP_IPC_LOCK 14)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def promote_current_thread(priority: int = 70) -> bool:
    """SCHED_FIFO (with SCHED_RESET_ON_FORK) at ``priority`` for the calling thread only.

    Without CAP_SYS_NICE the priority is capped at ``RLIMIT_RTPRIO``; with a limit of
    0 the request is refused and logged once, with the fix."""
    if not hasattr(os, "SCHED_FIFO"):
        _once("fifo-missing", "real-time scheduling is not available on this platform")
        return False
    lo, hi = os.sched_get_priority_min(os.SCHED_FIFO), os.sched_get_priority_max(os.SCHED_FIFO)
    prio = max(lo, min(hi, int(priority)))
    if not _has_cap(23):
        soft = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
        if soft != resource.RLIM_INFINITY and 0 < soft < prio:
            _once(f"fifo-cap-{soft}", "real-time priority capped at %d by RLIMIT_RTPRIO (asked %d)",
                  soft, prio)
            prio = soft
    policy = os.SCHED_FIFO | getattr(os, "SCHED_RESET_ON_FORK", 0)
    try:
        os.sched_setscheduler(0, policy, os.sched_param(prio))
    except OSError as e:
        _once("fifo", "real-time scheduling refused (%s): audio threads run at normal priority; "
              "run as the pi-synth service (LimitRTPRIO=95) or add 'pisynth - rtprio 95' to "
              "/etc/security/limits.d (scripts/provision.sh does both)", e.strerror or e)
        return False
    log.debug("thread %s: SCHED_FIFO priority %d", threading.current_thread().name, prio)
    return True


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def release_heap() -> None:
    """Hand free heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere).
    Called after a swap frees a model: without it glibc's heap stays fragmented and RSS
    creeps upward over a night of swaps."""
    try:
        trim = _libc().malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return
    trim(0)


def lock_memory() -> bool:
    """mlockall(MCL_CURRENT | MCL_FUTURE [| MCL_ONFAULT]): no page of ours gets swapped out."""
    soft = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
    if soft != resource.RLIM_INFINITY and not _has_cap(14):
        _once("mlock-limit", "memory not locked: RLIMIT_MEMLOCK is %d bytes, and locking future "
              "allocations under a finite limit would make them fail; set LimitMEMLOCK=infinity "
              "(the pi-synth unit does) or 'pisynth - memlock unlimited' in /etc/security/limits.d",
              soft)
        return False
    try:
        libc = _libc()
    except OSError as e:
        _once("mlock-libc", "memory not locked: no libc (%s)", e)
        return False
    for flags in (MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT, MCL_CURRENT | MCL_FUTURE):
        if libc.mlockall(flags) == 0:
            log.debug("mlockall(%#x) ok", flags)
            return True
        err = ctypes.get_errno()
        if err != errno.EINVAL:  # EINVAL: a kernel without MCL_ONFAULT; try without
            break
    _once("mlock", "memory not locked: mlockall failed (%s); set LimitMEMLOCK=infinity",
          os.strerror(err))
    return False


def set_affinity(cpus: set[int] | None) -> bool:
    """Pin the calling thread to ``cpus``; None leaves the affinity as it is (True)."""
    if cpus is None:
        return True
    cpus = {int(c) for c in cpus}
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError) as e:
        _once("affinity-get", "CPU affinity not available (%s)", e)
        return False
    if not cpus or not cpus <= allowed:
        _once(f"affinity-{sorted(cpus)}", "CPU affinity %s refused: this process may use CPUs %s",
              sorted(cpus), sorted(allowed))
        return False
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as e:
        _once(f"affinity-{sorted(cpus)}", "CPU affinity %s refused (%s)", sorted(cpus), e)
        return False
    return True


def current_policy() -> tuple[str, int]:
    """(policy name, priority) of the calling thread, for logs and doctor."""
    pol = os.sched_getscheduler(0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
    names = {getattr(os, n): n[6:].lower() for n in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR",
                                                     "SCHED_BATCH", "SCHED_IDLE") if hasattr(os, n)}
    return names.get(pol, str(pol)), os.sched_getparam(0).sched_priority
