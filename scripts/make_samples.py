"""Synthesise the three sample calls with espeak-ng.

The escalating call is the one ``coach demo`` replays, so it ships inside the package
(``coach/examples/``); the calm and abusive calls live in the top-level ``examples/``.

Each call is a stereo 16 kHz 16-bit PCM WAV (agent = LEFT channel, customer = RIGHT
channel) plus a transcript JSON in the format ``coach replay`` accepts, with every
segment's real start/end time in the WAV, approximate per-word times and the line's
intended ``emotion`` (the tests' ground truth; the coach ignores unknown fields).

The agent and the customer use different espeak-ng voices; the customer's rate, pitch
and loudness follow the emotion of each line, and in the escalating call the agent
rattles off policy at a fast rate before slowing down to apologise.

Output is deterministic (espeak-ng is; the noise floor is seeded), so ``--check`` can
re-synthesise into a temporary folder and compare byte for byte with the committed
files. The voices were chosen because PocketSphinx's bundled US-English model
recognises them best of the espeak-ng variants (see examples/README.md).

    python scripts/make_samples.py              # write coach/examples/escalating.* and examples/{calm,abusive}.*
    python scripts/make_samples.py --out DIR    # write all three into DIR instead
    python scripts/make_samples.py --check      # verify the committed files are up to date
"""
from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"  # calm and abusive
PACKAGE_EXAMPLES = REPO / "coach" / "examples"  # the demo call, shipped as package data
IN_PACKAGE = frozenset({"escalating"})

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050  # espeak-ng's native output rate; 16000/22050 = 320/441
NOISE_DBFS = -60.0  # RMS of the seeded noise floor under both channels
TRIM_THRESHOLD = 10 ** (-50 / 20)  # samples quieter than -50 dBFS at a clip's ends are cut
LEAD_IN_S = 0.15
TAIL_S = 0.15
GAP_RANGE_S = (0.4, 0.55)  # default pause between turns (seeded, so deterministic)
MAX_BYTES = 2_500_000

# Voices: the two espeak-ng variants PocketSphinx recognised best of the English voices
# tried (the male ones scored 0.4-0.9 WER against ~0.3). The customer's f5 is breathier
# and higher, so the two are easy to tell apart by ear.
AGENT_VOICE = "en-us+f2"
CUSTOMER_VOICE = "en-us+f5"


@dataclass(frozen=True)
class Prosody:
    rate: int  # espeak-ng -s, words per minute
    pitch: int  # -p, 0..99
    amplitude: int  # -a, 0..200


# The customer's delivery follows the emotion: calm = normal; frustrated = a bit faster
# and louder; angry = faster, higher and louder; abusive / threatening = loudest.
CUSTOMER_PROSODY = {
    "calm": Prosody(160, 50, 90),
    "frustrated": Prosody(172, 56, 120),
    "angry": Prosody(184, 64, 150),
    "abusive": Prosody(188, 70, 180),
    "threatening": Prosody(165, 48, 195),
}

# The agent's pace: "normal" for ordinary lines, "fast" when rattling off policy to an
# upset customer (the coach's slow-down prompt fires above 190 wpm) and "slow" once
# the agent has taken the hint.
AGENT_PROSODY = {
    "normal": Prosody(150, 35, 100),
    "fast": Prosody(250, 35, 110),
    "slow": Prosody(142, 32, 95),
}


@dataclass(frozen=True)
class Line:
    speaker: str  # "agent" or "customer"
    emotion: str  # calm, frustrated, angry, abusive, threatening
    text: str
    pace: str = "normal"  # agent only: normal, fast, slow


def A(text: str, pace: str = "normal") -> Line:
    return Line("agent", "calm", text, pace)


def C(emotion: str, text: str) -> Line:
    return Line("customer", emotion, text)


# ---- the scripts ------------------------------------------------------------------
# Written for this project. Kept short: a 16 kHz 16-bit stereo WAV is 64 kB a second,
# so 2.5 MB is about 39 seconds of call.

