"""The project's standard benchmark (``../shared/eval/standard_mapping.py``) inside ``coach eval``.

The shared script is what the classifier is judged by, but it scores one ``coach``
executable per run and has no baselines. This module reproduces it exactly (same rows,
same order, the text it sends, the figures it prints) so that ``coach eval standard``
can report several models beside VADER and alt-profanity-check from one run, and write
the same figures into a model card. The mapping itself is documented in the script's
docstring; keep the two in step (``tests/test_standard.py`` compares them).
"""
from __future__ import annotations

import csv
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from .errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from .classifier import Classifier

# Label groups of the mapping (GoEmotions names).
CALM = {"neutral", "gratitude", "approval", "caring", "joy", "optimism", "relief", "admiration",
        "amusement", "love", "excitement", "pride"}
FRUS = {"annoyance", "disappointment", "disapproval"}
ANGR = {"anger", "disgust"}
UP = ("angry", "abusive", "threatening")  # P(angry or worse) is the sum of these
EMOTION_SOURCES = ("goemotions", "tweeteval", "meld", "dailydialog")
BATCH = 64  # `coach classify`'s default: the same batches give bit-identical probabilities
SECTION = "## Standard dev benchmark"


@dataclass(frozen=True)
class StandardRow:
    """One benchmark row: the source it counts for, its mapped gold label, the raw text."""

    source: str
    gold: str
    text: str


def speechlike(t: str) -> str:
    """The text the benchmark sends to the classifier (the shared script's rule, verbatim)."""
    t = re.sub(r"https?://\S+|@\w+|#", " ", t.lower())
    t = re.sub(r"[^\w\s']", " ", t)
    return re.sub(r"\s+", " ", t).strip()


def _crc(s: str, n: int) -> int:
    return zlib.crc32(s.encode()) % n


def _open(path: Path) -> Any:
    """The file as the script opens it (UTF-8, universal newlines), or a one-line DataError."""
    fix = "put the public data sets under ../shared/data/text or point $COACH_DATA at them"
    try:
        return open(path, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"standard benchmark file {path} is missing", fix) from None
    except OSError as exc:
        raise DataError(f"cannot read standard benchmark file {path} ({exc.strerror or exc})", fix) from None


def _read(path: Path) -> str:
    with _open(path) as f:
        return f.read()


def _dicts(path: Path, delimiter: str) -> Iterator[dict[str, str]]:
    with _open(path) as f:
        yield from csv.DictReader(f, delimiter=delimiter)


def standard_rows(data_root: str | Path | None = None) -> list[StandardRow]:
    """The benchmark's rows, exactly as the script's ``items()`` builds them.

    ``data_root`` defaults to the built-in data sets' folder (``$COACH_DATA`` or
    ../shared/data/text), the same one ``coach.datasets`` reads.
    """
    from . import resources

    root = Path(data_root) if data_root else resources.default_data_root()
    where = root / "goemotions" / "labels.txt"
    try:
        out: list[StandardRow] = []
        names = _read(where).split()
        where = root / "goemotions" / "dev.tsv"
        with _open(where) as f:
            for row in csv.reader(f, delimiter="\t"):
                labs = {names[int(i)] for i in row[1].split(",")}
                for group, gold in ((CALM, "calm"), (FRUS, "frustrated"), (ANGR, "angry")):
                    if labs <= group:
                        out.append(StandardRow("goemotions", gold, row[0]))
        where = root / "tweeteval" / "emotion" / "val_text.txt"
        texts = _read(where).splitlines()
        where = where.with_name("val_labels.txt")
        labels = _read(where).split()
        for t, lab in zip(texts, labels):
            gold = {"0": "angry", "1": "calm", "2": "calm"}.get(lab)
            if gold:
                out.append(StandardRow("tweeteval", gold, t))
        where = root / "meld" / "dev_sent_emo.csv"
        for r in _dicts(where, ","):
            u = r["Utterance"].replace("\x92", "'")
            gold = {"anger": "angry", "disgust": "angry", "neutral": "calm", "joy": "calm"}.get(r["Emotion"])
            if gold:
                out.append(StandardRow("meld", gold, u))
            if r["Emotion"] == "neutral" and 1 <= len(speechlike(u).split()) <= 3:
                out.append(StandardRow("fragment", "calm", u))
        where = root / "dailydialog" / "dailydialog_utterances.tsv"
        for r in _dicts(where, "\t"):
            if r["split"] != "validation":
                continue
            u = r["utterance"]
            gold = {"anger": "angry", "disgust": "angry", "no emotion": "calm"}.get(r["emotion"])
            if gold and (gold == "angry" or _crc(u, 4) == 0):
                out.append(StandardRow("dailydialog", gold, u))
            if r["emotion"] == "no emotion" and 1 <= len(speechlike(u).split()) <= 3:
                out.append(StandardRow("fragment", "calm", u))
        where = root / "olid" / "olid-training-v1.0.tsv"
        for r in _dicts(where, "\t"):
            if _crc(r["id"], 5):
                continue
            if r["subtask_a"] == "NOT":
                out.append(StandardRow("olid", "not_abusive", r["tweet"]))
            elif r["subtask_b"] == "TIN":
                out.append(StandardRow("olid", "abusive", r["tweet"]))
        where = root / "threatgram" / "threatgram_train.json"
        for r in json.loads(_read(where)):
            if r["Label"] == 2 and _crc(r["reply"], 5) == 0:
                out.append(StandardRow("threatgram", "threatening", r["reply"]))
    except DataError:
        raise
    except UnicodeDecodeError:
        raise DataError(f"standard benchmark file {where} is not UTF-8", "restore the original file") from None
    except (KeyError, IndexError, ValueError, TypeError, AttributeError, csv.Error) as exc:
        raise DataError(f"standard benchmark file {where} is not in the expected format ({type(exc).__name__}: {exc})",
                        "restore the original public file") from None
    return out


