"""Train the escalation/sentiment classifier from ``configs/train/NAME.yaml``.

Modes:

* ``heads`` (default, CPU-friendly): the sentence encoder stays frozen; embeddings of
  every text are computed once and cached under ``.cache/embeddings/`` (keyed by the
  encoder and a hash of the texts), so re-running with other head settings takes
  seconds. Only the two small heads are trained.
* ``lora``: LoRA adapters on the encoder's attention projections are trained together
  with the heads on a (sub)sample; only the adapter weights are saved.
* ``full``: fine-tunes the whole encoder; refused without a GPU.

Escalation targets may be partial (a set of allowed levels); the loss is the negative
log of the probability mass on the allowed set, so "not abusive" rows push mass away
from abuse without claiming the row is calm. Rows lacking a target are masked.
Classes are balanced by inverse frequency; training stops early on dev macro-F1 and a
temperature per head is fitted on dev NLL afterwards.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from . import datasets as ds
from . import safeio
from .classifier import PACKAGED_ENCODER, Classifier, EnsembleHeads, Encoder, Heads, ModelConfig, encoder_id
from .errors import ConfigError
from .events import LEVELS, SENTIMENTS
from .text import normalize_speech

log = logging.getLogger(__name__)
MODES = ("heads", "lora", "full")
MAX_CONFIG_BYTES = 1 * safeio.MB

# Allowed ranges of TrainArgs' numeric options (keyword arguments of safeio.number).
_PROB = {"lo": 0.0, "hi": 1.0}
_NUMERIC_OPTIONS: dict[str, dict[str, Any]] = {
    "max_per_source": {"lo": 0, "integer": True},       # 0 = no cap
    "max_dev_per_source": {"lo": 0, "integer": True},
    "dev_fraction": _PROB,
    "seed": {"lo": 0, "hi": 2**31 - 1, "integer": True},  # numpy seeds must fit 32 bits (seed + offsets)
    "max_length": {"lo": 1, "hi": 512, "integer": True},  # MiniLM has 512 positions
    "embed_batch_size": {"lo": 1, "integer": True},
    "hidden": {"lo": 0, "hi": 65536, "integer": True},   # 0 = linear heads
    "dropout": {"lo": 0.0, "hi": 1.0, "hi_open": True},
    "epochs": {"lo": 1, "integer": True},
    "batch_size": {"lo": 1, "integer": True},
    "lr": {"lo": 0.0, "lo_open": True},
    "weight_decay": {"lo": 0.0},
    "patience": {"lo": 0, "integer": True},
    "balance_power": {"lo": 0.0},
    "sentiment_weight": {"lo": 0.0},
    "tune_fraction": {"lo": 0.0, "hi": 0.5, "hi_open": True},
    "threat_fpr_budget": _PROB,
    "threat_min_precision": _PROB,
    "abusive_max_angry": _PROB,
    "calm_prior": {"lo": 0.0, "lo_open": True, "hi": 1000.0},
    "ensemble": {"lo": 1, "hi": 64, "integer": True},
    "lora_r": {"lo": 1, "integer": True},
    "lora_alpha": {"lo": 1, "integer": True},
    "lora_dropout": {"lo": 0.0, "hi": 1.0, "hi_open": True},
    "lora_max_train": {"lo": 1, "integer": True},
    "encoder_epochs": {"lo": 1, "integer": True},
    "encoder_lr": {"lo": 0.0, "lo_open": True},
    "lora_max_length": {"lo": 8, "hi": 512, "integer": True},
    "lora_max_minutes": {"lo": 0.0, "lo_open": True},
    "warmup_fraction": {"lo": 0.0, "hi": 0.5},
    "threads": {"lo": 0, "hi": 1024, "integer": True},   # 0 or null = torch's default
    "context_tokens": {"lo": 0, "hi": 256, "integer": True},
    "context_dropout": _PROB,
}
_OPTIONAL = {"threads"}
_BOOL_OPTIONS = ("exclude_noncommercial", "class_balance", "calibrate", "thresholds")


def _default_config() -> Path:
    from . import resources
    return resources.packaged(resources.TRAIN_CONFIG)


@dataclass
class TrainArgs:
    """Everything that defines a training run (saved into the model's config.json)."""

    name: str = "escalation-minilm"
    output_dir: str | None = None          # default: models/<name>
    mode: str = "heads"                    # heads | lora | full
    encoder: str = PACKAGED_ENCODER        # package:..., a local folder or a cached HF id
    sources: list[Any] = field(default_factory=lambda: [
        "goemotions", "tweeteval_emotion", "tweeteval_hate", "meld", "emorynlp",
        "dailydialog", "olid", "davidson", "threatgram"])
    eval_sources: list[Any] = field(default_factory=list)  # dev-only extras, e.g. tweeteval_sentiment
    data_root: str | None = None           # built-in sets; default ../shared/data/text
    labels: str | None = None              # label schema; default configs/labels.yaml
    exclude_noncommercial: bool = False
    max_per_source: int = 3000             # training rows per source (label-balanced subsample)
    max_dev_per_source: int = 1000
    dev_fraction: float = 0.15             # hold-out for sets without a dev split
    seed: int = 13
    max_length: int = 128
    embed_batch_size: int = 64
    cache_dir: str = ".cache/embeddings"
    # heads
    hidden: int = 256
    dropout: float = 0.1
    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8
    class_balance: bool = True
    balance_power: float = 1.0             # weight = frequency^-power (0.5: softer balancing)
    sentiment_weight: float = 1.0
    calibrate: bool = True
    # tuning split: a hash-seeded share of the TRAINING rows (never dev) held out of head
    # fitting; early stopping, temperatures and decision thresholds are chosen on it, so
    # dev figures stay an honest estimate. 0 = old behaviour (stop/calibrate on dev, argmax).
    tune_fraction: float = 0.0
    thresholds: bool = False               # tune the abusive/threatening decision thresholds
    threat_fpr_budget: float = 0.02        # max share of calm rows, any source (tuning split), flagged threatening
    threat_min_precision: float = 0.5      # min share of violent threats among tuning rows flagged threatening
    abusive_max_angry: float = 1.0         # max share of exact-'angry' tuning rows flagged abusive or worse
    # Deployment prior: how much more common calm turns are on a call than in the
    # class-balanced training (Bayes' rule on the calibrated probabilities, applied
    # before the thresholds are tuned). 1 = none.
    calm_prior: float = 1.0
    ensemble: int = 1                      # head sets fitted with seeds seed..seed+n-1, logits averaged
    # lora / full
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(default_factory=lambda: ["query", "key", "value"])
    lora_max_train: int = 4000             # rows fine-tuned through the encoder (CPU is slow)
    encoder_epochs: int = 1
    encoder_lr: float = 2e-4
    lora_max_length: int = 64              # tokens per text while fine-tuning (inference keeps max_length)
    lora_max_minutes: float = 120.0        # wall-clock budget of the fine-tuning loop; it stops there
    warmup_fraction: float = 0.05          # linear warm-up, then linear decay to 0
    threads: int | None = 1                # torch threads while training; 1 is fastest on a shared CPU
    # Dialogue context (mode lora): the model reads the last `context_tokens` tokens of
    # the previous turn (MELD, EmoryNLP, DailyDialog rows carry it) before the utterance.
    # `context_dropout` of the rows that have one are fine-tuned without it, so the model
    # still reads a lone utterance (a call's first turn, `coach classify`, the standard
    # benchmark) as well as before. 0 = no context.
    context_tokens: int = 0
    context_dropout: float = 0.3

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> "TrainArgs":
        """Options from a YAML file (a regular file of at most 1 MB), then ``overrides``."""
        path = Path(path)
        text = safeio.read_text(path, what="training config", max_bytes=MAX_CONFIG_BYTES, error_cls=ConfigError,
                                fix=f"pass an existing training YAML, e.g. {_default_config()}")
        raw = safeio.load_yaml(text, where=f"training config {path}", error_cls=ConfigError,
                               fix=f"compare it with {_default_config()}")
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"training config {path} must be a mapping of option: value",
                              f"compare it with {_default_config()}")
        raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
        args = cls.from_dict(raw, where=str(path))
        args._base = path.resolve().parent  # generic data paths are relative to the config
        return args

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "training config") -> "TrainArgs":
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in set(d) - set(valid))
        if unknown:
            raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}", f"valid options: {', '.join(valid)}")
        args = cls(**d)
        args.validate(where)
        return args

    def validate(self, where: str = "training config") -> None:
        """Refuse option values of the wrong type or out of range (one line naming option and range).

        Integer options given as ``3.0`` are stored as ``3``; NaN and infinities are refused.
        """
        fix = f"see {_default_config()} for the options and their values"
        for key, spec in _NUMERIC_OPTIONS.items():
            value = getattr(self, key)
            if value is None and key in _OPTIONAL:
                continue
            try:
                setattr(self, key, safeio.number(value, key, **spec))
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}", fix) from None
        for key in _BOOL_OPTIONS:
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{where}: {key} must be true or false, got {getattr(self, key)!r}", fix)
        for key in ("name", "mode", "encoder", "cache_dir", "output_dir", "data_root", "labels"):
            value = getattr(self, key)
            if value is None and key in ("output_dir", "data_root", "labels"):
                continue
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}: {key} must be a non-empty string, got {value!r}", fix)
        if self.name in (".", "..") or "/" in self.name or "\\" in self.name:
            raise ConfigError(f"{where}: name {self.name!r} must be a plain name, not a path",
                              "set output_dir for the folder and name for the model's name")
        for key in ("sources", "eval_sources", "lora_targets"):
            value = getattr(self, key)
            if not isinstance(value, list):
                raise ConfigError(f"{where}: {key} must be a list, got {type(value).__name__}", fix)
            for item in value:
                ok = isinstance(item, str) and item.strip() if key == "lora_targets" else (
                    isinstance(item, dict) or (isinstance(item, str) and item.strip()))
                if not ok:
                    raise ConfigError(f"{where}: {key} holds {item!r}",
                                      f"list source names, or mappings with a name (see {_default_config()})"
                                      if key != "lora_targets" else "list module names such as query, key, value")
        if self.mode not in MODES:
            raise ConfigError(f"{where}: mode {self.mode!r} is not one of {', '.join(MODES)}", "set mode: heads")
        if self.mode == "full" and not torch.cuda.is_available():
            raise ConfigError(f"{where}: mode full fine-tunes the whole encoder and needs a GPU",
                              "use mode: heads or mode: lora on CPU")
        if not self.sources:
            raise ConfigError(f"{where}: no data sources", "list at least one source under sources:")
        if self.mode == "lora" and not self.lora_targets:
            raise ConfigError(f"{where}: lora_targets is empty", "list e.g. lora_targets: [query, key, value]")
        if self.context_tokens and self.mode != "lora":
            raise ConfigError(f"{where}: context_tokens needs a fine-tuned encoder (a frozen one was never "
                              "taught to read the previous turn)", "set mode: lora, or context_tokens: 0")
        if self.thresholds and not self.tune_fraction:
            raise ConfigError(f"{where}: thresholds are tuned on the tuning split",
                              "set tune_fraction (e.g. 0.1) or thresholds: false")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def out_path(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path.cwd() / "models" / self.name


def set_seed(seed: int) -> None:
    """Seed every generator before anything is built, so runs are repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- data ---------------------------------------------------------------------------

@dataclass
class DataSplit:
    rows: list[ds.Example]
    texts: list[str]              # normalised
    level_mask: np.ndarray        # (n, 5) bool, all False = no escalation target
    sentiment: np.ndarray         # (n,) int, -1 = none
    emb: np.ndarray | None = None
    weight: np.ndarray | None = None  # (n,) per-row source weight
    contexts: list[str] | None = None  # normalised previous turns ("" for none)


def make_split(rows: Sequence[ds.Example], source_weights: Mapping[str, float] | None = None) -> DataSplit:
    texts = [normalize_speech(r.text) for r in rows]
    keep = [i for i, t in enumerate(texts) if t]  # rows that normalise to nothing teach nothing
    rows = [rows[i] for i in keep]
    texts = [texts[i] for i in keep]
    contexts = [normalize_speech(r.context) if r.context else "" for r in rows]
    mask = np.zeros((len(rows), len(LEVELS)), dtype=bool)
    sent = np.full(len(rows), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        if r.levels:
            mask[i, [LEVELS.index(lv) for lv in r.levels]] = True
        if r.sentiment:
            sent[i] = SENTIMENTS.index(r.sentiment)
    sw = source_weights or {}
    weight = np.array([sw.get(r.source, 1.0) for r in rows], dtype=np.float32)
    return DataSplit(list(rows), texts, mask, sent, weight=weight, contexts=contexts)


def load_data(args: TrainArgs) -> tuple[DataSplit, DataSplit, dict[str, Any]]:
    """Train and dev splits per the config, subsampled, plus a summary for the card."""
    schema = ds.load_schema(args.labels)
    base = getattr(args, "_base", Path.cwd())
    train: list[ds.Example] = []
    dev: list[ds.Example] = []
    used: dict[str, Any] = {}
    weights: dict[str, float] = {}
    specs = [(s, True) for s in args.sources] + [(s, False) for s in args.eval_sources]
    for k, (raw, for_train) in enumerate(specs):
        spec = ds.SourceSpec.from_dict(raw)
        if spec.kind != "generic" and isinstance(raw, str):
            spec.dev_fraction = args.dev_fraction
        rows = ds.load_source(spec, args.data_root, schema, base)
        weights[spec.name] = float(spec.weight)
        if args.exclude_noncommercial and not all(r.commercial_ok for r in rows):
            kept = [r for r in rows if r.commercial_ok]  # derived sets keep each row's own licence
            log.info("leaving out %d non-commercial rows of %s", len(rows) - len(kept), spec.name)
            if not kept:
                continue
            rows = kept
        tr = [r for r in rows if r.split == "train"] if for_train else []
        dv = [r for r in rows if r.split == "dev"]
        tr = ds.balanced_subsample(tr, spec.max_train or args.max_per_source, args.seed + k)
        dv = ds.balanced_subsample(dv, args.max_dev_per_source, args.seed + 1000 + k)
        train += tr
        dev += dv
        used[spec.name] = {
            # a derived set (hard negatives) mixes its rows' origins: name every licence
            # it used, and call it commercial only if every row it used is
            "licence": "; ".join(sorted({r.licence for r in tr + dv})) or (rows[0].licence if rows else spec.licence),
            "commercial_ok": bool(rows) and all(r.commercial_ok for r in (tr + dv or rows)),
            "train_rows": len(tr), "dev_rows": len(dv), "role": ("train only" if spec.train_only else "train+dev") if for_train else "dev only",
        }
        log.info("%s: %d train, %d dev rows", spec.name, len(tr), len(dv))
    if not train:
        raise ConfigError("no training rows left", "add sources or set exclude_noncommercial: false")
    return make_split(train, weights), make_split(dev), used


TUNE_SALT = "coach-tune-v1"


def subset(split: DataSplit, idx: Sequence[int] | np.ndarray) -> DataSplit:
    idx = np.asarray(idx, dtype=int)
    return DataSplit([split.rows[i] for i in idx], [split.texts[i] for i in idx], split.level_mask[idx],
                     split.sentiment[idx], emb=None if split.emb is None else split.emb[idx],
                     weight=None if split.weight is None else split.weight[idx],
                     contexts=None if split.contexts is None else [split.contexts[i] for i in idx])


def carve_tune(split: DataSplit, fraction: float, keep_sources: Sequence[str] = ()) -> tuple[DataSplit, DataSplit]:
    """Split training rows into (fit, tune) by a salted text hash (not the dev hash).

    Rows of ``keep_sources`` (the hand-written seed set, mined hard negatives) always
    stay in fit, and so does any row with the same text as one of them (a mined
    ``confusable`` turn is a copy of a dialogue turn, "okay" is in many sources): the
    thresholds are never tuned on text the model was trained on.
    """
    kept = {t for r, t in zip(split.rows, split.texts) if r.source in keep_sources}
    tune = np.array([r.source not in keep_sources and t not in kept and
                     int.from_bytes(hashlib.sha1(f"{TUNE_SALT}\0{t}".encode("utf-8")).digest()[:4], "big")
                     / 2**32 < fraction for r, t in zip(split.rows, split.texts)], dtype=bool)
    return subset(split, np.flatnonzero(~tune)), subset(split, np.flatnonzero(tune))


def _f(flags_pos: np.ndarray, flags_neg: np.ndarray, beta: float = 1.0, pos_weight: float = 1.0) -> float:
    tp, fn, fp = pos_weight * flags_pos.sum(), pos_weight * (~flags_pos).sum(), flags_neg.sum()
    b2 = beta * beta
    return float((1 + b2) * tp / max((1 + b2) * tp + b2 * fn + fp, 1))


FEW_CALM_ROWS = 10  # fewer calm tuning rows than this inside the threat budget: a noisy threshold


def tune_thresholds(rows: Sequence[ds.Example], esc: np.ndarray, threat_fpr_budget: float = 0.02,
                    threat_min_precision: float = 0.5, abusive_max_angry: float = 1.0) -> dict[str, Any]:
    """Decision thresholds on calibrated tuning-split probabilities (see ``decide_levels``).

    * abusive: P(abusive or worse) threshold maximising F1 of OLID targeted insults
      against not-offensive tweets (the headline abuse task) at OLID's own class ratio,
      as the standard benchmark counts them, among
      thresholds that flag at most ``abusive_max_angry`` of the rows labelled exactly
      'angry' (angry dialogue turns: anger is not abuse, and a boundary prompt on a
      merely angry customer is a false alarm);
    * threatening: the lowest P(threatening) threshold (highest recall of violent
      threats) at which at least ``threat_min_precision`` of the flagged tuning rows
      with a level are violent threats and at most ``threat_fpr_budget`` of the calm
      rows (any source) are flagged. A missed threat costs more than a security prompt on
      a violent-sounding insult, so precision is floored rather than maximised.
    """
    from .evaluate import groups

    g = groups(rows)
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    info: dict[str, Any] = {"n": {"olid_tin": len(g.olid_tin), "olid_not": len(g.olid_not),
                                  "threat": len(g.threat), "calm": len(g.calm)}}
    out: dict[str, float] = {}
    p_ab = esc[:, LEVELS.index("abusive"):].sum(1)
    if len(g.olid_tin) >= 20 and len(g.olid_not) >= 20:
        angry = np.array([i for i, r in enumerate(rows) if r.levels == ("angry",)], dtype=int)
        f1 = np.array([_f(p_ab[g.olid_tin] >= t, p_ab[g.olid_not] >= t) for t in grid])
        angry_flag = np.array([(p_ab[angry] >= t).mean() if len(angry) else 0.0 for t in grid])
        ok = angry_flag <= abusive_max_angry
        if ok.any():
            k = int(np.flatnonzero(ok)[np.argmax(f1[ok])])
            out["abusive"] = float(grid[k])
            info.update(abusive_f1_tune=round(float(f1[k]), 4), angry_flagged_abusive_tune=round(float(angry_flag[k]), 4))
    p_th = esc[:, LEVELS.index("threatening")]
    # How many calm rows the budget lets through: the threshold sits just above the next
    # one, so with a handful it moves a lot between retrains (see _calibrate's warning).
    info["threat_calm_rows_allowed"] = int(np.floor(threat_fpr_budget * len(g.calm) + 1e-9))
    has_level = np.flatnonzero(np.array([bool(r.levels) for r in rows]))
    neg = np.setdiff1d(has_level, g.threat)
    if len(g.threat) >= 20:
        for t in grid:
            flag_pos, flag_neg = p_th[g.threat] >= t, p_th[neg] >= t
            fpr = float((p_th[g.calm] >= t).mean()) if len(g.calm) else 0.0
            prec = flag_pos.sum() / max(flag_pos.sum() + flag_neg.sum(), 1)
            if fpr <= threat_fpr_budget and prec >= threat_min_precision:
                out["threatening"] = float(t)
                info.update(threat_recall_tune=round(float(flag_pos.mean()), 4),
                            threat_precision_tune=round(float(prec), 4), threat_fpr_calm_tune=round(fpr, 4))
                break
    info["thresholds"] = out
    return info


def _cache_dir(args: TrainArgs) -> Path:
    key = hashlib.sha1(f"{encoder_id(args.encoder)}|{args.max_length}|mean-l2".encode()).hexdigest()[:16]
    root = Path(args.cache_dir)
    if not root.is_absolute():
        root = Path.cwd() / root
    return root / key


def _text_key(t: str) -> bytes:
    return hashlib.sha1(t.encode("utf-8")).digest()[:12]


def embed_cached(encoder: Encoder, args: TrainArgs, texts: Sequence[str],
                 progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Embeddings of ``texts``, reusing the on-disk cache.

    The cache is a folder per encoder (+max_length) of shards, each holding text
    hashes and their embeddings; only texts never seen before are embedded, so
    growing ``max_per_source`` or adding a source costs only the new rows.
    """
    d = _cache_dir(args)
    known: dict[bytes, np.ndarray] = {}
    if d.exists():
        for shard in sorted(d.glob("shard-*.npz")):
            with np.load(shard) as z:
                for k, v in zip(z["keys"], z["emb"]):
                    known[bytes(k)] = v
    keys = [_text_key(t) for t in texts]
    missing: dict[bytes, str] = {}
    for k, t in zip(keys, texts):
        if k not in known and k not in missing:
            missing[k] = t
    if missing:
        todo = sorted(missing.items(), key=lambda kv: len(kv[1]))
        t0 = time.perf_counter()
        d.mkdir(parents=True, exist_ok=True)
        step = 2048
        for i in range(0, len(todo), step):
            part = todo[i:i + step]
            emb = encoder.embed([t for _, t in part], batch_size=args.embed_batch_size)
            karr = np.frombuffer(b"".join(k for k, _ in part), dtype=np.uint8).reshape(len(part), 12)
            tmp = d / f"tmp-{os.getpid()}.npz"
            np.savez(tmp, keys=karr, emb=emb)
            os.replace(tmp, d / f"shard-{time.time_ns()}.npz")
            for (k, _), v in zip(part, emb):
                known[k] = v
            if progress:
                done = min(i + step, len(todo))
                progress(f"embedded {done}/{len(todo)} new texts ({done / (time.perf_counter() - t0):.0f}/s)")
    dim = encoder.dim
    if not keys:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([known[k] for k in keys]).astype(np.float32)


# --- losses and fitting -----------------------------------------------------------------

def partial_nll(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """-log P(allowed set) per row: -logsumexp(logits[allowed]) + logsumexp(logits)."""
    allowed = logits.masked_fill(~mask, float("-inf"))
    return torch.logsumexp(logits, dim=1) - torch.logsumexp(allowed, dim=1)



def multitask_loss(le: torch.Tensor, ls: torch.Tensor, level_mask: torch.Tensor, sentiment: torch.Tensor,
                   w_level: torch.Tensor, w_sent: torch.Tensor, sentiment_weight: float) -> torch.Tensor:
    """Weighted escalation + sentiment loss for one batch; rows lacking a target add nothing."""
    loss = torch.zeros(())
    has = level_mask.any(1)
    if has.any():
        loss = loss + (partial_nll(le[has], level_mask[has]) * w_level[has]).sum() / len(le)
    hs = sentiment >= 0
    if hs.any():
        ce = torch.nn.functional.cross_entropy(ls[hs], sentiment[hs], reduction="none")
        loss = loss + sentiment_weight * (ce * w_sent[hs]).sum() / len(le)
    return loss

def row_weights(split: DataSplit, balance: bool, power: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-row weights: inverse frequency of each escalation target set / sentiment class."""
    n = len(split.texts)
    we = np.zeros(n, dtype=np.float32)
    ws = np.zeros(n, dtype=np.float32)
    has_e = split.level_mask.any(1)
    keys = [tuple(m) for m in split.level_mask]
    if has_e.any():
        if balance:
            from collections import Counter
            cnt = Counter(k for k, h in zip(keys, has_e) if h)
            for i in np.flatnonzero(has_e):
                we[i] = cnt[keys[i]] ** -power
            we *= has_e.sum() / we.sum()
        else:
            we[has_e] = 1.0
    has_s = split.sentiment >= 0
    if has_s.any():
        if balance:
            cnt = np.bincount(split.sentiment[has_s], minlength=len(SENTIMENTS)).astype(np.float32)
            ws[has_s] = cnt[split.sentiment[has_s]] ** -power
            ws *= has_s.sum() / ws.sum()
        else:
            ws[has_s] = 1.0
    if split.weight is not None:
        we *= split.weight
        ws *= split.weight
    return we, ws


def _macro_f1(y: np.ndarray, p: np.ndarray, k: int) -> float:
    f1s = []
    for c in range(k):
        tp = np.sum((p == c) & (y == c))
        fp = np.sum((p == c) & (y != c))
        fn = np.sum((p != c) & (y == c))
        if tp + fn == 0:
            continue
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
    return float(np.mean(f1s)) if f1s else 0.0


def dev_score(heads: Heads, dev: DataSplit) -> float:
    """Escalation macro-F1 on exact-label rows + half the sentiment macro-F1."""
    heads.eval()
    with torch.inference_mode():
        le, ls = heads(torch.from_numpy(dev.emb))
    exact = dev.level_mask.sum(1) == 1
    score = 0.0
    if exact.any():
        score += _macro_f1(dev.level_mask[exact].argmax(1), le.argmax(1).numpy()[exact], len(LEVELS))
    hs = dev.sentiment >= 0
    if hs.any():
        score += 0.5 * _macro_f1(dev.sentiment[hs], ls.argmax(1).numpy()[hs], len(SENTIMENTS))
    return score


def fit_heads(args: TrainArgs, train: DataSplit, dev: DataSplit,
              progress: Callable[[str], None] | None = None) -> tuple[Heads, dict[str, Any]]:
    """Adam on cached embeddings with early stopping on ``dev`` (the tuning split when the config has one)."""
    heads = Heads(dim=train.emb.shape[1], hidden=args.hidden, dropout=args.dropout)
    opt = torch.optim.AdamW(heads.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    x = torch.from_numpy(train.emb)
    m = torch.from_numpy(train.level_mask)
    s = torch.from_numpy(train.sentiment)
    we, ws = (torch.from_numpy(w) for w in row_weights(train, args.class_balance, args.balance_power))
    g = torch.Generator().manual_seed(args.seed)
    best, best_state, best_epoch, bad = -1.0, None, 0, 0
    history = []
    for epoch in range(1, args.epochs + 1):
        heads.train()
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), args.batch_size):
            idx = perm[i:i + args.batch_size]
            le, ls = heads(x[idx])
            loss = multitask_loss(le, ls, m[idx], s[idx], we[idx], ws[idx], args.sentiment_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        score = dev_score(heads, dev)
        history.append({"epoch": epoch, "train_loss": total / len(x), "dev_score": score})
        if progress:
            progress(f"epoch {epoch}: train loss {total / len(x):.4f}, selection score {score:.4f}")
        if score > best + 1e-4:
            best, best_epoch, bad = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in heads.state_dict().items()}
        else:
            bad += 1
            if bad >= args.patience:
                break
    if best_state is not None:
        heads.load_state_dict(best_state)
    heads.eval()
    return heads, {"best_epoch": best_epoch, "best_dev_score": best, "history": history}


def fit_temperature(logits: np.ndarray, mask: np.ndarray) -> float:
    """Temperature minimising the dev NLL (partial labels allowed), in 0.05..20."""
    from scipy.optimize import minimize_scalar

    has = mask.any(1)
    if has.sum() < 10:
        return 1.0
    lg = torch.from_numpy(logits[has]).double()
    mk = torch.from_numpy(mask[has])

    def nll(log_t: float) -> float:
        return float(partial_nll(lg / math.exp(log_t), mk).mean())

    res = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return float(math.exp(res.x))


# --- LoRA ----------------------------------------------------------------------------------

def _length_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar-length texts: padding is most of the cost on CPU.

    Rows are shuffled, cut into pools of 50 batches, sorted by length inside each pool,
    batched, and the batches shuffled again, so every epoch still mixes all sources.
    """
    perm = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches = []
    for i in range(0, len(perm), pool):
        part = perm[i:i + pool]
        part = part[np.argsort([lengths[j] for j in part], kind="stable")]
        batches += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[k] for k in order]


def train_lora(args: TrainArgs, encoder: Encoder, heads: torch.nn.Module, train: DataSplit,
               progress: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Fine-tune LoRA adapters and the heads jointly through the encoder (multi-task:
    escalation with partial labels, sentiment); returns the peft model and a summary.

    Runs ``encoder_epochs`` passes over at most ``lora_max_train`` rows with a linear
    warm-up/decay schedule, and stops early at ``lora_max_minutes`` of wall clock: the
    stated CPU budget, whatever the data size.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("mode lora needs peft", "run `pip install peft`") from None
    cfg = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                     target_modules=list(args.lora_targets), bias="none")
    model = get_peft_model(encoder.model, cfg)
    model.train()
    heads.train()
    rng = np.random.default_rng(args.seed)
    idx_all = np.arange(len(train.texts))
    if len(idx_all) > args.lora_max_train:
        idx_all = np.sort(rng.choice(idx_all, args.lora_max_train, replace=False))
    sub = subset(train, idx_all)
    we, ws = (torch.from_numpy(w) for w in row_weights(sub, args.class_balance, args.balance_power))
    tok = encoder.tokenizer(sub.texts, truncation=True, max_length=args.lora_max_length)["input_ids"]
    lengths = [len(t) for t in tok]
    ctx = sub.contexts if args.context_tokens and sub.contexts else None
    if ctx:
        # Batches group similar total lengths; the context adds at most context_tokens + 1.
        ctok = encoder.tokenizer(ctx, add_special_tokens=False)["input_ids"]
        lengths = [n + (min(len(c), args.context_tokens) + 1 if c else 0) for n, c in zip(lengths, ctok)]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": params, "lr": args.encoder_lr},
                             {"params": list(heads.parameters()), "lr": args.lr * 0.5}],
                            weight_decay=args.weight_decay)
    bs = min(args.batch_size, 32)
    steps_per_epoch = math.ceil(len(sub.texts) / bs)
    total = steps_per_epoch * args.encoder_epochs
    warm = max(1, int(total * args.warmup_fraction))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min((k + 1) / warm, max(0.0, (total - k) / max(1, total - warm))))
    t0 = time.perf_counter()
    budget = args.lora_max_minutes * 60.0
    step, seen, stopped, running = 0, 0, False, None
    for epoch in range(args.encoder_epochs):
        for idx in _length_batches(lengths, bs, rng):
            texts = [sub.texts[j] for j in idx]
            if ctx:
                drop = rng.random(len(idx)) < args.context_dropout
                batch = encoder.tokenize(texts, ["" if d else ctx[j] for j, d in zip(idx, drop)],
                                         args.context_tokens, args.lora_max_length)
            else:
                batch = encoder.tokenize(texts, max_length=args.lora_max_length)
            le, ls = heads(encoder.forward(batch))
            loss = multitask_loss(le, ls, torch.from_numpy(sub.level_mask[idx]), torch.from_numpy(sub.sentiment[idx]),
                                  we[idx], ws[idx], args.sentiment_weight)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params + list(heads.parameters()), 1.0)
            opt.step()
            sched.step()
            step += 1
            seen += len(idx)
            running = float(loss.detach()) if running is None else 0.98 * running + 0.02 * float(loss.detach())
            elapsed = time.perf_counter() - t0
            if progress and step % 50 == 0:
                progress(f"lora epoch {epoch + 1}/{args.encoder_epochs} step {step}/{total} loss {running:.4f} "
                         f"({seen / elapsed:.0f} rows/s, {elapsed / 60:.1f} of {args.lora_max_minutes:.0f} min)")
            if elapsed > budget:
                stopped = True
                break
        if stopped:
            break
    model.eval()
    heads.eval()
    info = {"rows": len(sub.texts), "rows_with_context": sum(1 for c in ctx if c) if ctx else 0, "steps": step, "planned_steps": total, "epochs_done": round(step / steps_per_epoch, 2),
            "minutes": round((time.perf_counter() - t0) / 60, 1), "stopped_by_budget": stopped,
            "trainable_params": int(sum(p.numel() for p in params))}
    return model, info


