"""One decision rule: the level users see follows the model's stored thresholds
everywhere (classifier, events, codec, ``coach classify``, playbook)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coach import codec
from coach.classifier import Classifier, ModelConfig, decide_levels
from coach.events import LEVELS, Level, ScoredUtterance, Scores, Speaker, Utterance, decide_level

TH = {"abusive": 0.36, "threatening": 0.14}
SEN = {"negative": 0.5, "neutral": 0.3, "positive": 0.2}


def _esc(*p: float) -> dict[str, float]:
    return dict(zip(LEVELS, p))


@pytest.mark.parametrize("esc, thresholds, want", [
    ((0.5, 0.1, 0.1, 0.1, 0.2), TH, "threatening"),   # P(threat) 0.2 >= 0.14, argmax calm
    ((0.5, 0.1, 0.1, 0.2, 0.1), None, "calm"),        # no thresholds: plain argmax
    ((0.5, 0.1, 0.0, 0.3, 0.1), TH, "abusive"),       # P(abusive or worse) 0.4 >= 0.36
    ((0.3, 0.1, 0.35, 0.25, 0.0), TH, "angry"),       # below both: best of calm/frustrated/angry
    ((0.1, 0.2, 0.1, 0.5, 0.1), {"threatening": 0.14}, "abusive"),   # no abuse threshold: argmax decides abuse
    ((0.1, 0.2, 0.1, 0.5, 0.1), {"threatening": 0.14, "abusive": 0.7}, "frustrated"),
    ((0.1, 0.1, 0.1, 0.2, 0.5), {"abusive": 0.9}, "threatening"),    # no threat threshold: argmax
])
def test_the_documented_rule(esc: tuple, thresholds: dict | None, want: str) -> None:
    assert decide_level(_esc(*esc), thresholds).label == want
    assert LEVELS[int(decide_levels(np.array([esc]), thresholds)[0])] == want


def test_scalar_and_array_rules_agree() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(5, 0.4), size=3000)
    for th in (None, TH, {"abusive": 0.2}, {"threatening": 0.3}, {"abusive": 0.5, "threatening": 0.05}):
        arr = decide_levels(p, th)
        assert [LEVELS[k] for k in arr] == [decide_level(dict(zip(LEVELS, row)), th).label for row in p]
    # the thresholds change decisions on a good share of these rows: the rule is not argmax
    assert (decide_levels(p, TH) != p.argmax(1)).mean() > 0.05


def test_classifier_scores_carry_the_rule() -> None:
    clf = Classifier.__new__(Classifier)
    clf.config = ModelConfig(thresholds=TH)
    esc = np.array([[0.5, 0.1, 0.1, 0.1, 0.2], [0.3, 0.1, 0.35, 0.25, 0.0]])
    sen = np.tile(np.array([0.5, 0.3, 0.2]), (2, 1))
    got = clf._scores(esc, sen)
    assert [s.level.label for s in got] == ["threatening", "angry"]
    assert clf.decide(got) == [Level.THREATENING, Level.ANGRY]
    assert Scores(got[0].escalation, got[0].sentiment).level is Level.CALM  # without the rule: argmax


def _event(scores: Scores) -> ScoredUtterance:
    u = Utterance(speaker=Speaker.CUSTOMER, start=0.0, end=1.0, text="x", words=(), confidence=0.9)
    return ScoredUtterance(u, scores)


def test_codec_keeps_the_decided_level() -> None:
    ev = _event(Scores(_esc(0.5, 0.1, 0.1, 0.1, 0.2), SEN, decided="threatening"))
    line = codec.dumps(ev, 0.0)
    assert json.loads(line)["level"] == "threatening"
    back, wall = codec.decode(json.loads(line))
    assert back.scores.level is Level.THREATENING
    assert codec.dumps(back, wall) == line
    # a level no threshold could give (frustrated when calm leads calm/frustrated/angry) is refused
    obj = json.loads(line)
    obj["level"] = "frustrated"
    with pytest.raises(codec.EventsError, match="disagrees"):
        codec.decode(obj)


def test_playbook_follows_the_model_rule_unless_overridden() -> None:
    from coach.playbook import CONDITIONS, CallContext

    spec = CONDITIONS["utterance_at_least"]
    rule = spec.parse({"level": "threatening"})
    override = spec.parse({"level": "threatening", "p": 0.5})
    ev = _event(Scores(_esc(0.5, 0.1, 0.1, 0.1, 0.2), SEN, decided="threatening"))
    ctx = CallContext(current=ev)
    assert spec.test(ctx, rule) is True          # the model says threatening (P 0.2 >= its 0.14)
    assert spec.test(ctx, override) is False     # a named override asks for P >= 0.5
    calm = _event(Scores(_esc(0.5, 0.1, 0.1, 0.1, 0.2), SEN, decided="calm"))
    assert spec.test(CallContext(current=calm), rule) is False


@pytest.mark.slow
def test_coach_classify_prints_the_rules_level(tmp_path: Path) -> None:
    from coach import resources

    cfg = json.loads((resources.locate(resources.CLASSIFIER) / "config.json").read_text())
    texts = ["it is ridiculous i call three times", "i will find you and hurt you", "you are a useless idiot",
             "thanks that's great", "i'm going to kill it at my presentation tomorrow", "this is unacceptable"]
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(texts) + "\n")
    coach = Path(sys.executable).with_name("coach")
    out = subprocess.run([str(coach), "classify", str(inp)], capture_output=True, text=True, check=True).stdout
    rows = [json.loads(x) for x in out.splitlines()]
    assert len(rows) == len(texts)
    for r in rows:
        assert r["level"] == decide_level(r["escalation"], cfg["thresholds"]).label


def test_calm_prior_is_bayes_rule_and_round_trips() -> None:
    """A stated deployment prior moves mass to calm and leaves the other levels' ratios."""
    import torch

    from coach.classifier import Heads, ModelConfig

    heads = Heads(dim=4, hidden=0, dropout=0.0).eval()
    torch.manual_seed(0)
    emb = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    plain = Classifier.__new__(Classifier)
    plain.heads, plain.config = heads, ModelConfig(dim=4, hidden=0)
    shifted = Classifier.__new__(Classifier)
    shifted.heads, shifted.config = heads, ModelConfig(dim=4, hidden=0, calm_prior=3.0)
    p, _ = plain.predict_embeddings(emb)
    q, _ = shifted.predict_embeddings(emb)
    want = p.copy()
    want[:, 0] *= 3.0
    want /= want.sum(1, keepdims=True)
    assert np.allclose(q, want) and np.allclose(q.sum(1), 1.0)
    assert (q[:, 0] > p[:, 0]).all()
    assert np.allclose(q[:, 1:] / q[:, 1:].sum(1, keepdims=True), p[:, 1:] / p[:, 1:].sum(1, keepdims=True))
    cfg = ModelConfig.from_json(json.loads(json.dumps(shifted.config.to_json())))
    assert cfg.calm_prior == 3.0
    assert ModelConfig.from_json({k: v for k, v in cfg.to_json().items() if k != "calm_prior"}).calm_prior == 1.0
