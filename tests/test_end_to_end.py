"""Whole calls through the real engines and the shipped classifier (the issue's 'done when').

Slow-ish (PocketSphinx decodes every call), but these are the product's promises. Every
call goes in the one way the product takes it: :meth:`Pipeline.run` on a source.
"""
from __future__ import annotations

import pytest
import soundfile as sf

from coach.classifier import load_classifier
from coach.events import CallEnd, Level, Prompt, ScoredUtterance, Speaker, TrajectoryState
from coach.text import trusted_text
from coach.pipeline import Pipeline, Scorer
from coach.playbook import load_playbook
from coach.sources import FileSource, TranscriptSource, TwoFileSource
from coach.stt import SttOptions, open_engine

from conftest import example

SEVERE = {"set_boundary", "call_security"}
EXCERPT_S = 60.0  # of the real contact-centre call: enough for both sides to talk for a while


@pytest.fixture(scope="module")
def engine():
    return open_engine(SttOptions(engine="pocketsphinx", partials=False))


@pytest.fixture(scope="module")
def scorer():
    return Scorer(load_classifier(), load_playbook().min_word_conf)


def event_time(ev) -> float:
    return ev.utterance.end if isinstance(ev, ScoredUtterance) else ev.t


def replay(scorer, source, engine=None):
    """Run ``source`` through the pipeline; (all events, prompts opened, scored utterances)."""
    events = []
    pipe = Pipeline(scorer=scorer, playbook=load_playbook(), sink=events.append, engine=engine)
    pipe.run(source)
    opened = [e for e in events if isinstance(e, Prompt) and e.opened]
    utts = [e for e in events if isinstance(e, ScoredUtterance)]
    return events, opened, utts


def replay_example(name, kind, engine, scorer):
    """Replay sample call NAME: its WAV through PocketSphinx, or its script NAME.json as a transcript."""
    if kind == "audio":
        return replay(scorer, FileSource(example(f"{name}.wav"), sample_rate=engine.sample_rate), engine)
    return replay(scorer, TranscriptSource(example(f"{name}.json")))


def upset_window(events):
    """Call times at which the customer's trajectory state was frustrated or worse."""
    return [e.t for e in events if isinstance(e, TrajectoryState) and e.speaker is Speaker.CUSTOMER
            and e.state >= Level.FRUSTRATED]


@pytest.mark.parametrize("kind", ["transcript", "audio"])
def test_escalating_call_prompts_apology_and_paraphrase_while_upset(engine, scorer, kind):
    events, opened, _ = replay_example("escalating", kind, engine, scorer)
    upset = upset_window(events)
    assert upset, "the customer never became upset"
    got = {p.prompt: p.t for p in opened}
    for needed in ("apologize", "paraphrase"):
        assert needed in got, f"{needed} not opened; opened: {sorted(got)}"
        assert got[needed] in upset, f"{needed} opened at {got[needed]} outside the upset stretch"
    assert not SEVERE & set(got)


@pytest.mark.parametrize("kind", ["transcript", "audio"])
def test_abusive_call_sets_boundary_and_calls_security(engine, scorer, kind):
    _, opened, _ = replay_example("abusive", kind, engine, scorer)
    got = {p.prompt for p in opened}
    assert {"set_boundary", "call_security"} <= got, sorted(got)


@pytest.mark.parametrize("kind", ["transcript", "audio"])
def test_calm_call_stays_quiet(engine, scorer, kind):
    _, opened, utts = replay_example("calm", kind, engine, scorer)
    assert {u.utterance.speaker for u in utts} == {Speaker.AGENT, Speaker.CUSTOMER}
    got = {p.prompt for p in opened}
    assert not got & {"apologize", "set_boundary", "call_security"}, sorted(got)


def test_real_8khz_contact_centre_call(engine, scorer, shared_data, tmp_path):
    """The first minute of a real, civil 8 kHz call recorded as one file per speaker.

    Misrecognised narrowband audio must not invent abuse or threats, both sides must be
    heard, and the events must come out in call order, ending at the excerpt's end.
    """
    d = shared_data / "audio" / "contact_center"
    parts = []
    for side in ("agent", "caller"):
        audio, rate = sf.read(d / f"Auto_Repairs_40_UTC_{side}.wav", dtype="int16",
                              frames=int(EXCERPT_S * 8000))
        assert rate == 8000
        parts.append(tmp_path / f"{side}.wav")
        sf.write(parts[-1], audio, rate, subtype="PCM_16")
    events, opened, utts = replay(scorer, TwoFileSource(*parts, sample_rate=engine.sample_rate), engine)

    min_conf = load_playbook().min_word_conf
    per_speaker = {s: [u for u in utts if u.utterance.speaker is s] for s in Speaker}
    assert len(per_speaker[Speaker.AGENT]) >= 2 and len(per_speaker[Speaker.CUSTOMER]) >= 3, \
        {s.value: len(v) for s, v in per_speaker.items()}
    for u in utts:
        assert 0.0 <= u.utterance.start < u.utterance.end <= EXCERPT_S + 0.05
    # Narrowband audio is recognised with low confidence, so the coach trusts few words:
    # a customer utterance is classified exactly when enough confidently heard content
    # words remain (coach.text.trusted_text), and the agent is never classified.
    assert sum(u.utterance.confidence for u in utts) / len(utts) < 0.45
    min_content = load_playbook().min_content_words
    for u in per_speaker[Speaker.CUSTOMER]:
        assert (u.scores is None) == (trusted_text(u.utterance, min_conf, min_content) is None), u.utterance.text
    # Most of this real call's customer words are misheard: few turns reach the classifier.
    scored = sum(u.scores is not None for u in per_speaker[Speaker.CUSTOMER])
    assert scored <= len(per_speaker[Speaker.CUSTOMER]) // 2
    assert all(u.scores is None for u in per_speaker[Speaker.AGENT])
    times = [event_time(e) for e in events]
    assert times == sorted(times), "events are not in call order"
    assert isinstance(events[-1], CallEnd) and sum(isinstance(e, CallEnd) for e in events) == 1
    assert events[-1].t == pytest.approx(EXCERPT_S, abs=0.2)
    # An ordinary, civil call misrecognised by a wideband model must not invent abuse or threats.
    assert not SEVERE & {p.prompt for p in opened}, sorted(p.prompt for p in opened)
