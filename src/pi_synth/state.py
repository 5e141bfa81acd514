"""State that survives a pulled plug: presets, calibration, MIDI-learn bindings.

A Pi on stage loses power without warning, so every state file is replaced, never
rewritten in place (:func:`atomic_write`):

1. write the new bytes to a temp file in the *same* directory (``.NAME.XXXX.tmp``),
2. flush and ``fsync`` it, so the data is on the card before anyone can see it,
3. ``os.replace`` it over the old file (atomic on POSIX: readers see old or new),
4. ``fsync`` the directory, so the rename itself is on the card.

A power cut at any moment leaves the old file or the new one, never a torn one. It may
leave a temp file behind: readers never look at temp files, and the next write of the
same file deletes the temps whose writer is dead (each writer holds an ``flock`` on its
temp file while it works, and the kernel drops that lock when the process dies).

Where state lives: :func:`state_dir`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from pi_synth.errors import ConfigError

log = logging.getLogger(__name__)

SYSTEM_STATE_DIR = "/var/lib/pi-synth"
TEMP_SUFFIX = ".tmp"

__all__ = ["state_dir", "system_state_unreachable", "atomic_write", "atomic_write_json", "read_json", "clean_temps"]


def _usable(path: Path) -> bool:
    """An existing directory this user can write: never created here (on a laptop, even
    as root, state belongs in the user's own folder)."""
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def system_state_unreachable() -> Path | None:
    """The system state dir, when it exists (a provisioned Pi: the service reads it) but
    this user cannot write it — so what this user saves goes to their own folder, and
    the service will not see it. None otherwise."""
    system = Path(SYSTEM_STATE_DIR)
    if any(os.environ.get(v, "").strip() for v in ("PI_SYNTH_STATE_DIR", "STATE_DIRECTORY")):
        return None
    return system if system.is_dir() and not _usable(system) else None


def state_dir() -> Path:
    """The directory for state files, created on demand.

    First of: ``$PI_SYNTH_STATE_DIR``; systemd's ``$STATE_DIRECTORY`` (first entry,
    set by ``StateDirectory=pi-synth`` in the unit); ``/var/lib/pi-synth`` if it exists
    and is writable (a provisioned Pi; it is never created here, so a laptop — even as
    root — keeps its state in the user's folder); ``$XDG_STATE_HOME/pi-synth`` (default
    ``~/.local/state/pi-synth``). An explicitly configured directory that cannot be
    created is an error (:class:`~pi_synth.errors.ConfigError`), not a silent fallback.
    """
    for var in ("PI_SYNTH_STATE_DIR", "STATE_DIRECTORY"):
        value = os.environ.get(var, "")
        p = configured_state_dir(var)
        if p is not None:
            try:
                p.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"${var}={value}: cannot create state directory ({e.strerror}); "
                                  f"point ${var} at a writable directory") from None
            return p
    system = Path(SYSTEM_STATE_DIR)
    if _usable(system):
        return system
    p = user_state_dir()
    p.mkdir(parents=True, exist_ok=True)
    return p


def configured_state_dir(var: str) -> Path | None:
    """The state folder ``$var`` names (its first entry), None if unset; not created."""
    first = os.environ.get(var, "").split(":")[0].strip()
    return Path(first).expanduser() if first else None


def user_state_dir() -> Path:
    """The user's own state folder, ``$XDG_STATE_HOME/pi-synth`` (``~/.local/state``); not created."""
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "pi-synth"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems (FAT /boot, some FUSE) cannot fsync a directory
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def clean_temps(path: str | os.PathLike) -> int:
    """Delete temp files left for ``path`` by writers that died; return how many.

    A temp file whose ``flock`` is still held belongs to a live writer and is kept.
    """
    path = Path(path)
    prefix = _temp_prefix(path)
    removed = 0
    try:
        names = os.listdir(path.parent)
    except OSError:
        return 0
    for name in names:
        if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        tmp = path.parent / name
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer holds it
            os.close(fd)
            continue
        try:
            os.unlink(tmp)
            removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d temp file(s) left by an interrupted write of %s", removed, path)
    return removed


def atomic_write(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that a power cut leaves the old or the new file.

    The parent directory must exist. Raises ``OSError`` if the write fails (the old
    file is then untouched).
    """
    path = Path(path)
    directory = path.parent
    clean_temps(path)
    for attempt in (1, 2):
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=TEMP_SUFFIX, dir=directory)
        try:
            # Held until close: tells clean_temps in another process this writer is alive.
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            try:
                os.replace(tmp, path)
            except FileNotFoundError:
                # A concurrent clean_temps took our temp before we locked it: write again.
                if attempt == 2:
                    raise
                continue
            tmp = None
            break
        finally:
            os.close(fd)
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
    _fsync_dir(directory)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """:func:`atomic_write` of ``obj`` as JSON: sorted keys, indent 2, trailing newline.

    NaN and infinity are refused (``ValueError``): they are not JSON.
    """
    text = json.dumps(obj, sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    atomic_write(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` if there is no such file.

    A file that exists but cannot be read or parsed raises
    :class:`~pi_synth.errors.ConfigError` naming the file. Callers on the instrument log
    that one line and keep playing with their defaults (a corrupt preset must not stop
    the show); they do not overwrite the bad file silently.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return default
    except OSError as e:
        raise ConfigError(f"{path}: cannot read state file ({e.strerror or e})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        what = "empty" if not raw.strip() else f"not valid JSON ({e})"
        raise ConfigError(f"{path}: corrupt state file, {what}; delete it to start afresh") from None
