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
from coach.sources import ArraySource, UtteranceListSource
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


# Plumbing tests feed synthetic tones and silence, which the voice gate rightly drops.
PLUMBING = ReplayOptions(voice=False)


def Call(seconds):
    n = int(seconds * 16000)
    return ArraySource(np.zeros(n, np.int16), (np.sin(np.arange(n) / 5.0) * 3000).astype(np.int16), 16000)


def test_channels_are_merged_in_call_time_order_even_if_one_recognizer_lags():
    scripts = {
        Speaker.AGENT: [(0.0, 1.0, "hello how can i help"), (4.2, 5.0, "i am so sorry")],
        Speaker.CUSTOMER: [(1.2, 4.0, "this is ridiculous, i am furious"), (5.2, 5.8, "thanks")],
    }
    events = []
    pipe = Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(), sink=events.append,
                    engine=ScriptedEngine(scripts, {Speaker.AGENT: 0.0, Speaker.CUSTOMER: 0.002}), options=PLUMBING)
    summary = pipe.run(Call(6.0))
    utts = [e.utterance for e in events if isinstance(e, ScoredUtterance)]
    assert [u.text for u in utts] == ["hello how can i help", "this is ridiculous, i am furious", "i am so sorry", "thanks"]
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
                    options=ReplayOptions(speed=Speed.REALTIME, rate=1.0, voice=False))
    threading.Timer(1.5, pipe.stop).start()
    t0 = time.monotonic()
    summary = pipe.run(Call(60.0))
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
                    engine=Boom({s: [] for s in Speaker}, {s: 0.0 for s in Speaker}), options=PLUMBING)
    with pytest.raises(RuntimeError, match="decoder exploded"):
        pipe.run(Call(2.0))


def test_transcript_replay_runs_same_coach(tmp_path):
    doc = {"segments": [
        {"speaker": "customer", "start": 0.5, "end": 2.0, "text": "you stupid idiot", "words": [
            {"word": "you", "start": 0.5, "end": 0.8}, {"word": "stupid", "start": 0.9, "end": 1.4},
            {"word": "idiot", "start": 1.5, "end": 2.0}]},
        {"speaker": "customer", "start": 3.0, "end": 6.0, "text": "you are a useless moron"},
        {"speaker": "agent", "start": 6.5, "end": 9.0, "text": "i want to help you but let's keep this respectful"},
    ]}
    p = tmp_path / "call.json"
    p.write_text(json.dumps(doc))
    events = []
    Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(), sink=events.append).run(
        UtteranceListSource(load_transcript(p)))
    prompts = [(e.prompt, e.opened, e.t) for e in events if isinstance(e, Prompt)]
    # Safety prompts need corroboration: the second abusive turn (6.0 s) opens it, not the first.
    assert ("set_boundary", True, 6.0) in prompts and ("set_boundary", False, 9.0) in prompts


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


# ---------------------------------------------------------------- the call clock


def _threat_then_silence_playbook(tmp_path, max_open_s=40):
    """The shipped playbook with call_security timing out after ``max_open_s``."""
    import yaml
    from coach import resources
    raw = yaml.safe_load(resources.locate(resources.PLAYBOOK).read_text())
    for r in raw["prompts"]:
        if r["id"] == "call_security":
            r["max_open_s"] = max_open_s
    p = tmp_path / "pb.yaml"
    p.write_text(yaml.safe_dump(raw))
    return load_playbook(p)


def test_prompt_times_out_at_max_open_s_not_at_the_next_utterance(tmp_path):
    """A threat at 5 s and silence until 290 s: the prompt closes at 5 + 40 s."""
    utts = [Utterance(Speaker.CUSTOMER, 1.0, 3.0, "i will come and kill you", (), 0.95),
            Utterance(Speaker.CUSTOMER, 3.5, 5.0, "i will come and kill you", (), 0.95),  # corroborated
            Utterance(Speaker.AGENT, 288.0, 290.0, "thank you for calling", (), 0.95)]
    events = []
    Pipeline(scorer=Scorer(KeywordClassifier()), playbook=_threat_then_silence_playbook(tmp_path),
             sink=events.append).run(UtteranceListSource(utts))
    opened = [e for e in events if isinstance(e, Prompt) and e.opened and e.prompt == "call_security"]
    closed = [e for e in events if isinstance(e, Prompt) and not e.opened and e.prompt == "call_security"]
    assert opened and opened[0].t == 5.0
    assert closed and closed[0].reason == "timed out" and closed[0].t == pytest.approx(45.0, abs=0.5)
    assert isinstance(events[-1], CallEnd) and events[-1].t == 290.0


