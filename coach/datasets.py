"""Labelled text for the escalation/sentiment classifier.

Every loader yields :class:`Example` rows in one schema (``configs/labels.yaml``):
an escalation target that is one level, a set of allowed levels (a *partial* label,
e.g. OLID's "not offensive" only says "not abusive, not threatening") or missing, and
a sentiment that may be missing. Training masks whatever a row lacks, so an
abuse-only corpus and a sentiment-only corpus can train the same two heads.

Rows carry their source, split, licence and ``commercial_ok`` so that training can
leave out non-commercial data and the model card can list what a model saw.

Built-in sources read the public sets under ``../shared/data/text`` (see
``SOURCES.md``). OLID and ThreatGram, shipped without a dev split, use the standard
benchmark's slices (crc32 % 5 == 0, see :func:`standard_dev`), so no row the benchmark
scores is trained on; Davidson gets a fixed, seeded hold-out chosen by a hash of the
text. Either way duplicates never straddle the split and the split does not depend on
which other rows are loaded.

Researchers add their own data without code through the generic CSV/TSV/JSONL
loader (:class:`SourceSpec` with ``kind: generic``); bad files raise
:class:`~coach.errors.DataError` naming the file and line.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import random
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from . import safeio
from .errors import ConfigError, DataError
from .events import LEVELS, SENTIMENTS  # noqa: F401  (re-exported for tests)

DEV_SALT = "coach-dev-v1"
MAX_SCHEMA_BYTES = 1 * safeio.MB
MAX_DATA_BYTES = 1024 * safeio.MB  # the largest built-in file is under 10 MB


@dataclass(frozen=True)
class Example:
    """One labelled text. ``levels``: allowed escalation levels (1 = exact), or None."""

    text: str
    levels: tuple[str, ...] | None
    sentiment: str | None
    source: str
    split: str
    licence: str = ""
    commercial_ok: bool = True
    ref: str = ""  # file:line, for error messages and audits (never the text)
    eval_level: str | None = None  # for partial labels: the level it counts as in dev metrics
    context: str = ""  # the turn before this one in its dialogue ("" for none or not a dialogue)

    @property
    def level(self) -> str | None:
        """The exact level, or None for partial/missing labels."""
        return self.levels[0] if self.levels is not None and len(self.levels) == 1 else None

    @property
    def gold(self) -> str | None:
        """The level used by per-level metrics: exact level, else ``eval_level``."""
        return self.level or self.eval_level


@dataclass(frozen=True)
class Target:
    """A mapped raw label."""

    levels: tuple[str, ...] | None
    sentiment: str | None
    eval_level: str | None = None


@dataclass
class LabelSchema:
    """``configs/labels.yaml``: per source a licence, a commercial flag and a label map."""

    maps: dict[str, dict[str, Target]]
    licences: dict[str, str]
    commercial: dict[str, bool]

    def target(self, source: str, raw: str, where: str) -> Target:
        try:
            return self.maps[source][raw]
        except KeyError:
            known = ", ".join(sorted(self.maps.get(source, {})))
            raise DataError(f"{where}: unknown {source} label {raw!r} (known: {known})",
                            "add it to configs/labels.yaml") from None


def _levels(value: Any, where: str) -> tuple[str, ...] | None:
    """Parse a level spec: name, 'a|b', list of names, or null."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    items = value if isinstance(value, (list, tuple)) else str(value).split("|")
    out = []
    for item in items:
        name = str(item).strip().lower()
        if name not in LEVELS:
            raise DataError(f"{where}: unknown escalation level {item!r}",
                            f"use one of {', '.join(LEVELS)} (or map it with label_map)")
        out.append(name)
    return tuple(sorted(set(out), key=LEVELS.index))


def _eval_level(value: Any, where: str) -> str | None:
    lv = _levels(value, where)
    return lv[0] if lv else None


def _sentiment(value: Any, where: str) -> str | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    name = str(value).strip().lower()
    if name not in SENTIMENTS:
        raise DataError(f"{where}: unknown sentiment {value!r}",
                        f"use one of {', '.join(SENTIMENTS)} (or map it with label_map)")
    return name


