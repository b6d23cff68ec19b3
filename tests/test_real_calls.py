"""Real phone audio through the default offline engine: quiet on a civil call, still
coaching an upset one at telephone quality, never a safety prompt on harmless speech.

These are the real-calls issue's promises, on real recordings: the civil contact-centre
call (8 kHz, two files) as it is and band-passed like a phone line, a band-passed 8 kHz
copy of the escalating sample, and the acted "Say the word ..." clips.
"""
from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, resample_poly, sosfiltfilt

from coach.classifier import load_classifier
from coach.events import Prompt, ScoredUtterance, Speaker, TrajectoryState
from coach.pipeline import Pipeline, ReplayOptions, Scorer
from coach.playbook import load_playbook
from coach.sources import FileSource, TwoFileSource
from coach.stt import SttOptions, open_engine
from coach.workers import ProcessEngine

from conftest import example

QUIET_ON_CIVIL = {"apologize", "paraphrase", "let_them_finish", "set_boundary", "call_security", "end_or_escalate"}
SAFETY = {"call_security", "set_boundary", "end_or_escalate"}


@pytest.fixture(scope="module")
def engine():
    opts = SttOptions(engine="pocketsphinx", partials=False)
    return ProcessEngine(open_engine(opts), opts)  # what a replay on this 2-core machine uses


@pytest.fixture(scope="module")
def playbook():
    return load_playbook()


@pytest.fixture(scope="module")
def scorer(playbook):
    return Scorer(load_classifier(), playbook.min_word_conf)


def telephone(src, dst, *, rate_out=8000):
    """An 8 kHz copy band-passed to 300-3400 Hz, as a phone line delivers it."""
    data, rate = sf.read(str(src), dtype="float64", always_2d=True)
    g = np.gcd(int(rate), rate_out)
    y = resample_poly(data, rate_out // g, int(rate) // g, axis=0)
    sos = butter(6, [300, 3400], btype="bandpass", fs=rate_out, output="sos")
    y = sosfiltfilt(sos, y, axis=0)
    sf.write(str(dst), np.clip(y, -1, 1), rate_out, subtype="PCM_16")
    return dst


def replay(source, engine, playbook, scorer):
    events = []
    Pipeline(scorer=scorer, playbook=playbook, sink=events.append, engine=engine,
             options=ReplayOptions(partials=False)).run(source)
    return events


def opened(events):
    return {e.prompt for e in events if isinstance(e, Prompt) and e.opened}


@pytest.mark.parametrize("line", ["as recorded", "telephone band-pass"])
def test_the_civil_real_call_opens_no_de_escalation_or_safety_prompt(tmp_path, shared_data, engine, playbook,
                                                                     scorer, line):
    call = shared_data / "audio" / "contact_center"
    agent, caller = call / "Auto_Repairs_40_UTC_agent.wav", call / "Auto_Repairs_40_UTC_caller.wav"
    if line != "as recorded":
        agent, caller = telephone(agent, tmp_path / "agent.wav"), telephone(caller, tmp_path / "caller.wav")
    events = replay(TwoFileSource(agent, caller, sample_rate=engine.sample_rate), engine, playbook, scorer)
    utts = [e for e in events if isinstance(e, ScoredUtterance)]
    assert {u.utterance.speaker for u in utts} == {Speaker.AGENT, Speaker.CUSTOMER}
    assert not opened(events) & QUIET_ON_CIVIL, sorted(opened(events))
    # Every customer utterance that reached the coach was speech, with a measured voice.
    cust = [u.utterance for u in utts if u.utterance.speaker is Speaker.CUSTOMER]
    assert cust and all(u.voice is not None and u.voice.arousal is not None for u in cust)
    agent_states = [e for e in events if isinstance(e, TrajectoryState) and e.speaker is Speaker.AGENT]
    assert all(s.arousal is None for s in agent_states)  # no emotion is inferred on the agent


def test_a_telephone_copy_of_the_escalating_call_still_gets_an_apology_prompt(tmp_path, engine, playbook, scorer):
    phone = telephone(example("escalating.wav"), tmp_path / "escalating-8k.wav")
    events = replay(FileSource(phone, sample_rate=engine.sample_rate), engine, playbook, scorer)
    assert "apologize" in opened(events)
    assert not opened(events) & SAFETY


def test_no_say_the_word_clip_opens_a_safety_prompt(tmp_path, shared_data, playbook, scorer):
    """Acted 'Say the word ___' clips, angry ones included ("dip" was misheard as "dead",
    "hate" opened set_boundary): each clip is replayed as a customer-only call."""
    folder = shared_data / "audio" / "emotional_speech"
    with open(folder / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 200
    engine = open_engine(SttOptions(engine="pocketsphinx", partials=False))  # one channel: no process needed
    fired = {}
    for row in rows:
        events = replay(FileSource(folder / row["file"], mono_speaker="customer", sample_rate=engine.sample_rate),
                        engine, playbook, scorer)
        bad = opened(events) & SAFETY
        if bad:
            fired[row["file"]] = sorted(bad)
    assert not fired, fired