CALLS: dict[str, dict] = {
    "calm": {
        "seed": 11,
        "gaps": (0.4, 0.6),
        "title": "Delivery date enquiry",
        "description": "A civil call: the customer asks when an order will arrive; the agent checks "
                       "and emails a tracking link. No complaint; the coach should stay quiet.",
        "lines": [
            A("Hello, this is customer service. What can I do for you?"),
            C("calm", "Hello. I would like to know when my order will arrive."),
            A("Of course. What is the order number, please?"),
            C("calm", "Yes, it is one three five seven nine."),
            A("Thank you. Your order should arrive on Thursday."),
            C("calm", "That is good news. Is there a tracking number?"),
            A("Yes. I will send it to you by email."),
            C("calm", "Perfect. Thank you very much for your help."),
            A("You are welcome. Have a nice day."),
            C("calm", "Okay, thanks a lot. Goodbye."),
        ],
    },
    "escalating": {
        "seed": 23,
        "gaps": (0.4, 0.5),  # a heated call: quick replies (and the size limit is tight)
        "title": "Double charge, escalating then de-escalated",
        "description": "The customer was charged twice again and starts frustrated; the agent talks fast "
                       "and quotes policy, and the customer gets angry and vents. The agent then slows "
                       "down, apologises, restates the problem, offers options, and the customer calms "
                       "down and thanks them.",
        "lines": [
            A("Billing, how can I help?"),
            C("frustrated", "I was charged twice again. I am so frustrated."),
            A("It's our policy. You have to fill in the form again.", "fast"),
            C("angry", "This is ridiculous. I called three times."),
            A("Like I said, it's our policy.", "fast"),
            C("angry", "That is unacceptable. I am furious."),
            A("I am so sorry. I apologize for the trouble.", "slow"),
            C("angry", "I am so angry. I want my money back."),
            A("So you were charged twice, and nobody fixed it in three calls.", "slow"),
            C("calm", "Yes, exactly."),
            A("I can offer a refund, or a credit.", "slow"),
            C("calm", "Yes, a refund would be great."),
            A("Okay, the refund is done."),
            C("calm", "Okay, thank you."),
        ],
    },
    "abusive": {
        "seed": 37,
        "title": "Abuse, a boundary, then threats",
        "description": "A customer angry about a cancelled appointment turns on the agent personally; "
                       "the agent sets a boundary, the insults continue, then the customer threatens "
                       "violence and the agent calls security and ends the call.",
        "lines": [
            A("Customer service. What can I do for you?"),
            C("angry", "You cancelled my appointment again. This is ridiculous."),
            A("I am sorry about that. Let me look at your account."),
            C("abusive", "You idiot. You are stupid and useless."),
            A("I want to help you, but please keep it respectful."),
            C("abusive", "Shut up, you stupid moron."),
            A("Please don't use that language, or I will have to end the call."),
            C("threatening", "I will hurt you. I am going to smash your face."),
            A("That is a threat. I am calling security."),
            C("threatening", "I will kill you. Watch your back."),
            A("I am ending this call now."),
        ],
    },
}


# ---- synthesis --------------------------------------------------------------------

def espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"text-to-speech:\s*(\S+)", out)
    return f"espeak-ng {m.group(1) if m else out.strip()}"  # not the data path: that varies by machine


def synth(text: str, voice: str, p: Prosody) -> np.ndarray:
    """One line as float64 mono at 16 kHz, leading/trailing silence trimmed."""
    cmd = ["espeak-ng", "-v", voice, "-s", str(p.rate), "-p", str(p.pitch), "-a", str(p.amplitude),
           "--stdout", text]
    wav = subprocess.run(cmd, capture_output=True, check=True).stdout
    x, sr = sf.read(io.BytesIO(wav), dtype="float64")
    if sr != ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng wrote {sr} Hz audio; this script expects {ESPEAK_RATE} Hz")
    if x.ndim > 1:
        x = x.mean(axis=1)
    y = resample_poly(x, 320, 441)
    loud = np.flatnonzero(np.abs(y) > TRIM_THRESHOLD)
    if loud.size == 0:
        raise RuntimeError(f"espeak-ng produced silence for {text!r}")
    return y[loud[0]: loud[-1] + 1]


def word_times(text: str, start: float, end: float) -> list[dict]:
    """Spread the line's duration over its words in proportion to their length."""
    words = [re.sub(r"[^\w']", "", w).strip("'").lower() for w in text.split()]
    words = [w for w in words if w]
    weights = np.array([len(w) for w in words], dtype=float)
    edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    return [{"word": w, "start": round(float(a), 3), "end": round(float(b), 3)}
            for w, a, b in zip(words, edges[:-1], edges[1:])]


def prosody_for(line: Line) -> tuple[str, Prosody]:
    if line.speaker == "agent":
        return AGENT_VOICE, AGENT_PROSODY[line.pace]
    return CUSTOMER_VOICE, CUSTOMER_PROSODY[line.emotion]