def load_schema(path: str | Path | None = None) -> LabelSchema:
    """Read the label schema and mappings (``configs/labels.yaml`` by default).

    Read through :mod:`coach.safeio` (a regular UTF-8 file of at most 1 MB, bounded
    YAML); a wrong shape is a one-line ConfigError naming the key.
    """
    from . import resources
    path = Path(path) if path else resources.locate(resources.LABELS)
    default = resources.packaged(resources.LABELS)
    fix = f"compare it with the packaged {default}"
    text = safeio.read_text(path, what="label schema", max_bytes=MAX_SCHEMA_BYTES, error_cls=ConfigError,
                            fix=f"pass an existing labels YAML, or remove the override to use {default}")
    raw = safeio.load_yaml(text, where=f"label schema {path}", error_cls=ConfigError, fix=fix)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"label schema {path} must be a mapping with 'levels', 'sentiments' and 'sources'", fix)
    levels, sentiments = raw.get("levels", LEVELS), raw.get("sentiments", SENTIMENTS)
    if (not isinstance(levels, (list, tuple)) or tuple(levels) != LEVELS
            or not isinstance(sentiments, (list, tuple)) or tuple(sentiments) != SENTIMENTS):
        raise ConfigError(f"{path} lists labels that differ from coach.events",
                          f"use levels {list(LEVELS)} and sentiments {list(SENTIMENTS)}")
    sources = raw.get("sources") or {}
    if not isinstance(sources, Mapping):
        raise ConfigError(f"label schema {path}: 'sources' must map a source name to its settings", fix)
    maps: dict[str, dict[str, Target]] = {}
    lic: dict[str, str] = {}
    com: dict[str, bool] = {}
    for name, spec in sources.items():
        where = f"{path}: sources.{name}"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where} must be a mapping with licence, commercial_ok and map", fix)
        table = spec.get("map") or {}
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}.map must map a raw label to {{level, sentiment, eval}}", fix)
        name = str(name)
        lic[name] = str(spec.get("licence", ""))
        com[name] = bool(spec.get("commercial_ok", False))
        maps[name] = {}
        for k, v in table.items():
            if v is not None and not isinstance(v, Mapping):
                raise ConfigError(f"{where}.map.{k} must be a mapping such as {{level: angry, sentiment: negative}}, "
                                  f"got {v!r}"[:300], fix)
            v = v or {}
            try:
                maps[name][str(k)] = Target(_levels(v.get("level"), f"{where}.{k}"),
                                            _sentiment(v.get("sentiment"), f"{where}.{k}"),
                                            _eval_level(v.get("eval"), f"{where}.{k}"))
            except DataError as exc:
                raise ConfigError(exc.cause, fix) from None
    return LabelSchema(maps, lic, com)


def dev_holdout(text: str, fraction: float) -> bool:
    """Deterministic seeded hold-out by text hash (same text, same split, every run)."""
    h = hashlib.sha1(f"{DEV_SALT}\0{text}".encode("utf-8")).digest()
    return int.from_bytes(h[:4], "big") / 2**32 < fraction


# --- reading files ------------------------------------------------------------------

def standard_dev(key: str) -> bool:
    """The dev slice of the project's standard benchmark (``../shared/eval/standard_mapping.py``)
    for sets shipped without one: crc32 of the OLID tweet id, or of the ThreatGram reply,
    modulo 5 is 0. These rows are dev only, never trained or tuned on."""
    return zlib.crc32(str(key).encode()) % 5 == 0


def _read_text(path: Path) -> str:
    """Whole file as UTF-8 (a BOM is dropped); a bad path, type, size or byte -> DataError."""
    data = safeio.read_bytes(path, what="data file", max_bytes=MAX_DATA_BYTES, error_cls=DataError,
                             fix="check the path (built-in sets live under ../shared/data/text; set data_root)")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x})",
                        "re-save the file as UTF-8") from None
    if not text.strip():
        raise DataError(f"{path} is empty", "give a file with a header line and labelled rows")
    return text


