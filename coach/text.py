"""Make written text look like speech-to-text output.

The classifier is trained on tweets, Reddit comments and TV subtitles but scores the
output of an offline recogniser, which has no case, no punctuation, no emoji, no URLs
and no hashtags. Training and inference both pass text through :func:`normalize_speech`
so that the model never learns cues (capitals, "!!!", emoji) that it cannot see live.

Decisions:

* Digits are kept as digits. Vosk/pocketsphinx spell numbers ("twenty three"),
  Whisper-style engines write "23"; the MiniLM tokenizer handles both, and spelling
  numbers out would invent text that the written corpora never had.
* Apostrophes inside words are kept ("don't", "customer's"); the recognisers' English
  vocabularies contain these contractions.
* Hashtags keep their word ("#fail" -> "fail") because the word is often the sentiment;
  @mentions, "@USER", "URL" placeholders and "RT" retweet marks are dropped.

It also decides which recognised text is worth classifying at all
(:func:`trusted_text`): a fragment of function words carries no escalation evidence.
"""
from __future__ import annotations

import html
import re
import unicodedata
from typing import Sequence

from .events import Utterance, Word

_URL = re.compile(r"(?:https?://|www\.)\S+|\bURL\b", re.IGNORECASE)
_MENTION = re.compile(r"@\w+")
_RT = re.compile(r"(?:^|\s)RT(?=\s|:|$)")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
_APOS_OUTSIDE = re.compile(r"(?<![a-z0-9])'|'(?![a-z0-9])")
_SPACE = re.compile(r"\s+")


def _keep(ch: str) -> str:
    """Map one character: letters/digits/apostrophes stay, everything else is a space."""
    if ch == "'":
        return ch
    cat = unicodedata.category(ch)
    if cat[0] in ("L", "N"):
        return ch
    if cat[0] == "M":  # combining marks belong to the previous letter
        return ""
    return " "


def normalize_speech(text: str) -> str:
    """Return ``text`` as a recogniser would write it: lowercase words separated by spaces.

    >>> normalize_speech("RT @USER: I CAN'T believe this!!! &amp; #fail 😡 http://t.co/x")
    "i can't believe this fail"
    """
    if not text:
        return ""
    s = html.unescape(html.unescape(str(text)))  # some corpora double-escape (&amp;amp;)
    s = _URL.sub(" ", s)
    s = _RT.sub(" ", s)
    s = _MENTION.sub(" ", s)
    s = s.translate(_QUOTES)
    s = unicodedata.normalize("NFKC", s).lower()
    s = "".join(_keep(ch) for ch in s)
    s = _APOS_OUTSIDE.sub(" ", s)
    return _SPACE.sub(" ", s).strip()


# --------------------------------------------------------------------------- fragments

# English function words and fillers. Why: what survives the confidence gate on a real
# 8 kHz call is mostly these (about 73 % of the kept words on the contact-centre call),
# they carry no escalation evidence, yet the classifier reads fragments made of them as
# upset ("the" scores angry 0.59, "say the word" 0.79). They are kept in the text that
# is classified (for grammar) but do not count towards the content an utterance needs
# before it is scored. Negations are here too: "not" or "no" alone is no evidence,
# and "not happy" still reaches the classifier whole. Of the verbs only the reporting
# and filler ones are here (say, let, mean, word: "say the word", "let me", "i mean", "in
# other words": talk about talk carries no escalation of its own); get,
# go, know, tell, want... stay content ("we've got a gun", "i know where you live").
STOPWORDS: frozenset[str] = frozenset("""
a an the this that these those some any each every all both either neither such same other another
i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its
itself we us our ours ourselves they them their theirs themselves one ones someone something anything
who whom whose which what whatever
i'm i've i'll i'd you're you've you'll you'd he's he'll he'd she's she'll she'd it's it'll we're we've
we'll we'd they're they've they'll they'd that's there's here's what's who's where's how's let's
am is are was were be been being have has had having do does did doing done
will would shall should can could may might must
isn't aren't wasn't weren't haven't hasn't hadn't don't doesn't didn't won't wouldn't shan't shouldn't
can't cannot couldn't mightn't mustn't ain't
no not nor never
about above across after against along among around as at before behind below beside between beyond by
down during for from in inside into near of off on onto out outside over past per since through
throughout till to toward towards under until up upon via with within without
and but or so yet if then than because while when where why how though although unless whether
also just only very too quite rather really even still again already now then here there
more most much many few less least lot lots
say says said saying let mean word words
uh um uhm er erm ah ahh eh hm hmm mm mhm huh oh ooh whoa wow yeah yes yep yup ya nope nah okay ok
alright right well like kind sort hi hello hey bye goodbye please thanks
""".split())


def _token(word: str) -> str:
    return word.lower().strip("'")


def is_content(word: str) -> bool:
    """A word that could carry evidence: not a function word or filler, not a lone letter."""
    t = _token(word)
    return len(t) > 1 and t not in STOPWORDS and not t.startswith(("<", "["))


def content_words(words: Sequence[Word], min_conf: float) -> list[Word]:
    """The words heard with confidence ``>= min_conf`` that are not stop-words."""
    return [w for w in words if w.conf >= min_conf and is_content(w.word)]


def trusted_text(u: Utterance, min_conf: float, min_content: int, sure_conf: float = 0.5) -> str | None:
    """What the classifier may score from ``u``: its confident words (stop-words kept
    for grammar), but only when at least ``min_content`` of them are content words, or
    one content word was heard at ``sure_conf`` or more; None for a fragment ("the",
    "say the word", "okay yeah"), which must not be scored.

    The ``sure_conf`` path keeps a short, clearly heard line such as "that is
    ridiculous" (one content word, 0.59 on band-passed phone audio) or "i will kill you":
    with two content words required, the band-passed escalating sample lost its only
    upset line and the coach stayed silent through it.

    An utterance without per-word results (a typed transcript) counts every word of its
    text as confidently heard.
    """
    words = u.words or tuple(Word(t, u.start, u.end, 1.0) for t in u.text.split())
    kept = [w for w in words if w.conf >= min_conf]
    content = content_words(kept, min_conf)
    if len(content) < min_content and not any(w.conf >= sure_conf for w in content):
        return None
    return " ".join(w.word for w in kept)


__all__ = ["STOPWORDS", "content_words", "is_content", "normalize_speech", "trusted_text"]
