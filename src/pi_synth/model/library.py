"""Where models are found: a path, or a name looked up in the model folders.

Folders, first match wins: ``$PI_SYNTH_MODELS`` (colon-separated),
``/boot/firmware/pi-synth/models`` (drop a file there from any laptop), the models
uploaded through the web page (:func:`uploads_dir`, ``/var/lib/pi-synth/models``), then the
models shipped with the package, then the package's procedural fallback voice
(``organ``, in ``pi_synth/data``: not a neural model, so it does not live in ``models/``).
A name ``flute`` matches ``flute.int8.onnx``, ``flute.onnx`` or ``flute.fp32.onnx``; with
``precision="auto"`` (``pi-synth run``'s default) and both precisions in one folder, the
one measured faster here plays, fp32 unless int8 clearly wins (:mod:`precision`).
An encoder (``NAME.encoder.onnx``, beside its decoder) is not a model of its own: it is
found through its decoder (:func:`find_encoder`) and never listed.
"""

from __future__ import annotations

import os
from pathlib import Path

from pi_synth.errors import ModelError, PiSynthError

BOOT_MODELS = "/boot/firmware/pi-synth/models"
# Where the web page installs uploaded models: the instrument's state folder (ext4, so a
# rename is atomic and a pulled plug leaves the old file or the new one; the boot
# partition is FAT and root's). Writable by the web unit's user only.
UPLOAD_MODELS = "/var/lib/pi-synth/models"
# The default voice, in order of preference: the first one installed plays.
DEFAULT_MODELS = ("flute", "organ")


def shipped_dir() -> Path | None:
    here = Path(__file__).resolve().parent.parent
    for d in (here / "models", here.parent.parent / "models"):  # wheel, then source tree
        if d.is_dir() and any(d.glob("*.onnx")):
            return d
    return None


def uploads_dir() -> Path:
    """The folder uploaded models are installed in, the same for the instrument and the web
    page's process (whose systemd state folder is another): ``$PI_SYNTH_UPLOADS``; else
    ``$PI_SYNTH_STATE_DIR/models``; else ``/var/lib/pi-synth/models`` on a provisioned Pi
    (``/var/lib/pi-synth`` exists); else the user's ``~/.local/state/pi-synth/models`` (a
    laptop: an upload there used to need root and then moved the state to /var/lib)."""
    if os.environ.get("PI_SYNTH_UPLOADS"):
        return Path(os.environ["PI_SYNTH_UPLOADS"])
    from pi_synth.state import configured_state_dir, user_state_dir

    explicit = configured_state_dir("PI_SYNTH_STATE_DIR")
    if explicit is not None:
        return explicit / "models"
    if Path(UPLOAD_MODELS).parent.is_dir():
        return Path(UPLOAD_MODELS)
    return user_state_dir() / "models"


def model_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("PI_SYNTH_MODELS", "").split(":") if p]
    dirs.append(Path(BOOT_MODELS))
    dirs.append(uploads_dir())
    shipped = shipped_dir()
    if shipped:
        dirs.append(shipped)
    dirs.append(Path(__file__).resolve().parent.parent / "data")
    return [d for d in dirs if d.is_dir()]


def is_encoder_file(p: Path) -> bool:
    """``NAME.encoder.onnx`` (or ``NAME.encoder.fp32.onnx`` …): an encoder, by its name."""
    return ".encoder." in p.name


def find_encoder(path, card) -> Path | None:
    """The encoder beside decoder ``path``: the one its card names (``"encoder"``), else
    ``NAME.encoder.onnx`` for ``NAME.onnx`` / ``NAME.fp32.onnx`` / ``NAME.int8.onnx`` (the
    same precision first). None when there is none — also when the one its card names is not
    there (:func:`missing_encoder` says so): the decoder still plays from its knobs."""
    p = Path(path)
    if card.encoder:
        named = p.with_name(card.encoder)
        return named if named.is_file() else None
    base, prec = p.name, ""
    for suffix in (".fp32.onnx", ".int8.onnx", ".onnx"):
        if base.endswith(suffix):
            base, prec = base[: -len(suffix)], suffix[1:-5] if suffix != ".onnx" else ""
            break
    names = [f"{base}.encoder.{prec}.onnx"] if prec else []
    names += [f"{base}.encoder.onnx", f"{base}.encoder.fp32.onnx", f"{base}.encoder.int8.onnx"]
    for n in names:
        if (p.parent / n).is_file():
            return p.parent / n
    return None