def test_paced_transcript_closes_the_prompt_on_time_in_wall_clock_too(tmp_path):
    """At 20x, the 3 s timeout after a threat at 1 s must be seen ~0.2 s of wall time later,
    not when the next utterance arrives (30 s of call = 1.5 s of wall)."""
    utts = [Utterance(Speaker.CUSTOMER, 0.2, 0.6, "i will come and kill you", (), 0.95),
            Utterance(Speaker.CUSTOMER, 0.7, 1.0, "i will come and kill you", (), 0.95),
            Utterance(Speaker.AGENT, 29.0, 31.0, "thank you for calling", (), 0.95)]
    seen = []
    t0 = time.monotonic()
    sink = lambda e: seen.append((e, time.monotonic() - t0))  # noqa: E731
    Pipeline(scorer=Scorer(KeywordClassifier()), playbook=_threat_then_silence_playbook(tmp_path, 3),
             sink=sink, options=ReplayOptions(speed=Speed.REALTIME, rate=20.0)).run(UtteranceListSource(utts))
    close = next((e, w) for e, w in seen if isinstance(e, Prompt) and not e.opened and e.prompt == "call_security")
    assert close[0].t == pytest.approx(4.0, abs=0.5)
    assert close[1] < 0.8  # wall seconds: long before the agent's turn at 1.5 s


def test_events_come_out_in_call_order_and_call_end_has_no_speaker():
    scripts = {
        Speaker.AGENT: [(0.0, 1.0, "hello how can i help"), (2.0, 9.0, "let me explain the long policy here")],
        Speaker.CUSTOMER: [(1.2, 4.0, "this is ridiculous, i am furious"), (4.5, 5.8, "thanks")],
    }
    events = []
    Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(), sink=events.append,
             engine=ScriptedEngine(scripts, {Speaker.AGENT: 0.003, Speaker.CUSTOMER: 0.0}),
             options=ReplayOptions(partials=True, voice=False)).run(Call(10.0))
    times = [getattr(e, "t") for e in events]
    assert times == sorted(times)
    assert any(isinstance(e, Partial) for e in events)  # partials go through the same merge
    assert isinstance(events[-1], CallEnd) and not hasattr(events[-1], "speaker")


def test_stop_ends_at_the_time_reached_and_closes_prompts():
    scripts = {Speaker.AGENT: [], Speaker.CUSTOMER: [(0.5, 1.0, "you stupid idiot"), (1.1, 1.4, "useless moron")]}
    events = []
    pipe = Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(), sink=events.append,
                    engine=ScriptedEngine(scripts, {Speaker.AGENT: 0.0, Speaker.CUSTOMER: 0.0}),
                    options=ReplayOptions(speed=Speed.REALTIME, rate=1.0, voice=False))
    threading.Timer(2.0, pipe.stop).start()
    t0 = time.monotonic()
    summary = pipe.run(Call(245.0))
    assert time.monotonic() - t0 < 4.0
    end = events[-1]
    assert isinstance(end, CallEnd) and 1.5 <= end.t <= 3.5  # not the file's 245 s
    assert summary.stopped and summary.duration == end.t
    opened = {e.prompt for e in events if isinstance(e, Prompt) and e.opened}
    closed = {e.prompt for e in events if isinstance(e, Prompt) and not e.opened}
    assert opened and opened == closed  # nothing is left open


def test_an_error_still_closes_prompts_and_ends_the_call():
    class Boom(ScriptedEngine):
        def recognizer(self, speaker):
            rec = super().recognizer(speaker)
            real = rec.accept

            def accept(chunk):
                if chunk.t >= 3.0:
                    raise RuntimeError("decoder exploded")
                return real(chunk)
            rec.accept = accept
            return rec

    events = []
    scripts = {Speaker.AGENT: [], Speaker.CUSTOMER: [(0.5, 1.0, "you stupid idiot")]}
    with pytest.raises(RuntimeError, match="decoder exploded"):
        Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(), sink=events.append,
                 engine=Boom(scripts, {s: 0.0 for s in Speaker}), options=PLUMBING).run(Call(10.0))
    assert isinstance(events[-1], CallEnd) and 2.5 <= events[-1].t <= 3.5
    opened = {e.prompt for e in events if isinstance(e, Prompt) and e.opened}
    assert opened == {e.prompt for e in events if isinstance(e, Prompt) and not e.opened}


# ---------------------------------------------------------------- dead air


