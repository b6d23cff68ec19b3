"""The de-escalation playbook: prompts that open and close on the call's trajectory.

Rules live in ``configs/playbook.yaml`` so supervisors can edit them; this module
validates that file and runs it. The engine is pure and synchronous: it sees scored
utterances and trajectory states (each carrying its call time) and returns prompt
events. No clocks, no threads, no I/O besides loading the YAML.

A rule opens when *all* of its ``open_when`` conditions hold, and closes when *any*
of its ``close_when`` conditions holds, after ``max_open_s``, or at the end of the
call. Cooldowns, a cap on simultaneous prompts and priorities keep it quiet.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from . import safeio
from .errors import ConfigError
from .events import Level, Partial, Prompt, ScoredUtterance, Scores, Speaker, TrajectoryState, Trend
from .trajectory import TrajectoryOptions



class Severity(enum.IntEnum):
    INFO = 0
    WARN = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()


def normalize_for_phrases(text: str) -> str:
    """Lowercase, unify apostrophes and drop punctuation, as recognisers write text."""
    text = text.lower().replace("\u2019", "'").replace("`", "'")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return " " + re.sub(r"\s+", " ", text).strip() + " "


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    words = normalize_for_phrases(phrase).split()
    body = r"\s+".join(re.escape(w).replace("'", "'?") for w in words)
    return re.compile(r"(?<![a-z0-9'])" + body + r"(?![a-z0-9'])")


# ---------------------------------------------------------------- call context


@dataclass
class CallContext:
    """What the playbook knows about the call so far. Updated only by :class:`Playbook`."""

    now: float = 0.0
    current: ScoredUtterance | None = None
    customer: TrajectoryState | None = None
    agent: TrajectoryState | None = None
    last_customer: ScoredUtterance | None = None
    episode_start: float | None = None  # when the customer last rose above calm
    said: dict[str, list[float]] = field(default_factory=dict)  # phrase set -> agent times
    current_phrases: frozenset[str] = frozenset()
    vent: list[ScoredUtterance] = field(default_factory=list)  # upset customer turns not yet paraphrased
    paraphrased_at: float | None = None
    paraphrase_score: float = 0.0  # similarity of the current agent utterance to the complaint
    boundary_at: float | None = None
    abusive_since_boundary: int = 0
    overlap_s: float = 0.0  # how long the current agent utterance talked over the customer
    last_speech: float | None = None  # call time anyone was last heard speaking (voice activity or an utterance)
    overtalk_s: float = 0.0  # live: seconds the agent has been talking over the customer (voice activity)
    partial_arousal: float | None = None  # live: voice arousal of the customer turn still being spoken
    customer_history: list[ScoredUtterance] = field(default_factory=list)  # recent scored customer turns

    def said_since_upset(self, name: str) -> bool:
        if self.episode_start is None:
            return False
        # An apology a few seconds before the state flipped still counts.
        return any(t >= self.episode_start - 10.0 for t in self.said.get(name, ()))

    @property
    def vented_s(self) -> float:
        return sum(max(v.utterance.end - v.utterance.start, 0.0) for v in self.vent)


# ---------------------------------------------------------------- conditions


def _level(v: Any) -> Level:
    return Level.parse(str(v))


def _float(v: Any) -> float:
    """Any finite number (NaN, .inf and 1e400-sized values are refused)."""
    return safeio.number(v, "")


def _nonneg(v: Any) -> float:
    """A finite number >= 0 (seconds, words per minute, counts)."""
    return safeio.number(v, "", lo=0.0)


def _prob(v: Any) -> float:
    """A probability or confidence, in [0, 1]."""
    return safeio.number(v, "", lo=0.0, hi=1.0)


def _similarity(v: Any) -> float:
    """A cosine-similarity threshold, in [-1, 1]."""
    return safeio.number(v, "", lo=-1.0, hi=1.0)


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _trend(v: Any) -> frozenset[Trend]:
    items = v if isinstance(v, list) else [v]
    try:
        return frozenset(Trend(str(x)) for x in items)
    except ValueError:
        raise ValueError(f"expected rising, steady or falling, got {v!r}") from None


def _speaker(v: Any) -> Speaker:
    try:
        return Speaker(str(v))
    except ValueError:
        raise ValueError(f"expected agent or customer, got {v!r}") from None


@dataclass(frozen=True)
class Corroboration:
    """When a safety prompt may trust one utterance: see the ``corroborated`` condition."""

    level: Level
    p: float | None = None  # None: the model's decision rule (Scores.level) says level or worse
    within_s: float = 90.0  # a second customer utterance this recent at the same level
    arousal: float = 0.6  # or the voice of this very utterance is this aroused
    sure_p: float = 0.9  # or the words are unambiguous (P at least this) ...
    sure_conf: float = 0.8  # ... and every content word was heard at least this confidently


def _corroboration(v: Any) -> Corroboration:
    if not isinstance(v, Mapping) or "level" not in v or not set(v) <= set(Corroboration.__dataclass_fields__):
        raise ValueError(f"expected {{level: NAME[, p: NUMBER, within_s, arousal, sure_p, sure_conf]}}, got {v!r}")
    num = {k: safeio.number(v[k], k, lo=0.0, hi=1.0) for k in ("p", "arousal", "sure_p", "sure_conf")
           if k in v and not (k == "p" and v[k] in (None, "model"))}
    if "within_s" in v:
        num["within_s"] = safeio.number(v["within_s"], "within_s", lo=0.0, hi=3600.0)
    return Corroboration(level=_level(v["level"]), **num)


def _corroborated(c: "CallContext", v: Corroboration) -> bool:
    """The current customer utterance is at ``v.level`` with P >= ``v.p`` and something
    backs it: a second such utterance within ``within_s``, an aroused voice, or words so
    unambiguous and so clearly heard that one utterance is enough."""
    u = _current_customer(c)
    if u is None or u.scores is None or not _reaches(u.scores, v.level, v.p):
        return False
    t = u.utterance.end
    if any(o is not u and o.scores is not None and _reaches(o.scores, v.level, v.p) and t - o.utterance.end <= v.within_s
           for o in c.customer_history):
        return True
    from .text import content_words
    content = content_words(u.utterance.words, 0.0) if u.utterance.words else []
    voice = u.utterance.voice
    # An aroused voice backs the words only when there are words to back: with one
    # half-heard content word ("say the words dead" for "dip", 0.59) an angry actress
    # would otherwise page security.
    heard = len([w for w in content if w.conf >= 0.5]) >= 2 or not u.utterance.words
    if voice is not None and voice.arousal is not None and voice.arousal >= v.arousal and heard:
        return True
    sure = bool(content) and min(w.conf for w in content) >= v.sure_conf
    return u.scores.at_least(v.level) >= v.sure_p and sure


def _reaches(scores: Scores, level: Level, p: float | None) -> bool:
    """``level`` or worse: by the model's own decision rule (``p`` None, the default, so
    prompts follow the thresholds stored with the model), or with P >= ``p`` when a
    playbook overrides the operating point."""
    return scores.level >= level if p is None else scores.at_least(level) >= p


def _level_prob(v: Any) -> tuple[Level, float | None]:
    if not isinstance(v, Mapping) or "level" not in v or not set(v) <= {"level", "p"}:
        raise ValueError(f"expected {{level: NAME[, p: NUMBER]}}, got {v!r}")
    p = v.get("p")
    return _level(v["level"]), (None if p in (None, "model") else safeio.number(p, "p", lo=0.0, hi=1.0))


def _cust(ctx: CallContext) -> TrajectoryState | None:
    return ctx.customer


def _current_customer(ctx: CallContext) -> ScoredUtterance | None:
    c = ctx.current
    return c if c is not None and c.utterance.speaker is Speaker.CUSTOMER and c.scores is not None else None


def _current_agent(ctx: CallContext) -> bool:
    return ctx.current is not None and ctx.current.utterance.speaker is Speaker.AGENT


@dataclass(frozen=True)
class _CondSpec:
    parse: Callable[[Any], Any]
    test: Callable[[CallContext, Any], bool]
    needs_phrase_set: bool = False
    doc: str = ""


CONDITIONS: dict[str, _CondSpec] = {
    "speaker": _CondSpec(_speaker, lambda c, v: c.current is not None and c.current.utterance.speaker is v,
                         doc="the utterance just finished is from this speaker"),
    "customer_state_at_least": _CondSpec(_level, lambda c, v: _cust(c) is not None and c.customer.state >= v,
                                         doc="customer's smoothed state (with hysteresis) is this level or worse"),
    "customer_state_below": _CondSpec(_level, lambda c, v: _cust(c) is None or c.customer.state < v,
                                      doc="customer's state is better than this level"),
    "customer_peak_at_least": _CondSpec(_level, lambda c, v: _cust(c) is not None and c.customer.peak >= v,
                                        doc="the customer reached this level at some point in the call"),
    "customer_trend": _CondSpec(_trend, lambda c, v: _cust(c) is not None and c.customer.trend in v,
                                doc="rising, steady or falling (or a list)"),
    "customer_risk_at_least": _CondSpec(_prob, lambda c, v: _cust(c) is not None and c.customer.risk >= v,
                                        doc="forecast probability of reaching angry or worse"),
    "customer_louder_db": _CondSpec(_float, lambda c, v: _cust(c) is not None and c.customer.loudness_rel_db is not None
                                    and c.customer.loudness_rel_db >= v,
                                    doc="customer speaks this many dB above their own baseline"),
    "utterance_at_least": _CondSpec(_level_prob, lambda c, v: (u := _current_customer(c)) is not None
                                    and _reaches(u.scores, v[0], v[1]),
                                    doc="this customer utterance is LEVEL or worse by the model's decision rule "
                                        "(or, with p, with probability >= p)"),
    "confident": _CondSpec(_prob, lambda c, v: c.current is not None and c.current.utterance.confidence >= v,
                           doc="the recogniser's word confidence for this utterance is at least this"),
    "agent_wpm_above": _CondSpec(_nonneg, lambda c, v: c.agent is not None and c.agent.words_per_minute is not None
                                 and c.agent.words_per_minute > v, doc="agent speaking rate, words per minute"),
    "agent_wpm_below": _CondSpec(_nonneg, lambda c, v: c.agent is not None and c.agent.words_per_minute is not None
                                 and c.agent.words_per_minute < v, doc="agent speaking rate, words per minute"),
    "agent_says": _CondSpec(str, lambda c, v: _current_agent(c) and v in c.current_phrases, True,
                            doc="the agent's utterance just finished contains a phrase of this set"),
    "agent_says_not": _CondSpec(str, lambda c, v: _current_agent(c) and v not in c.current_phrases, True,
                                doc="the agent's utterance just finished has no phrase of this set"),
    "agent_said_since_upset": _CondSpec(str, lambda c, v: c.said_since_upset(v), True,
                                        doc="the agent used this phrase set since the customer got upset"),
    "agent_not_said_since_upset": _CondSpec(str, lambda c, v: not c.said_since_upset(v), True,
                                            doc="the agent has not used this phrase set since the customer got upset"),
    "customer_vented_s": _CondSpec(_nonneg, lambda c, v: c.vented_s >= v,
                                   doc="seconds of upset customer speech not yet paraphrased"),
    "agent_paraphrases": _CondSpec(_similarity, lambda c, v: _current_agent(c) and c.paraphrase_score >= v,
                                   doc="encoder similarity of the agent's utterance to the customer's complaint"),
    "paraphrased_since_upset": _CondSpec(_bool, lambda c, v: (c.paraphrased_at is not None and c.episode_start is not None
                                                              and c.paraphrased_at >= c.episode_start) == v,
                                         doc="the agent restated the complaint since the customer got upset"),
    "abusive_after_boundary": _CondSpec(_nonneg, lambda c, v: c.boundary_at is not None and c.abusive_since_boundary >= v,
                                        doc="abusive customer utterances since the agent set a boundary"),
    "customer_arousal_at_least": _CondSpec(_prob, lambda c, v: _cust(c) is not None and c.customer.arousal is not None
                                          and c.customer.arousal >= v,
                                          doc="the customer's voice arousal (smoothed, 0..1, from the audio) is at least this"),
    "utterance_arousal_at_least": _CondSpec(_prob, lambda c, v: (u := c.current) is not None
                                            and u.utterance.speaker is Speaker.CUSTOMER and u.utterance.voice is not None
                                            and u.utterance.voice.arousal is not None and u.utterance.voice.arousal >= v,
                                            doc="this customer utterance's voice arousal is at least this"),
    "corroborated": _CondSpec(_corroboration, _corroborated,
                              doc="{level, p[, within_s, arousal, sure_p, sure_conf]}: this customer utterance is "
                                  "LEVEL or worse with P >= p AND a second such utterance came within within_s, or "
                                  "its voice arousal >= arousal, or P >= sure_p with every content word heard at "
                                  "confidence >= sure_conf"),
    "agent_overlap_s": _CondSpec(_nonneg, lambda c, v: _current_agent(c) and c.overlap_s >= v,
                                 doc="seconds the agent talked over the customer's last utterance"),
    "silence_at_least_s": _CondSpec(_nonneg, lambda c, v: _silence(c) is not None and _silence(c) >= v,
                                    doc="dead air: nobody has been heard for this many seconds (checked on the "
                                        "call clock, between utterances too)"),
    "agent_overtalk_s": _CondSpec(_nonneg, lambda c, v: c.overtalk_s >= v,
                                  doc="live: the agent has been talking over the customer for this many seconds "
                                      "(voice activity on both channels, checked on the call clock)"),
    "partial_arousal_at_least": _CondSpec(_prob, lambda c, v: c.partial_arousal is not None and c.partial_arousal >= v,
                                          doc="live, mid-turn: the customer's voice arousal so far in the turn still "
                                              "being spoken (rules using it are checked on partial results, before "
                                              "the turn ends, and never on words)"),
    "silence_below_s": _CondSpec(_nonneg, lambda c, v: _silence(c) is not None and _silence(c) < v,
                                 doc="someone was heard within this many seconds"),
}

# Conditions that can change with no new utterance: rules that open on them are also
# checked on every clock tick (the others only when an utterance ends).
TICK_CONDITIONS = frozenset({"silence_at_least_s", "agent_overtalk_s"})
# Conditions on a turn still being spoken: rules that open on them are checked on partial
# results (live), so they can open before the turn ends.
PARTIAL_CONDITIONS = frozenset({"partial_arousal_at_least"})


def _silence(c: CallContext) -> float | None:
    """Seconds since anyone was heard; None before the first speech of the call."""
    return None if c.last_speech is None else max(0.0, c.now - c.last_speech)


# Conditions that read what a speaker said (the recognised words), and whose words. A
# prompt opening on them pauses while that speaker's transcript is unreliable; voice
# and timing conditions carry on.
WORD_CONDITIONS: dict[str, Speaker] = {
    "utterance_at_least": Speaker.CUSTOMER, "corroborated": Speaker.CUSTOMER, "customer_vented_s": Speaker.CUSTOMER,
    "abusive_after_boundary": Speaker.CUSTOMER, "agent_says": Speaker.AGENT, "agent_said_since_upset": Speaker.AGENT,
    "agent_paraphrases": Speaker.AGENT,
}
# Not listed: agent_says_not and agent_not_said_since_upset claim nothing was said. On a
# garbled agent channel they may prompt an apology already given, a cheap error next to
# staying silent while the customer is upset.


@dataclass(frozen=True)
class Condition:
    name: str
    value: Any

    def holds(self, ctx: CallContext) -> bool:
        return bool(CONDITIONS[self.name].test(ctx, self.value))


@dataclass(frozen=True)
class Rule:
    """One prompt of the playbook."""

    id: str
    text: str
    priority: int
    severity: Severity
    cooldown_s: float
    max_open_s: float
    open_when: tuple[Condition, ...]
    close_when: tuple[Condition, ...] = ()
    better: str = ""  # for phrase coaching: what to say instead
    max_per_call: int = 0  # 0 = no limit

    @property
    def on_partial(self) -> bool:
        """Checked on the customer's partial results (it opens on a mid-turn condition)."""
        return any(c.name in PARTIAL_CONDITIONS for c in self.open_when)

    @property
    def on_tick(self) -> bool:
        """Checked on clock ticks too (it opens on a condition that time alone can make true)."""
        return any(c.name in TICK_CONDITIONS for c in self.open_when)
    uses_words: frozenset[Speaker] = frozenset()  # whose words it relies on; paused while those are unreliable