def missing_encoder(path, card) -> str:
    """The line for a decoder whose card names an encoder that is not beside it ("" if none)."""
    p = Path(path)
    if card.encoder and not p.with_name(card.encoder).is_file():
        return (f"{p}: its card names the encoder {card.encoder!r}, which is not beside it; copy it there, or "
                "make it with 'pi-synth convert rave'")
    return ""


def list_models() -> list[Path]:
    seen, out = set(), []
    for d in model_dirs():
        for p in sorted(d.glob("*.onnx")):
            if is_encoder_file(p):
                continue
            if p.name not in seen:
                seen.add(p.name)
                out.append(p)
    return out


def find_model(name: str | None, precision: str = "int8", threads: int = 1) -> Path:
    """A path, a model name, or None / "default" for the default model. ``precision``:
    which file of a name plays first, "int8" or "fp32", or "auto": measured (``threads``
    as the model will run)."""
    if not name or name == "default":
        for candidate in DEFAULT_MODELS:
            try:
                return find_model(candidate, precision, threads)
            except ModelError:
                continue
        raise ModelError(
            "no model installed; copy a .onnx into /boot/firmware/pi-synth/models or pass --model FILE"
        )
    p = Path(name).expanduser()
    if p.is_file() or p.suffix == ".onnx" or os.sep in name:
        if not p.exists():
            stem = p.name[:-len(".onnx")] if p.name.endswith(".onnx") else ""
            for suffix in (".int8", ".fp32"):
                stem = stem[:-len(suffix)] if stem.endswith(suffix) else stem
            if stem and os.sep not in name and any(_both(d, stem) or _file(d, stem, "").is_file()
                                                   for d in model_dirs()):
                raise ModelError(f"{name}: no such file here; the installed model is named {stem!r} "
                                 f"(give the name, without .onnx)")
            raise ModelError(f"{name}: model file not found; check the path")
        return p
    order = ("fp32", "", "int8") if precision == "fp32" else ("int8", "", "fp32")
    for d in model_dirs():
        if precision == "auto" and (pair := _both(d, name)):
            from pi_synth.model.precision import choose

            return choose(*pair, threads=threads)
        files = [_file(d, name, kind) for kind in order if _file(d, name, kind).is_file()]
        if len(files) > 1 and not_one_model(files[0], files[-1]):
            return max(files, key=lambda f: f.stat().st_mtime)  # the newer conversion
        if files:
            return files[0]
    names = sorted({q.name.split(".")[0] for q in list_models()})
    raise ModelError(
        f"no model named {name!r}; installed: {', '.join(names) or 'none'} "
        "(or pass a path to a .onnx file)"
    )


def find_pair(name: str) -> tuple[Path, Path] | None:
    """``(int8, fp32)`` files of a model name, from the folder :func:`find_model` takes the
    name from; None for a path, or where that folder has one precision only."""
    if not name or Path(name).suffix == ".onnx" or os.sep in name:
        return None
    for d in model_dirs():
        if any(_file(d, name, kind).is_file() for kind in ("int8", "", "fp32")):
            return _both(d, name)
    return None


def _file(d: Path, name: str, kind: str) -> Path:
    """``NAME.KIND.onnx`` (``NAME.onnx`` for kind "") in folder ``d``."""
    return d / (f"{name}.{kind}.onnx" if kind else f"{name}.onnx")


