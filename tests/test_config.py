"""The config file: search order, every error naming file, line and key."""

import pytest

from pi_synth import config
from pi_synth.errors import ConfigError


def test_defaults_when_nothing_is_found():
    cfg = config.load()
    assert cfg.path is None and cfg.audio.period == 256 and cfg.model.threads == 1


def test_values_are_read_and_checked(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[audio]\ndevice = "plughw:CARD=Device"\nperiod = 512\n\n[output]\ngain_db = -6\n')
    cfg = config.load(str(p))
    assert cfg.audio.device == "plughw:CARD=Device" and cfg.audio.period == 512
    assert cfg.output.gain_db == -6.0 and isinstance(cfg.output.gain_db, float)


@pytest.mark.parametrize(
    "text, where, words",
    [
        ('[audio]\n\nperiod = "big"\n', ":3:", "'audio.period' must be an integer"),
        ("[audio]\nperiod = 4\n", ":2:", "must be in 16..16384"),
        ('[audio]\nformat = "MP3"\n', ":2:", "must be one of S16_LE"),
        ("[model]\ncache = 1\n", ":2:", "true or false"),
        ('[audio]\nlate_render = "yes"\n', ":2:", "'audio.late_render' must be true or false"),
        ("[audio\nperiod = 4\n", "", "not valid TOML"),
        ("audio = 3\n", "", "must be a [audio] section"),
        ("audio.periods = 1\n", ":1:", "'audio.periods' must be in 2..32"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path, text, where, words):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(str(p))
    msg = str(e.value)
    assert msg.startswith(str(p) + where) and words in msg


def test_unknown_keys_warn_and_are_ignored(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[audio]\nperod = 128\n[fancy]\nx = 1\n")
    cfg = config.load(str(p))
    assert cfg.audio.period == 256
    assert any(":2:" in w and "audio.perod" in w for w in cfg.warnings)
    assert any("[fancy]" in w for w in cfg.warnings)


def test_search_order(tmp_path, monkeypatch):
    home = tmp_path / "xdg-config" / "pi-synth"
    home.mkdir(parents=True)
    (home / "config.toml").write_text("[audio]\nperiod = 128\n")
    assert config.load().audio.period == 128
    env = tmp_path / "env.toml"
    env.write_text("[audio]\nperiod = 64\n")
    monkeypatch.setenv("PI_SYNTH_CONFIG", str(env))
    assert config.load().audio.period == 64
    explicit = tmp_path / "x.toml"
    explicit.write_text("[audio]\nperiod = 32\n")
    assert config.load(str(explicit)).audio.period == 32
    with pytest.raises(ConfigError, match="not found"):
        config.load(str(tmp_path / "missing.toml"))


def test_template_is_valid_and_complete():
    from importlib.resources import files

    text = files("pi_synth").joinpath("data/pi-synth.toml").read_text()
    cfg = config.parse(text, "template")
    assert not cfg.warnings
    for table, keys in config.SCHEMA.items():
        for key in keys:
            assert f"{key} =" in text, f"template lacks {table}.{key}"


@pytest.mark.parametrize("body,words", [
    ('source = "knob1"\naction = "explode"', ("c.toml:3", "map[0].action", "next_model")),
    ('source = "knob99"\ncontrol = "loudness"', ("c.toml:1", "knob1..knob8")),
    ('source = "cc200"\ncontrol = "loudness"', ("c.toml:1", "0..127")),
    ('source = "cc7"\naction = "panic"\ncontrol = "loudness"', ("c.toml:1", "both 'control' and 'action'")),
    ('source = "cc7"\ncurve = "cubic"\ncontrol = "loudness"', ("c.toml:3", '"" (none), lin, log, exp')),
])
def test_map_mistakes_name_the_file_and_line(tmp_path, body, words):
    from pi_synth import config as config_mod

    conf = tmp_path / "c.toml"
    conf.write_text(f"[[map]]\n{body}\n")
    with pytest.raises(ConfigError) as e:
        config_mod.load(str(conf))
    for w in words:
        assert w in str(e.value), str(e.value)


def test_a_map_source_nothing_sends_is_warned_about(tmp_path):
    from pi_synth import config as config_mod

    conf = tmp_path / "c.toml"
    conf.write_text('[[map]]\nsource = "xyz1"\ncontrol = "loudness"\n\n[[cv]]\nchannel = 3\nname = "env"\n\n'
                    '[[cv]]\nchannel = 4\n\n[[map]]\nsource = "env"\ncontrol = "loudness"\n\n'
                    '[[map]]\nsource = "cv2"\ncontrol = "pitch"\n\n[[map]]\nsource = "cv1"\ncontrol = "pitch"\n')
    cfg = config_mod.load(str(conf))  # env and cv2 are sent; the first [[cv]] is named env, so cv1 is not
    assert [w.split("source ")[1].split(" ")[0] for w in cfg.warnings] == ["'xyz1'", "'cv1'"], cfg.warnings


def test_a_second_map_for_a_source_and_a_key_outside_sections_are_said(tmp_path):
    from pi_synth import config as config_mod

    conf = tmp_path / "c.toml"
    conf.write_text('chip = "mcp3008"\n\n[[map]]\nsource = "knob1"\ncontrol = "breath"\n\n'
                    '[[map]]\nsource = "knob1"\ncontrol = "brightness"\n')
    w = config_mod.load(str(conf)).warnings
    assert any(f"{conf}:1: key 'chip' is outside any section, ignored: put it under [knobs]" in x for x in w), w
    assert any(f"{conf}:7: a second [[map]] for 'knob1' replaces the one at {conf}:3" in x for x in w), w


def test_a_config_that_is_not_utf8_or_not_there_says_the_fix(tmp_path, monkeypatch):
    from pi_synth import config as config_mod
    from pi_synth.errors import ConfigError

    (tmp_path / "c.toml").write_bytes(b"[audio]\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xE9 at 13\); save it as UTF-8"):
        config_mod.load(str(tmp_path / "c.toml"))
    monkeypatch.setenv("PI_SYNTH_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match=r"not found; give the path of a .toml file, or create it \(from \$PI_SYNTH_CONFIG\)"):
        config_mod.load(None)
