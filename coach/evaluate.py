"""Dev-set evaluation of the classifier, side by side with lexicon baselines.

The headline figures are the ones the coach depends on:

* ``auc_angry_vs_calm``: ranking of 'angry or worse' (P(level >= angry)) against calm,
  over rows whose exact level is known;
* ``level_macro_f1``: macro-F1 of the decided level (the model's rule) over exact-label rows;
* ``abusive_f1``: OLID targeted insults (TIN) against not-offensive (NOT) tweets,
  flagged when the predicted level is abusive or worse;
* ``threat_recall``: ThreatGram violent threats (label 2) predicted 'threatening';
* ``threat_fpr_calm`` / ``abusive_fpr_calm``: share of calm dialogue turns
  (DailyDialog/MELD/EmoryNLP rows labelled calm) flagged threatening / abusive+.

Baselines are scored on the same rows: VADER (``-compound`` as the anger/abuse/threat
score, flagged at compound <= -0.5) and alt-profanity-check (``predict_prob`` as the
score, flagged at >= 0.5). Neither can tell a threat from an insult, which is the point.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from .events import LEVELS, SENTIMENTS

if TYPE_CHECKING:  # pragma: no cover
    from .classifier import Classifier
    from .datasets import Example
    from .train import DataSplit, TrainArgs

ANGRY = LEVELS.index("angry")
ABUSIVE = LEVELS.index("abusive")
THREAT = LEVELS.index("threatening")
DIALOGUE_SOURCES = ("dailydialog", "meld", "emorynlp")
NOT_ABUSIVE = ("calm", "frustrated", "angry")


# --- metric primitives ------------------------------------------------------------------

def per_class(y: np.ndarray, p: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Precision/recall/F1/support per class, macro-F1 and the confusion matrix."""
    k = len(names)
    cm = np.zeros((k, k), dtype=int)
    for a, b in zip(y, p):
        cm[a, b] += 1
    out: dict[str, Any] = {"classes": {}}
    f1s = []
    for c, name in enumerate(names):
        tp = cm[c, c]
        prec = tp / cm[:, c].sum() if cm[:, c].sum() else 0.0
        rec = tp / cm[c].sum() if cm[c].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out["classes"][name] = {"precision": round(float(prec), 4), "recall": round(float(rec), 4),
                                "f1": round(float(f1), 4), "support": int(cm[c].sum())}
        if cm[c].sum():
            f1s.append(f1)
    out["macro_f1"] = round(float(np.mean(f1s)), 4) if f1s else None
    out["accuracy"] = round(float(np.trace(cm) / cm.sum()), 4) if cm.sum() else None
    out["confusion"] = cm.tolist()
    out["n"] = int(cm.sum())
    return out


def auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """ROC AUC by the rank-sum (Mann-Whitney) formula; ties count half."""
    if len(pos) == 0 or len(neg) == 0:
        return None
    from scipy.stats import rankdata

    r = rankdata(np.concatenate([pos, neg]))
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def ece(prob: np.ndarray, y: np.ndarray, bins: int = 15) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error of the top-label confidence, and the reliability table."""
    conf = prob.max(1)
    correct = (prob.argmax(1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    total, table = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            gap = abs(conf[sel].mean() - correct[sel].mean())
            total += sel.mean() * gap
            table.append({"lo": float(lo), "hi": float(hi), "confidence": float(conf[sel].mean()),
                          "accuracy": float(correct[sel].mean()), "n": int(sel.sum())})
    return float(total), table


def binary(flag_pos: np.ndarray, flag_neg: np.ndarray) -> dict[str, float | None]:
    """F1/precision/recall when positives and negatives are given as boolean flags."""
    tp, fn, fp = int(flag_pos.sum()), int((~flag_pos).sum()), int(flag_neg.sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"f1": round(f1, 4), "precision": round(prec, 4), "recall": round(rec, 4),
            "n_pos": int(len(flag_pos)), "n_neg": int(len(flag_neg))}


# --- row groups ---------------------------------------------------------------------------

@dataclass
class Groups:
    """Index sets of the dev rows that the headline metrics use."""

    exact: np.ndarray        # rows with a gold level (exact, or a partial label's eval level)
    y_level: np.ndarray      # their level ids
    angry_pos: np.ndarray    # exact level >= angry
    calm: np.ndarray         # exact level calm
    olid_tin: np.ndarray
    olid_not: np.ndarray
    threat: np.ndarray       # ThreatGram violent threats
    calm_dialogue: np.ndarray
    sent: np.ndarray         # rows with a sentiment
    y_sent: np.ndarray


def groups(rows: Sequence["Example"]) -> Groups:
    lv = [r.levels for r in rows]
    gold = [getattr(r, "gold", r.level) for r in rows]
    exact = np.array([i for i, g in enumerate(gold) if g], dtype=int)
    y = np.array([LEVELS.index(gold[i]) for i in exact], dtype=int)
    sent = np.array([i for i, r in enumerate(rows) if r.sentiment], dtype=int)
    calm_dialogue = [i for i, r in enumerate(rows) if r.levels == ("calm",) and r.source in DIALOGUE_SOURCES]
    if not calm_dialogue:  # researcher data without the public dialogue sets
        calm_dialogue = [i for i, r in enumerate(rows) if r.levels == ("calm",)]
    # 'angry or worse' includes partial labels that allow nothing milder than angry
    # (GoEmotions anger = angry|abusive|threatening, OLID untargeted offence, ...).
    angry_pos = np.array([i for i, l in enumerate(lv) if l and min(LEVELS.index(x) for x in l) >= ANGRY], dtype=int)
    return Groups(
        exact=exact, y_level=y,
        angry_pos=angry_pos, calm=exact[y == 0],
        olid_tin=np.array([i for i, r in enumerate(rows) if r.source == "olid" and r.levels == ("abusive",)], dtype=int),
        olid_not=np.array([i for i, r in enumerate(rows) if r.source == "olid" and r.levels == NOT_ABUSIVE], dtype=int),
        threat=np.array([i for i, r in enumerate(rows) if r.levels == ("threatening",)], dtype=int),
        calm_dialogue=np.array(calm_dialogue, dtype=int),
        sent=sent, y_sent=np.array([SENTIMENTS.index(rows[i].sentiment) for i in sent], dtype=int),
    )


def headline(g: Groups, angry_score: np.ndarray, abusive_score: np.ndarray, abusive_flag: np.ndarray,
             threat_score: np.ndarray, threat_flag: np.ndarray) -> dict[str, Any]:
    """The figures the coach's targets are stated in, for any scorer."""
    out: dict[str, Any] = {
        "auc_angry_vs_calm": auc(angry_score[g.angry_pos], angry_score[g.calm]),
        "abusive_auc_olid": auc(abusive_score[g.olid_tin], abusive_score[g.olid_not]),
        "threat_auc_vs_calm": auc(threat_score[g.threat], threat_score[g.calm_dialogue]),
    }
    ab = binary(abusive_flag[g.olid_tin], abusive_flag[g.olid_not]) if len(g.olid_tin) else None
    out["abusive_f1"] = ab["f1"] if ab else None
    out["abusive_olid"] = ab
    out["threat_recall"] = round(float(threat_flag[g.threat].mean()), 4) if len(g.threat) else None
    out["threat_fpr_calm"] = round(float(threat_flag[g.calm_dialogue].mean()), 4) if len(g.calm_dialogue) else None
    out["abusive_fpr_calm"] = round(float(abusive_flag[g.calm_dialogue].mean()), 4) if len(g.calm_dialogue) else None
    out["n"] = {"angry_pos": len(g.angry_pos), "calm": len(g.calm), "olid_tin": len(g.olid_tin),
                "olid_not": len(g.olid_not), "threat": len(g.threat), "calm_dialogue": len(g.calm_dialogue)}
    for k in ("auc_angry_vs_calm", "abusive_auc_olid", "threat_auc_vs_calm"):
        if out[k] is not None:
            out[k] = round(out[k], 4)
    return out