def render(name: str, spec: dict, version: str) -> tuple[bytes, dict]:
    """Build one call: (WAV file bytes, transcript dict)."""
    rng = np.random.default_rng(spec["seed"])
    clips = []
    t = int(LEAD_IN_S * SAMPLE_RATE)
    for i, line in enumerate(spec["lines"]):
        voice, p = prosody_for(line)
        y = synth(line.text, voice, p)
        clips.append((line, voice, p, t, y))
        t += len(y)
        if i + 1 < len(spec["lines"]):
            t += round(rng.uniform(*spec.get("gaps", GAP_RANGE_S)) * SAMPLE_RATE)
    total = t + int(TAIL_S * SAMPLE_RATE)

    audio = np.zeros((total, 2))
    noise_rms = 10 ** (NOISE_DBFS / 20)
    audio += rng.standard_normal((total, 2)) * noise_rms
    segments = []
    for line, voice, p, start, y in clips:
        ch = 0 if line.speaker == "agent" else 1
        audio[start:start + len(y), ch] += y
        s, e = start / SAMPLE_RATE, (start + len(y)) / SAMPLE_RATE
        seg = {
            "speaker": line.speaker,
            "start": round(s, 3),
            "end": round(e, 3),
            "text": line.text,
            "emotion": line.emotion,
        }
        if line.speaker == "agent":
            seg["pace"] = line.pace
        seg["voice"] = {"espeak_voice": voice, "rate": p.rate, "pitch": p.pitch, "amplitude": p.amplitude}
        seg["words"] = word_times(line.text, s, e)
        segments.append(seg)

    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    data = buf.getvalue()

    doc = {
        "segments": segments,
        "meta": {
            "call": name,
            "title": spec["title"],
            "description": spec["description"],
            "audio": f"{name}.wav",
            "sample_rate": SAMPLE_RATE,
            "channels": {"left": "agent", "right": "customer"},
            "duration": round(total / SAMPLE_RATE, 3),
            "synthesized_with": version,
            "generator": "scripts/make_samples.py",
            "word_times": "approximate: each line's duration spread over its words by length",
            "license": "Apache-2.0",
        },
    }
    return data, doc


def transcript_bytes(doc: dict) -> bytes:
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def home(name: str, out: Path | None = None) -> Path:
    """Where call ``name`` is written: ``out`` if given, else its committed folder."""
    if out is not None:
        return out
    return PACKAGE_EXAMPLES if name in IN_PACKAGE else EXAMPLES


def write_all(out: Path | None = None) -> list[Path]:
    """Render every call into ``out``, or each into its committed folder when ``out`` is None."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("make_samples: espeak-ng is not installed (apt-get install espeak-ng)")
    version = espeak_version()
    written = []
    for name, spec in CALLS.items():
        dest = home(name, out)
        dest.mkdir(parents=True, exist_ok=True)
        wav, doc = render(name, spec, version)
        if len(wav) > MAX_BYTES:
            raise SystemExit(f"make_samples: {name}.wav would be {len(wav)} bytes (limit {MAX_BYTES}); "
                             "shorten the script")
        (dest / f"{name}.wav").write_bytes(wav)
        (dest / f"{name}.json").write_bytes(transcript_bytes(doc))
        written += [dest / f"{name}.wav", dest / f"{name}.json"]
        print(f"{name}: {doc['meta']['duration']:.1f} s, {len(doc['segments'])} turns, "
              f"{len(wav) / 1e6:.2f} MB -> {dest / name}.wav, {name}.json")
    return written


def check(committed: Path | None = None) -> int:
    """Re-render into a temp folder; 0 if every committed file (in ``committed``, or each
    call's own folder when None) is byte-identical."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = write_all(Path(tmp))
        bad = []
        for f in fresh:
            old = home(f.stem, committed) / f.name
            if not old.is_file():
                bad.append(f"{old} is missing")
            elif old.read_bytes() != f.read_bytes():
                bad.append(f"{old} differs from a fresh synthesis")
    if bad:
        for b in bad:
            print(f"make_samples --check: {b}", file=sys.stderr)
        print("make_samples --check: run 'python scripts/make_samples.py' to regenerate "
              "(a different espeak-ng version also changes the audio)", file=sys.stderr)
        return 1
    where = committed or f"{PACKAGE_EXAMPLES} and {EXAMPLES}"
    print(f"make_samples --check: the samples in {where} are up to date")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None,
                    help="write all calls into this folder (default: escalating into coach/examples/, "
                         "calm and abusive into examples/)")
    ap.add_argument("--check", action="store_true",
                    help="re-synthesise to a temporary folder and fail unless --out matches byte for byte")
    args = ap.parse_args(argv)
    if args.check:
        return check(args.out)
    write_all(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
