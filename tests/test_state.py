"""State survives a pulled plug: atomic writes, proven by kill -9 of a real writer process."""

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pi_synth import state
from pi_synth.errors import ConfigError
from pi_synth.state import atomic_write, atomic_write_json, clean_temps, read_json, state_dir

SRC = str(Path(__file__).resolve().parent.parent / "src")


def temps(path: Path) -> list[str]:
    return sorted(n for n in os.listdir(path.parent) if n.startswith(f".{path.name}.") and n.endswith(".tmp"))


# -- where state lives ----------------------------------------------------------------


def test_state_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PI_SYNTH_STATE_DIR", str(tmp_path / "a" / "b"))
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "systemd"))
    assert state_dir() == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir()


def test_state_dir_from_systemd_first_entry(tmp_path, monkeypatch):
    monkeypatch.delenv("PI_SYNTH_STATE_DIR", raising=False)
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'one'}:{tmp_path / 'two'}")
    assert state_dir() == tmp_path / "one"
    assert (tmp_path / "one").is_dir() and not (tmp_path / "two").exists()


def test_state_dir_falls_back_to_user_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("PI_SYNTH_STATE_DIR", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setattr(state, "SYSTEM_STATE_DIR", str(blocker / "pi-synth"))  # cannot be created
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    assert state_dir() == tmp_path / "xdg-state" / "pi-synth"
    assert (tmp_path / "xdg-state" / "pi-synth").is_dir()


def test_state_dir_that_cannot_be_created_is_a_config_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PI_SYNTH_STATE_DIR", str(blocker / "sub"))
    with pytest.raises(ConfigError, match="PI_SYNTH_STATE_DIR"):
        state_dir()


# -- writing and reading --------------------------------------------------------------


def test_json_is_sorted_indented_and_ends_with_newline(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"b": 1, "a": [1.5, "é"]})
    text = p.read_text(encoding="utf-8")
    assert text == '{\n  "a": [\n    1.5,\n    "é"\n  ],\n  "b": 1\n}\n'
    assert read_json(p) == {"a": [1.5, "é"], "b": 1}
    assert temps(p) == []


def test_read_json_missing_returns_default(tmp_path):
    assert read_json(tmp_path / "none.json") is None
    assert read_json(tmp_path / "none.json", {"x": 1}) == {"x": 1}


@pytest.mark.parametrize("content", [b"", b"{\"a\": 1", b"\xff\xfe garbage", b"   \n"])
def test_read_json_corrupt_names_the_file(tmp_path, content):
    p = tmp_path / "bad.json"
    p.write_bytes(content)
    with pytest.raises(ConfigError, match="bad.json"):
        read_json(p, default={})


def test_nan_is_refused_and_old_file_kept(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"v": 1})
    with pytest.raises(ValueError):
        atomic_write_json(p, {"v": float("nan")})
    assert read_json(p) == {"v": 1}
    assert temps(p) == []


def test_replaces_not_rewrites(tmp_path):
    """The old inode is never written: a reader holding it open sees the old bytes."""
    p = tmp_path / "x.bin"
    atomic_write(p, b"old")
    with open(p, "rb") as f:
        atomic_write(p, b"new!")
        assert f.read() == b"old"
    assert p.read_bytes() == b"new!"
    assert oct(p.stat().st_mode & 0o777) == oct(0o644)


def test_stale_temps_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    p = tmp_path / "x.json"
    dead = tmp_path / ".x.json.dead1234.tmp"
    dead.write_text("{\"half\": ")
    live = tmp_path / ".x.json.live5678.tmp"
    live.write_text("{\"writing\": ")
    other = tmp_path / ".y.json.abcd.tmp"  # another file's temp: not ours to touch
    other.write_text("")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a writer still at work holds its temp locked
        atomic_write_json(p, {"ok": True})
        assert not dead.exists()
        assert live.exists() and other.exists()
        assert read_json(p) == {"ok": True}  # temps never confuse the reader
    finally:
        os.close(fd)
    assert clean_temps(p) == 1
    assert temps(p) == []