# --- figures -----------------------------------------------------------------------------

def standard_figures(rows: Sequence[StandardRow], levels: Sequence[str | None],
                     p_up: Sequence[float | None], auc_score: Sequence[float] | None = None) -> dict[str, Any]:
    """The script's figures for one scorer.

    ``levels``: the level users see per row (None for text that normalises to nothing,
    as ``coach classify`` writes it); ``p_up``: P(angry or worse) per row on 0..1, used
    for the AUC and the short-turn test (None counts as 0); ``auc_score`` replaces it for the AUC only
    (VADER ranks by -compound, which has no 0..1 form that keeps the order).
    """
    import numpy as np

    from .evaluate import auc

    if not len(rows) == len(levels) == len(p_up):
        raise ValueError(f"{len(rows)} rows, {len(levels)} levels, {len(p_up)} scores")
    up = [0.0 if p is None else float(p) for p in p_up]
    score = up if auc_score is None else [float(s) for s in auc_score]
    emo = [i for i, r in enumerate(rows) if r.source in EMOTION_SOURCES and r.gold in ("calm", "angry")]
    pos = np.array([score[i] for i in emo if rows[i].gold == "angry"], dtype=float)
    neg = np.array([score[i] for i in emo if rows[i].gold == "calm"], dtype=float)
    a = auc(pos, neg)
    ol = [i for i, r in enumerate(rows) if r.source == "olid"]
    gold_ab = [rows[i].gold == "abusive" for i in ol]
    pred_ab = [levels[i] in ("abusive", "threatening") for i in ol]
    tp = sum(g and p for g, p in zip(gold_ab, pred_ab))
    fp = sum(p and not g for g, p in zip(gold_ab, pred_ab))
    fn = sum(g and not p for g, p in zip(gold_ab, pred_ab))
    th = [i for i, r in enumerate(rows) if r.source == "threatgram"]
    calm = [i for i, r in enumerate(rows) if r.gold == "calm" and r.source != "fragment"]
    fr = [i for i, r in enumerate(rows) if r.source == "fragment"]
    return {
        "auc": a, "n_auc": len(emo), "n_auc_angry": len(pos), "n_auc_calm": len(neg),
        "abusive_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0, "n_abusive": len(ol),
        "threat_recall": sum(levels[i] == "threatening" for i in th) / max(1, len(th)), "n_threat": len(th),
        "threat_fp_calm": sum(levels[i] == "threatening" for i in calm) / max(1, len(calm)), "n_calm": len(calm),
        "short_neutral_calm": sum(levels[i] in ("calm", "frustrated") and up[i] < 0.5 for i in fr) / max(1, len(fr)),
        "n_short_neutral": len(fr),
    }


