"""Finding, validating and downloading Vosk models.

The vosk library logs to stderr and can abort the process on a broken model folder,
so every folder is checked here, in Python, against the layout that vosk-api's
``Model::ConfigureV1/V2`` and ``ReadDataFiles`` read, before ``vosk.Model`` sees it.

Checksums: alphacephei.com does not publish SHA-256 sums next to its model zips, so
``KNOWN_MODELS`` carries ``sha256=None`` and a download is verified by its
Content-Length, a full CRC check of the zip (``ZipFile.testzip``) and the layout check
of the unpacked folder. A checksum passed in (or added to the table) is enforced.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from .errors import ModelError

BASE_URL = "https://alphacephei.com/vosk/models"
DEFAULT_MODEL = "vosk-model-small-en-us-0.15"


@dataclass(frozen=True)
class VoskModelInfo:
    """One official model: where it lives and what it is (size in MB, as listed)."""

    name: str
    url: str
    size_mb: int
    language: str
    sample_rate: int = 16000
    sha256: str | None = None
    notes: str = ""


def _m(name: str, size_mb: int, language: str, notes: str = "", sample_rate: int = 16000) -> VoskModelInfo:
    return VoskModelInfo(name, f"{BASE_URL}/{name}.zip", size_mb, language, sample_rate, None, notes)


KNOWN_MODELS: dict[str, VoskModelInfo] = {
    m.name: m
    for m in (
        _m("vosk-model-small-en-us-0.15", 40, "en-us", "small, fast; the recommended default for live calls"),
        _m("vosk-model-en-us-0.22-lgraph", 128, "en-us", "larger acoustic model with a small graph; better accuracy"),
        _m("vosk-model-en-us-0.22", 1800, "en-us", "big server model; needs ~6 GB RAM"),
        _m("vosk-model-small-en-in-0.4", 36, "en-in", "small Indian-English model"),
        _m("vosk-model-en-in-0.5", 1000, "en-in", "big Indian-English model"),
        _m("vosk-model-small-ko-0.22", 82, "ko", "small Korean model"),
        _m("vosk-model-small-de-0.15", 45, "de", "small German model"),
        _m("vosk-model-small-fr-0.22", 41, "fr", "small French model"),
        _m("vosk-model-small-es-0.42", 39, "es", "small Spanish model"),
    )
}


# --------------------------------------------------------------------------- layout


def model_problems(path: Path) -> list[str]:
    """What is missing for vosk to load ``path`` (empty list = loadable layout).

    Mirrors vosk-api model.cc: the v2 layout needs ``am/final.mdl`` and
    ``conf/model.conf``; the old v1 layout has ``final.mdl`` and ``mfcc.conf`` at the
    top. Either needs a feature config, a decoding graph (``HCLG.fst``, or the
    lookahead pair ``HCLr.fst`` + ``Gr.fst`` with ``disambig_tid.int``) and, when an
    ``ivector/`` folder is present, its six extractor files.
    """
    p = Path(path)
    if not p.exists():
        return [f"{p} does not exist"]
    if not p.is_dir():
        return [f"{p} is not a folder"]
    if (p / "am" / "final.mdl").is_file() or (p / "conf").is_dir():
        am, conf, graph, ivec = p / "am", p / "conf", p / "graph", p / "ivector"
        required = [am / "final.mdl", conf / "model.conf"]
        feats = [conf / "mfcc.conf", conf / "fbank.conf"]
    else:
        am = conf = graph = p
        ivec = p / "ivector"
        required = [p / "final.mdl"]
        feats = [p / "mfcc.conf", p / "fbank.conf"]
    problems = [f"missing {f.relative_to(p)}" for f in required if not f.is_file()]
    if not any(f.is_file() for f in feats):
        problems.append(f"missing {feats[0].relative_to(p)} (or {feats[1].name})")
    if not (graph / "HCLG.fst").is_file():
        lookahead = [graph / "HCLr.fst", graph / "Gr.fst", graph / "disambig_tid.int"]
        missing = [f for f in lookahead if not f.is_file()]
        if missing:
            problems.append(
                f"missing {(graph / 'HCLG.fst').relative_to(p)} or "
                + ", ".join(str(f.relative_to(p)) for f in missing)
            )
    if ivec.is_dir():
        for name in ("final.ie", "final.dubm", "final.mat", "global_cmvn.stats", "online_cmvn.conf", "splice.conf"):
            if not (ivec / name).is_file():
                problems.append(f"missing {(ivec / name).relative_to(p)}")
    return problems


def check_vosk_model(path: str | os.PathLike) -> Path:
    """Raise ModelError naming the first missing file unless ``path`` is a loadable model."""
    p = Path(path).expanduser()
    problems = model_problems(p)
    if problems:
        raise ModelError(
            f"{p} is not a complete Vosk model ({'; '.join(problems)})",
            f"unzip a fresh copy of the model there, or run `coach models download {DEFAULT_MODEL}`",
        )
    return p.resolve()


def model_sample_rate(path: str | os.PathLike) -> int:
    """The rate the model's features expect (``--sample-frequency``; 16000 if unset)."""
    p = Path(path)
    for conf in (p / "conf" / "mfcc.conf", p / "conf" / "fbank.conf", p / "mfcc.conf", p / "fbank.conf"):
        if conf.is_file():
            for line in conf.read_text(errors="replace").splitlines():
                line = line.split("#", 1)[0].strip()
                if line.startswith("--sample-frequency="):
                    try:
                        return int(float(line.split("=", 1)[1]))
                    except ValueError:
                        break
            break
    return 16000


# --------------------------------------------------------------------------- discovery