_MAX_DEPTH = 16  # a row is a flat object; a little room for extra fields


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _csv_rows(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row dict) for a CSV/TSV with a header row."""
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter,
                            quoting=csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE)
    if not reader.fieldnames:
        raise DataError(f"{path} has no header line", "add a header naming the columns")
    for row in reader:
        yield reader.line_num, row


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    text = _read_text(path)
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{i}: invalid JSON ({exc.msg})", "write one JSON object per line") from None
        except RecursionError:
            raise DataError(f"{path}:{i}: JSON nested too deeply", "write one flat JSON object per line") from None
        except ValueError as exc:
            raise DataError(f"{path}:{i}: invalid JSON ({' '.join(str(exc).split(':')[0].split())})",
                            "write one JSON object per line") from None
        safeio.check_tree(obj, where=f"{path}:{i}", max_depth=_MAX_DEPTH, error_cls=DataError,
                          fix="write one flat JSON object per line")
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{i}: expected a JSON object", "write one JSON object per line")
        yield i, obj


def _yaml_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """A YAML list of mappings (small hand-written sets); 'line' is the item number."""
    text = _read_text(path)
    items = safeio.load_yaml(text, where=str(path), max_depth=_MAX_DEPTH, error_cls=DataError,
                             fix="write a list of mappings")
    if not isinstance(items, list):
        raise DataError(f"{path} is not a YAML list of rows", "write one '- {text: ..., level: ...}' per row")
    for i, obj in enumerate(items, 1):
        if not isinstance(obj, dict):
            raise DataError(f"{path}: item {i} is not a mapping", "write one '- {text: ..., level: ...}' per row")
        yield i, obj


# --- built-in sources -----------------------------------------------------------------

Loader = Callable[[Path, LabelSchema, float], Iterator[Example]]


def _ex(schema: LabelSchema, source: str, raw: str, text: str, split: str, ref: str, context: str = "") -> Example:
    t = schema.target(source, raw, ref)
    return Example(text, t.levels, t.sentiment, source, split, schema.licences.get(source, ""),
                   schema.commercial.get(source, False), ref, t.eval_level, context)


class _Turns:
    """The previous turn of the same dialogue, for rows read in dialogue order."""

    def __init__(self) -> None:
        self.key: Any = None
        self.turn = -1
        self.text = ""

    def before(self, key: Any, turn: int, text: str) -> str:
        """Context for ``text`` (turn ``turn`` of dialogue ``key``): the turn just before it,
        or "" at a dialogue's start or after a gap in the numbering."""
        prev = self.text if key == self.key and turn == self.turn + 1 else ""
        self.key, self.turn, self.text = key, turn, text
        return prev


def _turn(value: Any) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        return -10  # unnumbered: never adjacent, so no context


def _goemotions(root: Path, schema: LabelSchema, frac: float) -> Iterator[Example]:
    d = root / "goemotions"
    names = _read_text(d / "labels.txt").split()
    for split, fname in (("train", "train.tsv"), ("dev", "dev.tsv")):
        p = d / fname
        for i, line in enumerate(_read_text(p).splitlines(), 1):
            parts = line.split("\t")
            if len(parts) < 2:
                raise DataError(f"{p}:{i}: expected text<TAB>label ids", "restore the GoEmotions file")
            ref = f"{p}:{i}"
            targets = [schema.target("goemotions", names[int(k)], ref) for k in parts[1].split(",")]
            # The most severe label wins (severity of a level set = its mildest level).
            voted = [t for t in targets if t.levels]
            top = max(voted, key=lambda t: LEVELS.index(t.levels[0])) if voted else None
            sents = {t.sentiment for t in targets}
            sentiment = sents.pop() if len(sents) == 1 else None
            yield Example(parts[0], top.levels if top else None, sentiment, "goemotions", split,
                          schema.licences["goemotions"], schema.commercial["goemotions"], ref,
                          top.eval_level if top else None)


def _tweeteval(task: str) -> Loader:
    source = f"tweeteval_{task}"

    def load(root: Path, schema: LabelSchema, frac: float) -> Iterator[Example]:
        d = root / "tweeteval" / task
        names = {}
        for line in _read_text(d / "mapping.txt").splitlines():
            k, _, v = line.partition("\t")
            names[k.strip()] = v.strip()
        for split, stem in (("train", "train"), ("dev", "val")):
            tp, lp = d / f"{stem}_text.txt", d / f"{stem}_labels.txt"
            if split == "train" and not tp.exists():
                continue  # tweeteval/sentiment ships val only
            texts = _read_text(tp).splitlines()
            labels = _read_text(lp).splitlines()
            if len(texts) != len(labels):
                raise DataError(f"{tp} has {len(texts)} lines but {lp} has {len(labels)}", "restore both files")
            for i, (t, lab) in enumerate(zip(texts, labels), 1):
                ref = f"{lp}:{i}"
                yield _ex(schema, source, names.get(lab.strip(), lab.strip()), t, split, ref)

    return load


