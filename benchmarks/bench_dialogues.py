"""Real dialogues replayed as transcripts: alarms on calm calls, prompts that meet anger.

The dev dialogues of MELD (``dev_sent_emo.csv``) and DailyDialog (``validation`` rows)
are human-written turns with an emotion label per turn. Each becomes a transcript:

* **angry** dialogues have a turn labelled anger or disgust; the first speaker to turn
  angry plays the customer, everyone else the agent;
* **calm** dialogues have no anger, disgust, sadness or fear turn and 6 turns or more;
  the first speaker plays the customer.

Turns get speech-like timing (150 words per minute, 0.6 s between turns) and are
replayed through the shipped classifier and playbook exactly as ``coach replay
transcript.json`` does (human text: every word confident). Printed:

* the share of calm dialogues that get ``apologize``, ``set_boundary`` or
  ``call_security`` (target at most 10%);
* the share of angry dialogues in which a de-escalation prompt opens by the end of the
  customer's second turn counting from the first outburst (target at least 70%);
* beside them, the per-turn view without the trajectory's smoothing: angry dialogues
  in which one of those two customer turns scores P(frustrated or worse) >= 0.5 (as
  the Scorer scores it: with the previous turn for a model that reads it; turns too
  short to score count as 0), and calm dialogues in which any customer turn does. A
  rule that fired on such a turn would meet the first and alarm the second: the two
  show whether the words or the smoothing hold the figures back;
* both corpora pooled, the figures the issue's targets are judged on.

    python benchmarks/bench_dialogues.py [--limit N]

Data: ``../shared/data/text`` (dev splits only; official test splits are never read).
Asserts nothing.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO.parent / "shared" / "data" / "text"
ANGRY = {"anger", "disgust"}
NOT_CALM = ANGRY | {"sadness", "fear"}
ALARMS = {"apologize", "set_boundary", "call_security"}
DEESCALATE = {"apologize", "paraphrase", "slow_down", "let_them_finish", "let_them_vent", "talking_over",
              "set_boundary", "call_security", "end_or_escalate"}


def meld() -> list[list[tuple[str, str, str]]]:
    """MELD dev dialogues as [(speaker, text, emotion)] in order."""
    by: dict[str, list] = defaultdict(list)
    with open(TEXT / "meld" / "dev_sent_emo.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            by[r["Dialogue_ID"]].append((int(r["Utterance_ID"]), r["Speaker"], r["Utterance"], r["Emotion"].lower()))
    return [[(s, t, e) for _, s, t, e in sorted(d)] for _, d in sorted(by.items(), key=lambda kv: int(kv[0]))]


def dailydialog() -> list[list[tuple[str, str, str]]]:
    """DailyDialog validation dialogues as [(speaker, text, emotion)] in order."""
    by: dict[str, list] = defaultdict(list)
    with open(TEXT / "dailydialog" / "dailydialog_utterances.tsv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            if r["split"] == "validation":
                by[r["dialogue_id"]].append((int(r["utt_idx"]), r["speaker"], r["utterance"], r["emotion"].lower()))
    return [[(s, t, e) for _, s, t, e in sorted(d)] for _, d in sorted(by.items())]


def transcript(dialogue, customer: str):
    """Utterances with speech-like timing; returns (utterances, index of first angry customer turn)."""
    from coach.events import Speaker, Utterance, Word
    t, out, first = 0.5, [], None
    for speaker, text, emotion in dialogue:
        words = text.split() or ["..."]
        dur = max(0.6, len(words) / 2.5)
        who = Speaker.CUSTOMER if speaker == customer else Speaker.AGENT
        step = dur / len(words)
        ws = tuple(Word(w, t + i * step, t + (i + 1) * step, 1.0) for i, w in enumerate(words))
        out.append(Utterance(who, t, t + dur, text, ws, 1.0))
        if first is None and who is Speaker.CUSTOMER and emotion in ANGRY:
            first = len(out) - 1
        t += dur + 0.6
    return out, first


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="at most N dialogues per corpus (0: all)")
    ap.add_argument("--model", default=None, help="classifier folder or name (default: the shipped one)")
    ap.add_argument("--show", type=int, default=0, help="print N calm dialogues that got an alarm (to study them)")
    args = ap.parse_args(argv)
    if not TEXT.is_dir():
        raise SystemExit(f"{TEXT} is missing: the benchmark needs ../shared/data beside the checkout")
    from coach.classifier import load_classifier
    from coach.events import Level, Prompt, Speaker
    from coach.pipeline import Pipeline, Scorer
    from coach.playbook import load_playbook
    from coach.sources import UtteranceListSource

    clf, pb = load_classifier(args.model), load_playbook(None)
    t0 = time.monotonic()
    total = defaultdict(int)
    for name, dialogues in (("MELD dev", meld()), ("DailyDialog validation", dailydialog())):
        if args.limit:
            dialogues = dialogues[:args.limit]
        calm_n = calm_alarm = calm_turn = angry_n = angry_met = angry_turn = shown = 0
        for d in dialogues:
            emotions = [e for _, _, e in d]
            angry = any(e in ANGRY for e in emotions)
            if not angry and (len(d) < 6 or any(e in NOT_CALM for e in emotions)):
                continue
            customer = next(s for s, _, e in d if e in ANGRY) if angry else d[0][0]
            utts, first = transcript(d, customer)
            events: list = []
            Pipeline(scorer=Scorer(clf, pb.min_word_conf, pb.min_content_words), playbook=pb,
                     sink=events.append).run(UtteranceListSource(utts))
            opened = [e for e in events if isinstance(e, Prompt) and e.opened]
            scored = {round(e.utterance.end, 3): e.scores for e in events if getattr(e, "scores", None) is not None}
            up = {end: sc.at_least(Level.FRUSTRATED) for end, sc in scored.items()}
            if angry:
                cust = [i for i, u in enumerate(utts) if u.speaker is Speaker.CUSTOMER and i >= first]
                deadline = utts[cust[min(1, len(cust) - 1)]].end
                angry_n += 1
                angry_met += any(p.prompt in DEESCALATE and utts[first].start <= p.t <= deadline for p in opened)
                angry_turn += any(up.get(round(utts[i].end, 3), 0.0) >= 0.5 for i in cust[:2])
            else:
                calm_n += 1
                alarm = [p for p in opened if p.prompt in ALARMS]
                calm_alarm += bool(alarm)
                calm_turn += any(v >= 0.5 for v in up.values())
                if alarm and shown < args.show:
                    shown += 1
                    print(f"--- calm dialogue, {alarm[0].prompt} at {alarm[0].t:.1f} s", file=sys.stderr)
                    for u in utts:
                        sc = scored.get(round(u.end, 3))
                        tag = f"{sc.level.label:>11} P(frus+) {sc.at_least(Level.FRUSTRATED):.2f}" if sc else " " * 24
                        print(f"  {u.speaker.value:>8} {u.end:6.1f} {tag}  {u.text[:70]}", file=sys.stderr)
        print(f"{name}: calm dialogues with apologize/set_boundary/call_security: {calm_alarm}/{calm_n} = "
              f"{100 * calm_alarm / max(calm_n, 1):.1f}% (target <= 10%); angry dialogues met by a de-escalation "
              f"prompt within two customer turns: {angry_met}/{angry_n} = {100 * angry_met / max(angry_n, 1):.1f}% "
              f"(target >= 70%)")
        print(f"  {name}, per turn at P(frustrated or worse) >= 0.5, no smoothing: angry dialogues "
              f"{angry_turn}/{angry_n} (in the two turns), calm dialogues {calm_turn}/{calm_n} (any customer turn)")
        for k, v in (("calm", calm_n), ("alarm", calm_alarm), ("calm_turn", calm_turn), ("angry", angry_n),
                     ("met", angry_met), ("turn", angry_turn)):
            total[k] += v
    print(f"both: calm dialogues with an alarm {total['alarm']}/{total['calm']} = "
          f"{100 * total['alarm'] / max(total['calm'], 1):.1f}% (target <= 10%); angry dialogues met "
          f"{total['met']}/{total['angry']} = {100 * total['met'] / max(total['angry'], 1):.1f}% (target >= 70%); "
          f"per turn at P(frustrated+) >= 0.5, no smoothing: angry {total['turn']}/{total['angry']}, "
          f"calm {total['calm_turn']}/{total['calm']}")
    print(f"took {time.monotonic() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