def _calibrate(clf: Classifier, select: DataSplit, args: TrainArgs, fit_info: dict[str, Any],
               say: Callable[[str], None]) -> None:
    """Temperatures and decision thresholds on the selection split (tuning rows, or dev)."""
    cfg = clf.config
    if args.calibrate:
        le, ls = clf.logits(select.emb)
        smask = np.zeros((len(ls), len(SENTIMENTS)), dtype=bool)
        hs = select.sentiment >= 0
        smask[np.flatnonzero(hs), select.sentiment[hs]] = True
        cfg.temperature_escalation = fit_temperature(le, select.level_mask)
        cfg.temperature_sentiment = fit_temperature(ls, smask)
        say(f"temperatures: escalation {cfg.temperature_escalation:.3f}, sentiment {cfg.temperature_sentiment:.3f}")
    cfg.calm_prior = float(args.calm_prior)
    if args.thresholds:
        tinfo = tune_thresholds(select.rows, clf.predict_embeddings(select.emb)[0], args.threat_fpr_budget,
                                args.threat_min_precision, args.abusive_max_angry)
        cfg.thresholds = tinfo["thresholds"] or None
        fit_info["threshold_tuning"] = tinfo
        say(f"thresholds (tuning split): {tinfo}")
        allowed = tinfo["threat_calm_rows_allowed"]
        if "threatening" in tinfo["thresholds"] and allowed < FEW_CALM_ROWS:
            say(f"warning: the threat threshold rests on the {allowed + 1} most threatening calm tuning rows "
                f"(threat_fpr_budget {args.threat_fpr_budget:g} of {tinfo['n']['calm']}), so it can move by 0.1 "
                "between retrains; a larger tune_fraction or threat_fpr_budget steadies it")


