"""Loaders map real rows of each public set onto the label schema; generic files fail clearly."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from coach import datasets as ds
from coach.errors import ConfigError, DataError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TEXT = DATA / "text"
needs_data = pytest.mark.skipif(not TEXT.is_dir(), reason=f"{TEXT} is missing: check out the shared test data "
                                "beside this repository (../shared/data)")


def _by_ref(rows: list[ds.Example], suffix: str) -> ds.Example:
    return next(r for r in rows if r.ref.endswith(suffix))


@pytest.fixture(scope="module")
def schema() -> ds.LabelSchema:
    return ds.load_schema()


def test_schema_covers_every_builtin(schema: ds.LabelSchema) -> None:
    assert set(ds.BUILTIN) <= set(schema.maps)
    assert schema.commercial["dailydialog"] is False
    assert schema.commercial["olid"] is True


@needs_data
def test_goemotions(schema: ds.LabelSchema) -> None:
    rows = ds.load_source("goemotions", TEXT, schema)
    assert {r.split for r in rows} == {"train", "dev"}
    r = _by_ref(rows, "goemotions/train.tsv:3")        # label 2 = anger: angry, or abuse/threat
    assert r.levels == ("angry", "abusive", "threatening") and r.sentiment == "negative"
    assert r.gold == "angry"
    r = _by_ref(rows, "goemotions/train.tsv:1")        # 27 = neutral
    assert r.levels == ("calm",) and r.sentiment == "neutral"
    r = _by_ref(rows, "goemotions/dev.tsv:2")          # 4,27 approval+neutral: calm, mixed sentiment
    assert r.levels == ("calm",) and r.sentiment is None
    assert r.licence == "Apache-2.0" and r.commercial_ok


@needs_data
def test_tweeteval_emotion_and_sentiment(schema: ds.LabelSchema) -> None:
    rows = ds.load_source("tweeteval_emotion", TEXT, schema)
    labels = (TEXT / "tweeteval/emotion/train_labels.txt").read_text().split()
    want = {"0": ("angry", "abusive", "threatening"), "1": ("calm",), "2": ("calm",), "3": None}
    train = [r for r in rows if r.split == "train"]
    for r, lab in zip(train[:20], labels[:20]):
        assert r.levels == want[lab]
    sent = ds.load_source("tweeteval_sentiment", TEXT, schema)
    assert {r.split for r in sent} == {"dev"}            # val only: never trained on
    assert all(r.levels is None and r.sentiment for r in sent)


@needs_data
def test_meld_emorynlp_dailydialog(schema: ds.LabelSchema) -> None:
    meld = ds.load_source("meld", TEXT, schema)
    r = _by_ref(meld, "train_sent_emo.csv:2")
    assert r.levels == ("calm",) and r.sentiment == "neutral"
    assert any(x.levels == ("angry",) for x in meld)
    emory = ds.load_source("emorynlp", TEXT, schema)
    r = _by_ref(emory, "emorynlp_train_final.csv:2")     # Joyful
    assert r.levels == ("calm",) and r.sentiment == "positive"
    dd = ds.load_source("dailydialog", TEXT, schema)
    assert {r.split for r in dd} == {"train", "dev"}
    r = _by_ref(dd, "dailydialog_utterances.tsv:2")      # 'no emotion'
    assert r.levels == ("calm",) and r.sentiment == "neutral" and not r.commercial_ok
    assert any(x.levels == ("angry",) for x in dd)


@needs_data
def test_dialogue_rows_carry_the_previous_turn(schema: ds.LabelSchema) -> None:
    """Context is the turn just before, in the same dialogue; a dialogue's first turn has none."""
    meld = [r for r in ds.load_source("meld", TEXT, schema) if r.split == "train"]
    assert meld[0].context == "" and meld[1].context == meld[0].text
    starts = [i for i in range(1, len(meld)) if meld[i].context == ""]
    assert 1037 <= len(starts) < 1200   # 1,038 dialogues; a gap in the numbering also starts afresh
    dd = [r for r in ds.load_source("dailydialog", TEXT, schema) if r.split == "train"]
    assert dd[0].context == "" and dd[1].context == dd[0].text and dd[2].context == dd[1].text
    firsts = sum(1 for r in dd if r.context == "")
    assert firsts == 11118                               # DailyDialog train's dialogues
    emory = ds.load_source("emorynlp", TEXT, schema)
    assert emory[1].context == emory[0].text
    # derived rows keep their origin's context; sets without dialogue order have none
    hard = ds.load_source("hard_negatives", TEXT, schema)
    assert any(r.context for r in hard)
    assert not any(r.context for r in ds.load_source("olid", TEXT, schema))