class Deaf:
    """An engine whose recognizers hear no words: only voice activity is left."""

    name, sample_rate, description = "deaf", 16000, "hears nothing"

    def recognizer(self, speaker):
        return type("R", (), {"accept": lambda s, c: [], "finish": lambda s: [], "reset": lambda s: None})()


def _dead_air(events):
    return [(e.opened, round(e.t, 1)) for e in events if isinstance(e, Prompt) and e.prompt == "dead_air"]


def test_dead_air_opens_on_the_call_clock_and_closes_when_someone_speaks():
    """12 s of silence after the agent's turn at 10 s: dead_air opens at 22 s (a clock
    tick, no utterance needed) and closes as the customer starts speaking again at 30 s."""
    utts = [Utterance(Speaker.AGENT, 8.0, 10.0, "let me check that for you", (), 0.95),
            Utterance(Speaker.CUSTOMER, 30.0, 31.0, "hello are you there", (), 0.95)]
    events = []
    Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(None),
             sink=events.append).run(UtteranceListSource(utts))
    assert _dead_air(events) == [(True, 22.0), (False, 30.0)]


def test_a_long_turn_is_not_dead_air():
    """A 25 s customer turn after a short pause: someone is talking, so no dead_air,
    in fast and in paced replay."""
    utts = [Utterance(Speaker.AGENT, 1.0, 3.0, "how can i help", (), 0.95),
            Utterance(Speaker.CUSTOMER, 5.0, 30.0, "well it started last week when " * 8, (), 0.95)]
    for opts in (ReplayOptions(), ReplayOptions(speed=Speed.REALTIME, rate=50.0)):
        events = []
        Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(None),
                 sink=events.append, options=opts).run(UtteranceListSource(utts))
        assert _dead_air(events) == []


def test_dead_air_from_voice_activity_on_audio():
    """Audio: 2 s of line noise, speech-level noise on the customer channel for 3 s, then 16 s of quiet line
    noise, then speech again. No recognizer hears words (a silent engine), yet voice
    activity puts dead air at 2 + 3 + 12 s and its end where the sound comes back."""

    rng = np.random.default_rng(0)
    rate = 16000
    quiet = (rng.standard_normal(16 * rate) * 10).astype(np.int16)       # about -70 dBFS
    loud = (rng.standard_normal(3 * rate) * 3000).astype(np.int16)       # about -20 dBFS
    customer = np.concatenate([quiet[:2 * rate], loud, quiet, loud])
    agent = (rng.standard_normal(len(customer)) * 10).astype(np.int16)
    events = []
    Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(None), sink=events.append,
             engine=Deaf()).run(ArraySource(agent, customer, rate))
    got = _dead_air(events)
    assert [o for o, _ in got] == [True, False]
    assert got[0][1] == pytest.approx(17.0, abs=0.6) and got[1][1] == pytest.approx(21.0, abs=0.6)


def test_agent_talking_over_the_customer_is_seen_while_it_happens(tmp_path):
    """Voice activity on both channels: the customer talks from 2 s to 9 s, the agent
    cuts in at 4 s. With no words at all, overtalk reaches 1.5 s at about 5.5 s (a clock
    tick), long before either utterance could end; the customer starting over a talking
    agent is not counted."""
    import yaml

    raw = yaml.safe_load(resources_playbook().read_text())
    rule = next(r for r in raw["prompts"] if r["id"] == "talking_over")
    rule["open_when"] = {"agent_overtalk_s": 1.5}  # no customer state: nothing is recognised here
    raw["prompts"] = [rule]
    pb = tmp_path / "pb.yaml"
    pb.write_text(yaml.safe_dump(raw))
    rng = np.random.default_rng(1)
    rate = 16000

    def track(spans, n):
        x = (rng.standard_normal(n) * 10).astype(np.int16)
        for a, b in spans:
            x[int(a * rate):int(b * rate)] = (rng.standard_normal(int((b - a) * rate)) * 3000).astype(np.int16)
        return x

    n = 14 * rate
    for customer, agent, expect in (([(2, 9)], [(4, 8)], 5.5), ([(4, 9)], [(2, 8)], None)):
        events = []
        Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(pb), sink=events.append,
                 engine=Deaf()).run(ArraySource(track(agent, n), track(customer, n), rate))
        opened = [e.t for e in events if isinstance(e, Prompt) and e.opened and e.prompt == "talking_over"]
        if expect is None:
            assert opened == []
        else:
            assert len(opened) == 1 and opened[0] == pytest.approx(expect, abs=0.6)


def resources_playbook():
    from coach import resources
    return resources.locate(resources.PLAYBOOK)


