"""``coach check-config``: validate a playbook exactly as ``replay`` will load it."""
from __future__ import annotations

import argparse
import sys


def cmd_check_config(args: argparse.Namespace) -> int:
    from ..playbook import CONDITIONS, load_playbook
    if args.list:
        for name, spec in sorted(CONDITIONS.items()):
            sys.stdout.write(f"{name:<28} {spec.doc}\n")
        return 0
    from ..classifier import read_model_config
    from ..playbook import weak_corroborations
    cfg = load_playbook(args.playbook)
    # The safety rules' corroboration depends on the model's thresholds: check it against
    # the model the coach will use (a retrain can move them). Read before "OK" is printed,
    # so a bad --model is an error and nothing else.
    warnings = weak_corroborations(cfg, read_model_config(args.model).thresholds)
    sys.stdout.write(f"{cfg.source}: OK, {len(cfg.rules)} prompts: {', '.join(r.id for r in cfg.rules)}\n")
    for w in warnings:
        sys.stderr.write(f"coach: warning: {w}\n")
    return 0


def register(sub) -> None:
    c = sub.add_parser("check-config", help="validate a playbook YAML (the same checks replay makes)")
    c.add_argument("playbook", nargs="?",
                   help="playbook YAML (default: configs/playbook.yaml from ~/.config/coach, the project folder "
                        "or the package)")
    c.add_argument("--model", default=None,
                   help="model whose decision thresholds the safety prompts are checked against "
                        "(default: the shipped escalation-minilm)")
    c.add_argument("--list", action="store_true", help="list the conditions a prompt can use")
    c.set_defaults(func=cmd_check_config)
