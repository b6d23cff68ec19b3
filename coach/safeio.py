"""Safe readers for every file a user hands to coach: text, JSON and YAML.

Why one module: each loader used to call ``Path.read_text`` and ``json.loads`` /
``yaml.safe_load`` directly, so a FIFO hung the command, ``/dev/zero`` filled memory,
10,000 nested brackets raised ``RecursionError``, ``1e400`` became ``inf`` and a 1 KB
YAML alias bomb expanded to a billion values. Here every problem becomes one
:class:`~coach.errors.CoachError` (of the caller's class) whose message is a single
line, ``cause. fix``.

* :func:`read_text` refuses what is not a regular file *before* opening it (a FIFO
  never blocks), oversized files, unreadable files and non-UTF-8 bytes; a UTF-8 BOM
  is accepted and dropped.
* :func:`load_json` is strict JSON: no NaN/Infinity, no float that overflows to
  infinity, bounded nesting; syntax errors name line and column.
* :func:`load_yaml` is ``yaml.SafeLoader`` with bounded nesting, a cap on aliases and
  on the values aliases expand to, checked while composing (before anything is built).
* :func:`check_tree` applies the depth and finiteness rules to an already decoded
  value; :func:`number` validates one numeric option against a range.
"""
from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Iterator

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, SequenceNode

from .errors import CoachError, ConfigError

MB = 1 << 20

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _size(n: int) -> str:
    if n >= MB:
        return f"{n / MB:.0f} MB" if n % MB == 0 else f"{n / MB:.1f} MB"
    if n >= 1024:
        return f"{n // 1024} KB"
    return f"{n} bytes"


def check_regular_file(path: str | os.PathLike, *, what: str, error_cls: type[CoachError] = ConfigError,
                       fix: str = "") -> os.stat_result:
    """``os.stat`` of ``path`` if it is an existing regular file, else a one-line error.

    Stat follows symlinks, so a link to a FIFO is refused like the FIFO itself.
    """
    p = Path(path)
    fix = fix or f"pass the path of a {what} file"
    try:
        st = os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        raise error_cls(f"{what} {p} does not exist", fix) from None
    except PermissionError:
        raise error_cls(f"cannot read {what} {p} (permission denied)",
                        "make it readable (chmod +r) or use a copy you can read") from None
    except ValueError:  # an embedded NUL byte
        raise error_cls(f"{what} path {str(p)!r} is not a valid path", fix) from None
    except OSError as exc:
        raise error_cls(f"cannot read {what} {p} ({exc.strerror or exc})", fix) from None
    if not stat.S_ISREG(st.st_mode):
        kind = _kind(st.st_mode)
        if kind == "a folder":
            raise error_cls(f"{what} {p} is a folder, not a file", fix)
        raise error_cls(f"{what} {p} is not a regular file: it is {kind}", fix)
    return st


def read_bytes(path: str | os.PathLike, *, what: str, max_bytes: int, error_cls: type[CoachError] = ConfigError,
               fix: str = "") -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (see :func:`read_text`)."""
    p = Path(path)
    fix = fix or f"pass the path of a {what} file"
    st = check_regular_file(p, what=what, error_cls=error_cls, fix=fix)
    too_big = (f"{what} {p} is too large ({_size(st.st_size)}; the limit is {_size(max_bytes)})",
               f"check that {p} is the right file")
    if st.st_size > max_bytes:
        raise error_cls(*too_big)
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO after the stat, open still returns.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise error_cls(f"cannot read {what} {p} (permission denied)",
                        "make it readable (chmod +r) or use a copy you can read") from None
    except OSError as exc:
        raise error_cls(f"cannot read {what} {p} ({exc.strerror or exc})", fix) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error_cls(f"{what} {p} is not a regular file: it is {_kind(os.fstat(fd).st_mode)}", fix)
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                block = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            except OSError as exc:
                if exc.errno == errno.EISDIR:
                    raise error_cls(f"{what} {p} is a folder, not a file", fix) from None
                raise error_cls(f"cannot read {what} {p} ({exc.strerror or exc})", fix) from None
            if not block:
                break
            chunks.append(block)
            total += len(block)
            if total > max_bytes:  # the file grew after the stat
                raise error_cls(*too_big)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike, *, what: str, max_bytes: int, error_cls: type[CoachError] = ConfigError,
              fix: str = "") -> str:
    """The UTF-8 text of a regular file, without a leading BOM.

    Refused with ``error_cls`` (one line each): a missing path, a folder, a FIFO,
    device or socket (checked before opening, so nothing blocks), a file that cannot
    be read (permission denied says so), more than ``max_bytes`` bytes, bytes that are
    not UTF-8 (the message names the line and the byte). ``what`` names the file in
    messages ("playbook", "transcript"); ``fix`` is the advice for a wrong path.
    """
    data = read_bytes(path, what=what, max_bytes=max_bytes, error_cls=error_cls, fix=fix)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error_cls(f"{what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})",
                        "re-save it as UTF-8") from None


# --------------------------------------------------------------------------- trees


class _NonFinite:
    """What ``NaN``/``Infinity`` parse to, so :func:`check_tree` can name the key path."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _path_str(ref: tuple | None) -> str:
    parts: list[str] = []
    while ref is not None:
        ref, key = ref
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    text = "".join(reversed(parts)).lstrip(".")
    if len(text) > 80:
        text = "..." + text[-77:]
    return text or "the top level"