def test_a_nested_short_turn_does_not_make_a_long_turn_dead_air():
    """Transcripts are released by end time: the agent's "uh-huh" (35-36 s) comes before
    the customer's long turn (10-40 s) that surrounds it. Nobody was silent after 9 s."""
    utts = [Utterance(Speaker.AGENT, 7.0, 9.0, "how can i help", (), 0.95),
            Utterance(Speaker.AGENT, 35.0, 36.0, "uh huh", (), 0.95),
            Utterance(Speaker.CUSTOMER, 10.0, 40.0, "well it started last week when " * 8, (), 0.95)]
    for opts in (ReplayOptions(), ReplayOptions(speed=Speed.REALTIME, rate=50.0)):
        events = []
        Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(None),
                 sink=events.append, options=opts).run(UtteranceListSource(utts))
        assert _dead_air(events) == []


def test_stopping_a_live_call_keeps_the_turn_being_spoken():
    """Ctrl-C on a live call: the source is closed first, so the recognizer finishes the
    turn it was still holding (it is in the events), then the call ends."""

    class LiveArray:
        kind, live, duration, description, warnings = "audio", True, None, "live test", ()
        speakers = (Speaker.AGENT, Speaker.CUSTOMER)
        sample_rate = 16000

        def __init__(self):
            self.closed = threading.Event()

        def open(self):
            pass

        def chunks(self, chunk_s=0.1):
            n = int(chunk_s * 16000)
            for k in range(20):  # 2 s of audio, then the device stays open until closed
                yield tuple(AudioChunk(s, k * chunk_s, np.zeros(n, np.int16), 16000) for s in self.speakers)
            self.closed.wait(10)

        def close(self):
            self.closed.set()

    class Holding(ScriptedRecognizer):
        def finish(self):  # the customer's turn is only complete when the stream ends
            return [Utterance(self.speaker, 0.5, 1.9, "i am still talking", (), 0.9)] if self.speaker is Speaker.CUSTOMER else []

    class Engine(ScriptedEngine):
        def recognizer(self, speaker):
            return Holding(speaker, [], 0.0)

    events = []
    p = Pipeline(scorer=Scorer(KeywordClassifier()), playbook=load_playbook(None), sink=events.append,
                 engine=Engine({}, {}), options=PLUMBING)
    src = LiveArray()
    threading.Timer(0.5, p.stop).start()
    t0 = time.monotonic()
    summary = p.run(src)
    assert time.monotonic() - t0 < 2.0 and summary.stopped
    said = [e.utterance.text for e in events if isinstance(e, ScoredUtterance)]
    assert said == ["i am still talking"] and isinstance(events[-1], CallEnd)


class ContextRecorder(KeywordClassifier):
    """A double of a model fine-tuned with the previous turn: records what it was given."""

    uses_context = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def classify(self, texts, contexts=None):
        self.seen += list(zip(texts, contexts or [""] * len(texts)))
        return super().classify(texts)


def _said(speaker, start, text, conf=0.9):
    ws = text.split()
    return Utterance(speaker, start, start + len(ws) * 0.4, text,
                     tuple(Word(w, start + i * 0.4, start + (i + 1) * 0.4, conf) for i, w in enumerate(ws)), conf)


def test_scorer_gives_a_context_model_the_turn_before() -> None:
    clf = ContextRecorder()
    scorer = Scorer(clf, min_word_conf=0.5, min_content=2)
    first = scorer.score([_said(Speaker.CUSTOMER, 0.0, "my card was charged twice")])
    batch = scorer.score([_said(Speaker.AGENT, 3.0, "let me check that for you"),
                          _said(Speaker.CUSTOMER, 6.0, "this is still not fixed again"),
                          _said(Speaker.AGENT, 9.0, "mumble mumble", conf=0.1),   # nothing heard confidently
                          _said(Speaker.CUSTOMER, 11.0, "why does this keep happening")])
    assert clf.seen == [("my card was charged twice", ""),
                        ("this is still not fixed again", "let me check that for you"),
                        ("why does this keep happening", "this is still not fixed again")]
    assert first[0][0].scores is not None and batch[1][0].scores.level.label == "frustrated"
    assert batch[0][0].scores is None and batch[0][1] is not None   # agent turns: embedded, never scored


def test_scorer_without_context_scores_the_shared_embedding() -> None:
    clf = ContextRecorder()
    clf.uses_context = False
    out = Scorer(clf).score([_said(Speaker.AGENT, 0.0, "how can i help"),
                             _said(Speaker.CUSTOMER, 2.0, "this is ridiculous")])
    assert clf.seen == [("this is ridiculous", "")]        # via classify_embeddings, no context
    assert out[1][0].scores.level.label == "angry"