@dataclass(frozen=True)
class PlaybookConfig:
    rules: tuple[Rule, ...]
    phrases: Mapping[str, tuple[re.Pattern[str], ...]]
    trajectory: TrajectoryOptions = TrajectoryOptions()
    max_open: int = 2  # non-critical prompts shown at once
    min_word_conf: float = 0.3  # words below this are dropped before classification
    min_content_words: int = 2  # a customer turn is classified only with this many confident content words
    vent_levels: Level = Level.FRUSTRATED  # customer utterances at least this upset count as venting
    # Negative customer turns below vent_levels this recent also make up the complaint
    # the agent should restate: callers often state the problem calmly, then get angry.
    complaint_lookback_s: float = 60.0
    source: str = ""


_RULE_KEYS = {"id", "text", "priority", "severity", "cooldown_s", "max_open_s", "open_when", "close_when", "better",
              "max_per_call"}
_TOP_KEYS = {"version", "defaults", "phrases", "prompts", "trajectory"}
_DEFAULT_KEYS = {"cooldown_s", "max_open_s", "max_open", "severe_min_confidence", "min_word_conf", "vent_level",
                 "min_content_words", "complaint_lookback_s"}


MAX_BYTES = 1 * safeio.MB  # the shipped playbook is 9 KB

# Allowed ranges of the numeric options, as keyword arguments of safeio.number.
_POSITIVE = {"lo": 0.0, "lo_open": True}
_NONNEG = {"lo": 0.0}
_PROB = {"lo": 0.0, "hi": 1.0}
_TRAJECTORY_RANGES: dict[str, dict[str, Any]] = {
    "half_life_s": _POSITIVE,
    "fast_half_life_s": _POSITIVE,
    "prior_weight": _NONNEG,
    "enter_p": _PROB,
    "exit_p": _PROB,
    "trend_margin": _NONNEG,
    "min_confidence_weight": _PROB,
    "wpm_window_s": _POSITIVE,
    "wpm_min_words": {"lo": 1, "integer": True},
    "loudness_baseline_utterances": {"lo": 1, "integer": True},
    "voice_weight": {"lo": 0.0, "hi": 10.0},
    "voice_ceiling": _PROB,
    "trust_window_s": _POSITIVE,
    "min_word_trust": _PROB,
    "trust_min_words": {"lo": 0, "integer": True},
}
_DEFAULT_RANGES: dict[str, dict[str, Any]] = {
    "cooldown_s": _NONNEG,
    "max_open_s": _POSITIVE,
    "max_open": {"lo": 1, "integer": True},
    "severe_min_confidence": _PROB,
    "min_word_conf": _PROB,
    "min_content_words": {"lo": 0, "hi": 50, "integer": True},
    "complaint_lookback_s": _NONNEG,
}
_RULE_RANGES: dict[str, dict[str, Any]] = {
    "priority": {"lo": 0, "hi": 1000, "integer": True},
    "cooldown_s": _NONNEG,
    "max_open_s": _POSITIVE,
    "max_per_call": {"lo": 0, "integer": True},
}


