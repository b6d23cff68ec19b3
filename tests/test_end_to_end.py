"""Whole calls through the real engines and the shipped classifier (the issue's 'done when').

Slow-ish (PocketSphinx decodes every call), but these are the product's promises.
"""
from __future__ import annotations

import json

import pytest

from coach.audio import load_call
from coach.classifier import load_classifier
from coach.events import Prompt, ScoredUtterance, Speaker
from coach.pipeline import Pipeline, Scorer
from coach.playbook import load_playbook
from coach.stt import SttOptions, open_engine
from coach.transcript import load_transcript

from conftest import EXAMPLES

SEVERE = {"set_boundary", "call_security"}


@pytest.fixture(scope="module")
def engine():
    return open_engine(SttOptions(engine="pocketsphinx", partials=False))


@pytest.fixture(scope="module")
def scorer():
    return Scorer(load_classifier(), load_playbook().min_word_conf)


def replay(scorer, *, engine=None, call=None, utterances=None):
    events = []
    pipe = Pipeline(scorer=scorer, playbook=load_playbook(), sink=events.append, engine=engine)
    pipe.run_audio(call) if call is not None else pipe.run_transcript(utterances)
    opened = [e for e in events if isinstance(e, Prompt) and e.opened]
    utts = [e for e in events if isinstance(e, ScoredUtterance)]
    return events, opened, utts


def replay_example(name, source, engine, scorer):
    """Replay examples/NAME.wav through PocketSphinx, or its script NAME.json as a transcript."""
    if source == "audio":
        return replay(scorer, engine=engine, call=load_call(EXAMPLES / f"{name}.wav", sample_rate=engine.sample_rate))
    return replay(scorer, utterances=load_transcript(EXAMPLES / f"{name}.json"))


def upset_window(events):
    """Call times at which the customer's trajectory state was frustrated or worse."""
    from coach.events import Level, TrajectoryState
    return [e.t for e in events if isinstance(e, TrajectoryState) and e.speaker is Speaker.CUSTOMER
            and e.state >= Level.FRUSTRATED]


@pytest.mark.parametrize("source", ["transcript", "audio"])
def test_escalating_call_prompts_apology_and_paraphrase_while_upset(engine, scorer, source):
    events, opened, _ = replay_example("escalating", source, engine, scorer)
    upset = upset_window(events)
    assert upset, "the customer never became upset"
    got = {p.prompt: p.t for p in opened}
    for needed in ("apologize", "paraphrase"):
        assert needed in got, f"{needed} not opened; opened: {sorted(got)}"
        assert got[needed] in upset, f"{needed} opened at {got[needed]} outside the upset stretch"
    assert not SEVERE & set(got)


@pytest.mark.parametrize("source", ["transcript", "audio"])
def test_abusive_call_sets_boundary_and_calls_security(engine, scorer, source):
    _, opened, _ = replay_example("abusive", source, engine, scorer)
    got = {p.prompt for p in opened}
    assert {"set_boundary", "call_security"} <= got, sorted(got)


@pytest.mark.parametrize("source", ["transcript", "audio"])
def test_calm_call_stays_quiet(engine, scorer, source):
    _, opened, utts = replay_example("calm", source, engine, scorer)
    assert {u.utterance.speaker for u in utts} == {Speaker.AGENT, Speaker.CUSTOMER}
    got = {p.prompt for p in opened}
    assert not got & {"apologize", "set_boundary", "call_security"}, sorted(got)


def test_real_8khz_contact_centre_call(engine, scorer, shared_data):
    d = shared_data / "audio" / "contact_center"
    call = load_call(d / "Auto_Repairs_40_UTC_agent.wav", d / "Auto_Repairs_40_UTC_caller.wav",
                     sample_rate=engine.sample_rate)
    assert call.source_rate == 8000
    _, opened, utts = replay(scorer, engine=engine, call=call)
    speakers = {u.utterance.speaker for u in utts}
    assert speakers == {Speaker.AGENT, Speaker.CUSTOMER}
    assert len(utts) >= 20
    # An ordinary, civil call misrecognised by a wideband model must not invent abuse or threats.
    assert not SEVERE & {p.prompt for p in opened}


def test_sample_scripts_label_their_emotions():
    """The committed sample transcripts carry their intended emotions (the test ground truth)."""
    for name in ("calm", "escalating", "abusive"):
        doc = json.loads((EXAMPLES / f"{name}.json").read_text())
        emotions = {s.get("emotion") for s in doc["segments"] if s["speaker"] == "customer"}
        assert emotions - {None}
