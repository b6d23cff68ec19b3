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
"""
from __future__ import annotations

import html
import re
import unicodedata

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


__all__ = ["normalize_speech"]