def weak_corroborations(cfg: PlaybookConfig, thresholds: Mapping[str, float] | None) -> list[str]:
    """Safety rules whose ``sure_p`` a given model makes meaningless, one line each.

    ``corroborated`` lets one utterance through alone when P >= ``sure_p``; if the
    model's own threshold for that level is already at or above ``sure_p`` (e.g. after
    a retrain moved it), every utterance the model calls a threat passes alone, and the
    corroboration the playbook promises is gone. Pure: the session reports these.
    """
    out = []
    for rule in cfg.rules:
        for c in rule.open_when:
            if c.name != "corroborated":
                continue
            v: Corroboration = c.value
            t = v.p if v.p is not None else (thresholds or {}).get(v.level.label)
            if t is not None and v.sure_p <= t:
                out.append(f"prompt {rule.id}: corroborated sure_p {v.sure_p:g} is not above the "
                           f"{v.level.label} threshold {t:g}, so one confidently heard utterance opens it alone; "
                           f"set sure_p above {t:g} in {cfg.source or 'the playbook'}")
    return out


def load_playbook(path: str | Path | None = None) -> PlaybookConfig:
    """Read and validate a playbook YAML; any problem is a one-line ConfigError.

    ``check-config`` and ``replay`` both call this, so they accept and refuse the same
    files. Reading goes through :mod:`coach.safeio` (regular files up to 1 MB, UTF-8,
    bounded nesting and aliases); every number is checked against its range.
    """
    from . import resources
    p = Path(path) if path is not None else resources.locate(resources.PLAYBOOK)
    default = resources.packaged(resources.PLAYBOOK)
    fix = f"edit {p} (see the comments at its top), or compare it with the packaged default {default}"
    text = safeio.read_text(p, what="playbook", max_bytes=MAX_BYTES, error_cls=ConfigError,
                            fix=f"pass the path of an existing playbook YAML, e.g. {default}")
    raw = safeio.load_yaml(text, where=f"playbook {p}", error_cls=ConfigError, fix=fix)
    try:
        return _parse(raw, str(p))
    except (ValueError, TypeError, KeyError, OverflowError) as e:
        raise ConfigError(f"playbook {p}: {e}", fix) from None


