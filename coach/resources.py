"""One locator for the files coach ships: configs, the classifier heads, the demo call.

Why: a non-editable ``pip install .`` used to break ``demo``, ``replay``,
``check-config`` and ``classify`` because they looked for ``configs/`` beside the source
tree. Everything coach needs now lives inside the package (``coach/configs``,
``coach/models``, ``coach/examples``) and is found, for a relative name such as
``configs/playbook.yaml``, in this order:

1. the user's override folder: ``$COACH_HOME`` or else ``~/.config/coach``;
2. the project folder: the current working directory (so a team can keep an edited
   ``configs/playbook.yaml`` or a retrained ``models/escalation-minilm`` in its repo);
3. the installed package.

An explicit path given on the command line is not looked up here: it is used as is.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent

PLAYBOOK = "configs/playbook.yaml"
LABELS = "configs/labels.yaml"
TRAIN_CONFIG = "configs/train/default.yaml"
CLASSIFIER = "models/escalation-minilm"
DEMO_CALL = "examples/escalating.wav"


def user_dir() -> Path:
    """The per-user override folder (``$COACH_HOME``, else ``~/.config/coach``)."""
    env = os.environ.get("COACH_HOME")
    return Path(env).expanduser() if env else Path.home() / ".config" / "coach"


def project_dir() -> Path:
    """The project folder: where the user runs coach."""
    return Path.cwd()


def search_path(name: str) -> list[Path]:
    """Where ``name`` (a relative resource name) is looked for, first match wins."""
    return [user_dir() / name, project_dir() / name, PACKAGE_DIR / name]


def locate(name: str) -> Path:
    """The first existing copy of resource ``name``; a ConfigError names every place tried."""
    for p in search_path(name):
        if p.exists():
            return p
    tried = ", ".join(str(p) for p in search_path(name))
    raise ConfigError(f"{name} was not found (looked in {tried})",
                      "reinstall coach (`pip install --force-reinstall coach`) or pass the file's path explicitly")


def find(path_or_name: str | os.PathLike) -> Path:
    """A path given by the user if it exists, else the shipped resource of that name
    (so `coach train --config configs/train/lora.yaml` works from any folder), else the
    path unchanged for the caller to report as missing."""
    p = Path(path_or_name).expanduser()
    if p.exists() or p.is_absolute():
        return p
    for cand in search_path(str(p)):
        if cand.exists():
            return cand
    return p


def packaged(name: str) -> Path:
    """The copy shipped inside the package (for 'restore the default' hints)."""
    return PACKAGE_DIR / name


def models_dir() -> Path:
    """Where downloaded speech models go and are searched: ``$COACH_MODELS`` or ./models."""
    env = os.environ.get("COACH_MODELS")
    return Path(env).expanduser() if env else project_dir() / "models"


def model_search_dirs() -> list[Path]:
    """Folders searched for named models (classifier heads, Vosk models), first wins."""
    dirs = [models_dir(), user_dir() / "models", PACKAGE_DIR / "models"]
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def default_data_root() -> Path:
    """The folder of the built-in text data sets: ``$COACH_DATA`` or ../shared/data/text."""
    env = os.environ.get("COACH_DATA")
    if env:
        return Path(env).expanduser()
    for base in (project_dir(), PACKAGE_DIR.parent):
        cand = base.parent / "shared" / "data" / "text"
        if cand.is_dir():
            return cand
    return project_dir().parent / "shared" / "data" / "text"


__all__ = [
    "CLASSIFIER", "DEMO_CALL", "LABELS", "PACKAGE_DIR", "PLAYBOOK", "TRAIN_CONFIG", "default_data_root", "find", "locate",
    "model_search_dirs", "models_dir", "packaged", "project_dir", "search_path", "user_dir",
]
