"""Hostile and broken inputs: every one is a one-line CoachError, never a traceback or a hang.

One test per bad input (parametrized), asserting the error class and a key phrase of
the message; a representative subset also runs the real ``coach`` command and checks
exit status 2, exactly one ``coach: error:`` line on stderr and no traceback.

Tests run as root in CI, where ``chmod 000`` does not stop reads, so unreadable files
are FIFOs, folders and character devices instead (which also must never block).
"""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
import zipfile
from functools import partial
from pathlib import Path
from typing import Any, Callable

import pytest

from privileges import as_unprivileged

from coach import safeio
from coach.datasets import SourceSpec, load_schema, load_source
from coach.errors import CoachError, ConfigError, DataError, ModelError, TranscriptError
from coach.playbook import load_playbook
from coach.transcript import load_transcript
from coach.vosk_models import MIN_BIG_FILE, VoskModelInfo, _safe_extract, download_model, model_problems

REPO = Path(__file__).resolve().parents[1]
COACH = [sys.executable, "-m", "coach.cli"]

ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]" for p, c in zip("abcdefgh", "bcdefghi")]
) + "\n"
DEEP_JSON = "[" * 10_000 + "]" * 10_000
DEEP_YAML = "prompts: " + "[" * 10_000 + "]" * 10_000 + "\n"
GOOD_RULE = "prompts:\n  - id: x\n    text: hi\n    open_when: {speaker: agent}\n"


# --------------------------------------------------------------------------- helpers