def _option(table: Mapping[str, Any], key: str, value: Any, where: str) -> Any:
    """``value`` of numeric option ``key`` checked against its range; the error names both."""
    return safeio.number(value, f"{where}{key}", **table.get(key, {}))


def _unknown(keys: set, allowed: set, where: str) -> None:
    extra = sorted(str(k) for k in keys - allowed)
    if extra:
        raise ValueError(f"unknown key(s) {', '.join(extra)} in {where} (allowed: {', '.join(sorted(allowed))})")


def _parse(raw: Any, source: str) -> PlaybookConfig:
    if not isinstance(raw, Mapping):
        raise ValueError("the file must be a mapping with 'prompts' (and optionally 'phrases', 'defaults')")
    _unknown(set(raw), _TOP_KEYS, "the top level")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise ValueError("'defaults' must be a mapping")
    _unknown(set(defaults), _DEFAULT_KEYS, "defaults")
    dflt = {k: _option(_DEFAULT_RANGES, k, defaults[k], "defaults.") for k in _DEFAULT_RANGES if k in defaults}
    phrases_raw = raw.get("phrases") or {}
    if not isinstance(phrases_raw, Mapping):
        raise ValueError("'phrases' must map a set name to a list of phrases")
    phrases: dict[str, tuple[re.Pattern[str], ...]] = {}
    for name, items in phrases_raw.items():
        if not isinstance(items, list) or not items or not all(isinstance(x, str) and x.strip() for x in items):
            raise ValueError(f"phrase set {name!r} must be a non-empty list of strings")
        phrases[str(name)] = tuple(_phrase_pattern(x) for x in items)

    traj_raw = raw.get("trajectory") or {}
    if not isinstance(traj_raw, Mapping):
        raise ValueError("'trajectory' must be a mapping")
    _unknown(set(traj_raw), set(TrajectoryOptions.__dataclass_fields__), "trajectory")
    trajectory = TrajectoryOptions(**{str(k): _option(_TRAJECTORY_RANGES, str(k), v, "trajectory.")
                                      for k, v in traj_raw.items()})
    if trajectory.exit_p > trajectory.enter_p:
        raise ValueError(f"trajectory.exit_p ({trajectory.exit_p:g}) must be <= trajectory.enter_p "
                         f"({trajectory.enter_p:g}): a level is left below exit_p after being entered at enter_p")

    severe_conf = dflt.get("severe_min_confidence", 0.3)
    prompts = raw.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        raise ValueError("'prompts' must be a non-empty list of prompt rules")
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, r in enumerate(prompts):
        where = f"prompt #{i + 1}"
        if not isinstance(r, Mapping):
            raise ValueError(f"{where} must be a mapping")
        _unknown(set(r), _RULE_KEYS, where)
        rid = r.get("id")
        if not isinstance(rid, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", rid):
            raise ValueError(f"{where} needs an 'id' in snake_case, got {rid!r}")
        where = f"prompt {rid!r}"
        if rid in seen:
            raise ValueError(f"{where} is defined twice")
        seen.add(rid)
        text = r.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where} needs a non-empty 'text'")
        try:
            severity = Severity[str(r.get("severity", "info")).upper()]
        except KeyError:
            raise ValueError(f"{where}: severity must be info, warn or critical") from None
        open_when = _conditions(r.get("open_when"), f"{where} open_when", phrases, required=True)
        close_when = _conditions(r.get("close_when") or {}, f"{where} close_when", phrases, required=False)
        if severity is Severity.CRITICAL and not any(c.name == "confident" for c in open_when):
            # Severe prompts never fire on low-confidence words, whatever the YAML says.
            open_when = open_when + (Condition("confident", severe_conf),)
        num = {k: _option(_RULE_RANGES, k, r[k], f"{where}: ") for k in _RULE_RANGES if k in r}
        rules.append(Rule(
            id=rid,
            text=text.strip(),
            priority=num.get("priority", 50),
            severity=severity,
            cooldown_s=num.get("cooldown_s", dflt.get("cooldown_s", 30.0)),
            max_open_s=num.get("max_open_s", dflt.get("max_open_s", 45.0)),
            open_when=open_when,
            close_when=close_when,
            better=str(r.get("better", "")),
            max_per_call=num.get("max_per_call", 0),
            uses_words=frozenset(WORD_CONDITIONS[c.name] for c in open_when if c.name in WORD_CONDITIONS),
        ))
    return PlaybookConfig(
        rules=tuple(rules),
        phrases=phrases,
        trajectory=trajectory,
        max_open=dflt.get("max_open", 2),
        min_word_conf=dflt.get("min_word_conf", 0.3),
        min_content_words=int(dflt.get("min_content_words", 2)),
        vent_levels=_level(defaults.get("vent_level", "frustrated")),
        complaint_lookback_s=dflt.get("complaint_lookback_s", 60.0),
        source=source,
    )


