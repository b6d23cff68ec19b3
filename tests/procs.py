"""A command run as a user runs it, its stderr read line by line on a thread.

Shared by the live tests and the live benchmarks: both start ``coach`` (or a stand-in)
as a separate process and wait for its status lines.
"""
from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Watched:
    """A subprocess (stdout discarded) whose stderr lines collect in :attr:`lines`."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None, cwd: Path = REPO) -> None:
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for ln in self.proc.stderr:
            self.lines.append(ln.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        """The first stderr line matching ``pattern``; kills the process and fails if none
        comes within ``timeout`` seconds or it exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ln in list(self.lines):
                m = re.search(pattern, ln)
                if m:
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"no {pattern!r} from {' '.join(map(str, self.proc.args[1:4]))}; it said:\n"
                             + "\n".join(self.lines))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
