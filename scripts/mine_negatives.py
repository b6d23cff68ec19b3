#!/usr/bin/env python3
"""Mine confusable calm turns: the list behind the ``confusable`` training source.

Replaying the dev dialogues showed where calm calls get alarms: turns the annotators
call calm whose topic is unpleasant ("I have a horrible toothache", "what seems to be
the problem?", "we will need to do an investigation"). This scores every TRAINING turn
that MELD, EmoryNLP or DailyDialog label calm (dev and test splits are never read) with
a model, reading each after its previous turn when the model does, and writes the
``--top`` turns with the highest P(frustrated or worse) in [``--min-p``, ``--max-p``) to
``coach/configs/train/confusable_calm.txt`` as ``file:line`` keys relative to the data
root (never the text: the corpora's licences stay with the corpora).

Run: ``.venv/bin/python scripts/mine_negatives.py [--model NAME] [--top N] [--min-p P]``
(about 7 minutes on 2 cores). Retrain afterwards; the list depends on the model that
mined it, which the file's header names.
"""
from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="classifier that mines (default: the shipped one)")
    ap.add_argument("--top", type=int, default=4000, help="at most this many turns (default 4000)")
    ap.add_argument("--min-p", type=float, default=0.5, help="P(frustrated or worse) at least (default 0.5)")
    ap.add_argument("--max-p", type=float, default=0.95,
                    help="and below this (default 0.95): turns the model is that sure of are mostly the "
                         "annotators' misses (\"I hate this apartment!\" labelled no emotion), not calm")
    ap.add_argument("--sample", type=float, default=0.35,
                    help="share of the calm turns scored, by crc32 of file:line (default 0.35: ~7 minutes)")
    ap.add_argument("--data", default=None, help="data root (default: ../shared/data/text)")
    ap.add_argument("--out", default=str(REPO / "coach" / "configs" / "train" / "confusable_calm.txt"))
    args = ap.parse_args(argv)

    from coach import datasets as ds, resources
    from coach.classifier import load_classifier
    from coach.errors import CoachError

    try:
        root = Path(args.data) if args.data else resources.default_data_root()
        schema = ds.load_schema()
        clf = load_classifier(args.model)
        rows = [r for origin in ("meld", "emorynlp", "dailydialog")
                for r in ds.BUILTIN[origin](root, schema, 0.0)
                if r.split == "train" and r.levels == ("calm",) and r.text.strip()
                and zlib.crc32(ds.confusable_key(r.ref, root).encode()) % 1000 < args.sample * 1000]
    except CoachError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    esc, _ = clf.predict_proba([r.text for r in rows], batch_size=64, contexts=[r.context for r in rows])
    upset = esc[:, 1:].sum(axis=1)
    order = [i for i in np.argsort(-upset, kind="stable") if args.min_p <= upset[i] < args.max_p][:args.top]
    keys = sorted({ds.confusable_key(rows[i].ref, root) for i in order})
    name = clf.path.name if clf.path is not None else str(args.model)
    header = (f"# Confusable calm turns (scripts/mine_negatives.py): {len(keys)} of {len(rows)} calm training\n"
              f"# turns (a {args.sample:g} sample) of MELD, EmoryNLP and DailyDialog with {args.min_p:g} <=\n"
              f"# P(frustrated or worse) < {args.max_p:g} by the model {name}: the {args.top}\n"
              f"# highest, listed in file:line order under the data root.\n")
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(header + "".join(k + "\n" for k in keys), encoding="utf-8")
    tmp.replace(out)
    by = {}
    for i in order:
        by[rows[i].source] = by.get(rows[i].source, 0) + 1
    print(f"{len(keys)} turns written to {out} ({', '.join(f'{k} {v}' for k, v in sorted(by.items()))}); "
          f"{int((upset >= args.min_p).sum())} of {len(rows)} scored calm turns at P >= {args.min_p:g}, "
          f"{int((upset >= args.max_p).sum())} at P >= {args.max_p:g} (left out)")
    for i in order[:15]:
        print(f"  {upset[i]:.2f}  {rows[i].text[:80]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