def standard_breakdown(rows: Sequence[StandardRow], levels: Sequence[str | None], p_up: Sequence[float | None],
                       p_abusive: Sequence[float | None]) -> dict[str, Any]:
    """Where one model's headline figures come from, for whoever tries to raise them.

    ``by_source``: AUC and mean P(angry or worse) of angry and calm rows per emotion
    source. The pooled AUC also ranks one source's calm rows against another's angry
    ones, so it can sit below every per-source AUC. ``abusive``: the OLID AUC of
    P(abusive or worse), the F1 of the model's rule, and the best F1 of any threshold on
    P(abusive or worse) (threat decisions kept, as the benchmark counts them); when the
    two F1 are close, the threshold is not what holds abusive F1 down. The best one is
    chosen on the dev rows: a ceiling to read, never a figure to report.
    """
    import numpy as np

    from .evaluate import auc

    up = np.array([0.0 if p is None else float(p) for p in p_up])
    ab = np.array([0.0 if p is None else float(p) for p in p_abusive])
    by: dict[str, Any] = {}
    for src in EMOTION_SOURCES:
        pos = np.array([up[i] for i, r in enumerate(rows) if r.source == src and r.gold == "angry"])
        neg = np.array([up[i] for i, r in enumerate(rows) if r.source == src and r.gold == "calm"])
        if len(pos) or len(neg):
            by[src] = {"auc": auc(pos, neg), "n_angry": len(pos), "n_calm": len(neg),
                       "mean_up_angry": float(pos.mean()) if len(pos) else None,
                       "mean_up_calm": float(neg.mean()) if len(neg) else None}
    ol = [i for i, r in enumerate(rows) if r.source == "olid"]
    gold = np.array([rows[i].gold == "abusive" for i in ol], dtype=bool)
    p = ab[ol]
    threat = np.array([levels[i] == "threatening" for i in ol], dtype=bool)
    rule = np.array([levels[i] in ("abusive", "threatening") for i in ol], dtype=bool)

    def f1(pred: Any) -> tuple[float, int, int, int]:
        tp, fp, fn = int((pred & gold).sum()), int((pred & ~gold).sum()), int((~pred & gold).sum())
        return (2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0), tp, fp, fn

    best: dict[str, Any] = {"f1": None, "threshold": None, "precision": None, "recall": None}
    for t in np.unique(p):  # every threshold that changes a decision (a few thousand rows)
        score, tp, fp, fn = f1((p >= t) | threat)
        if best["f1"] is None or score > best["f1"]:
            best = {"f1": score, "threshold": float(t), "precision": tp / (tp + fp) if tp + fp else 0.0,
                    "recall": tp / (tp + fn) if tp + fn else 0.0}
    abusive = {"auc": auc(p[gold], p[~gold]) if ol else None, "n": len(ol),
               "rule_f1": f1(rule)[0] if ol else None, "best_threshold_f1": best}
    return {"by_source": by, "abusive": abusive}


def standard_line(f: Mapping[str, Any]) -> str:
    """The figures in the exact words and precision the shared script prints."""
    a = "-" if f["auc"] is None else f"{f['auc']:.3f}"  # no angry or no calm rows
    return (f"dev, standard mapping: AUC(angry+ vs calm) {a} (n={f['n_auc']}); "
            f"abusive F1 {f['abusive_f1']:.3f} (n={f['n_abusive']}); "
            f"threat recall {f['threat_recall']:.2f} (n={f['n_threat']}); "
            f"threat FP on calm {f['threat_fp_calm']:.3%}; "
            f"short neutral turns calm {f['short_neutral_calm']:.0%} (n={f['n_short_neutral']})")


# --- scoring -------------------------------------------------------------------------------