def _candidates(dirs: Iterable[Path]) -> list[Path]:
    """A dir that is itself a model, else its ``vosk-*`` subfolders (newest name last)."""
    out: list[Path] = []
    for d in dirs:
        d = Path(d).expanduser()
        if not d.is_dir():
            continue
        if not model_problems(d):
            out.append(d)
            continue
        out.extend(sorted((c for c in d.glob("vosk-*") if c.is_dir()), key=lambda c: c.name))
    return out


def find_vosk_model(explicit: str | os.PathLike | None = None, search_dirs: Sequence[Path] = ()) -> Path | None:
    """Locate a usable Vosk model folder, or None.

    Order: ``explicit`` (an error if given but not a model), ``$VOSK_MODEL`` (also an
    error if set but invalid: the user asked for it), then ``search_dirs`` from the
    config, then ``vosk-*`` in the model folders (``$COACH_MODELS`` or ./models, the user's). Among several
    candidates in one folder the first valid one by name wins; incomplete folders are
    skipped silently in the search (but not when named explicitly).
    """
    if explicit:
        return check_vosk_model(explicit)
    env = os.environ.get("VOSK_MODEL", "").strip()
    if env:
        try:
            return check_vosk_model(env)
        except ModelError as exc:
            raise ModelError(f"VOSK_MODEL={env}: {exc.cause}", exc.fix) from None
    from . import resources
    dirs = [*map(Path, search_dirs), *resources.model_search_dirs()]
    seen: set[Path] = set()
    for cand in _candidates(dirs):
        r = cand.resolve()
        if r in seen:
            continue
        seen.add(r)
        if not model_problems(r):
            return r
    return None


# --------------------------------------------------------------------------- download


def _safe_extract(zf: zipfile.ZipFile, dest: Path) -> None:
    """Extract refusing absolute paths and ``..`` (zip-slip)."""
    root = dest.resolve()
    for member in zf.infolist():
        target = (dest / member.filename).resolve()
        if root != target and root not in target.parents:
            raise ModelError(f"the zip contains an unsafe path {member.filename!r}", "download it again from alphacephei.com")
    zf.extractall(dest)


def _model_root(extracted: Path) -> Path | None:
    """The folder inside an unpacked zip that holds the model (zip may or may not nest)."""
    if not model_problems(extracted):
        return extracted
    for child in sorted(extracted.iterdir()):
        if child.is_dir() and not model_problems(child):
            return child
    return None


def download_model(
    name: str,
    dest_dir: str | os.PathLike,
    progress: Callable[[int, int], None] | None = None,
    *,
    base_url: str | None = None,
    sha256: str | None = None,
    timeout: float = 30.0,
    catalog: Mapping[str, VoskModelInfo] = KNOWN_MODELS,
) -> Path:
    """Download, verify and unpack official model ``name`` into ``dest_dir/name``.

    ``progress(done_bytes, total_bytes)`` is called as data arrives (total is 0 when the
    server sends no length). The zip goes to a temp file in ``dest_dir`` and is only
    renamed into place once unpacked and validated, so an interrupted download never
    leaves a half model behind. An existing valid ``dest_dir/name`` is returned as is.
    ``base_url`` overrides alphacephei.com (mirrors, tests).
    """
    info = catalog.get(name)
    if info is None:
        known = ", ".join(sorted(catalog))
        raise ModelError(f"unknown Vosk model {name!r}", f"choose one of: {known}")
    dest = Path(dest_dir).expanduser()
    final = dest / name
    if final.is_dir() and not model_problems(final):
        return final.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    url = f"{base_url.rstrip('/')}/{name}.zip" if base_url else info.url
    want_sha = sha256 or info.sha256
    host = urllib.request.urlparse(url).hostname or url
    fix = f"download {info.url} on a machine with internet and unzip it into models/, or set VOSK_MODEL"

    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".zip.part", dir=dest)
    tmp_zip = Path(tmp_name)
    unpack = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".unpack", dir=dest))
    try:
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                done = 0
                if progress:
                    progress(0, total)
                while True:
                    block = resp.read(1 << 16)
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
        except urllib.error.HTTPError as exc:
            raise ModelError(f"{host} answered HTTP {exc.code} for {name}", fix) from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ModelError(f"could not reach {host} to download {name} ({reason})", fix) from None
        if total and done != total:
            raise ModelError(f"the download of {name} stopped after {done} of {total} bytes", "run the download again")
        if want_sha and digest.hexdigest().lower() != want_sha.lower():
            raise ModelError(f"the download of {name} has the wrong SHA-256 ({digest.hexdigest()[:12]}...)",
                             "run the download again; if it persists the mirror is serving a different file")
        try:
            with zipfile.ZipFile(tmp_zip) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise ModelError(f"the download of {name} is corrupt ({bad} fails its CRC)", "run the download again")
                _safe_extract(zf, unpack)
        except zipfile.BadZipFile:
            raise ModelError(f"the download of {name} is not a zip file", "run the download again") from None
        root = _model_root(unpack)
        if root is None:
            problems = model_problems(unpack / name) if (unpack / name).is_dir() else model_problems(unpack)
            raise ModelError(f"the zip for {name} does not contain a complete Vosk model ({'; '.join(problems)})",
                             "report it, and download the model by hand from alphacephei.com")
        if final.exists():
            shutil.rmtree(final)  # an incomplete leftover (a valid one returned above)
        os.replace(root, final)
        return final.resolve()
    finally:
        tmp_zip.unlink(missing_ok=True)
        shutil.rmtree(unpack, ignore_errors=True)


__all__ = [
    "BASE_URL", "DEFAULT_MODEL", "KNOWN_MODELS", "VoskModelInfo", "check_vosk_model", "download_model",
    "find_vosk_model", "model_problems", "model_sample_rate",
]