def _conditions(raw: Any, where: str, phrases: Mapping[str, Any], *, required: bool) -> tuple[Condition, ...]:
    if not isinstance(raw, Mapping) or (required and not raw):
        raise ValueError(f"{where} must be a mapping of condition: value" + (" with at least one condition" if required else ""))
    out = []
    for name, value in raw.items():
        spec = CONDITIONS.get(str(name))
        if spec is None:
            raise ValueError(f"unknown condition {name!r} in {where} (known: {', '.join(sorted(CONDITIONS))})")
        try:
            parsed = spec.parse(value)
        except ValueError as e:
            raise ValueError(f"{where}.{name}: {e}") from None
        if spec.needs_phrase_set and parsed not in phrases:
            raise ValueError(f"{where}.{name} names phrase set {parsed!r}, which is not defined under 'phrases'")
        out.append(Condition(str(name), parsed))
    return tuple(out)


# ---------------------------------------------------------------- the engine


@dataclass
class _Open:
    rule: Rule
    since: float


MAX_STATED = 20  # calmer negative turns kept for the complaint (a bound, not a tuning knob)


class Playbook:
    """Runs a :class:`PlaybookConfig` over one call. Feed events in call order."""

    def __init__(self, config: PlaybookConfig) -> None:
        self.cfg = config
        self.ctx = CallContext()
        self.open: dict[str, _Open] = {}
        self.closed_at: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self._vent_emb: list[np.ndarray | None] = []  # embeddings of ctx.vent, same order
        self._stated: list[tuple[float, np.ndarray]] = []  # (end, embedding) of calmer negative turns

    # -- inputs

    def on_trajectory(self, state: TrajectoryState) -> None:
        ctx = self.ctx
        if state.speaker is Speaker.AGENT:
            ctx.agent = state
            return
        prev = ctx.customer
        ctx.customer = state
        if state.state > Level.CALM and (prev is None or prev.state == Level.CALM):
            ctx.episode_start = state.t
        if state.state == Level.CALM:
            ctx.episode_start = None
            ctx.vent, self._vent_emb = [], []

    def on_utterance(self, item: ScoredUtterance, embedding: np.ndarray | None = None) -> list[Prompt]:
        """Fold one utterance in (after its trajectory update) and return prompt changes."""
        ctx = self.ctx
        u = item.utterance
        ctx.now = max(ctx.now, u.end)
        ctx.last_speech = u.end if ctx.last_speech is None else max(ctx.last_speech, u.end)
        ctx.current = item
        ctx.paraphrase_score = 0.0
        ctx.overlap_s = 0.0
        if u.speaker is Speaker.AGENT:
            # Phrase coaching reads only words heard confidently: "you need to" misheard at
            # confidences 0.03-0.39 must not raise "avoid 'you have to'".
            heard = " ".join(w.word for w in u.words if w.conf >= self.cfg.min_word_conf) if u.words else u.text
            text = normalize_for_phrases(heard)
            ctx.current_phrases = frozenset(n for n, pats in self.cfg.phrases.items() if any(p.search(text) for p in pats))
            for name in ctx.current_phrases:
                ctx.said.setdefault(name, []).append(u.end)
            if "boundary" in ctx.current_phrases:
                ctx.boundary_at, ctx.abusive_since_boundary = u.end, 0
            if ctx.last_customer is not None:
                lc = ctx.last_customer.utterance
                ctx.overlap_s = max(0.0, min(lc.end, u.end) - max(lc.start, u.start))
            if embedding is not None and ctx.vent:
                ctx.paraphrase_score = self._similarity(embedding)
                if ctx.paraphrase_score >= self._paraphrase_threshold():
                    ctx.paraphrased_at = u.end
                    ctx.vent, self._vent_emb, self._stated = [], [], []
        else:
            ctx.current_phrases = frozenset()
            ctx.last_customer = item
            if item.scores is not None:
                ctx.customer_history.append(item)
                del ctx.customer_history[:-20]
                if item.scores.level >= self.cfg.vent_levels:
                    ctx.vent.append(item)
                    self._vent_emb.append(embedding)
                elif embedding is not None and max(item.scores.sentiment, key=item.scores.sentiment.get) == "negative":
                    self._stated = [*self._recent_stated()[-MAX_STATED + 1:], (u.end, embedding)]
                if ctx.boundary_at is not None and item.scores.level >= Level.ABUSIVE:
                    ctx.abusive_since_boundary += 1
        return self._evaluate(u.end)

    def on_partial_result(self, p: Partial) -> list[Prompt]:
        """A customer turn still being spoken (live): open or close the early rules only.
        Partial words carry no confidence, so only the voice is read here."""
        ctx = self.ctx
        if p.speaker is not Speaker.CUSTOMER or p.arousal is None:
            return []
        ctx.now = max(ctx.now, p.t)
        ctx.current = None
        ctx.partial_arousal = p.arousal
        try:
            return self._evaluate(ctx.now, only=lambda r: r.on_partial)
        finally:
            ctx.partial_arousal = None

    def tick(self, t: float, last_speech: float | None = None, overtalk_s: float = 0.0) -> list[Prompt]:
        """Advance the clock with no new utterance: expire prompts left open and check the
        time-based rules (dead air, overtalk). ``last_speech``: when anyone was last
        heard, from voice activity (None: only utterances tell); ``overtalk_s``: how long
        the agent has been talking over the customer, from voice activity on both channels."""
        ctx = self.ctx
        ctx.now = max(ctx.now, t)
        ctx.current = None
        ctx.overtalk_s = overtalk_s
        if last_speech is not None:
            ctx.last_speech = last_speech if ctx.last_speech is None else max(ctx.last_speech, last_speech)
        return self._evaluate(t, only=lambda r: r.on_tick)

    def finish(self, t: float) -> list[Prompt]:
        """Close everything still open at the end of the call."""
        out = [self._close(rid, t, "call ended") for rid in sorted(self.open, key=lambda k: -self.open[k].rule.priority)]
        return out

    # -- internals

    def _recent_stated(self) -> list[tuple[float, np.ndarray]]:
        """The calmer negative turns still part of the complaint: those that ended at most
        ``complaint_lookback_s`` before the venting began (before now if it has not)."""
        start = self.ctx.vent[0].utterance.start if self.ctx.vent else self.ctx.now
        return [(t, e) for t, e in self._stated if t >= start - self.cfg.complaint_lookback_s]

    def _similarity(self, emb: np.ndarray) -> float:
        self._stated = self._recent_stated()
        vecs = [e for e in self._vent_emb if e is not None] + [e for _, e in self._stated]
        if not vecs:
            return 0.0
        complaint = np.mean(np.stack(vecs), axis=0)
        n = float(np.linalg.norm(complaint)) * float(np.linalg.norm(emb))
        sim = float(np.dot(complaint, emb) / n) if n > 0 else 0.0
        # Phrases such as "so what I'm hearing is" mark a paraphrase, but only lower the
        # bar a little: the content must still match the complaint.
        if "paraphrase_lead" in self.ctx.current_phrases:
            sim += 0.1
        return sim

    def _words_trusted(self, rule: Rule) -> bool:
        """False while a speaker whose words the rule reads has an unreliable transcript."""
        for who in rule.uses_words:
            state = self.ctx.customer if who is Speaker.CUSTOMER else self.ctx.agent
            if state is not None and not state.words_trusted:
                return False
        return True

    def _paraphrase_threshold(self) -> float:
        for r in self.cfg.rules:
            for c in r.close_when:
                if c.name == "agent_paraphrases":
                    return float(c.value)
        return 0.5

    def _close(self, rid: str, t: float, reason: str) -> Prompt:
        o = self.open.pop(rid)
        self.closed_at[rid] = t
        return Prompt(prompt=rid, t=t, opened=False, text=o.rule.text, priority=o.rule.priority,
                      severity=o.rule.severity.label, reason=reason)

    def _expire(self, t: float) -> list[Prompt]:
        return [self._close(rid, t, "timed out") for rid, o in list(self.open.items()) if t - o.since >= o.rule.max_open_s]

    def _evaluate(self, t: float, only: Callable[[Rule], bool] | None = None) -> list[Prompt]:
        """Close, then open, prompts at ``t``; ``only``: just the rules it accepts (the
        time-based ones on a clock tick, the mid-turn ones on a partial)."""
        ctx = self.ctx
        out = self._expire(t)
        # Close first, so a prompt whose cause went away makes room for another.
        for rid, o in list(self.open.items()):
            if only is not None and not only(o.rule):
                continue
            if o.since < t:
                hit = next((c for c in o.rule.close_when if c.holds(ctx)), None)
                if hit is not None:
                    out.append(self._close(rid, t, hit.name))
        for rule in sorted(self.cfg.rules, key=lambda r: (-r.severity, -r.priority)):
            if rule.id in self.open or (only is not None and not only(rule)):
                continue
            if t - self.closed_at.get(rule.id, -1e9) < rule.cooldown_s:
                continue
            if rule.max_per_call and self.count.get(rule.id, 0) >= rule.max_per_call:
                continue
            if not self._words_trusted(rule):
                continue
            if not all(c.holds(ctx) for c in rule.open_when):
                continue
            if rule.severity is not Severity.CRITICAL:
                shown = [o for o in self.open.values() if o.rule.severity is not Severity.CRITICAL]
                if len(shown) >= self.cfg.max_open:
                    weakest = min(shown, key=lambda o: o.rule.priority)
                    if weakest.rule.priority >= rule.priority:
                        continue
                    out.append(self._close(weakest.rule.id, t, "superseded"))
            self.open[rule.id] = _Open(rule, t)
            self.count[rule.id] = self.count.get(rule.id, 0) + 1
            out.append(Prompt(prompt=rule.id, t=t, opened=True, text=rule.text, priority=rule.priority,
                              severity=rule.severity.label, reason=_reason(rule, ctx)))
        return out


def _reason(rule: Rule, ctx: CallContext) -> str:
    parts = []
    if ctx.customer is not None:
        # Which evidence put the customer in this state: the timeline shows whether the
        # words or the voice drove a prompt.
        heard = {"words": "from the words", "voice": "from the voice", "both": "from words and voice"}.get(
            ctx.customer.driver, "")
        parts.append(f"customer {ctx.customer.state.label}, {ctx.customer.trend.value}" + (f", {heard}" if heard else ""))
    cur = ctx.current
    if (cur is not None and cur.utterance.voice is not None and cur.utterance.voice.arousal is not None
            and any(c.name in ("utterance_arousal_at_least", "customer_arousal_at_least", "corroborated")
                    for c in rule.open_when)):
        parts.append(f"voice arousal {cur.utterance.voice.arousal:.2f}")
    if rule.better:
        parts.append(f"try: {rule.better}")
    if any(c.name.startswith("agent_wpm") for c in rule.open_when) and ctx.agent and ctx.agent.words_per_minute:
        parts.append(f"{ctx.agent.words_per_minute:.0f} wpm")
    return "; ".join(parts)