def test_generic_context_column(tmp_path: Path) -> None:
    f = tmp_path / "calls.csv"
    f.write_text("prev,text,level\n\"how can i help\",\"my card was charged twice\",frustrated\n"
                 ",hello,calm\n", encoding="utf-8")
    spec = ds.SourceSpec.from_dict({"name": "calls", "path": str(f), "level_column": "level",
                                    "context_column": "prev"})
    rows = ds.load_source(spec)
    assert [r.context for r in rows] == ["how can i help", ""]
    spec = ds.SourceSpec.from_dict({"name": "calls", "path": str(f), "level_column": "level",
                                    "context_column": "previous"})
    with pytest.raises(DataError, match="missing column"):
        ds.load_source(spec)


@needs_data
def test_olid_davidson_threatgram(schema: ds.LabelSchema) -> None:
    # Only labels are checked: these sets hold slurs and extremist text.
    olid = ds.load_source("olid", TEXT, schema)
    assert _by_ref(olid, "olid-training-v1.0.tsv:3").levels == ("abusive",)        # OFF TIN
    assert _by_ref(olid, "olid-training-v1.0.tsv:2").levels == ("angry", "abusive")  # OFF UNT
    dev = sum(r.split == "dev" for r in olid) / len(olid)
    assert 0.15 < dev < 0.25
    dav = ds.load_source("davidson", TEXT, schema)
    assert _by_ref(dav, "labeled_data_train.csv:2").levels == ("calm", "frustrated", "angry")  # neither
    assert _by_ref(dav, "labeled_data_train.csv:3").levels == ("abusive",)                    # offensive
    tg = ds.load_source("threatgram", TEXT, schema)
    assert _by_ref(tg, ":item0").levels == ("threatening",)                                   # label 2
    # the hold-out is a pure function of the text: same split on every load
    again = ds.load_source("threatgram", TEXT, schema)
    assert [r.split for r in tg] == [r.split for r in again]


def test_olid_threatgram_dev_is_the_standard_benchmarks_slice(schema: ds.LabelSchema) -> None:
    """Rows the standard benchmark scores (crc32 % 5 == 0) are never trained or tuned on."""
    import csv
    import json
    import zlib

    olid = ds.load_source("olid", TEXT, schema)
    rows = list(csv.DictReader(open(TEXT / "olid" / "olid-training-v1.0.tsv", encoding="utf-8"), delimiter="\t"))
    assert len(rows) == len(olid)
    want = [zlib.crc32(r["id"].encode()) % 5 == 0 for r in rows]
    assert [r.split == "dev" for r in olid] == want
    tg = ds.load_source("threatgram", TEXT, schema)
    raw = json.load(open(TEXT / "threatgram" / "threatgram_train.json", encoding="utf-8"))
    assert [r.split == "dev" for r in tg] == [zlib.crc32(r["reply"].encode()) % 5 == 0 for r in raw]
    assert any(r.split == "dev" for r in tg) and any(r.split == "train" for r in tg)


def test_dev_holdout_is_deterministic() -> None:
    picks = [ds.dev_holdout(f"text {i}", 0.15) for i in range(4000)]
    assert picks == [ds.dev_holdout(f"text {i}", 0.15) for i in range(4000)]
    assert 0.12 < sum(picks) / len(picks) < 0.18