def _meld(root: Path, schema: LabelSchema, frac: float) -> Iterator[Example]:
    for split, fname in (("train", "train_sent_emo.csv"), ("dev", "dev_sent_emo.csv")):
        p = root / "meld" / fname
        turns = _Turns()
        for line, row in _csv_rows(p, ","):
            ref = f"{p}:{line}"
            t = schema.target("meld", row["Emotion"].strip(), ref)
            ctx = turns.before(row.get("Dialogue_ID"), _turn(row.get("Utterance_ID")), row["Utterance"])
            yield Example(row["Utterance"], t.levels, _sentiment(row["Sentiment"], ref), "meld", split,
                          schema.licences["meld"], schema.commercial["meld"], ref, None, ctx)


def _emorynlp(root: Path, schema: LabelSchema, frac: float) -> Iterator[Example]:
    for split, fname in (("train", "emorynlp_train_final.csv"), ("dev", "emorynlp_dev_final.csv")):
        p = root / "meld" / fname
        turns = _Turns()
        for line, row in _csv_rows(p, ","):
            scene = (row.get("Season"), row.get("Episode"), row.get("Scene_ID"))
            ctx = turns.before(scene, _turn(row.get("Utterance_ID")), row["Utterance"])
            yield _ex(schema, "emorynlp", row["Emotion"].strip(), row["Utterance"], split, f"{p}:{line}", ctx)


def _dailydialog(root: Path, schema: LabelSchema, frac: float) -> Iterator[Example]:
    p = root / "dailydialog" / "dailydialog_utterances.tsv"
    turns = _Turns()
    for line, row in _csv_rows(p, "\t"):
        split = {"train": "train", "validation": "dev"}.get(row["split"])
        if split is None:
            continue  # never use a test split
        ctx = turns.before(row.get("dialogue_id"), _turn(row.get("utt_idx")), row["utterance"])
        yield _ex(schema, "dailydialog", row["emotion"].strip(), row["utterance"], split, f"{p}:{line}", ctx)


def _olid(root: Path, schema: LabelSchema, frac: float) -> Iterator[Example]:
    p = root / "olid" / "olid-training-v1.0.tsv"
    for line, row in _csv_rows(p, "\t"):
        a, b = row["subtask_a"].strip(), row["subtask_b"].strip()
        raw = a if a == "NOT" else f"{a}/{b}"
        text = row["tweet"]
        yield _ex(schema, "olid", raw, text, "dev" if standard_dev(row["id"]) else "train", f"{p}:{line}")


def _davidson(root: Path, schema: LabelSchema, frac: float) -> Iterator[Example]:
    p = root / "davidson" / "labeled_data_train.csv"
    names = {"0": "hate", "1": "offensive", "2": "neither"}
    for line, row in _csv_rows(p, ","):
        text = row["tweet"]
        yield _ex(schema, "davidson", names.get(row["class"].strip(), row["class"]), text,
                  "dev" if dev_holdout(text, frac) else "train", f"{p}:{line}")


def _threatgram(root: Path, schema: LabelSchema, frac: float) -> Iterator[Example]:
    p = root / "threatgram" / "threatgram_train.json"
    rows = safeio.load_json(_read_text(p), where=str(p), max_depth=_MAX_DEPTH, error_cls=DataError,
                            fix="restore the ThreatGram file")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{p} is not a JSON list of objects", "restore the ThreatGram file")
    names = {0: "none", 1: "nonviolent", 2: "violent"}
    for i, row in enumerate(rows):
        text = row.get("reply") or ""
        yield _ex(schema, "threatgram", names.get(row.get("Label"), str(row.get("Label"))), text,
                  "dev" if standard_dev(text) else "train", f"{p}:item{i}")


# Hard negatives: real training turns that the classifier must keep calm (or at least
# not threatening), mined from the dialogue and emotion corpora's TRAINING splits.
HARD_NEGATIVE_ORIGINS = ("meld", "emorynlp", "dailydialog", "goemotions")
_WORDS = re.compile(r"[a-z0-9']+")
HARD_NEGATIVE_PATTERNS: dict[str, re.Pattern[str]] = {
    # figurative violence: "you killed it", "this is killing me", "dying to see it"
    "figurative": re.compile(r"\b(kill(s|ed|ing)? it|killing me|dying (to|for)|to die for|"
                             r"murder(s|ed|ing)? (it|that|this)|slay(s|ed|ing)?|blow(s|ing|n)? (my|your) mind|"
                             r"knock(s|ed|ing)? it out|shoot(s|ing)? for|dead tired|"
                             r"scared to death|bored to death)\b"),
    "apology": re.compile(r"\b(sorry|apologi[sz]e|apologies|my bad|pardon me|excuse me|forgive me)\b"),
    # what agents say: help offers, holds, checks, thanks, acknowledgements
    "service": re.compile(r"\b(how (can|may) i help|(can|may) i help you|let me (check|see|look|find)|"
                          r"one moment|just a (moment|second|minute)|hold on|thank(s| you) for (calling|waiting|"
                          r"your patience|holding)|i understand|is there anything else|i('ll| will) (check|look)|"
                          r"i can help|no problem|you're welcome|of course|certainly)\b"),
}


