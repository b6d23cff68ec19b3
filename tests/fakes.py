"""Test doubles for stage tests: deterministic, keyword-driven, clearly not the product.

The real classifier is exercised by the end-to-end tests and by the paraphrase test in
test_playbook.py; these doubles let a test push frames into one stage (trajectory,
playbook, pipeline plumbing) and know exactly what to expect.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from coach.events import LEVELS, Scores

KEYWORDS = [
    ("threatening", ("hurt you", "kill", "smash", "watch your back")),
    ("abusive", ("idiot", "stupid", "moron", "useless")),
    ("angry", ("furious", "ridiculous", "unacceptable", "angry")),
    ("frustrated", ("again", "still", "annoying", "third time", "frustrat")),
]


class KeywordClassifier:
    """Scores text by keywords; embeds text as a bag of hashed words (so overlap = similarity)."""

    dim = 64

    def __init__(self, p: float = 0.8) -> None:
        self._texts: dict[bytes, str] = {}
        self.p = p  # probability of the keyword's level (the other four share the rest)

    def classify(self, texts: Sequence[str]) -> list[Scores]:
        out = []
        for t in texts:
            low = t.lower()
            level = next((lv for lv, kws in KEYWORDS if any(k in low for k in kws)), "calm")
            esc = {lv: (self.p if lv == level else (1.0 - self.p) / 4) for lv in LEVELS}
            neg = level != "calm"
            sent = {"negative": 0.8 if neg else 0.1, "neutral": 0.1 if neg else 0.6, "positive": 0.1 if neg else 0.3}
            out.append(Scores(esc, sent))
        return out

    def classify_embeddings(self, emb: np.ndarray) -> list[Scores]:
        """Inverts embed(): recovers the words' keywords from the text this double remembers."""
        return self.classify([self._texts[v.tobytes()] for v in np.asarray(emb, dtype=np.float32)])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                if len(w) > 3:
                    out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
            n = np.linalg.norm(out[i])
            if n > 0:
                out[i] /= n
            out[i, -1] = len(self._texts) * 1e-6  # a tag (too small to matter for similarity)
            self._texts[out[i].tobytes()] = t
        return out