def test_balanced_subsample_keeps_rare_labels() -> None:
    rows = [ds.Example(f"c{i}", ("calm",), None, "s", "train") for i in range(1000)]
    rows += [ds.Example(f"a{i}", ("angry",), None, "s", "train") for i in range(10)]
    sub = ds.balanced_subsample(rows, 100, seed=1)
    assert len(sub) == 100 and sum(r.levels == ("angry",) for r in sub) == 10


# --- generic files -------------------------------------------------------------------------

def _spec(path: Path, **kw) -> ds.SourceSpec:
    return ds.SourceSpec(name="mine", path=str(path), level_column="level", sentiment_column="sentiment", **kw)


def test_generic_csv_with_label_map(tmp_path: Path) -> None:
    f = tmp_path / "calls.csv"
    f.write_text("text,level,sentiment,split\n"
                 "\"fine, thanks\",ok,pos,train\n"
                 "you idiot,insult,neg,dev\n"
                 "meh,calm|frustrated,,train\n"
                 "secret,calm,neutral,test\n", encoding="utf-8")
    spec = _spec(f, split_column="split",
                 label_map={"level": {"ok": "calm", "insult": "abusive"},
                            "sentiment": {"pos": "positive", "neg": "negative"}})
    rows = ds.load_source(spec)
    assert [(r.text, r.levels, r.sentiment, r.split) for r in rows] == [
        ("fine, thanks", ("calm",), "positive", "train"),
        ("you idiot", ("abusive",), "negative", "dev"),
        ("meh", ("calm", "frustrated"), None, "train"),     # partial label, no sentiment; test row dropped
    ]


def test_generic_jsonl(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "hi", "level": "calm", "sentiment": "neutral"}\n\n'
                 '{"text": "go away", "level": "Angry", "sentiment": null}\n', encoding="utf-8")
    rows = ds.load_source(_spec(f))
    assert [r.levels for r in rows] == [("calm",), ("angry",)]


@pytest.mark.parametrize("name, content, message", [
    ("bad.csv", "text,level\nhello,calm\n", r"bad\.csv:2: missing column\(s\) \['sentiment'\]"),
    ("bad.tsv", "text\tlevel\tsentiment\nhello\tcalm\tneutral\nugh\tfurious\tnegative\n",
     r"bad\.tsv:3: unknown escalation level 'furious'"),
    ("bad2.csv", "text,level,sentiment\nhello,calm,meh\n", r"bad2\.csv:2: unknown sentiment 'meh'"),
    ("empty.csv", "", r"empty\.csv is empty"),
    ("header.csv", "text,level,sentiment\n", r"header\.csv has no labelled rows"),
    ("latin1.csv", "text,level,sentiment\nok,calm,neutral\ncaf\xe9,calm,neutral\n".encode("latin-1"),
     r"latin1\.csv:3: not UTF-8"),
    ("broken.jsonl", '{"text": "a", "level": "calm", "sentiment": "neutral"}\n{"text": \n',
     r"broken\.jsonl:2: invalid JSON"),
])
def test_generic_bad_data_names_file_and_line(tmp_path: Path, name: str, content, message: str) -> None:
    f = tmp_path / name
    f.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(DataError, match=message):
        ds.load_source(_spec(f))


def test_source_spec_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="valid keys"):
        ds.SourceSpec.from_dict({"name": "x", "txt_column": "t"})


def test_generic_yaml_train_only(tmp_path: Path) -> None:
    f = tmp_path / "seed.yaml"
    f.write_text("- {text: hi there, level: calm, sentiment: positive}\n"
                 "- {text: you clown, level: abusive, sentiment: negative}\n", encoding="utf-8")
    rows = ds.load_source(ds.SourceSpec(name="seed", path=str(f), format="yaml", level_column="level",
                                        sentiment_column="sentiment", train_only=True))
    assert [(r.levels, r.split) for r in rows] == [(("calm",), "train"), (("abusive",), "train")]