def hard_negative_kind(text: str) -> str | None:
    """Why a turn is a hard negative: ``short`` (1-3 words), a pattern name, or None."""
    low = text.lower().replace("\u2019", "'").replace("\x92", "'")
    if 1 <= len(_WORDS.findall(low)) <= 3:
        return "short"
    for kind, pat in HARD_NEGATIVE_PATTERNS.items():
        if pat.search(low):
            return kind
    return None


def _hard_negatives(root: Path, schema: LabelSchema, frac: float) -> Iterator[Example]:
    """Training turns of the emotion/dialogue corpora that must not read escalated.

    The target is the origin's own label intersected with the kind's entry in
    ``labels.yaml`` (e.g. a figurative "killing me" labelled anger stays angry or
    abusive, never threatening); short turns qualify only when their origin calls them
    calm. Each row keeps its origin's licence and commercial flag.
    """
    def kind_of(r: Example) -> str | None:
        kind = hard_negative_kind(r.text)
        return None if kind == "short" and r.levels != ("calm",) else kind

    return _mined(root, schema, frac, "hard_negatives", kind_of)


def _mined(root: Path, schema: LabelSchema, frac: float, source: str,
           kind_of: Callable[[Example], str | None]) -> Iterator[Example]:
    """Training turns of ``HARD_NEGATIVE_ORIGINS`` that ``kind_of`` names, as rows of
    ``source``: target = the origin's levels ∩ the kind's (``source`` in ``labels.yaml``),
    dropped when that is empty; licence, commercial flag and previous turn kept per row.
    """
    for origin in HARD_NEGATIVE_ORIGINS:
        for r in BUILTIN[origin](root, schema, frac):
            if r.split != "train" or not r.text:
                continue
            kind = kind_of(r)
            if kind is None:
                continue
            t = schema.target(source, kind, f"{source}:{kind}")
            levels = t.levels
            if r.levels and t.levels:
                levels = tuple(lv for lv in r.levels if lv in t.levels)
                if not levels:
                    continue  # the origin says this turn is exactly what the kind rules out
            yield Example(r.text, levels or r.levels, r.sentiment or t.sentiment, source, "train",
                          f"{r.licence} (from {origin})", r.commercial_ok, f"{r.ref} [{kind}]", None, r.context)


# Profanity and complaint words are not abuse by themselves: "that's fucking awesome",
# "this is ridiculous, I've called three times". The abuse sets (OLID, Davidson) teach
# the words; these real training turns teach that an insult needs a target.
NOT_ABUSE_PATTERNS: dict[str, re.Pattern[str]] = {
    "profanity": re.compile(r"\b(fuck\w*|shit\w*|damn\w*|goddamn\w*|hell|ass|crap\w*|bullshit|wtf|af|piss\w*)\b"),
    "complaint": re.compile(r"\b(ridiculous|unacceptable|absurd|outrageous|unbelievable|waste of (my |our )?time|"
                            r"(three|four|five|several|many|multiple|3|4|5) times|for (an hour|hours|days|weeks|months)|"
                            r"(this|that|it) is a joke|fed up|sick (and tired )?of|had enough|still (not|waiting)|"
                            r"(want|demand) (a|my) refund|(speak|talk) to (a|the|your) (manager|supervisor)|"
                            r"not good enough|not happy|terrible|awful|worst)\b"),
}
# What makes a turn an insult or a profane attack: a word aimed at someone, or
# profanity said to "you" (not excluded for complaints: "you charged me three times").
_INSULT = re.compile(r"\b(idiot\w*|stupid|moron\w*|dumb\w*|retard\w*|loser\w*|pathetic|useless|incompetent|"
                     r"clown\w*|fool\w*|scum\w*|trash|garbage|disgusting|liars?|jerks?|hate|shut up|freak\w*|"
                     r"nuts?|bitch\w*|bastard\w*|dick\w*|cunt\w*|whore\w*|slut\w*|twat\w*|prick\w*|suck\w*|"
                     r"screw (you|off)|fuck (you|off|u)|kill\w*|die|dead|hurt|beat|shoot\w*)\b")
