"""The shipped classifier: loading, ordering, empty text, ranking of obvious cases, CLI."""
from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from coach import resources
from coach.classifier import Encoder, load_classifier, open_model, resolve_model_dir
from coach.cli import research as cli_research
from coach.errors import ModelError
from coach.events import LEVELS, SENTIMENTS, Level


@pytest.fixture(scope="module")
def clf():
    return load_classifier()


def test_load_is_cached(clf) -> None:
    assert load_classifier() is clf
    assert load_classifier(str(resolve_model_dir())) is clf
    assert load_classifier("escalation-minilm") is clf  # a bare name is looked up in the model folders


def test_shipped_model_is_found_from_any_folder(tmp_path: Path, monkeypatch) -> None:
    """No project or user copy: the heads come from the package, whatever the current folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COACH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("COACH_MODELS", raising=False)
    assert resolve_model_dir() == resources.packaged(resources.CLASSIFIER)
    assert resolve_model_dir("escalation-minilm") == resources.packaged(resources.CLASSIFIER)
    assert (resolve_model_dir() / "heads.safetensors").is_file()


def test_scores_shape_and_order(clf) -> None:
    texts = ["thanks that's great", "", "   ", "you are a useless idiot", "i will find you and hurt you"]
    scores = clf.classify(texts)
    assert len(scores) == len(texts)
    for s in scores:
        assert tuple(s.escalation) == LEVELS and tuple(s.sentiment) == SENTIMENTS
        assert sum(s.escalation.values()) == pytest.approx(1.0, abs=1e-5)
        assert sum(s.sentiment.values()) == pytest.approx(1.0, abs=1e-5)
    # empty / whitespace-only text: the calm/neutral prior, never an escalation
    assert scores[1].level is Level.CALM and scores[2].level is Level.CALM
    assert max(scores[1].sentiment, key=scores[1].sentiment.get) == "neutral"
    # batching does not change results or order
    one = [clf.classify([t])[0] for t in texts]
    for a, b in zip(scores, one):
        assert np.allclose(list(a.escalation.values()), list(b.escalation.values()), atol=1e-4)


def test_obvious_cases(clf) -> None:
    calm, abusive, threat, angry = clf.classify([
        "thanks that's great", "you are a useless idiot", "i will find you and hurt you",
        "this is ridiculous i am so angry with your company",
    ])
    assert calm.level is Level.CALM and calm.valence > 0.3
    assert abusive.level is Level.ABUSIVE
    assert threat.level is Level.THREATENING
    assert angry.at_least(Level.ANGRY) > calm.at_least(Level.ANGRY) + 0.4
    for s in (abusive, threat, angry):
        assert s.valence < 0
    assert abusive.at_least(Level.ABUSIVE) > calm.at_least(Level.ABUSIVE) + 0.5
    assert threat.escalation["threatening"] > abusive.escalation["threatening"]


def test_normalisation_applied(clf) -> None:
    a, b = clf.classify(["YOU ARE A USELESS IDIOT!!! 😡 @USER", "you are a useless idiot"])
    assert np.allclose(list(a.escalation.values()), list(b.escalation.values()), atol=1e-5)


def test_embed_and_similarity(clf) -> None:
    e = clf.embed(["i want a refund", "give me my money back", "what a lovely sunny day"])
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    assert clf.similarity("i want a refund", "give me my money back") > clf.similarity(
        "i want a refund", "what a lovely sunny day") + 0.2
    assert clf.embed([]).shape == (0, 384)


def test_missing_or_incomplete_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist.*coach train"):
        load_classifier(str(tmp_path / "nope"))
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(resolve_model_dir() / "config.json", partial / "config.json")
    with pytest.raises(ModelError, match="no heads.safetensors"):
        open_model(partial)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        open_model(empty)


def test_uncached_hub_id_fails_fast() -> None:
    with pytest.raises(ModelError, match="cannot load sentence encoder"):
        Encoder("nonexistent-org/nonexistent-model-xyz")


def _run(argv: list[str], stdin: str, monkeypatch) -> tuple[int, str]:
    p = argparse.ArgumentParser()
    cli_research.register(p.add_subparsers())
    args = p.parse_args(argv)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    return args.func(args), out.getvalue()


def test_cli_classify_keeps_order_and_blank_lines(monkeypatch) -> None:
    inp = 'you are a useless idiot\n\n{"text": "thanks that\'s great", "id": 7}\ni will find you and hurt you\n'
    code, out = _run(["classify", "-", "--batch-size", "2"], inp, monkeypatch)
    assert code == 0
    recs = [json.loads(l) for l in out.splitlines()]
    assert [r["text"] for r in recs] == ["you are a useless idiot", "", "thanks that's great",
                                         "i will find you and hurt you"]
    assert recs[1]["level"] is None and recs[1]["escalation"] is None
    assert recs[2]["id"] == 7 and recs[2]["level"] == "calm"
    assert recs[0]["level"] == "abusive" and recs[3]["level"] == "threatening"


def test_cli_classify_bad_model(monkeypatch, tmp_path: Path, capsys) -> None:
    code, out = _run(["classify", "--model", str(tmp_path / "missing")], "hi\n", monkeypatch)
    assert code == 2 and out == ""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    err = [line for line in lines if line.startswith("coach: error:")]
    assert len(err) == 1 and all(line.startswith("coach: ") for line in lines), lines  # status lines allowed
    assert str(tmp_path / "missing") in err[0] and "coach train" in err[0]


def test_decision_rule_thresholds(clf) -> None:
    from coach.classifier import decide_levels

    p = np.array([[0.5, 0.1, 0.1, 0.2, 0.1],     # P(>=abusive) 0.3, P(threat) 0.1
                  [0.1, 0.1, 0.6, 0.05, 0.15],   # angry by argmax
                  [0.05, 0.05, 0.1, 0.7, 0.1]])
    assert list(decide_levels(p)) == [0, 2, 3]                              # no thresholds: argmax
    th = {"abusive": 0.25, "threatening": 0.12}
    assert list(decide_levels(p, th)) == [3, 4, 3]
    assert list(decide_levels(p, {"abusive": 0.9, "threatening": 0.9})) == [0, 2, 2]
    # the shipped model's decision agrees with Scores.at_least and its stored thresholds
    s = clf.classify(["you are a useless idiot", "i know where you live", "thanks that's great"])
    lv = clf.decide(s)
    assert lv == [clf.decide(x) for x in s]
    assert lv[0] >= Level.ABUSIVE and lv[1] is Level.THREATENING and lv[2] is Level.CALM
    th = clf.config.thresholds or {}
    for x, d in zip(s, lv):
        if "threatening" in th:
            assert (d is Level.THREATENING) == (x.at_least(Level.THREATENING) >= th["threatening"])