# -- the pulled plug ------------------------------------------------------------------

# A python process that forks writers on demand (a fork costs a millisecond, a fresh
# interpreter a hundred): "spawn PATH" → forks a child that rewrites PATH forever,
# alternating two versions, and answers its pid; "reap PID" → waits for it, answers.
ZYGOTE = """
import os, sys
from pi_synth.state import atomic_write
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
me = os.getpid()
for line in sys.stdin:
    cmd, arg = line.split()
    if cmd == "spawn":
        pid = os.fork()
        if pid == 0:
            i = 0
            while os.getppid() == me:  # never outlive the test
                atomic_write(arg, b if i % 2 == 0 else a)
                i += 1
            os._exit(0)
        print(pid, flush=True)
    else:
        os.waitpid(int(arg), 0)
        print("reaped", flush=True)
"""


def test_kill_minus_9_mid_write_leaves_old_or_new_never_torn(tmp_path):
    rng = random.Random(1234)
    versions = {}
    for tag in ("A", "B"):
        doc = {"version": tag, "payload": os.urandom(1 << 20).hex()}  # ~2 MB each
        data = (json.dumps(doc, sort_keys=True, indent=2) + "\n").encode()
        (tmp_path / tag).write_bytes(data)
        versions[data] = tag
    target = tmp_path / "state" / "preset-01.json"
    target.parent.mkdir()
    t0 = time.perf_counter()
    for _ in range(3):
        atomic_write(target, (tmp_path / "A").read_bytes())
    write_s = (time.perf_counter() - t0) / 3

    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE, str(tmp_path / "A"), str(tmp_path / "B")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)

    def ask(line):
        zygote.stdin.write(line + "\n")
        zygote.stdin.flush()
        return zygote.stdout.readline().strip()

    seen = {"A": 0, "B": 0}
    interrupted = 0
    pid = None
    try:
        for i in range(150):
            if i >= 30 and interrupted and seen["A"] and seen["B"]:
                break
            pid = int(ask(f"spawn {target}"))
            # a loaded machine writes slower in the child than it did here: the range widens
            # every 10 kills until kills land after one, two, … whole writes as well as inside
            time.sleep(rng.uniform(0.0, 4 * write_s * (1 + i // 10)))
            os.kill(pid, signal.SIGKILL)  # no cleanup, no flush: a pulled plug
            assert ask(f"reap {pid}") == "reaped"
            pid = None
            data = target.read_bytes()
            assert data in versions, f"torn file: {len(data)} bytes"
            assert read_json(target)["version"] == versions[data]
            seen[versions[data]] += 1
            left = temps(target)
            assert len(left) <= 1, left  # each writer first removes what dead writers left
            interrupted += bool(left)
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        zygote.stdin.close()
        zygote.wait(10)
        zygote.stdout.close()
    assert interrupted > 0, "no kill landed inside a write: the test proved nothing"
    assert seen["A"] > 0 and seen["B"] > 0, seen
    clean_temps(target)
    assert os.listdir(target.parent) == [target.name]


def test_uploads_follow_the_state_folder_off_the_pi(tmp_path, monkeypatch):
    """On a laptop an upload went to /var/lib/pi-synth/models: a 500 for a user, and as root
    it created /var/lib/pi-synth, which then took the presets and MIDI-learn away."""
    from pi_synth.model.library import UPLOAD_MODELS, uploads_dir

    monkeypatch.setenv("PI_SYNTH_UPLOADS", str(tmp_path / "u"))
    assert uploads_dir() == tmp_path / "u"
    monkeypatch.delenv("PI_SYNTH_UPLOADS")
    monkeypatch.setenv("PI_SYNTH_STATE_DIR", str(tmp_path / "st"))
    assert uploads_dir() == tmp_path / "st" / "models"
    monkeypatch.delenv("PI_SYNTH_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    import os

    want = UPLOAD_MODELS if os.path.isdir("/var/lib/pi-synth") else str(tmp_path / "xdg" / "pi-synth" / "models")
    assert str(uploads_dir()) == want
