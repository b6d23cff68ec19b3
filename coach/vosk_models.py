"""Finding, validating and downloading Vosk models.

The vosk library logs to stderr and can abort the process on a broken model folder,
so every folder is checked here, in Python, against the layout that vosk-api's
``Model::ConfigureV1/V2`` and ``ReadDataFiles`` read, before ``vosk.Model`` sees it.

Verification: alphacephei.com publishes ``model-list.json`` beside the zips (the list
vosk-api's own downloader reads), with each model's size in bytes and MD5. A download
is checked against that entry when the list can be fetched from the same base URL;
otherwise (offline mirror, no entry) it falls back to the Content-Length, the zip's
CRCs and the layout check, and says so through ``report``. A SHA-256 passed in (or
added to ``KNOWN_MODELS``) is always enforced.

Bounded extraction (:func:`_safe_extract`): the zip is unpacked member by member with a
running byte count, never with ``extractall``. Refused: more than
:data:`MAX_MEMBERS` members; absolute, ``..`` or otherwise escaping paths; symlinks and
other special files; a member over 1 MB that inflates more than :data:`MAX_RATIO`
times; and a total over ``min(MAX_UNPACKED, UNPACKED_FACTOR x the listed size)``,
where the listed size is the model list's byte count, else the catalog's MB figure,
and never less than the zip itself. Real models inflate about 1.1-2x, so 20x is
far above any genuine model and far below what a zip bomb needs.

Placeholders: :func:`model_problems` also requires the big files (``final.mdl``, the
graph, the i-vector extractor) to be at least :data:`MIN_BIG_FILE` bytes, so a folder
of empty or stub files is not taken for a model.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from .errors import ModelError

BASE_URL = "https://alphacephei.com/vosk/models"
MODEL_LIST = "model-list.json"  # beside the zips: {BASE_URL}/model-list.json
DEFAULT_MODEL = "vosk-model-small-en-us-0.15"

MIN_BIG_FILE = 100 * 1024  # final.mdl, HCLG/HCLr/Gr.fst, final.ie: megabytes in every real model
MAX_MEMBERS = 20_000
MAX_RATIO = 200  # uncompressed / compressed, for members over RATIO_MIN_SIZE
RATIO_MIN_SIZE = 1 << 20
MAX_UNPACKED = 8 << 30
UNPACKED_FACTOR = 20
MAX_LIST_BYTES = 8 << 20
# Failures of the connection itself (not an HTTP status): no route, refused, reset, a
# truncated chunked body (http.client.IncompleteRead), a URL urllib cannot open.
_NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)


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
    ``ivector/`` folder is present, its six extractor files. The acoustic model, the
    graph and the i-vector extractor must be at least :data:`MIN_BIG_FILE` bytes (the
    Korean test model's smallest of them, ``am/final.mdl``, is 14 MB), so placeholders
    are not mistaken for a model.
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
    big = [f for f in required if f.name == "final.mdl"]
    if not (graph / "HCLG.fst").is_file():
        lookahead = [graph / "HCLr.fst", graph / "Gr.fst", graph / "disambig_tid.int"]
        missing = [f for f in lookahead if not f.is_file()]
        if missing:
            problems.append(
                f"missing {(graph / 'HCLG.fst').relative_to(p)} or "
                + ", ".join(str(f.relative_to(p)) for f in missing)
            )
        big += lookahead[:2]
    else:
        big.append(graph / "HCLG.fst")
    if ivec.is_dir():
        for name in ("final.ie", "final.dubm", "final.mat", "global_cmvn.stats", "online_cmvn.conf", "splice.conf"):
            if not (ivec / name).is_file():
                problems.append(f"missing {(ivec / name).relative_to(p)}")
        big.append(ivec / "final.ie")
    for f in big:
        try:
            size = f.stat().st_size
        except OSError:
            continue  # missing: reported above
        if size < MIN_BIG_FILE:
            problems.append(f"{f.relative_to(p)} is only {size} bytes, a placeholder or truncated file "
                            f"where a real one has at least {MIN_BIG_FILE // 1024} KB")
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


def _refuse_zip(name: str, why: str) -> ModelError:
    return ModelError(f"the zip for {name} {why}; it was not unpacked",
                      "download it again from alphacephei.com; if it persists the mirror serves a bad file")


def _safe_extract(zf: zipfile.ZipFile, dest: Path, *, limit: int, name: str = "the model") -> int:
    """Unpack ``zf`` into ``dest`` within bounds; returns the bytes written.

    Checked from the central directory first (member count, paths, file types, ratio,
    declared total), then enforced again while streaming each member with a running
    count, so a header that understates a member's size cannot get past ``limit``.
    CRCs are checked as each member is read (``ZipExtFile``), not in a separate pass.
    """
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _refuse_zip(name, f"has {len(infos)} members (the limit is {MAX_MEMBERS})")
    root = dest.resolve()
    declared = 0
    targets: list[tuple[zipfile.ZipInfo, Path]] = []
    for m in infos:
        mode = m.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise _refuse_zip(name, f"contains a symlink {m.filename!r}")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse_zip(name, f"contains a special file {m.filename!r}")
        target = (dest / m.filename).resolve()
        if m.filename.startswith(("/", "\\")) or (root != target and root not in target.parents):
            raise _refuse_zip(name, f"contains an unsafe path {m.filename!r}")
        if m.flag_bits & 0x1:
            raise _refuse_zip(name, f"has an encrypted member {m.filename!r}")
        if m.file_size >= RATIO_MIN_SIZE and m.file_size > MAX_RATIO * max(m.compress_size, 1):
            raise _refuse_zip(name, f"member {m.filename!r} inflates {m.file_size // max(m.compress_size, 1)}x "
                                    f"(more than {MAX_RATIO}x, as zip bombs do)")
        declared += m.file_size
        targets.append((m, target))
    if declared > limit:
        raise _refuse_zip(name, f"would unpack to {declared >> 20} MB, more than the {limit >> 20} MB allowed "
                                f"for a model of this size")
    written = 0
    for m, target in targets:
        if m.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        member = 0
        with zf.open(m) as src, open(target, "wb") as out:
            while True:
                block = src.read(1 << 16)
                if not block:
                    break
                member += len(block)
                written += len(block)
                if member > m.file_size:
                    raise _refuse_zip(name, f"member {m.filename!r} is larger than its header says")
                if written > limit:
                    raise _refuse_zip(name, f"unpacks to more than the {limit >> 20} MB allowed")
                out.write(block)
    return written


def _model_root(extracted: Path) -> Path | None:
    """The folder inside an unpacked zip that holds the model (zip may or may not nest)."""
    if not model_problems(extracted):
        return extracted
    for child in sorted(extracted.iterdir()):
        if child.is_dir() and not model_problems(child):
            return child
    return None


@dataclass(frozen=True)
class ListedModel:
    """An entry of the official ``model-list.json``: the zip's exact size and MD5."""

    name: str
    size: int
    md5: str