def test_shipped_seed_file_loads() -> None:
    seed = Path(__file__).resolve().parents[1] / "coach" / "configs" / "train" / "service_seed.yaml"
    rows = ds.load_source(ds.SourceSpec(name="service_seed", path=str(seed), format="yaml", level_column="level",
                                        sentiment_column="sentiment", train_only=True))
    assert {r.level for r in rows} == set(ds.LEVELS)


@needs_data
def test_hard_negatives_are_real_training_turns(schema: ds.LabelSchema) -> None:
    """Mined from the training splits only, labelled by origin ∩ kind, licence kept per row."""
    rows = ds.load_source("hard_negatives", TEXT, schema)
    kinds = {r.ref.rsplit("[", 1)[1].rstrip("]") for r in rows}
    assert kinds == {"short", "apology", "service", "figurative"}
    assert all(r.split == "train" for r in rows)
    dev_texts = {r.text for n in ds.HARD_NEGATIVE_ORIGINS for r in ds.load_source(n, TEXT, schema) if r.split == "dev"}
    train_texts = {r.text for n in ds.HARD_NEGATIVE_ORIGINS for r in ds.load_source(n, TEXT, schema) if r.split == "train"}
    assert all(r.text in train_texts for r in rows)
    assert sum(r.text in dev_texts and r.text not in train_texts for r in rows) == 0
    for r in rows:
        kind = r.ref.rsplit("[", 1)[1].rstrip("]")
        assert r.levels and "threatening" not in r.levels
        if kind == "short":
            assert r.levels == ("calm",) and 1 <= len(re.findall(r"[a-z0-9']+", r.text.lower().replace("\u2019", "'"))) <= 3
        if kind in ("apology", "service"):
            assert set(r.levels) <= {"calm", "frustrated"}
    dd = [r for r in rows if "(from dailydialog)" in r.licence]
    assert dd and not any(r.commercial_ok for r in dd)          # DailyDialog's licence travels with the row
    assert any(r.commercial_ok for r in rows if "(from meld)" in r.licence)
    assert ds.hard_negative_kind("this heat is killing me") == "figurative"
    assert ds.hard_negative_kind("i will kill you") is None


@needs_data
def test_not_abuse_turns_are_real_untargeted_training_turns(schema: ds.LabelSchema) -> None:
    """Profanity and complaints without a target: training turns only, never abusive or
    threatening, each level allowed by its origin, licence kept per row."""
    rows = ds.load_source("not_abuse", TEXT, schema)
    kinds = {r.ref.rsplit("[", 1)[1].rstrip("]") for r in rows}
    assert kinds == {"profanity", "complaint"}
    assert all(r.split == "train" and r.source == "not_abuse" for r in rows)
    origin = {(r.text, r.ref): r for n in ds.HARD_NEGATIVE_ORIGINS for r in ds.load_source(n, TEXT, schema)}
    for r in rows:
        o = origin[(r.text, r.ref.rsplit(" [", 1)[0])]
        assert o.split == "train"
        assert r.levels and set(r.levels) <= {"calm", "frustrated", "angry"}
        assert o.levels is None or set(r.levels) <= set(o.levels)   # origin ∩ kind
        assert ds.hard_negative_kind(r.text) is None                 # no row in both sources
    assert {r.levels for r in rows} >= {("calm",), ("angry",)}
    dd = [r for r in rows if "(from dailydialog)" in r.licence]
    assert dd and not any(r.commercial_ok for r in dd)
    # what qualifies, and what is left alone because it may be abuse
    assert ds.not_abuse_kind("this is ridiculous, I have called three times") == "complaint"
    assert ds.not_abuse_kind("you charged me three times") == "complaint"
    assert ds.not_abuse_kind("fucking love that song") == "profanity"
    assert ds.not_abuse_kind("what the hell is going on") == "profanity"
    for text in ("you are fucking useless", "fuck you", "this is ridiculous you idiots",
                 "shit, your fault", "i will kill you", "the weather today is nice"):
        assert ds.not_abuse_kind(text) is None, text