def finishes(fn: Callable[[], Any], seconds: float = 10.0) -> Any:
    """Run ``fn`` in a thread; fail (instead of hanging) if it blocks, e.g. on a FIFO."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed back to the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s (blocked?)"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def expect(err: type[CoachError], phrase: str, fn: Callable[[], Any]) -> str:
    with pytest.raises(err) as ei:
        finishes(fn)
    msg = str(ei.value)
    assert phrase in msg, msg
    assert "\n" not in msg
    return msg


def coach(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COACH_HOME": "/nonexistent-coach-home"}
    return subprocess.run([*COACH, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def assert_cli_error(proc: subprocess.CompletedProcess, *phrases: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("coach: error:")]
    # exactly one error line; anything else is a "coach: ..." status line (what is loading)
    assert len(errors) == 1 and all(ln.startswith("coach: ") for ln in lines), proc.stderr
    for p in phrases:
        assert p in errors[0], errors[0]
    return errors[0]


def special(kind: str, tmp_path: Path) -> Path:
    """A path that is not a regular file: fifo, folder, char device (/dev/zero) or missing."""
    if kind == "fifo":
        p = tmp_path / "pipe"
        os.mkfifo(p)
        return p
    if kind == "folder":
        p = tmp_path / "folder.yaml"
        p.mkdir()
        return p
    if kind == "device":
        return Path("/dev/zero")
    if kind == "fifo-link":
        os.mkfifo(tmp_path / "pipe2")
        (tmp_path / "link.json").symlink_to(tmp_path / "pipe2")
        return tmp_path / "link.json"
    return tmp_path / "missing.yaml"


SPECIAL = [("fifo", "FIFO"), ("folder", "is a folder"), ("device", "character device"),
           ("fifo-link", "FIFO"), ("missing", "does not exist")]


def transcript(segments: list[dict] | str) -> str:
    return segments if isinstance(segments, str) else json.dumps({"segments": segments})


def seg(**kw: Any) -> dict:
    return {"speaker": "customer", "start": 0.5, "end": 1.5, "text": "hello there", **kw}


# --------------------------------------------------------------------------- safeio


@pytest.mark.parametrize("kind, phrase", SPECIAL)
def test_read_text_refuses_what_is_not_a_regular_file(tmp_path, kind, phrase):
    expect(ConfigError, phrase,
           lambda: safeio.read_text(special(kind, tmp_path), what="playbook", max_bytes=1000, error_cls=ConfigError))


def test_read_text_size_utf8_and_bom(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"x" * 2000)
    expect(ConfigError, "too large", lambda: safeio.read_text(big, what="playbook", max_bytes=1000))
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"ok\ncaf\xe9\n")
    expect(ConfigError, "not UTF-8 text (byte 0xe9 on line 2)", lambda: safeio.read_text(bad, what="x", max_bytes=99))
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert safeio.read_text(bom, what="x", max_bytes=99) == "a: 1\n"


def test_read_text_permission_denied(tmp_path):
    p = tmp_path / "secret.yaml"
    p.write_text("a: 1\n")
    p.chmod(0)
    out = as_unprivileged(
        "from coach import safeio\nfrom coach.errors import ConfigError\n"
        f"try:\n    safeio.read_text({str(p)!r}, what='playbook', max_bytes=99)\n"
        "except ConfigError as e:\n    print(e)\n")
    assert "permission denied" in out and "\n" not in out.strip()


@pytest.mark.parametrize("text, phrase", [
    ('{"a": NaN}', "a is NaN"),
    ('{"a": [1, {"b": Infinity}]}', "a[1].b is Infinity"),
    ('{"a": -Infinity}', "a is -Infinity"),
    ('{"a": {"b": 1e400}}', "a.b is out of range"),
    (DEEP_JSON, "nested deeper than 64 levels"),
    ("[" * 70 + "]" * 70, "nested deeper than 64 levels"),
    ('{"a": 1,\n "b": }', "line 2, column"),
])
def test_load_json_is_strict(text, phrase):
    expect(ConfigError, phrase, lambda: safeio.load_json(text, where="x.json"))


@pytest.mark.parametrize("text, phrase", [
    (ALIAS_BOMB, "alias bomb"),
    ("a: &a x\nb: [" + ", ".join(["*a"] * 101) + "]\n", "more than 100 aliases"),
    (DEEP_YAML, "nested deeper than 64 levels"),
    ("a: &a [*a]\n", "refers to the value that contains it"),
    ("a: [1, 2\nb: c\n", "line 2, column"),
    ("a: 2001-13-45\n", "cannot build"),
    ("a: !!python/object:os.system x\n", "could not determine a constructor"),
    ("a: \x07\n", "character YAML does not allow"),
])
def test_load_yaml_is_bounded(text, phrase):
    t0 = time.monotonic()
    expect(ConfigError, phrase, lambda: safeio.load_yaml(text, where="x.yaml"))
    assert time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("value, kw, phrase", [
    (0, {"lo": 0, "lo_open": True}, "k must be a number > 0, got 0"),
    (float("nan"), {}, "got nan"),
    (float("inf"), {"integer": True}, "must be an integer"),
    (10 ** 400, {}, "must be a number"),
    (True, {}, "got True"),
    (2.5, {"integer": True, "lo": 1}, "an integer >= 1"),
    (1.5, {"lo": 0, "hi": 1}, "in [0, 1]"),
])
def test_number_ranges(value, kw, phrase):
    with pytest.raises(ValueError, match=None) as ei:
        safeio.number(value, "k", **kw)
    assert phrase in str(ei.value)


# --------------------------------------------------------------------------- transcripts


@pytest.mark.parametrize("text, phrase", [
    ('{"segments": [{"speaker": "agent", "start": 1e400, "end": 2, "text": "x"}]}', "segments[0].start is out of range"),
    ('{"segments": [{"speaker": "agent", "start": 0, "end": Infinity, "text": "x"}]}', "segments[0].end is Infinity"),
    (transcript([seg(start=-1)]), "'start' must be a number of seconds in [0, 86400)"),
    (transcript([seg(end=1e6)]), "'end' must be a number of seconds"),
    (transcript([seg(end=10 ** 400)]), "'end' must be a number of seconds"),
    (transcript([seg(words=[{"word": "hi", "start": 0.5, "end": 0.7, "conf": 1.5}])]), "'conf' must be a number in [0, 1]"),
    ('{"segments": [{"speaker": "agent", "start": 0, "end": 1, "text": "x", '
     '"words": [{"word": "x", "start": 0, "end": 1, "conf": NaN}]}]}', "conf is NaN"),
    (transcript([seg(words=[{"word": "hi", "start": 0.5, "end": 0.7, "conf": True}])]), "'conf' must be"),
    (DEEP_JSON, "nested deeper than"),
    ('{"segments": [', "not valid JSON (line 1"),
])
def test_bad_transcript(tmp_path, text, phrase):
    p = tmp_path / "t.json"
    p.write_text(text)
    expect(TranscriptError, phrase, lambda: load_transcript(p))


@pytest.mark.parametrize("kind, phrase", SPECIAL)
def test_unreadable_transcript(tmp_path, kind, phrase):
    expect(TranscriptError, phrase, lambda: load_transcript(special(kind, tmp_path)))


def test_transcript_not_utf8_and_bom_accepted(tmp_path):
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"segments": [{"speaker": "agent", "start": 0, "end": 1, "text": "caf\xe9"}]}')
    expect(TranscriptError, "not UTF-8", lambda: load_transcript(bad))
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + transcript([seg()]).encode())
    [u] = load_transcript(bom)
    assert u.text == "hello there" and u.start == 0.5


@pytest.mark.parametrize("text, phrase", [
    (DEEP_JSON, "nested deeper than"),
    ('{"segments": [{"speaker": "agent", "start": 1e400, "end": 2, "text": "x"}]}', "out of range"),
    ('{"segments": [{"speaker": "agent", "start": Infinity, "end": 2, "text": "x"}]}', "is Infinity"),
])
def test_bad_transcript_cli(tmp_path, text, phrase):
    p = tmp_path / "t.json"
    p.write_text(text)
    assert_cli_error(coach("replay", str(p)), phrase, str(p))


# --------------------------------------------------------------------------- playbooks


@pytest.mark.parametrize("body, phrase", [
    ("trajectory: {half_life_s: 0}\n" + GOOD_RULE, "trajectory.half_life_s must be a number > 0, got 0"),
    ("trajectory: {fast_half_life_s: -2}\n" + GOOD_RULE, "fast_half_life_s must be a number > 0"),
    ("trajectory: {prior_weight: -0.1}\n" + GOOD_RULE, "prior_weight must be a number >= 0"),
    ("trajectory: {enter_p: 1.5}\n" + GOOD_RULE, "enter_p must be a number in [0, 1]"),
    ("trajectory: {exit_p: .nan}\n" + GOOD_RULE, "exit_p must be a number in [0, 1], got nan"),
    ("trajectory: {enter_p: 0.3, exit_p: 0.5}\n" + GOOD_RULE, "exit_p (0.5) must be <= trajectory.enter_p"),
    ("trajectory: {wpm_window_s: 0}\n" + GOOD_RULE, "wpm_window_s must be a number > 0"),
    ("trajectory: {wpm_min_words: 0}\n" + GOOD_RULE, "wpm_min_words must be an integer >= 1"),
    ("trajectory: {loudness_baseline_utterances: .inf}\n" + GOOD_RULE, "loudness_baseline_utterances must be an integer"),
    ("defaults: {max_open: -3}\n" + GOOD_RULE, "defaults.max_open must be an integer >= 1, got -3"),
    ("defaults: {max_open: 2.5}\n" + GOOD_RULE, "defaults.max_open must be an integer"),
    ("defaults: {min_word_conf: .nan}\n" + GOOD_RULE, "defaults.min_word_conf must be a number in [0, 1], got nan"),
    ("defaults: {severe_min_confidence: 2}\n" + GOOD_RULE, "severe_min_confidence must be a number in [0, 1]"),
    ("defaults: {cooldown_s: -1}\n" + GOOD_RULE, "defaults.cooldown_s must be a number >= 0"),
    ("defaults: {max_open_s: 0}\n" + GOOD_RULE, "defaults.max_open_s must be a number > 0"),
    (GOOD_RULE + "    priority: .inf\n", "priority must be an integer in [0, 1000], got inf"),
    (GOOD_RULE + "    priority: -1\n", "priority must be an integer in [0, 1000]"),
    (GOOD_RULE + "    max_per_call: -1\n", "max_per_call must be an integer >= 0"),
    (GOOD_RULE + "    cooldown_s: .inf\n", "cooldown_s must be a number >= 0, got inf"),
    (GOOD_RULE + "    max_open_s: -5\n", "max_open_s must be a number > 0"),
    (GOOD_RULE.replace("{speaker: agent}", "{utterance_at_least: {level: angry, p: .nan}}"), "p must be a number in [0, 1]"),
    (GOOD_RULE.replace("{speaker: agent}", "{confident: .inf}"), "confident: expected a number in [0, 1]"),
    (GOOD_RULE.replace("{speaker: agent}", "{customer_risk_at_least: 1.5}"), "expected a number in [0, 1]"),
    (GOOD_RULE.replace("{speaker: agent}", "{customer_louder_db: .nan}"), "expected a number, got nan"),
    (GOOD_RULE.replace("{speaker: agent}", "{agent_wpm_above: -5}"), "expected a number >= 0"),
    (DEEP_YAML, "nested deeper than 64 levels"),
    (ALIAS_BOMB, "alias bomb"),
])
def test_bad_playbook(tmp_path, body, phrase):
    p = tmp_path / "pb.yaml"
    p.write_text(body)
    t0 = time.monotonic()
    msg = expect(ConfigError, phrase, lambda: load_playbook(p))
    assert str(p) in msg and time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("kind, phrase", SPECIAL)
def test_unreadable_playbook(tmp_path, kind, phrase):
    expect(ConfigError, phrase, lambda: load_playbook(special(kind, tmp_path)))


def test_big_playbook_refused(tmp_path):
    p = tmp_path / "pb.yaml"
    p.write_text(GOOD_RULE + "#" * (2 << 20) + "\n")
    expect(ConfigError, "too large", lambda: load_playbook(p))


def test_shipped_playbook_still_loads():
    cfg = load_playbook()
    assert cfg.rules and cfg.max_open >= 1 and 0 <= cfg.min_word_conf <= 1


CLI_PLAYBOOKS = [
    ("trajectory: {half_life_s: 0}\n" + GOOD_RULE, "half_life_s must be a number > 0"),
    ("defaults: {max_open: -3}\n" + GOOD_RULE, "max_open must be an integer >= 1"),
    ("defaults: {min_word_conf: .nan}\n" + GOOD_RULE, "min_word_conf must be a number in [0, 1], got nan"),
    (GOOD_RULE + "    priority: .inf\n", "priority must be an integer in [0, 1000], got inf"),
]


@pytest.mark.parametrize("command", ["check-config", "replay"])
@pytest.mark.parametrize("body, phrase", CLI_PLAYBOOKS)
def test_bad_playbook_cli(tmp_path, command, body, phrase):
    pb = tmp_path / "pb.yaml"
    pb.write_text(body)
    if command == "check-config":
        proc = coach("check-config", str(pb))
    else:
        t = tmp_path / "t.json"
        t.write_text(transcript([seg()]))
        proc = coach("replay", str(t), "--playbook", str(pb))
    assert_cli_error(proc, phrase, str(pb))


def test_alias_bomb_and_fifo_playbook_cli(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    t0 = time.monotonic()
    assert_cli_error(coach("check-config", str(bomb)), "alias bomb")
    assert time.monotonic() - t0 < 30  # interpreter start included; the refusal itself takes milliseconds
    fifo = special("fifo", tmp_path)
    assert_cli_error(coach("check-config", str(fifo), timeout=60), "not a regular file", "FIFO")


# --------------------------------------------------------------------------- training configs


@pytest.mark.parametrize("body, phrase", [
    ("epochs: 0\n", "epochs must be an integer >= 1, got 0"),
    ("epochs: .inf\n", "epochs must be an integer >= 1"),
    ("lr: .nan\n", "lr must be a number > 0, got nan"),
    ("lr: -0.1\n", "lr must be a number > 0"),
    ("encoder_lr: 0\n", "encoder_lr must be a number > 0"),
    ("batch_size: 2.5\n", "batch_size must be an integer >= 1"),
    ("dropout: 1\n", "dropout must be a number in [0, 1)"),
    ("dev_fraction: 1.5\n", "dev_fraction must be a number in [0, 1]"),
    ("tune_fraction: 0.5\n", "tune_fraction must be a number in [0, 0.5)"),
    ("weight_decay: -1\n", "weight_decay must be a number >= 0"),
    ("seed: -1\n", "seed must be an integer"),
    ("ensemble: 1000\n", "ensemble must be an integer in [1, 64]"),
    ("max_length: 100000\n", "max_length must be an integer in [1, 512]"),
    ("class_balance: maybe\n", "class_balance must be true or false"),
    ("sources: []\n", "no data sources"),
    ("sources: [3]\n", "sources holds 3"),
    ("name: ../../etc\n", "must be a plain name"),
    ("- just\n- a list\n", "must be a mapping of option: value"),
    (ALIAS_BOMB.replace("a:", "sources:", 1), "alias bomb"),
    ("hidden: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested deeper than 64 levels"),
])
def test_bad_training_config(tmp_path, body, phrase):
    from coach.train import TrainArgs

    p = tmp_path / "train.yaml"
    p.write_text(body)
    expect(ConfigError, phrase, lambda: TrainArgs.from_yaml(p))


@pytest.mark.parametrize("kind, phrase", SPECIAL)
def test_unreadable_training_config(tmp_path, kind, phrase):
    from coach.train import TrainArgs

    expect(ConfigError, phrase, lambda: TrainArgs.from_yaml(special(kind, tmp_path)))


def test_shipped_training_configs_still_parse():
    from coach import resources
    from coach.train import TrainArgs

    for name in ("default", "commercial", "lora", "smoke"):
        args = TrainArgs.from_yaml(resources.packaged(f"configs/train/{name}.yaml"))
        assert args.epochs >= 1 and args.lr > 0


def test_train_cli_with_a_fifo_config(tmp_path):
    assert_cli_error(coach("train", "--config", str(special("fifo", tmp_path)), timeout=120), "FIFO")


# --------------------------------------------------------------------------- label schema and data files


@pytest.mark.parametrize("body, phrase", [
    ("- a\n- b\n", "must be a mapping"),
    ("sources: [a, b]\n", "'sources' must map"),
    ("sources: {olid: nope}\n", "sources.olid must be a mapping"),
    ("sources: {olid: {map: [1]}}\n", "sources.olid.map must map"),
    ("sources: {olid: {map: {NOT: calm}}}\n", "map.NOT must be a mapping"),
    ("sources: {olid: {map: {NOT: {level: furious}}}}\n", "unknown escalation level"),
    ("levels: 3\n", "labels that differ"),
    (ALIAS_BOMB, "alias bomb"),
    (DEEP_YAML.replace("prompts", "sources"), "nested deeper"),
])
def test_bad_label_schema(tmp_path, body, phrase):
    p = tmp_path / "labels.yaml"
    p.write_text(body)
    expect(ConfigError, phrase, lambda: load_schema(p))


@pytest.mark.parametrize("kind, phrase", SPECIAL)
def test_unreadable_label_schema(tmp_path, kind, phrase):
    expect(ConfigError, phrase, lambda: load_schema(special(kind, tmp_path)))


def _generic(path: Path, fmt: str | None = None) -> SourceSpec:
    return SourceSpec(name="mine", kind="generic", path=str(path), format=fmt, level_column="level",
                      sentiment_column="sentiment")


@pytest.mark.parametrize("kind, phrase", SPECIAL)
def test_unreadable_data_file(tmp_path, kind, phrase):
    path = special(kind, tmp_path)
    expect(DataError, phrase, lambda: load_source(_generic(path, "csv")))


@pytest.mark.parametrize("name, content, phrase", [
    ("deep.jsonl", '{"text": "a", "level": "calm", "sentiment": null}\n' + '{"x": ' + DEEP_JSON + "}\n",
     "deep.jsonl:2: JSON nested too deeply"),
    ("nan.jsonl", '{"text": "a", "level": "calm", "sentiment": null, "w": NaN}\n', "nan.jsonl:1: invalid JSON (NaN"),
    ("big.jsonl", '{"text": "a", "level": "calm", "sentiment": null, "w": 1e400}\n', "out of range"),
    ("bomb.yaml", ALIAS_BOMB, "alias bomb"),
    ("notlist.yaml", "a: 1\n", "is not a YAML list of rows"),
])
def test_bad_data_file(tmp_path, name, content, phrase):
    p = tmp_path / name
    p.write_text(content)
    expect(DataError, phrase, lambda: load_source(_generic(p)))


@pytest.mark.parametrize("spec, phrase", [
    ({"name": "x", "path": "d.csv", "weight": float("nan")}, "weight must be a number >= 0"),
    ({"name": "x", "path": "d.csv", "dev_fraction": 2}, "dev_fraction must be a number in [0, 1]"),
    ({"name": "x", "path": "d.csv", "max_train": -5}, "max_train must be an integer >= 0"),
    ({"name": "x", "path": "d.csv", "train_only": "yes"}, "train_only must be true or false"),
    ({"name": "x", "label_map": [1]}, "label_map must be"),
    (["not", "a", "mapping"], "a data source is"),
])
def test_bad_source_spec(spec, phrase):
    expect(ConfigError, phrase, lambda: SourceSpec.from_dict(spec))


# --------------------------------------------------------------------------- classifier folders


@pytest.fixture(scope="module")
def shipped_model() -> Path:
    from coach.classifier import resolve_model_dir

    return resolve_model_dir()


def _model_dir(tmp_path: Path, shipped: Path, case: str) -> Path:
    d = tmp_path / case
    d.mkdir()
    good = json.loads((shipped / "config.json").read_text())
    cfg: Any = good
    heads: Any = "copy"
    if case == "no-config":
        cfg = None
    elif case == "no-heads":
        heads = None
    elif case == "not-json":
        cfg = "{oops"
    elif case == "deep":
        cfg = DEEP_JSON
    elif case == "list":
        cfg = "[1, 2]"
    elif case == "format":
        cfg = {**good, "format": "someone-else/2"}
    elif case == "huge-dim":
        cfg = {**good, "heads": {**good["heads"], "dim": 10 ** 12}}
    elif case == "nan":
        cfg = json.dumps(good).replace('"temperature": {"escalation": ', '"temperature": {"escalation": NaN, "x": ')
    elif case == "heads-garbage":
        heads = b"this is not safetensors"
    elif case == "heads-shape":
        cfg = {**good, "heads": {**good["heads"], "hidden": 16}}
    elif case == "config-fifo":
        cfg = "fifo"
    elif case == "heads-fifo":
        heads = "fifo"
    if cfg == "fifo":
        os.mkfifo(d / "config.json")
    elif cfg is not None:
        (d / "config.json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    if good.get("adapter") and case != "adapter-missing":
        shutil.copytree(shipped / good["adapter"], d / good["adapter"])
        if case == "adapter-garbage":
            (d / good["adapter"] / "adapter_model.safetensors").write_bytes(b"not weights")
    if case == "adapter-path":
        (d / "config.json").write_text(json.dumps({**good, "adapter": "../elsewhere"}))
    if heads == "copy":
        (d / "heads.safetensors").write_bytes((shipped / "heads.safetensors").read_bytes())
    elif heads == "fifo":
        os.mkfifo(d / "heads.safetensors")
    elif heads is not None:
        (d / "heads.safetensors").write_bytes(heads)
    return d


@pytest.mark.parametrize("case, phrase", [
    ("no-config", "has no config.json"),
    ("no-heads", "has no heads.safetensors"),
    ("not-json", "is not valid JSON (line 1, column 2"),
    ("deep", "nested deeper than"),
    ("list", "must hold a JSON object"),
    ("format", "not a coach classifier folder"),
    ("huge-dim", "heads.dim must be an integer in [1, 65536]"),
    ("nan", "temperature.escalation is NaN"),
    ("heads-garbage", "cannot read head weights"),
    ("heads-shape", "matching config.json"),
    ("config-fifo", "FIFO"),
    ("heads-fifo", "FIFO"),
    ("adapter-missing", "adapter_config.json is missing"),
    ("adapter-garbage", "cannot read LoRA adapter"),
    ("adapter-path", "must be a folder name inside the model folder"),
])
def test_bad_model_folder(tmp_path, shipped_model, case, phrase):
    from coach.classifier import open_model

    d = _model_dir(tmp_path, shipped_model, case)
    expect(ModelError, phrase, lambda: open_model(d))


def test_model_folder_that_is_a_file(tmp_path):
    from coach.classifier import open_model

    f = tmp_path / "model"
    f.write_text("x")
    expect(ModelError, "is not a folder", lambda: open_model(f))


# --------------------------------------------------------------------------- Vosk downloads


@pytest.fixture
def http_dir(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any, **kwargs: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


LAYOUT = ("am/final.mdl", "conf/model.conf", "conf/mfcc.conf", "graph/HCLr.fst", "graph/Gr.fst",
          "graph/disambig_tid.int")


def model_zip(name: str, big: int = MIN_BIG_FILE, extra: Callable[[zipfile.ZipFile], None] | None = None) -> bytes:
    """A zip with the Vosk layout; ``big`` bytes in each of the files that must be large."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in LAYOUT:
            body = os.urandom(big) if f.endswith((".mdl", ".fst")) else f"# {f}\n".encode()
            zf.writestr(f"{name}/{f}", body)
        if extra:
            extra(zf)
    return buf.getvalue()


