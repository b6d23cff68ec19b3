"""The hand-written hard negatives (tests/data/hard_negatives.yaml) stay calm with the
shipped classifier: recogniser fragments, service phrases, apologies and figurative
violence must not raise the levels the playbook acts on."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coach.classifier import load_classifier
from coach.events import Level

CASES = yaml.safe_load((Path(__file__).parent / "data" / "hard_negatives.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def clf():
    return load_classifier()


def test_the_set_is_not_empty() -> None:
    assert sum(len(v) for v in CASES.values()) >= 25


@pytest.mark.parametrize("text", CASES["calm"])
def test_fragments_and_service_phrases_read_calm(clf, text: str) -> None:
    s = clf.classify_one(text)
    assert s.level is Level.CALM, (text, s.escalation)
    assert s.at_least(Level.ANGRY) < 0.5, (text, s.escalation)


@pytest.mark.parametrize("text", CASES["not_angry"])
def test_apologies_are_not_angry(clf, text: str) -> None:
    s = clf.classify_one(text)
    assert s.level <= Level.FRUSTRATED, (text, s.escalation)


@pytest.mark.parametrize("text", CASES["not_threat"])
def test_figurative_violence_is_not_a_threat(clf, text: str) -> None:
    s = clf.classify_one(text)
    assert s.level is not Level.THREATENING, (text, s.escalation)
    assert s.escalation["threatening"] < clf.config.thresholds["threatening"], (text, s.escalation)


def test_real_anger_and_threats_still_register(clf) -> None:
    """The other side: hard negatives must not teach the model to ignore the real thing."""
    assert clf.classify_one("i will find you and hurt you").level is Level.THREATENING
    assert clf.classify_one("this is ridiculous i have called three times and nobody fixed it").level >= Level.FRUSTRATED
    assert clf.classify_one("you are a useless idiot").level >= Level.ABUSIVE