def retune(model_dir: str | Path, overrides: Mapping[str, Any] | None = None,
           progress: Callable[[str], None] | None = None) -> Path:
    """Refit a trained model's temperatures and decision thresholds on its own tuning
    split, without training again (e.g. after changing ``threat_fpr_budget``).

    The tuning rows are rebuilt from the training arguments stored in ``config.json``
    (the split is a pure function of the texts), embedded with the model's own encoder
    (adapter merged), and the dev metrics and card are rewritten.
    """
    from . import evaluate, resources
    from .classifier import open_model

    say = progress or (lambda msg: log.info("%s", msg))
    out = Path(model_dir)
    clf = open_model(out)
    stored = dict((clf.config.training or {}).get("args") or {})
    if not stored.get("tune_fraction"):
        raise ConfigError(f"{out} was trained without a tuning split", "retrain with tune_fraction set")
    stored.update(overrides or {})
    args = TrainArgs.from_dict(stored, where=f"{out}/config.json")
    args._base = resources.packaged(resources.TRAIN_CONFIG).parent  # type: ignore[attr-defined]
    train_split, dev_split, used = load_data(args)
    _, select = carve_tune(train_split, args.tune_fraction,
                           keep_sources=[n for n, u in used.items() if u["role"] == "train only"])
    say(f"retuning on {len(select.texts)} tuning rows")
    select.emb = _embed_split(clf.encoder, select, clf.config.context_tokens)
    dev_split.emb = _embed_split(clf.encoder, dev_split, clf.config.context_tokens)
    fit = dict((clf.config.training or {}).get("fit") or {})
    _calibrate(clf, select, args, fit, say)
    clf.config.training = {**(clf.config.training or {}), "args": args.to_dict(), "fit": fit}
    (out / "config.json").write_text(json.dumps(clf.config.to_json(), indent=2) + "\n", encoding="utf-8")
    metrics = evaluate.evaluate_split(clf, dev_split)
    metrics["fit"] = fit
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    used = (clf.config.training or {}).get("sources") or used
    (out / "MODEL_CARD.md").write_text(evaluate.model_card(clf, metrics, used, args), encoding="utf-8")
    return out