def model_outputs(clf: "Classifier", texts: Sequence[str], batch_size: int = BATCH,
                  progress: Callable[[str], None] | None = None
                  ) -> tuple[list[str | None], list[float | None], list[float | None]]:
    """Level, P(angry or worse) and P(abusive or worse) per text, as ``coach classify``
    writes them.

    Same batches as ``coach classify`` (so the same floats), each probability rounded to
    4 decimals as it writes them, and no score for text that normalises to nothing.
    """
    from .text import normalize_speech

    levels: list[str | None] = []
    ups: list[float | None] = []
    abus: list[float | None] = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        keep = [i for i, t in enumerate(chunk) if normalize_speech(t)]
        scored = dict(zip(keep, clf.classify([chunk[i] for i in keep], batch_size=batch_size) if keep else []))
        for i in range(len(chunk)):
            s = scored.get(i)
            levels.append(None if s is None else s.level.label)
            ups.append(None if s is None else sum(round(float(s.escalation.get(x, 0)), 4) for x in UP))
            abus.append(None if s is None else sum(round(float(s.escalation.get(x, 0)), 4) for x in UP[1:]))
        if progress and (start // batch_size) % 40 == 39:
            progress(f"  {start + len(chunk)}/{len(texts)} rows")
    return levels, ups, abus


def baseline_figures(rows: Sequence[StandardRow], texts: Sequence[str]) -> dict[str, dict[str, Any]]:
    """VADER and alt-profanity-check on the same text, each left out when not installed.

    Neither tells a threat from an insult, so one flag (VADER compound <= -0.5,
    profanity probability >= 0.5) counts as both abusive and threatening, as in
    ``coach.evaluate.baselines``; a short turn is calm when unflagged with score < 0.5.
    """
    from .evaluate import profanity_scores, vader_scores

    out: dict[str, dict[str, Any]] = {}
    v = vader_scores(texts)
    if v is not None:
        flag = v <= -0.5
        out["vader"] = standard_figures(rows, ["threatening" if f else "calm" for f in flag],
                                        [max(0.0, float(-c)) for c in v], auc_score=[float(-c) for c in v])
    p = profanity_scores(texts)
    if p is not None:
        out["profanity_check"] = standard_figures(rows, ["threatening" if x >= 0.5 else "calm" for x in p],
                                                  [float(x) for x in p])
    return out


def model_names(paths: Sequence[str | None]) -> list[str]:
    """Column names: each model's folder name, with its parent added where two clash."""
    short = [Path(p).name if p else "model" for p in paths]
    names = ["/".join(Path(p).parts[-2:]) if p and short.count(s) > 1 else s for p, s in zip(paths, short)]
    seen: dict[str, int] = {}
    out = []
    for n in names:  # still equal (the same folder twice): number them
        seen[n] = seen.get(n, 0) + 1
        out.append(f"{n} #{seen[n]}" if names.count(n) > 1 else n)
    return out


def run_standard(models: Sequence["Classifier"], rows: Sequence[StandardRow], with_baselines: bool = True,
                 batch_size: int = BATCH, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every model and the baselines on the benchmark rows: the report behind the table.

    ``columns`` maps a column name to ``{"kind", "path", "figures", "line"}``, and a
    model's also to ``"breakdown"`` (:func:`standard_breakdown`); ``table`` is the
    markdown table with the issue's targets, ``breakdown_table`` the breakdowns'.
    """
    say = progress or (lambda m: None)
    texts = [speechlike(r.text) for r in rows]
    paths = [str(m.path) if getattr(m, "path", None) else None for m in models]
    columns: dict[str, Any] = {}
    for name, clf, path in zip(model_names(paths), models, paths):
        say(f"scoring {len(rows)} rows with {name}")
        levels, ups, abus = model_outputs(clf, texts, batch_size, say)
        f = standard_figures(rows, levels, ups)
        columns[name] = {"kind": "model", "path": path, "figures": f, "line": standard_line(f),
                         "breakdown": standard_breakdown(rows, levels, ups, abus)}
    missing: list[str] = []
    if with_baselines:
        say("scoring VADER and alt-profanity-check")
        base = baseline_figures(rows, texts)
        for name, f in base.items():
            columns[name] = {"kind": "baseline", "path": None, "figures": f, "line": standard_line(f)}
        missing = [n for n in ("vader", "profanity_check") if n not in base]
    report: dict[str, Any] = {"benchmark": "standard dev mapping (../shared/eval/standard_mapping.py)",
                              "n_rows": len(rows), "columns": columns, "baselines_missing": missing}
    report["table"] = standard_table(report)
    report["breakdown_table"] = breakdown_table(report)
    return report


# --- presentation --------------------------------------------------------------------------

def _pct(v: float, places: int) -> str:
    return f"{v:.{places}%}"


METRICS: list[tuple[str, str, str, Callable[[float], str]]] = [
    ("auc", "n_auc", "AUC angry-or-worse vs calm", lambda v: f"{v:.3f}"),
    ("abusive_f1", "n_abusive", "abusive F1 (OLID TIN vs NOT)", lambda v: f"{v:.3f}"),
    ("threat_recall", "n_threat", "threat recall (ThreatGram 2)", lambda v: f"{v:.3f}"),
    ("threat_fp_calm", "n_calm", "threat false positives on calm", lambda v: _pct(v, 3)),
    ("short_neutral_calm", "n_short_neutral", "short neutral turns calm", lambda v: _pct(v, 1)),
]


def _targets(report: Mapping[str, Any]) -> dict[str, str]:
    vader = report["columns"].get("vader", {}).get("figures", {}).get("auc")
    auc_t = (f"≥ VADER + 0.10 = {vader + 0.10:.3f} (aim 0.90)" if vader is not None
             else "≥ VADER + 0.10 (aim 0.90)")
    return {"auc": auc_t, "abusive_f1": "≥ 0.75", "threat_recall": "≥ 0.80",
            "threat_fp_calm": "≤ 1%", "short_neutral_calm": "≥ 95%"}


def standard_table(report: Mapping[str, Any], only: Sequence[str] | None = None) -> str:
    """Markdown: one row per figure with its target, one column per model then the baselines.

    ``only`` keeps those model columns (the baselines always stay), e.g. for one model's card.
    """
    cols = [(n, c) for n, c in report["columns"].items() if c["kind"] != "model" or only is None or n in only]
    targets = _targets(report)
    first = next(iter(report["columns"].values()), {"figures": {}})["figures"]
    lines = ["| metric | target | " + " | ".join(n for n, _ in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for key, n_key, label, fmt in METRICS:
        n = first.get(n_key)
        cells = [fmt(c["figures"][key]) if c["figures"].get(key) is not None else "-" for _, c in cols]
        lines.append(f"| {label}{f' (n={n})' if n is not None else ''} | {targets[key]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def breakdown_table(report: Mapping[str, Any]) -> str:
    """Markdown: each model's per-source AUC and abuse-threshold ceiling (see :func:`standard_breakdown`)."""
    models = [(n, c["breakdown"]) for n, c in report["columns"].items() if c.get("breakdown")]
    if not models:
        return ""
    f3 = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    f2 = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = ["| model | part | AUC | n angry / calm | mean P(angry+) angry / calm |", "|---|---|---|---|---|"]
    for name, b in models:
        pooled = report["columns"][name]["figures"]
        lines.append(f"| {name} | pooled | {f3(pooled['auc'])} | "
                     f"{pooled['n_auc_angry']} / {pooled['n_auc_calm']} | |")
        for src, d in b["by_source"].items():
            lines.append(f"| {name} | {src} | {f3(d['auc'])} | {d['n_angry']} / {d['n_calm']} | "
                         f"{f2(d['mean_up_angry'])} / {f2(d['mean_up_calm'])} |")
    lines += ["", "| model | OLID AUC of P(abusive+) | abusive F1, model's rule "
                  "| best F1 at one threshold (chosen on dev) |", "|---|---|---|---|"]
    for name, b in models:
        a, bt = b["abusive"], b["abusive"]["best_threshold_f1"]
        at = "-" if bt["f1"] is None else (f"{bt['f1']:.3f} at {bt['threshold']:.4f} "
                                           f"(precision {bt['precision']:.2f}, recall {bt['recall']:.2f})")
        lines.append(f"| {name} | {f3(a['auc'])} | {f3(a['rule_f1'])} | {at} |")
    return "\n".join(lines)


def update_standard_card(card: str | Path, report: Mapping[str, Any], model: str) -> Path:
    """Put (or replace) the standard table in a MODEL_CARD.md, first after the title and intro.

    The card leads with these figures because they are the ones the project judges a
    model by; the section is replaced on every run, the rest of the card is kept.
    """
    card = Path(card)
    text = card.read_text(encoding="utf-8") if card.exists() else f"# {model}\n"
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        nxt = rest.find("\n## ")
        text = head + (rest[nxt + 1:] if nxt >= 0 else "")
    section = (f"{SECTION}\n\n`coach eval standard`: the project's standard mapping "
               f"(`../shared/eval/standard_mapping.py`) on the dev splits, {report['n_rows']} rows; "
               "levels are the model's decision (`Scores.level`); VADER and alt-profanity-check were scored on "
               "the same text in the same run (one flag, VADER compound <= -0.5 or profanity probability "
               ">= 0.5, counts as abusive and threatening).\n\n"
               + standard_table(report, only=[model]) + "\n")
    m = re.search(r"^## ", text, flags=re.M)
    if m:
        text = text[:m.start()] + section + "\n" + text[m.start():]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    card.write_text(text, encoding="utf-8")
    return card


__all__ = ["StandardRow", "baseline_figures", "breakdown_table", "model_names", "model_outputs",
           "run_standard", "speechlike", "standard_breakdown", "standard_figures", "standard_line", "standard_rows",
           "standard_table", "update_standard_card"]
