"""normalize_speech turns written text into what a recogniser would print."""
from __future__ import annotations

import pytest

from coach.text import normalize_speech


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Hello, World!", "hello world"),
        ("I CAN'T believe this!!!", "i can't believe this"),
        ("Don\u2019t do that", "don't do that"),                      # curly apostrophe
        ("RT @USER: so bad", "so bad"),                               # retweet mark, mention
        ("@someone_123 hi", "hi"),
        ("see https://t.co/abc and www.example.com now URL", "see and now"),
        ("#fail #WorstServiceEver", "fail worstserviceever"),         # hashtag keeps its word
        ("fish &amp; chips &lt;3", "fish chips 3"),                   # HTML entities decoded
        ("I'm so angry \U0001F621\U0001F621", "i'm so angry"),        # emoji
        ("'quoted' words", "quoted words"),                           # quotes are not apostrophes
        ("it costs $25.99 on 3/4", "it costs 25 99 on 3 4"),          # digits kept as digits
        ("  lots \t of\n space  ", "lots of space"),
        ("caf\u00e9 na\u00efve", "caf\u00e9 na\u00efve"),
        ("", ""),
        ("!!! ...", ""),
        ("ARTIST is great", "artist is great"),                      # 'RT' inside words survives
    ],
)
def test_normalize_speech(raw: str, expected: str) -> None:
    assert normalize_speech(raw) == expected


def test_idempotent() -> None:
    s = "RT @USER: You're the WORST!!! #fail http://x.y"
    assert normalize_speech(normalize_speech(s)) == normalize_speech(s)
