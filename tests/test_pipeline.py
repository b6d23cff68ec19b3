"""Pipeline plumbing: call-time ordering across channels, pacing, shutdown, transcripts."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from coach.errors import TranscriptError
from coach.events import AudioChunk, CallEnd, Partial, Prompt, ScoredUtterance, Speaker, Utterance, Word
from coach.pipeline import Pipeline, ReplayOptions, Scorer, Speed
from coach.playbook import load_playbook
from coach.transcript import load_transcript, parse_transcript

from fakes import KeywordClassifier


class ScriptedRecognizer:
    """Emits a fixed utterance once the audio passes its end time; optionally slow."""

    def __init__(self, speaker, script, delay=0.0):
        self.speaker, self.script, self.delay = speaker, list(script), delay
        self.sample_rate = 16000
        self.fed = 0.0

    def accept(self, chunk: AudioChunk):
        time.sleep(self.delay)
        self.fed = chunk.t + chunk.duration
        out = []
        while self.script and self.script[0][1] <= self.fed:
            start, end, text = self.script.pop(0)
            ws = text.split()
            step = (end - start) / len(ws)
            words = tuple(Word(w, start + i * step, start + (i + 1) * step, 0.9) for i, w in enumerate(ws))
            out.append(Utterance(self.speaker, start, end, text, words, 0.9, loudness_db=-20.0))
        if out == [] and self.fed % 1.0 < 0.1:
            out.append(Partial(self.speaker, self.fed, "..."))
        return out

    def finish(self):
        rest = [Utterance(self.speaker, s, e, t) for s, e, t in self.script]
        self.script = []
        return rest

    def reset(self):
        pass


class ScriptedEngine:
    name = "scripted"
    sample_rate = 16000
    description = "scripted test engine"

    def __init__(self, scripts, delays):
        self.scripts, self.delays = scripts, delays

    def recognizer(self, speaker):
        return ScriptedRecognizer(speaker, self.scripts[speaker], self.delays[speaker])


class Call:
    def __init__(self, seconds):
        n = int(seconds * 16000)
        self.agent = np.zeros(n, np.int16)
        self.customer = (np.sin(np.arange(n) / 5.0) * 3000).astype(np.int16)
        self.sample_rate = 16000
        self.duration = seconds


def test_channels_are_merged_in_call_time_order_even_if_one_recognizer_lags():
    scripts = {
        Speaker.AGENT: [(0.0, 1.0, "hello how can i help"), (4.2, 5.0, "i am so sorry")],
        Speaker.CUSTOMER: [(1.2, 4.0, "this is ridiculous again"), (5.2, 5.8, "thanks")],
    }
    events = []
    pipe = Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(), sink=events.append,
                    engine=ScriptedEngine(scripts, {Speaker.AGENT: 0.0, Speaker.CUSTOMER: 0.002}))
    summary = pipe.run_audio(Call(6.0))
    utts = [e.utterance for e in events if isinstance(e, ScoredUtterance)]
    assert [u.text for u in utts] == ["hello how can i help", "this is ridiculous again", "i am so sorry", "thanks"]
    assert all(isinstance(e, ScoredUtterance) and e.scores is None for e in events
               if isinstance(e, ScoredUtterance) and e.utterance.speaker is Speaker.AGENT)
    assert isinstance(events[-1], CallEnd)
    assert summary.utterances == {"agent": 2, "customer": 2}
    prompts = [(e.prompt, e.opened, e.t) for e in events if isinstance(e, Prompt)]
    assert ("apologize", True, 4.0) in prompts and ("apologize", False, 5.0) in prompts


def test_realtime_pacing_and_stop_do_not_hang():
    scripts = {Speaker.AGENT: [(0.0, 1.0, "hello")], Speaker.CUSTOMER: [(30.0, 31.0, "late")]}
    events = []
    pipe = Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(), sink=events.append,
                    engine=ScriptedEngine(scripts, {Speaker.AGENT: 0.0, Speaker.CUSTOMER: 0.0}),
                    options=ReplayOptions(speed=Speed.REALTIME, rate=1.0))
    threading.Timer(1.5, pipe.stop).start()
    t0 = time.monotonic()
    summary = pipe.run_audio(Call(60.0))
    assert time.monotonic() - t0 < 4.0  # a 60 s call paced in real time, stopped after 1.5 s
    assert summary.stopped
    texts = [e.utterance.text for e in events if isinstance(e, ScoredUtterance)]
    assert texts == ["hello"]  # what was recognised before the stop is kept


def test_recognizer_errors_surface_to_the_caller():
    class Boom(ScriptedEngine):
        def recognizer(self, speaker):
            rec = super().recognizer(speaker)
            rec.accept = lambda chunk: (_ for _ in ()).throw(RuntimeError("decoder exploded"))
            return rec

    pipe = Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(), sink=lambda e: None,
                    engine=Boom({s: [] for s in Speaker}, {s: 0.0 for s in Speaker}))
    with pytest.raises(RuntimeError, match="decoder exploded"):
        pipe.run_audio(Call(2.0))


def test_transcript_replay_runs_same_coach(tmp_path):
    doc = {"segments": [
        {"speaker": "customer", "start": 0.5, "end": 6.0, "text": "you stupid idiot", "words": [
            {"word": "you", "start": 0.5, "end": 0.8}, {"word": "stupid", "start": 0.9, "end": 1.4},
            {"word": "idiot", "start": 1.5, "end": 2.0}]},
        {"speaker": "agent", "start": 6.5, "end": 9.0, "text": "i want to help you but let's keep this respectful"},
    ]}
    p = tmp_path / "call.json"
    p.write_text(json.dumps(doc))
    events = []
    Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(), sink=events.append).run_transcript(
        load_transcript(p))
    prompts = [(e.prompt, e.opened) for e in events if isinstance(e, Prompt)]
    assert ("set_boundary", True) in prompts and ("set_boundary", False) in prompts


@pytest.mark.parametrize("doc, needle", [
    ({"segs": []}, "no 'segments' list"),
    ({"segments": [{"speaker": "boss", "start": 0, "end": 1, "text": "x"}]}, "'speaker' must be"),
    ({"segments": [{"speaker": "agent", "start": 2, "end": 1, "text": "x"}]}, "before 'start'"),
    ({"segments": [{"speaker": "agent", "start": "a", "end": 1, "text": "x"}]}, "'start' must be"),
    ({"segments": [{"speaker": "agent", "start": 0, "end": 1}]}, "'text' must be"),
    ({"segments": [{"speaker": "agent", "start": 0, "end": 1, "text": "x", "words": [{"start": 0}]}]}, "'word' string"),
])
def test_malformed_transcript_errors(doc, needle):
    with pytest.raises(TranscriptError) as e:
        parse_transcript(doc, "t.json")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_transcript_not_json(tmp_path):
    p = tmp_path / "t.json"
    p.write_text('{"segments": [}')
    with pytest.raises(TranscriptError, match=r"not valid JSON \(line 1"):
        load_transcript(p)