def serve(root: Path, name: str, payload: bytes, listed: dict | None = None) -> dict[str, VoskModelInfo]:
    (root / f"{name}.zip").write_bytes(payload)
    if listed is not None:
        (root / "model-list.json").write_text(json.dumps([listed]))
    return {name: VoskModelInfo(name, f"https://alphacephei.com/vosk/models/{name}.zip", 1, "xx")}


def test_placeholder_model_folder_is_not_a_model(tmp_path):
    for f in LAYOUT:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("placeholder\n")
    problems = model_problems(tmp_path)
    assert any("am/final.mdl is only 12 bytes" in p for p in problems), problems
    assert any("graph/HCLr.fst" in p for p in problems)


def test_real_korean_model_is_still_valid():
    from stt_helpers import ko_model_path

    assert model_problems(ko_model_path()) == []


def _symlink(zf: zipfile.ZipFile) -> None:
    info = zipfile.ZipInfo("vosk-model-x-0.1/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, "/etc/passwd")


def _bomb(zf: zipfile.ZipFile) -> None:
    zf.writestr("vosk-model-x-0.1/bomb.bin", bytes(16 << 20))  # 16 MB of zeros: ~16 KB deflated


def _many_medium(zf: zipfile.ZipFile) -> None:
    for i in range(30):  # 30 x 1,000,000 zero bytes: each under the ratio check's 1 MB, 30 MB in all
        zf.writestr(f"vosk-model-x-0.1/pad{i}.bin", bytes(1_000_000))


def _slip(zf: zipfile.ZipFile) -> None:
    zf.writestr("../evil.txt", "x")


def _many(zf: zipfile.ZipFile) -> None:
    for i in range(20_001):
        zf.writestr(f"vosk-model-x-0.1/e/{i}", b"")


@pytest.mark.parametrize("make, phrase", [
    (lambda: model_zip("vosk-model-x-0.1", big=20), "placeholder or truncated file"),
    (lambda: model_zip("vosk-model-x-0.1", extra=_symlink), "contains a symlink"),
    (lambda: model_zip("vosk-model-x-0.1", extra=_bomb), "inflates"),
    (lambda: model_zip("vosk-model-x-0.1", extra=_many_medium), "would unpack to"),
    (lambda: model_zip("vosk-model-x-0.1", extra=_slip), "unsafe path"),
    (lambda: model_zip("vosk-model-x-0.1", extra=_many), "members (the limit is 20000)"),
    (lambda: b"PK\x03\x04 not really a zip", "not a zip file"),
])
def test_bad_model_zip_is_refused_and_leaves_nothing(tmp_path, http_dir, make, phrase):
    root, url = http_dir
    catalog = serve(root, "vosk-model-x-0.1", make())
    dest = tmp_path / "models"
    expect(ModelError, phrase, lambda: download_model("vosk-model-x-0.1", dest, base_url=url, catalog=catalog))
    assert list(dest.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_header_that_understates_a_member_cannot_pass_the_limit(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", bytes(4 << 20))
    with zipfile.ZipFile(buf) as zf:
        zf.infolist()[0].file_size = 1000  # the header lies: 1000 bytes declared, 4 MB inside
        with pytest.raises((ModelError, zipfile.BadZipFile)):
            _safe_extract(zf, tmp_path, limit=2 << 20)
    assert not (tmp_path / "big.bin").exists() or (tmp_path / "big.bin").stat().st_size <= 1000


def test_download_checked_against_the_model_list(tmp_path, http_dir):
    root, url = http_dir
    name = "vosk-model-x-0.1"
    payload = model_zip(name)
    good = {"name": name, "size": len(payload), "md5": hashlib.md5(payload).hexdigest(), "lang": "xx"}
    catalog = serve(root, name, payload, listed={**good, "md5": "0" * 32})
    expect(ModelError, "does not match the official model list",
           lambda: download_model(name, tmp_path / "a", base_url=url, catalog=catalog))
    assert list((tmp_path / "a").iterdir()) == []
    serve(root, name, payload, listed=good)
    notes: list[str] = []
    path = download_model(name, tmp_path / "b", base_url=url, catalog=catalog, report=notes.append)
    assert model_problems(path) == []
    assert notes == [f"verified {name} against the official model list's size and MD5"]


def test_download_without_a_model_list_says_so(tmp_path, http_dir):
    root, url = http_dir
    name = "vosk-model-x-0.1"
    catalog = serve(root, name, model_zip(name))
    notes: list[str] = []
    download_model(name, tmp_path / "m", base_url=url, catalog=catalog, report=notes.append)
    assert len(notes) == 1 and "model list could not be fetched (HTTP 404)" in notes[0]
    assert "download size" in notes[0] and "CRCs" in notes[0]


def test_download_into_a_file_is_one_line(tmp_path):
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    expect(ModelError, "exists and is not a folder",
           lambda: download_model("vosk-model-small-en-us-0.15", f, base_url="http://127.0.0.1:9"))
    assert_cli_error(coach("models", "download", "vosk-model-small-en-us-0.15", "--dir", str(f)),
                     "exists and is not a folder", "--dir")


# --------------------------------------------------------------------------- classify


def test_classify_reader_names_the_bad_line():
    from coach.cli.research import _read_inputs

    def first_two_then(bad: bytes) -> str:
        items = []
        with pytest.raises(DataError) as ei:
            for item in _read_inputs(io.BytesIO(b"one\ntwo\n" + bad + b"\nfour\n")):
                items.append(item["text"])
        assert items == ["one", "two"]
        assert "\n" not in str(ei.value)
        return str(ei.value)

    assert "input line 3 is not UTF-8 (byte 0xff)" in first_two_then(b"\xff\xfe")
    assert 'input line 3: JSON object without a "text" field' in first_two_then(b'{"id": 3}')
    assert '"text" must be a string' in first_two_then(b'{"text": {"a": 1}}')
    assert "input line 3" in first_two_then(b'{"text": "x", "v": NaN}')
    assert "input line 3: JSON nested too deeply" in first_two_then(b'{"text": "x", "v": ' + DEEP_JSON.encode() + b"}")
    assert '"context" must be a string' in first_two_then(b'{"text": "x", "context": ["a"]}')
    # a BOM on the first line is dropped; a '{' line that is not JSON stays plain text
    got = [i["text"] for i in _read_inputs(io.BytesIO(b"\xef\xbb\xbfhello\n{not json\n"))]
    assert got == ["hello", "{not json"]


def test_classify_streams_good_lines_before_the_error(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text('you are a useless idiot\nthanks so much\n{"id": 3}\nnever scored\n')
    proc = coach("classify", str(f))
    assert_cli_error(proc, "input line 3", '"text"')
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in out] == ["you are a useless idiot", "thanks so much"]


def test_classify_into_head_ends_quietly(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("".join(f"utterance number {i}\n" for i in range(3000)))
    cmd = f"{sys.executable} -m coach.cli classify {f} --batch-size 8 | head -1"
    proc = subprocess.run(["bash", "-c", cmd], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["text"] == "utterance number 0"