_SECOND_PERSON = re.compile(r"\b(you|your|you're|youre|yours|yourself|u|ur|ya|y'all|yall)\b")


def not_abuse_kind(text: str) -> str | None:
    """Why a turn is profane or a complaint without being an insult, or None.

    Left out: every 1-3 word turn and every other turn ``hard_negative_kind`` names
    (whatever its origin's label), turns with an insult or violence word, and profanity
    that addresses someone ("you", "your"): those may be abuse. Known gaps, kept as
    measured: a complaint word aimed at "you" ("you are the worst") and compound profane
    insults at a third person ("he is a shithead") still qualify.
    """
    low = text.lower().replace("\u2019", "'").replace("\x92", "'")
    if hard_negative_kind(text) is not None or _INSULT.search(low):
        return None
    if NOT_ABUSE_PATTERNS["complaint"].search(low) and not NOT_ABUSE_PATTERNS["profanity"].search(low):
        return "complaint"
    if NOT_ABUSE_PATTERNS["profanity"].search(low) and not _SECOND_PERSON.search(low):
        return "profanity"
    return None


def _not_abuse(root: Path, schema: LabelSchema, frac: float) -> Iterator[Example]:
    """Training turns of the emotion/dialogue corpora with profanity or a complaint and
    no target: any level up to angry, never abusive or threatening.

    As for hard negatives, the target is the origin's label intersected with the kind's
    (``not_abuse`` in ``labels.yaml``), so "fucking love that song" (GoEmotions: love)
    stays calm and "this is ridiculous, I've called three times" (anger) stays angry;
    each row keeps its origin's licence and commercial flag.
    """
    return _mined(root, schema, frac, "not_abuse", lambda r: not_abuse_kind(r.text))


CONFUSABLE_LIST = "configs/train/confusable_calm.txt"  # package data


def confusable_key(ref: str, root: Path) -> str:
    """A row's ``file:line`` relative to the data root: stable across machines."""
    prefix = str(root).rstrip("/") + "/"
    return ref[len(prefix):] if ref.startswith(prefix) else ref