@needs_data
def test_noncommercial_rows_of_a_derived_source_are_left_out(tmp_path: Path) -> None:
    from coach.train import TrainArgs, load_data

    args = TrainArgs(sources=[{"name": "hard_negatives", "max_train": 0}], exclude_noncommercial=True,
                     max_per_source=0, cache_dir=str(tmp_path))
    train, _, used = load_data(args)
    assert train.rows and all(r.commercial_ok for r in train.rows)
    assert not any("(from dailydialog)" in r.licence for r in train.rows)


@needs_data
def test_confusable_turns_are_the_listed_calm_training_turns(schema: ds.LabelSchema) -> None:
    """Every key of the shipped list resolves to a calm TRAINING turn, with its previous turn."""
    from coach import resources

    listed = {ln for ln in resources.packaged(ds.CONFUSABLE_LIST).read_text(encoding="utf-8").splitlines()
              if ln.strip() and not ln.startswith("#")}
    rows = ds.load_source("confusable", TEXT, schema)
    assert len(listed) >= 1000
    assert {ds.confusable_key(r.ref, TEXT) for r in rows} == listed      # none lost to a changed file
    assert len(rows) == len(listed)
    assert all(r.split == "train" and r.levels == ("calm",) and r.source == "confusable" for r in rows)
    assert sum(bool(r.context) for r in rows) > len(rows) // 2          # dialogue turns keep the turn before
    dd = [r for r in rows if "(from dailydialog)" in r.licence]
    assert dd and not any(r.commercial_ok for r in dd)


def test_a_missing_confusable_list_is_one_clear_error(schema: ds.LabelSchema, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds, "CONFUSABLE_LIST", "configs/train/no_such_list.txt")
    with pytest.raises(DataError) as e:
        ds.load_source("confusable", TEXT, schema)
    assert "no_such_list.txt" in str(e.value) and "\n" not in str(e.value)


@needs_data
def test_the_miner_lists_calm_training_turns_in_its_band(schema: ds.LabelSchema, tmp_path: Path) -> None:
    """scripts/mine_negatives.py on a small sample: only calm training turns whose
    P(frustrated or worse) lies in [min-p, max-p), as the model scores them again."""
    import importlib.util

    from coach.classifier import load_classifier

    spec = importlib.util.spec_from_file_location("mine_negatives", Path(__file__).resolve().parents[1]
                                                  / "scripts" / "mine_negatives.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "list.txt"
    assert mod.main(["--model", "escalation-minilm-heads", "--sample", "0.02", "--min-p", "0.3", "--max-p", "0.9",
                     "--data", str(TEXT), "--out", str(out)]) == 0
    keys = [ln for ln in out.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    assert keys == sorted(keys) and len(keys) > 10
    calm = {ds.confusable_key(r.ref, TEXT): r for n in ("meld", "emorynlp", "dailydialog")
            for r in ds.load_source(n, TEXT, schema) if r.split == "train" and r.levels == ("calm",)}
    assert set(keys) <= set(calm)
    esc, _ = load_classifier("escalation-minilm-heads").predict_proba([calm[k].text for k in keys])
    upset = esc[:, 1:].sum(axis=1)
    assert ((upset >= 0.3 - 1e-6) & (upset < 0.9 + 1e-6)).all()


@needs_data
def test_a_derived_source_reports_every_origin_licence(tmp_path: Path) -> None:
    """The card's data table must not call hard negatives commercial because the first
    row came from MELD: DailyDialog's rows are in there too."""
    from coach.train import TrainArgs, load_data

    args = TrainArgs(sources=[{"name": "hard_negatives", "max_train": 0}], max_per_source=0, cache_dir=str(tmp_path))
    _, _, used = load_data(args)
    u = used["hard_negatives"]
    assert u["commercial_ok"] is False
    assert "(from dailydialog)" in u["licence"] and "(from meld)" in u["licence"]