def _both(d: Path, name: str) -> tuple[Path, Path] | None:
    """``(NAME.int8.onnx, NAME.fp32.onnx)``, or ``NAME.onnx`` as the fp32 file: what
    ``pi-synth convert rave --quantize`` writes beside its int8 file. Two files under one name
    that are not one model's two precisions (a conversion to that name over an older one's
    files) are no pair: only the newer plays, and :func:`not_one_model` says why."""
    i8 = _file(d, name, "int8")
    f32 = next((p for p in (_file(d, name, "fp32"), _file(d, name, "")) if p.is_file()), None)
    if not (i8.is_file() and f32 is not None):
        return None
    return None if not_one_model(i8, f32) else (i8, f32)


_said_apart: set[tuple[str, str]] = set()


def not_one_model(a: Path, b: Path) -> str:
    """Why ``a`` and ``b`` are not one model's two precisions ("" when they are): their
    sample rate, block, channels or controls differ, or they were converted from different
    exports. Said once per pair in the log."""
    from pi_synth.model.card import load_card

    try:
        ca, cb = load_card(a), load_card(b)
    except PiSynthError:
        return ""  # a broken card is said when the file is played
    why = "one is an encoder" if ca.is_encoder != cb.is_encoder else ""
    why = why or next((f"{k} {getattr(ca, k)} against {getattr(cb, k)}"
                       for k in ("sample_rate", "block_size", "channels", "control_names")
                       if getattr(ca, k) != getattr(cb, k)), "")
    sa, sb = ca.export_digest, cb.export_digest
    if not why and sa and sb and sa != sb:
        why = "converted from different exports"
    key = tuple(sorted((str(a), str(b))))
    if why and key not in _said_apart:
        _said_apart.add(key)
        import logging

        newer = a if a.stat().st_mtime >= b.stat().st_mtime else b
        logging.getLogger(__name__).warning(
            "%s and %s are not one model's two precisions (%s): only the newer, %s, plays; delete the other",
            a.name, b.name, why, newer.name)
    return why


def _is_path(name: str | None) -> bool:
    """``name`` names a file (``x.onnx``, ``dir/x``, an existing file), not a model name."""
    return bool(name) and (Path(name).suffix == ".onnx" or os.sep in name or Path(name).is_file())


def precision_of(path: Path) -> str:
    """"int8" or "fp32" for a file of a voice shipped in both (by its name), else ""."""
    parts = Path(path).name.split(".")
    return parts[-2] if len(parts) >= 3 and parts[-2] in ("int8", "fp32") else ""


def which_file(name: str | None, path: Path, precision: str) -> str:
    """Why ``path`` is the file that plays for ``name``, in the same words everywhere
    (``info``, ``bench``, ``doctor``, ``run``): "" for a path or a voice shipped in one
    precision; else which ``[model] precision`` picked it, and the other file."""
    if _is_path(name):
        return ""
    pair = find_pair(Path(path).name.split(".")[0])
    if pair is None or Path(path) not in pair:
        return ""
    other = pair[1] if Path(path) == pair[0] else pair[0]
    how = "picks it here (measured)" if precision == "auto" else "asks for it"
    return f'precision "{precision}" {how}; {other.name} is the other file'


def precision_note(name: str | None, path: Path, precision: str) -> str:
    """The line for a ``--precision int8``/``fp32`` that chose nothing (a path, or a voice
    with one file) and plays a file of the other precision; "" when there is nothing to say."""
    if precision not in ("int8", "fp32") or which_file(name, path, precision):
        return ""
    from pi_synth.model.onnxfile import read_metadata

    mine = precision_of(Path(path)) or (
        "int8" if '"precision": "int8"' in read_metadata(path).get("pi_synth", "") else "fp32")
    if mine == precision:
        return ""
    if _is_path(name):
        return (f"--precision {precision} picks between a model name's two files; the path {name} plays "
                f"that file ({mine})")
    return f"--precision {precision}: {Path(path).name} is the only file of {name or 'the default model'} ({mine})"