def fetch_model_list(base_url: str, timeout: float = 30.0) -> tuple[dict[str, ListedModel] | None, str]:
    """The official model list at ``{base_url}/model-list.json``, or ``(None, why not)``.

    Network failures raise ``OSError`` (the caller's download would fail the same way);
    an HTTP error, an oversized or malformed list gives ``None`` and the reason.
    """
    from . import safeio

    url = f"{base_url.rstrip('/')}/{MODEL_LIST}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = resp.read(MAX_LIST_BYTES + 1)
    except urllib.error.HTTPError as exc:
        return None, f"HTTP {exc.code}"
    if len(data) > MAX_LIST_BYTES:
        return None, f"it is larger than {MAX_LIST_BYTES >> 20} MB"
    try:
        entries = safeio.load_json(data.decode("utf-8"), where=url, error_cls=ModelError)
    except (UnicodeDecodeError, ModelError):
        return None, "it is not valid JSON"
    if not isinstance(entries, list):
        return None, "it is not a JSON list"
    out: dict[str, ListedModel] = {}
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            continue
        size, md5 = e.get("size"), e.get("md5")
        if (isinstance(size, int) and not isinstance(size, bool) and size > 0 and isinstance(md5, str)
                and len(md5) == 32 and all(c in "0123456789abcdefABCDEF" for c in md5)):
            out[e["name"]] = ListedModel(e["name"], size, md5.lower())
    return out, ""


def _dest_fix(name: str) -> str:
    return f"choose another folder with `coach models download {name} --dir DIR`, or set COACH_MODELS"


