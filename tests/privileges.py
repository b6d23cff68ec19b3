"""Running a check without root's power to read any file."""
from __future__ import annotations

import os


def as_unprivileged(code: str) -> str:
    """Run ``code`` in Python without the right to read other people's files; its stdout.

    Root reads files whatever their mode, so as root the child runs under util-linux
    ``setpriv`` with the file-permission override capabilities dropped.
    """
    import subprocess
    import sys
    drop = "-dac_override,-dac_read_search"
    wrap = ["setpriv", "--bounding-set", drop, "--inh-caps", drop] if os.geteuid() == 0 else []
    proc = subprocess.run([*wrap, sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