# --- driver --------------------------------------------------------------------------------

def _embed_split(encoder: Encoder, split: DataSplit, context_tokens: int) -> np.ndarray:
    """A split's embeddings as the deployed model computes them: each row with its
    previous turn when the model reads context, plain otherwise."""
    with torch.inference_mode():
        return encoder.embed(split.texts, contexts=split.contexts if context_tokens else None,
                             context_tokens=context_tokens)


def train(args: TrainArgs, progress: Callable[[str], None] | None = None) -> Path:
    """Run one training config end to end and write the model folder; returns its path."""
    from . import evaluate

    args.validate()
    set_seed(args.seed)
    if args.threads:
        # Measured on a busy 2-core box: 1 thread fits heads ~8x and embeds ~2.5x faster than 2.
        torch.set_num_threads(int(args.threads))
    say = progress or (lambda msg: log.info("%s", msg))
    t0 = time.perf_counter()
    train_split, dev_split, used = load_data(args)
    say(f"data: {len(train_split.texts)} train / {len(dev_split.texts)} dev rows from {len(used)} sources")
    encoder = Encoder(args.encoder, max_length=args.max_length, batch_size=args.embed_batch_size)
    train_split.emb = embed_cached(encoder, args, train_split.texts, say)
    dev_split.emb = embed_cached(encoder, args, dev_split.texts, say)
    select = dev_split
    if args.tune_fraction:
        train_split, select = carve_tune(train_split, args.tune_fraction,
                                         keep_sources=[n for n, u in used.items() if u["role"] == "train only"])
        say(f"tuning split: {len(select.texts)} of the training rows (early stopping, temperatures, thresholds)")
        for name, u in used.items():
            u["tune_rows"] = sum(1 for r in select.rows if r.source == name)
            u["train_rows"] = sum(1 for r in train_split.rows if r.source == name)
    if args.ensemble > 1:
        members, infos = [], []
        for k in range(args.ensemble):
            set_seed(args.seed + k)
            h, info = fit_heads(dataclasses.replace(args, seed=args.seed + k), train_split, select, say)
            members.append(h)
            infos.append(info)
        heads = EnsembleHeads(members).eval()
        fit_info = {"best_epoch": [i["best_epoch"] for i in infos],
                    "best_dev_score": [i["best_dev_score"] for i in infos],
                    "history": infos[0]["history"], "selected_on": "tune" if args.tune_fraction else "dev"}
    else:
        heads, fit_info = fit_heads(args, train_split, select, say)
        fit_info["selected_on"] = "tune" if args.tune_fraction else "dev"
    out = args.out_path
    adapter = None
    if args.mode in ("lora", "full"):
        if args.mode == "full":
            raise ConfigError("mode full is not implemented in this version", "use mode: lora")
        peft_model, lora_info = train_lora(args, encoder, heads, train_split, say)
        fit_info["lora"] = lora_info
        say(f"lora: {lora_info}")
        out.mkdir(parents=True, exist_ok=True)
        peft_model.save_pretrained(str(out / "adapter"))
        encoder.model = peft_model.merge_and_unload()
        encoder.model.eval()
        adapter = "adapter"
        dev_split.emb = _embed_split(encoder, dev_split, args.context_tokens)
    cfg = ModelConfig(encoder=args.encoder,
                      adapter=adapter, max_length=args.max_length, hidden=args.hidden,
                      dropout=args.dropout, dim=encoder.dim, ensemble=int(args.ensemble),
                      context_tokens=int(args.context_tokens))
    clf = Classifier(encoder, heads, cfg)
    if args.mode != "heads" and args.tune_fraction:
        select.emb = _embed_split(encoder, select, args.context_tokens)
    _calibrate(clf, select, args, fit_info, say)
    targs = args.to_dict()
    cfg.training = {"args": targs, "sources": used, "fit": {k: v for k, v in fit_info.items() if k != "history"},
                    "seconds": round(time.perf_counter() - t0, 1)}
    clf.save(out)
    clf.path = out
    metrics = evaluate.evaluate_split(clf, dev_split)
    metrics["fit"] = fit_info
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out / "MODEL_CARD.md").write_text(evaluate.model_card(clf, metrics, used, args), encoding="utf-8")
    say(f"saved {out} in {time.perf_counter() - t0:.0f}s")
    return out


__all__ = ["TrainArgs", "DataSplit", "load_data", "make_split", "embed_cached", "fit_heads",
           "fit_temperature", "partial_nll", "set_seed", "train", "train_lora", "carve_tune", "subset",
           "tune_thresholds", "retune"]