def check_download_target(name: str, dest_dir: str | os.PathLike,
                          catalog: Mapping[str, VoskModelInfo] = KNOWN_MODELS) -> VoskModelInfo:
    """Refuse an unknown model name, or a download folder that is (or lies under) a file,
    before any network traffic; returns the catalog entry."""
    info = catalog.get(name)
    if info is None:
        known = ", ".join(sorted(catalog))
        raise ModelError(f"unknown Vosk model {name!r}", f"choose one of: {known}")
    dest = Path(dest_dir).expanduser()
    for folder in (dest, *dest.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "" if folder == dest else f" ({folder} is not a folder)"
                raise ModelError(f"the download folder {dest} exists and is not a folder" if folder == dest
                                 else f"the download folder {dest} cannot be created{where}", _dest_fix(name))
            break
    final = dest / name
    if final.exists() and not final.is_dir():
        raise ModelError(f"{final} exists and is not a folder", f"remove it, or {_dest_fix(name)}")
    return info


def _prepare_dest(dest: Path, name: str) -> None:
    """Create ``dest`` (and parents); no permission or a file on the way is one line."""
    fix = _dest_fix(name)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise ModelError(f"cannot create the download folder {dest} (permission denied)", fix) from None
    except OSError as exc:
        raise ModelError(f"cannot create the download folder {dest} ({exc.strerror or exc})", fix) from None
    if not os.access(dest, os.W_OK | os.X_OK):
        raise ModelError(f"cannot write to the download folder {dest} (permission denied)", fix)


def download_model(
    name: str,
    dest_dir: str | os.PathLike,
    progress: Callable[[int, int], None] | None = None,
    *,
    base_url: str | None = None,
    sha256: str | None = None,
    timeout: float = 30.0,
    catalog: Mapping[str, VoskModelInfo] = KNOWN_MODELS,
    report: Callable[[str], None] | None = None,
) -> Path:
    """Download, verify and unpack official model ``name`` into ``dest_dir/name``.

    ``progress(done_bytes, total_bytes)`` is called as data arrives (total is 0 when the
    size is unknown). ``report(line)`` receives one line saying how the download was
    verified (against the official model list's size and MD5, or only by size and CRC
    when the list cannot be fetched or lacks the model). The zip goes to a temp file in
    ``dest_dir`` and is only renamed into place once unpacked (within the bounds of
    :func:`_safe_extract`) and validated, so an interrupted or refused download never
    leaves a half model behind. An existing valid ``dest_dir/name`` is returned as is.
    ``base_url`` overrides alphacephei.com (mirrors, tests); the model list is read
    from the same place.
    """
    info = check_download_target(name, dest_dir, catalog)
    dest = Path(dest_dir).expanduser()
    final = dest / name
    if final.is_dir() and not model_problems(final):
        return final.resolve()
    base = (base_url or info.url.rsplit("/", 1)[0]).rstrip("/")
    url = f"{base}/{name}.zip" if base_url else info.url
    want_sha = sha256 or info.sha256
    host = urllib.request.urlparse(url).hostname or url
    fix = f"download {info.url} on a machine with internet and unzip it into models/, or set VOSK_MODEL"

    def unreachable(exc: BaseException) -> ModelError:
        reason = getattr(exc, "reason", exc)
        return ModelError(f"could not reach {host} to download {name} ({reason})", fix)

    try:
        listed, why = fetch_model_list(base, timeout)
    except _NETWORK_ERRORS as exc:
        raise unreachable(exc) from None
    entry = listed.get(name) if listed is not None else None
    # Without an exact size, still bound the download: twice the catalog figure plus slack.
    cap = entry.size if entry else info.size_mb * 2 * 1_000_000 + (64 << 20)
    _prepare_dest(dest, name)

    tmp_zip: Path | None = None
    unpack: Path | None = None
    try:
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".zip.part", dir=dest)
            tmp_zip = Path(tmp_name)
            os.close(fd)
            unpack = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".unpack", dir=dest))
        except OSError as exc:
            raise ModelError(f"cannot write to the download folder {dest} ({exc.strerror or exc})",
                             _dest_fix(name)) from None
        sha = hashlib.sha256()
        md5 = hashlib.md5(usedforsecurity=False)
        done = 0
        with open(tmp_zip, "wb") as out:
            try:
                resp = urllib.request.urlopen(url, timeout=timeout)
            except urllib.error.HTTPError as exc:
                raise ModelError(f"{host} answered HTTP {exc.code} for {name}", fix) from None
            except _NETWORK_ERRORS as exc:
                raise unreachable(exc) from None
            with resp:
                length = str(resp.headers.get("Content-Length") or "").strip()
                total = int(length) if length.isdigit() else 0
                if total > cap:
                    raise ModelError(f"{host} offers {total} bytes for {name}, more than the {cap} expected",
                                     "run the download again; if it persists the mirror is serving a different file")
                if progress:
                    progress(0, total or (entry.size if entry else 0))
                while True:
                    try:
                        block = resp.read(1 << 16)
                    except _NETWORK_ERRORS as exc:
                        raise unreachable(exc) from None
                    if not block:
                        break
                    done += len(block)
                    if done > cap:
                        raise ModelError(f"the download of {name} went past the {cap} bytes expected",
                                         "run the download again; if it persists the mirror serves a different file")
                    try:
                        out.write(block)
                    except OSError as exc:
                        raise ModelError(f"cannot write the download to {dest} ({exc.strerror or exc})",
                                         "free some disk space or choose another folder with --dir") from None
                    sha.update(block)
                    md5.update(block)
                    if progress:
                        progress(done, total or (entry.size if entry else 0))
        if total and done != total:
            raise ModelError(f"the download of {name} stopped after {done} of {total} bytes", "run the download again")
        checks = []
        if entry is not None:
            if done != entry.size or md5.hexdigest() != entry.md5:
                got = f"{done} bytes" if done != entry.size else f"MD5 {md5.hexdigest()[:12]}..."
                raise ModelError(f"the download of {name} does not match the official model list ({got}, expected "
                                 f"{entry.size} bytes, MD5 {entry.md5[:12]}...)",
                                 "run the download again; if it persists the mirror is serving a different file")
            checks.append("the official model list's size and MD5")
        if want_sha:
            if sha.hexdigest().lower() != want_sha.lower():
                raise ModelError(f"the download of {name} has the wrong SHA-256 ({sha.hexdigest()[:12]}...)",
                                 "run the download again; if it persists the mirror is serving a different file")
            checks.append("its SHA-256")
        listed_bytes = entry.size if entry else info.size_mb * 1_000_000
        limit = min(MAX_UNPACKED, UNPACKED_FACTOR * max(listed_bytes, done))
        try:
            with zipfile.ZipFile(tmp_zip) as zf:
                try:
                    _safe_extract(zf, unpack, limit=limit, name=name)
                except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                    raise ModelError(f"the download of {name} is corrupt ({' '.join(str(exc).split())[:120]})",
                                     "run the download again") from None
                except (NotImplementedError, RuntimeError) as exc:
                    raise _refuse_zip(name, f"uses a feature coach does not unpack ({exc})") from None
                except OSError as exc:
                    raise ModelError(f"cannot unpack {name} into {dest} ({exc.strerror or exc})",
                                     "free some disk space or choose another folder with --dir") from None
        except zipfile.BadZipFile:
            raise ModelError(f"the download of {name} is not a zip file", "run the download again") from None
        root = _model_root(unpack)
        if root is None:
            problems = model_problems(unpack / name) if (unpack / name).is_dir() else model_problems(unpack)
            raise ModelError(f"the zip for {name} does not contain a complete Vosk model ({'; '.join(problems)})",
                             "report it, and download the model by hand from alphacephei.com")
        try:
            if final.exists():
                shutil.rmtree(final)  # an incomplete leftover (a valid one returned above)
            os.replace(root, final)
        except OSError as exc:
            raise ModelError(f"cannot move the unpacked model to {final} ({exc.strerror or exc})",
                             f"remove {final} by hand, or {_dest_fix(name)}") from None
        if report:
            if entry is not None:
                report(f"verified {name} against {' and '.join(checks)}")
            else:
                reason = (f"the official model list could not be fetched ({why})" if listed is None
                          else f"{name} is not in the official model list")
                used = (["the download size the server announced"] if total else []) + checks + [
                    "the zip's CRCs", "the model layout"]
                report(f"{reason}; {name} was verified only by {', '.join(used[:-1])} and {used[-1]}")
        return final.resolve()
    finally:
        if tmp_zip is not None:
            tmp_zip.unlink(missing_ok=True)
        if unpack is not None:
            shutil.rmtree(unpack, ignore_errors=True)


__all__ = [
    "BASE_URL", "DEFAULT_MODEL", "KNOWN_MODELS", "ListedModel", "MIN_BIG_FILE", "VoskModelInfo",
    "check_download_target", "check_vosk_model", "download_model", "fetch_model_list", "find_vosk_model",
    "model_problems", "model_sample_rate",
]