def score_probs(rows: Sequence["Example"], esc: np.ndarray, sen: np.ndarray,
                thresholds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """All metrics of the classifier given its probabilities on ``rows``.

    Levels are decided by the model's rule (``thresholds``, see
    :func:`coach.classifier.decide_levels`; argmax without them).
    """
    from .classifier import decide_levels

    g = groups(rows)
    pred = decide_levels(esc, thresholds)
    out: dict[str, Any] = {}
    if len(g.exact):
        out["levels"] = per_class(g.y_level, pred[g.exact], LEVELS)
        e, table = ece(esc[g.exact], g.y_level)
        out["levels"]["ece"] = round(e, 4)
        out["levels"]["reliability"] = table
    if len(g.sent):
        out["sentiment"] = per_class(g.y_sent, sen[g.sent].argmax(1), SENTIMENTS)
        e, table = ece(sen[g.sent], g.y_sent)
        out["sentiment"]["ece"] = round(e, 4)
        out["sentiment"]["reliability"] = table
    out["headline"] = headline(
        g,
        angry_score=esc[:, ANGRY:].sum(1),
        abusive_score=esc[:, ABUSIVE:].sum(1), abusive_flag=pred >= ABUSIVE,
        threat_score=esc[:, THREAT], threat_flag=pred == THREAT,
    )
    out["headline"]["level_macro_f1"] = out.get("levels", {}).get("macro_f1")
    out["headline"]["sentiment_macro_f1"] = out.get("sentiment", {}).get("macro_f1")
    out["headline"]["level_ece"] = out.get("levels", {}).get("ece")
    out["headline"]["thresholds"] = dict(thresholds) if thresholds else None
    # per source, so a researcher sees where the model is weak
    by_src: dict[str, Any] = {}
    for src in sorted({r.source for r in rows}):
        idx = np.array([i for i, r in enumerate(rows) if r.source == src], dtype=int)
        ex = np.array([i for i in idx if rows[i].gold], dtype=int)
        item: dict[str, Any] = {"n": int(len(idx))}
        if len(ex):
            y = np.array([LEVELS.index(rows[i].gold) for i in ex])
            item["level_macro_f1"] = per_class(y, pred[ex], LEVELS)["macro_f1"]
        part = np.array([i for i in idx if rows[i].levels and len(rows[i].levels) > 1], dtype=int)
        if len(part):  # partial labels: share of predictions inside the allowed set
            item["partial_consistency"] = round(float(np.mean(
                [LEVELS[pred[i]] in rows[i].levels for i in part])), 4)
        se = np.array([i for i in idx if rows[i].sentiment], dtype=int)
        if len(se):
            y = np.array([SENTIMENTS.index(rows[i].sentiment) for i in se])
            item["sentiment_macro_f1"] = per_class(y, sen[se].argmax(1), SENTIMENTS)["macro_f1"]
        by_src[src] = item
    out["by_source"] = by_src
    return out


def evaluate_split(clf: "Classifier", split: "DataSplit") -> dict[str, Any]:
    """Metrics of ``clf`` on a prepared split (normalised texts, cached embeddings)."""
    emb = split.emb if split.emb is not None else clf.encoder.embed(split.texts)
    esc, sen = clf.predict_embeddings(emb)
    return score_probs(split.rows, esc, sen, clf.config.thresholds)


# --- baselines ------------------------------------------------------------------------------

def vader_scores(texts: Sequence[str]) -> np.ndarray | None:
    """VADER compound score per text, or None if vaderSentiment is not installed."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        return None
    sia = SentimentIntensityAnalyzer()
    return np.array([sia.polarity_scores(t)["compound"] for t in texts], dtype=float)


def profanity_scores(texts: Sequence[str]) -> np.ndarray | None:
    """alt-profanity-check probability per text, or None if not installed."""
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from profanity_check import predict_prob
            return np.asarray(predict_prob(list(texts)), dtype=float)
    except ImportError:
        return None


def baselines(rows: Sequence["Example"], texts: Sequence[str]) -> dict[str, Any]:
    """Headline figures (and sentiment for VADER) of the lexicon baselines on ``texts``."""
    g = groups(rows)
    out: dict[str, Any] = {}
    v = vader_scores(texts)
    if v is not None:
        neg = -v
        flag = v <= -0.5
        h = headline(g, neg, neg, flag, neg, flag)
        s = np.where(v <= -0.05, 0, np.where(v >= 0.05, 2, 1))
        h["sentiment_macro_f1"] = per_class(g.y_sent, s[g.sent], SENTIMENTS)["macro_f1"] if len(g.sent) else None
        h["level_macro_f1"] = None
        out["vader"] = h
    p = profanity_scores(texts)
    if p is not None:
        flag = p >= 0.5
        h = headline(g, p, p, flag, p, flag)
        h["sentiment_macro_f1"] = None
        h["level_macro_f1"] = None
        out["profanity_check"] = h
    return out


# --- plots -------------------------------------------------------------------------------------

def plot_confusion(cm: Sequence[Sequence[int]], names: Sequence[str], path: Path, title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    a = np.asarray(cm, dtype=float)
    norm = a / np.maximum(a.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(a[i, j])}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reliability(tables: Mapping[str, Sequence[Mapping[str, float]]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    for name, table in tables.items():
        ax.plot([t["confidence"] for t in table], [t["accuracy"] for t in table], "o-", label=name)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability (dev)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- the full report ---------------------------------------------------------------------------

def evaluate_rows(clf: "Classifier", rows: Sequence["Example"], out_dir: str | Path | None = None,
                  with_baselines: bool = True, raw: bool = True,
                  progress: Callable[[str], None] | None = None,
                  embed: Callable[[Sequence[str]], np.ndarray] | None = None) -> dict[str, Any]:
    """Model (normalised and raw text) and baselines on ``rows``; plots and JSON to ``out_dir``.

    ``embed`` replaces ``clf.encoder.embed`` (the CLI passes the training embedding
    cache, so evaluating on the dev sets a model was trained with is fast).
    """
    from .text import normalize_speech

    say = progress or (lambda m: None)
    embed = embed or clf.encoder.embed
    rows = [r for r in rows if r.text and r.text.strip()]
    norm = [normalize_speech(r.text) for r in rows]
    keep = [i for i, t in enumerate(norm) if t]
    rows = [rows[i] for i in keep]
    norm = [norm[i] for i in keep]
    raws = [r.text for r in rows]
    say(f"scoring {len(rows)} rows (normalised text)")
    esc, sen = clf.predict_embeddings(embed(norm))
    report: dict[str, Any] = {"model": str(clf.path) if clf.path else None, "n_rows": len(rows),
                              "normalised": score_probs(rows, esc, sen, clf.config.thresholds)}
    if raw:
        say("scoring raw (un-normalised) text")
        esc_r, sen_r = clf.predict_embeddings(embed(raws))
        report["raw"] = score_probs(rows, esc_r, sen_r, clf.config.thresholds)
    if with_baselines:
        say("scoring baselines")
        report["baselines"] = {"normalised": baselines(rows, norm), "raw": baselines(rows, raws)}
    report["table"] = comparison_table(report)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (out / "summary.md").write_text(report["table"] + "\n", encoding="utf-8")
        n = report["normalised"]
        if "levels" in n:
            plot_confusion(n["levels"]["confusion"], LEVELS, out / "confusion_levels.png", "escalation (dev, normalised)")
        if "sentiment" in n:
            plot_confusion(n["sentiment"]["confusion"], SENTIMENTS, out / "confusion_sentiment.png", "sentiment (dev)")
        tables = {k: n[k]["reliability"] for k in ("levels", "sentiment") if k in n}
        if tables:
            plot_reliability(tables, out / "reliability.png")
    return report


HEAD_KEYS = [
    ("auc_angry_vs_calm", "AUC angry-or-worse vs calm", ">= 0.90"),
    ("level_macro_f1", "macro-F1 over levels", ""),
    ("abusive_f1", "abusive F1 (OLID TIN vs NOT)", ">= 0.75"),
    ("threat_recall", "violent-threat recall (ThreatGram 2)", ">= 0.80"),
    ("threat_fpr_calm", "threat false positives, calm dialogue", "<= 0.10"),
    ("abusive_fpr_calm", "abusive+ false positives, calm dialogue", ""),
    ("sentiment_macro_f1", "sentiment macro-F1", ""),
]


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def comparison_table(report: Mapping[str, Any]) -> str:
    """Markdown table: model (normalised, raw) beside the baselines."""
    cols: list[tuple[str, Mapping[str, Any]]] = [("model (normalised)", report["normalised"]["headline"])]
    if "raw" in report:
        cols.append(("model (raw text)", report["raw"]["headline"]))
    for mode in ("normalised", "raw"):
        for name, h in report.get("baselines", {}).get(mode, {}).items():
            cols.append((f"{name} ({mode})", h))
    lines = ["| metric | target | " + " | ".join(c for c, _ in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for key, label, target in HEAD_KEYS:
        lines.append(f"| {label} | {target} | " + " | ".join(_fmt(h.get(key)) for _, h in cols) + " |")
    return "\n".join(lines)


def model_card(clf: "Classifier", metrics: Mapping[str, Any], used: Mapping[str, Any], args: "TrainArgs") -> str:
    """MODEL_CARD.md text: data and licences, dev metrics, limits."""
    h = metrics.get("headline", {})
    cfg = clf.config
    lines = [
        f"# {args.name}",
        "",
        "Escalation (calm < frustrated < angry < abusive < threatening) and sentiment",
        "(negative/neutral/positive) of a customer utterance, for the live call coach.",
        f"Encoder `{cfg.encoder}` ({'frozen' if not cfg.adapter else 'LoRA adapter in adapter/'}), "
        f"heads: {'linear' if cfg.hidden <= 0 else f'1 hidden layer of {cfg.hidden}'}"
        f"{f' (ensemble of {cfg.ensemble}, logits averaged)' if getattr(cfg, 'ensemble', 1) > 1 else ''}; "
        f"temperatures escalation {cfg.temperature_escalation:.3f}, sentiment {cfg.temperature_sentiment:.3f}.",
        "Input text is normalised like speech-to-text output (`coach.text.normalize_speech`).",
    ]
    if getattr(cfg, "context_tokens", 0):
        lines.append(f"Reads the last {cfg.context_tokens} tokens of the previous turn before the utterance "
                     "(`[CLS] previous [SEP] utterance [SEP]`, the utterance's tokens pooled); without a "
                     "previous turn it reads the utterance alone. Dev figures below use the previous turn "
                     "where the data has one.")
    th = getattr(cfg, "thresholds", None)
    if th:
        rule = []
        if "threatening" in th:
            rule.append(f"threatening if P(threatening) >= {th['threatening']:.2f}")
        if "abusive" in th:
            rule.append(f"else abusive if P(abusive or worse) >= {th['abusive']:.2f}")
        prior = getattr(cfg, "calm_prior", 1.0)
        if prior != 1.0:
            lines += ["", f"Deployment prior: P(calm) x {prior:g}, renormalised (Bayes' rule: calls are mostly calm, "
                      "the class-balanced training is not), before the rule below; `calm_prior` in config.json."]
        lines += ["", "Decision rule (`Classifier.decide`, used for the F1/recall figures below; thresholds "
                  "tuned on the tuning split carved from the training rows, never on dev): "
                  + "; ".join(rule) + "; else the most likely of calm/frustrated/angry. "
                  "This rule is the `level` users see: in events, the timeline, `coach classify` and the "
                  "playbook, whose `utterance_at_least` and `corroborated` conditions follow it unless a "
                  "playbook sets its own `p`."]
    has_tune = any("tune_rows" in u for u in used.values())
    lines += [
        "",
        "## Data (training and dev rows after label-balanced subsampling)",
        "",
        "| source | licence | commercial use | role | train | " + ("tune | " if has_tune else "") + "dev |",
        "|---|---|---|---|---|---|" + ("---|" if has_tune else ""),
    ]
    for name, u in used.items():
        lines.append(f"| {name} | {u['licence']} | {'yes' if u['commercial_ok'] else 'no'} | {u['role']} | "
                     f"{u['train_rows']} | " + (f"{u.get('tune_rows', 0)} | " if has_tune else "") + f"{u['dev_rows']} |")
    nc = [n for n, u in used.items() if not u["commercial_ok"] and u["train_rows"]]
    lines += ["", ("Trained on non-commercial data (" + ", ".join(nc) + "): research use only. Retrain with "
                   "`exclude_noncommercial: true` for commercial use.") if nc else
              "All training data permits commercial use.", ""]
    lines += ["## Dev metrics (normalised text; official test splits were not used)", "",
              "| metric | target | value |", "|---|---|---|"]
    for key, label, target in HEAD_KEYS:
        lines.append(f"| {label} | {target} | {_fmt(h.get(key))} |")
    lines.append(f"| escalation ECE (exact-label rows) | | {_fmt(h.get('level_ece'))} |")
    lines += ["", "Per-source figures are in metrics.json; `coach eval` adds raw-text figures and the",
              "VADER / alt-profanity-check baselines.", "",
              "## Limits", "",
              "- Trained on written text (tweets, Reddit, sitcom and textbook dialogue), not on real calls;",
              "  the label mapping to escalation levels is a modelling decision (configs/labels.yaml).",
              "- Abuse and threat data are political/extremist social media: customer-service abuse and",
              "  threats ('I'll sue', 'I'll find you') differ; check on your own labelled calls.",
              "- 'frustrated' is learnt from GoEmotions (disappointment; annoyance/disapproval as partial",
              "  labels) and the small hand-written seed set; it is the weakest class, with 'angry'.",
              "- English only; sarcasm and misrecognised words are not handled.",
              "- Scores single utterances; the coach's trajectory smooths them over the call.", ""]
    return "\n".join(lines)


CARD_SECTION = "## Dev comparison with baselines"


def update_card(card: str | Path, report: Mapping[str, Any], data: str) -> Path:
    """Put (or replace) the model-vs-baselines table in a MODEL_CARD.md."""
    card = Path(card)
    text = card.read_text(encoding="utf-8") if card.exists() else ""
    if CARD_SECTION in text:
        head, _, rest = text.partition(CARD_SECTION)
        nxt = rest.find("\n## ")
        text = head + (rest[nxt + 1:] if nxt >= 0 else "")
    section = (f"{CARD_SECTION}\n\n`coach eval {data}` ({report['n_rows']} dev rows). Baselines flag at "
               "VADER compound <= -0.5 and profanity-check probability >= 0.5; 'raw' is un-normalised text.\n\n"
               + report["table"] + "\n")
    text = text.rstrip("\n") + "\n\n" + section
    card.write_text(text, encoding="utf-8")
    return card


__all__ = ["auc", "baselines", "comparison_table", "ece", "evaluate_rows", "evaluate_split",
           "headline", "model_card", "per_class", "score_probs", "update_card"]