def _confusable(root: Path, schema: LabelSchema, frac: float) -> Iterator[Example]:
    """Calm dialogue turns the model read as upset: mined hard negatives.

    ``scripts/mine_negatives.py`` scores a sample of the TRAINING turns that MELD,
    EmoryNLP or DailyDialog call calm with a model and lists (by ``file:line``, never the
    text) those it gives 0.5 <= P(frustrated or worse) < 0.95: "what seems to be the
    problem?", "I have a horrible toothache". Topic is not temper; these rows teach that.
    Each keeps its origin's label, previous turn, licence and commercial flag.
    """
    from . import resources
    listed = resources.packaged(CONFUSABLE_LIST)
    try:
        text = listed.read_text(encoding="utf-8")
    except OSError as e:
        raise DataError(f"cannot read the confusable-turn list {listed}: {e.strerror or e}",
                        "reinstall coach, or run scripts/mine_negatives.py to rebuild it") from None
    keys = {ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")}
    for origin in ("meld", "emorynlp", "dailydialog"):
        for r in BUILTIN[origin](root, schema, frac):
            if r.split == "train" and r.levels == ("calm",) and confusable_key(r.ref, root) in keys:
                yield Example(r.text, r.levels, r.sentiment, "confusable", "train",
                              f"{r.licence} (from {origin})", r.commercial_ok, r.ref, None, r.context)


BUILTIN: dict[str, Loader] = {
    "goemotions": _goemotions,
    "tweeteval_emotion": _tweeteval("emotion"),
    "tweeteval_hate": _tweeteval("hate"),
    "tweeteval_offensive": _tweeteval("offensive"),
    "tweeteval_sentiment": _tweeteval("sentiment"),
    "meld": _meld,
    "emorynlp": _emorynlp,
    "dailydialog": _dailydialog,
    "olid": _olid,
    "davidson": _davidson,
    "threatgram": _threatgram,
    "hard_negatives": _hard_negatives,
    "not_abuse": _not_abuse,
    "confusable": _confusable,
}


# --- generic, researcher-defined sources ----------------------------------------------

@dataclass
class SourceSpec:
    """One data source in a training config.

    ``kind`` is a built-in name (see :data:`BUILTIN`) or ``generic``. For generic
    files: ``path``, ``format`` (csv, tsv, jsonl), ``text_column``, ``level_column``
    and/or ``sentiment_column``, optional ``label_map`` ({level: {raw: label}, sentiment:
    {raw: label}}; a level may be a list or 'a|b' for a partial label, null to skip),
    optional ``split_column`` (values train/dev; else ``dev_fraction`` is held out),
    optional ``context_column`` (the previous turn of the dialogue, for ``context_tokens``).
    """

    name: str
    kind: str = "generic"
    path: str | None = None
    format: str | None = None
    text_column: str = "text"
    level_column: str | None = None
    sentiment_column: str | None = None
    label_map: dict[str, dict[str, Any]] = field(default_factory=dict)
    split_column: str | None = None
    context_column: str | None = None
    dev_fraction: float = 0.15
    licence: str = "unknown"
    commercial_ok: bool = False
    max_train: int | None = None     # overrides the config's max_per_source for this source
    weight: float = 1.0              # multiplies this source's loss weight (small in-domain sets)
    train_only: bool = False         # keep every row for training (no dev hold-out)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | str) -> "SourceSpec":
        if isinstance(d, str):
            return cls(name=d, kind=d if d in BUILTIN else "generic")
        if not isinstance(d, Mapping):
            raise ConfigError(f"a data source is {d!r}"[:200], "give a source name or a mapping with name: and path:")
        valid = set(cls.__dataclass_fields__)
        unknown = set(map(str, d)) - valid
        if unknown:
            raise ConfigError(f"unknown data source key(s) {sorted(unknown)}", f"valid keys: {', '.join(sorted(valid))}")
        if "name" not in d or not isinstance(d["name"], str) or not d["name"].strip():
            raise ConfigError("a data source has no name", "give each source a name (a built-in name or your own)")
        d = dict(d)
        d.setdefault("kind", d["name"] if d["name"] in BUILTIN else "generic")
        spec = cls(**d)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Types and ranges of the options (one-line ConfigError naming the source and key)."""
        from . import resources
        where = f"data source {self.name!r}"
        fix = f"compare it with the data sources in {resources.packaged(resources.TRAIN_CONFIG)}"
        for key in ("kind", "text_column", "licence"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"{where}: {key} must be a string, got {getattr(self, key)!r}", fix)
        for key in ("path", "format", "level_column", "sentiment_column", "split_column", "context_column"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{where}: {key} must be a string, got {value!r}", fix)
        for key in ("commercial_ok", "train_only"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{where}: {key} must be true or false, got {getattr(self, key)!r}", fix)
        if not isinstance(self.label_map, Mapping) or not all(
                isinstance(v, Mapping) or v is None for v in self.label_map.values()):
            raise ConfigError(f"{where}: label_map must be {{level: {{raw: label}}, sentiment: {{raw: label}}}}", fix)
        try:
            self.dev_fraction = safeio.number(self.dev_fraction, "dev_fraction", lo=0.0, hi=1.0)
            self.weight = safeio.number(self.weight, "weight", lo=0.0)
            if self.max_train is not None:
                self.max_train = safeio.number(self.max_train, "max_train", lo=0, integer=True)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}", fix) from None


def _generic(spec: SourceSpec, base: Path) -> Iterator[Example]:
    if not spec.path:
        raise ConfigError(f"data source {spec.name!r} has no path", "set path: to a CSV/TSV/JSONL file")
    p = Path(spec.path)
    if not p.is_absolute():
        p = base / p
    fmt = (spec.format or p.suffix.lstrip(".")).lower()
    if fmt == "json":
        fmt = "jsonl"
    if fmt == "yml":
        fmt = "yaml"
    if fmt not in ("csv", "tsv", "jsonl", "yaml"):
        raise ConfigError(f"data source {spec.name!r}: unknown format {fmt!r}", "use format: csv, tsv, jsonl or yaml")
    if not spec.level_column and not spec.sentiment_column:
        raise ConfigError(f"data source {spec.name!r} has neither level_column nor sentiment_column",
                          "name at least one label column")
    if fmt == "jsonl":
        rows = _jsonl_rows(p)
    elif fmt == "yaml":
        rows = _yaml_rows(p)
    else:
        rows = _csv_rows(p, "," if fmt == "csv" else "\t")
    lmap = {str(k): v for k, v in (spec.label_map.get("level") or {}).items()}
    smap = {str(k): v for k, v in (spec.label_map.get("sentiment") or {}).items()}
    needed = [c for c in (spec.text_column, spec.level_column, spec.sentiment_column, spec.split_column,
                          spec.context_column) if c]
    n = 0
    for line, row in rows:
        where = f"{p}:{line}"
        missing = [c for c in needed if c not in row]
        if missing:
            raise DataError(f"{where}: missing column(s) {missing} (have {sorted(row)})",
                            f"fix the file or the column names in data source {spec.name!r}")
        text = row[spec.text_column]
        text = "" if text is None else str(text)
        levels = sent = None
        if spec.level_column:
            raw = row[spec.level_column]
            raw = "" if raw is None else str(raw).strip()
            levels = _levels(lmap[raw] if raw in lmap else raw, where)
        if spec.sentiment_column:
            raw = row[spec.sentiment_column]
            raw = "" if raw is None else str(raw).strip()
            sent = _sentiment(smap[raw] if raw in smap else raw, where)
        if spec.split_column:
            split = {"train": "train", "dev": "dev", "validation": "dev", "val": "dev"}.get(str(row[spec.split_column]).strip().lower())
            if split is None:
                continue  # test or unknown splits are never used
        elif spec.train_only:
            split = "train"
        else:
            split = "dev" if dev_holdout(text, spec.dev_fraction) else "train"
        n += 1
        ctx = row[spec.context_column] if spec.context_column else ""
        yield Example(text, levels, sent, spec.name, split, spec.licence, spec.commercial_ok, where, None,
                      "" if ctx is None else str(ctx))
    if n == 0:
        raise DataError(f"{p} has no labelled rows", "add rows below the header")


def load_source(spec: SourceSpec | str, data_root: str | Path | None = None,
                schema: LabelSchema | None = None, base: Path | None = None) -> list[Example]:
    """All rows (train and dev) of one source."""
    spec = spec if isinstance(spec, SourceSpec) else SourceSpec.from_dict(spec)
    if spec.kind == "generic":
        return list(_generic(spec, base or Path.cwd()))
    if spec.kind not in BUILTIN:
        raise ConfigError(f"unknown data source kind {spec.kind!r}",
                          f"use generic or one of: {', '.join(BUILTIN)}")
    from . import resources
    root = Path(data_root) if data_root else resources.default_data_root()
    schema = schema or load_schema()
    if spec.kind not in schema.maps:
        raise ConfigError(f"the label schema has no entry for built-in source {spec.kind!r}",
                          f"add sources.{spec.kind} to your labels YAML (compare it with "
                          f"{resources.packaged(resources.LABELS)})")
    rows = list(BUILTIN[spec.kind](root, schema, spec.dev_fraction))
    if spec.name != spec.kind:
        rows = [dataclasses.replace(r, source=spec.name) for r in rows]
    return rows


def label_key(ex: Example) -> str:
    """A stratum for subsampling: the level set plus sentiment."""
    lv = "|".join(ex.levels) if ex.levels else "-"
    return f"{lv}/{ex.sentiment or '-'}"


def balanced_subsample(rows: Sequence[Example], cap: int, seed: int) -> list[Example]:
    """At most ``cap`` rows, spreading the quota evenly over label strata.

    Plain random subsampling of DailyDialog would keep ~70 of its 800 angry turns;
    filling the smallest strata first keeps every rare label while capping the
    dominant 'no emotion' stratum.
    """
    if cap <= 0 or len(rows) <= cap:
        return list(rows)
    rng = random.Random(seed)
    groups: dict[str, list[Example]] = defaultdict(list)
    for r in rows:
        groups[label_key(r)].append(r)
    out: list[Example] = []
    remaining = cap
    ordered = sorted(groups.values(), key=len)
    for i, g in enumerate(ordered):
        quota = remaining // (len(ordered) - i)
        take = g if len(g) <= quota else rng.sample(g, quota)
        out.extend(take)
        remaining -= len(take)
    rng.shuffle(out)
    return out


def summarize(rows: Iterable[Example]) -> dict[str, dict[str, int]]:
    """Counts per source and label stratum (for logs and the model card; no text)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        out[f"{r.source}/{r.split}"][label_key(r)] += 1
    return {k: dict(v) for k, v in out.items()}


__all__ = [
    "BUILTIN", "Example", "LabelSchema", "SourceSpec", "balanced_subsample",
    "dev_holdout", "load_schema", "load_source", "summarize",
]