def _children(obj: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(obj, dict):
        return iter(obj.items())
    return iter(enumerate(obj))


def check_tree(obj: Any, *, where: str, max_depth: int = 64, error_cls: type[CoachError] = ConfigError,
               fix: str = "") -> Any:
    """Refuse nesting deeper than ``max_depth`` and non-finite floats, naming the key path.

    Iterative (an explicit stack), so it cannot hit the recursion limit itself; a
    shared (aliased) container is visited once per reference, which is why YAML
    aliases are bounded before this runs.
    """
    stack: list[tuple[Any, int, tuple | None]] = [(obj, 0, None)]
    while stack:
        value, depth, ref = stack.pop()
        if isinstance(value, _NonFinite):
            raise error_cls(f"{where}: {_path_str(ref)} is {value.name}, which is not a number JSON allows",
                            fix or "write a finite number")
        if isinstance(value, float) and not math.isfinite(value):
            raise error_cls(f"{where}: {_path_str(ref)} is out of range ({value}); numbers must be finite",
                            fix or "write a finite number")
        if isinstance(value, (dict, list, tuple)):
            if depth >= max_depth:
                raise error_cls(f"{where} is nested deeper than {max_depth} levels (at {_path_str(ref)})",
                                fix or f"flatten the structure to at most {max_depth} levels")
            for key, child in _children(value):
                if isinstance(child, (dict, list, tuple, float, _NonFinite)):
                    stack.append((child, depth + 1, (ref, key)))
    return obj


def load_json(text: str, *, where: str, max_depth: int = 64, error_cls: type[CoachError] = ConfigError,
              fix: str = "") -> Any:
    """Strict JSON: syntax errors with line and column, no NaN/Infinity, no float that
    overflows (``1e400``), at most ``max_depth`` levels of nesting."""
    syntax_fix = fix or "fix the JSON syntax"
    try:
        raw = json.loads(text, parse_constant=_NonFinite)
    except json.JSONDecodeError as exc:
        raise error_cls(f"{where} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                        syntax_fix) from None
    except RecursionError:
        raise error_cls(f"{where} is nested deeper than {max_depth} levels",
                        fix or f"flatten the structure to at most {max_depth} levels") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        reason = " ".join(str(exc).split(":")[0].split())[:120]
        raise error_cls(f"{where} is not valid JSON ({reason})", syntax_fix) from None
    return check_tree(raw, where=where, max_depth=max_depth, error_cls=error_cls, fix=fix)


# --------------------------------------------------------------------------- YAML


class _Refused(yaml.YAMLError):
    """A structural limit hit while composing; carries the position."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts nesting, aliases and the values aliases expand to.

    PyYAML shares one object per anchor, so a "billion laughs" document loads in
    microseconds, and only explodes later when something walks it. Counting the
    expanded size of every node while composing refuses it before construction.
    """

    max_depth = 64
    max_aliases = 100
    max_nodes = 1_000_000

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # type: ignore[override]
        if self.check_event(AliasEvent):
            event = self.peek_event()
            self._aliases += 1
            if self._aliases > self.max_aliases:
                raise _Refused(f"more than {self.max_aliases} aliases (*name), refused as a possible alias bomb",
                               event.start_mark)
            target = self.anchors.get(event.anchor)
            if target is not None and id(target) not in self._sizes:
                raise _Refused(f"alias *{event.anchor} refers to the value that contains it", event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise _Refused(f"nested deeper than {self.max_depth} levels", self.peek_event().start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = 1
        if isinstance(node, SequenceNode):
            size += sum(self._sizes.get(id(c), 1) for c in node.value)
        elif isinstance(node, MappingNode):
            size += sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
        if size > self.max_nodes:
            raise _Refused(f"aliases expand to more than {self.max_nodes} values, refused as a possible alias bomb",
                           node.start_mark)
        self._sizes[id(node)] = size
        return node


def load_yaml(text: str, *, where: str, max_depth: int = 64, max_aliases: int = 100, max_nodes: int = 1_000_000,
              error_cls: type[CoachError] = ConfigError, fix: str = "") -> Any:
    """One YAML document with the safe loader, bounded (see :class:`_BoundedLoader`).

    Syntax errors and refused structures name line and column. ``.nan``/``.inf``
    load as floats: the caller's validators refuse them where a number is expected.
    """
    syntax_fix = fix or "fix the YAML syntax"
    loader_cls = type("Loader", (_BoundedLoader,),
                      {"max_depth": max_depth, "max_aliases": max_aliases, "max_nodes": max_nodes})
    try:
        loader = loader_cls(text)
    except yaml.reader.ReaderError as exc:
        raise error_cls(f"{where} contains a character YAML does not allow ({exc.reason}, "
                        f"#x{exc.character if isinstance(exc.character, int) else ord(exc.character):04x})",
                        syntax_fix) from None
    try:
        return loader.get_single_data()
    except _Refused as exc:
        mark = exc.problem_mark
        raise error_cls(f"{where}: {exc.problem} (line {mark.line + 1}, column {mark.column + 1})",
                        fix or "write the values out instead of nesting or aliasing them") from None
    except yaml.reader.ReaderError as exc:
        raise error_cls(f"{where} contains a character YAML does not allow ({exc.reason}, "
                        f"#x{exc.character if isinstance(exc.character, int) else ord(exc.character):04x})",
                        syntax_fix) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        context = getattr(exc, "context", None)
        detail = f"{context}, {problem}" if context else problem
        raise error_cls(f"{where} is not valid YAML{at}: {' '.join(str(detail).split())}", syntax_fix) from None
    except RecursionError:
        raise error_cls(f"{where} is nested deeper than {max_depth} levels",
                        fix or f"flatten the structure to at most {max_depth} levels") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a timestamp with month 13
        reason = " ".join(str(exc).split())[:120]
        raise error_cls(f"{where} has a value YAML cannot build ({reason})", syntax_fix) from None
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- numbers


def _num_str(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def number(value: Any, key: str, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False, integer: bool = False) -> Any:
    """``value`` as a finite float (or int with ``integer``) within the range, else ValueError.

    The message names ``key`` and the allowed range, e.g. ``half_life_s must be a
    number > 0, got 0`` (with ``key=""``: ``expected a number > 0, got 0``). Booleans, NaN and infinities are refused; an integer option
    accepts ``3.0`` but not ``2.5``.
    """
    kind = "an integer" if integer else "a number"
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {_num_str(lo)}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {_num_str(hi)}")
    if lo is not None and hi is not None:
        rng = f" in {'(' if lo_open else '['}{_num_str(lo)}, {_num_str(hi)}{')' if hi_open else ']'}"
    else:
        rng = (" " + " and ".join(parts)) if parts else ""
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    bad = ValueError(f"{key} must be {kind}{rng}, got {shown}" if key else f"expected {kind}{rng}, got {shown}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad
    try:
        f = float(value)
    except OverflowError:
        raise bad from None
    if not math.isfinite(f):
        raise bad
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise bad
        value = int(value)
    else:
        value = f
    if lo is not None and (f < lo or (lo_open and f == lo)):
        raise bad
    if hi is not None and (f > hi or (hi_open and f == hi)):
        raise bad
    return value


__all__ = ["MB", "check_regular_file", "check_tree", "load_json", "load_yaml", "number", "read_bytes", "read_text"]
