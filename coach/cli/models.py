"""``coach models list|download``: the official Vosk models."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import safe_text, status


def cmd_models(args: argparse.Namespace) -> int:
    from .. import resources, vosk_models
    if args.models_cmd == "list":
        rows = [("name", "language", "size", "rate", "notes")]
        for name, info in vosk_models.KNOWN_MODELS.items():
            rows.append((name, info.language, f"{info.size_mb} MB", f"{info.sample_rate} Hz", info.notes))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + f"  {r[4]}".rstrip() + "\n")
        return 0
    dest = Path(args.dir) if args.dir else resources.models_dir()
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if not tty:
            return
        if total > 0:
            frac = done / total
            bar = "#" * int(frac * 40)
            sys.stderr.write(f"\r  [{bar:<40}] {frac * 100:5.1f}%  {done / 1e6:6.1f}/{total / 1e6:.1f} MB")
        else:
            sys.stderr.write(f"\r  {done / 1e6:6.1f} MB")
        sys.stderr.flush()

    vosk_models.check_download_target(args.name, dest)  # a bad name or --dir fails before any output
    sys.stderr.write(f"coach: downloading {safe_text(args.name)} into {safe_text(str(dest))}\n")
    try:
        path = vosk_models.download_model(args.name, dest, progress, report=status)
    finally:
        if tty:
            sys.stderr.write("\n")
    sys.stdout.write(f"{path}\n")
    return 0


def register(sub) -> None:
    m = sub.add_parser("models", help="list or download speech models")
    msub = m.add_subparsers(dest="models_cmd", required=True, metavar="ACTION")
    msub.add_parser("list", help="the official Vosk models coach knows, as a table")
    dl = msub.add_parser("download", help="download, verify and unpack an official Vosk model")
    dl.add_argument("name", help="a name from `coach models list`, e.g. vosk-model-small-en-us-0.15")
    dl.add_argument("--dir", help="folder to unpack it into (default: $COACH_MODELS or ./models)")
    m.set_defaults(func=cmd_models)
