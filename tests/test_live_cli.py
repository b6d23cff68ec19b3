"""`coach live` refuses bad settings in one line, before any device or model is opened."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO


def _live(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coach.cli", "live", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, needle", [
    ((), "no capture devices given"),
    (("--agent-device", "a"), "no capture devices given"),
    (("--device", "x", "--agent-device", "a"), "both --device and"),
    (("--device", "x", "--port", "70000"), "port 70000 is out of range"),
    (("--device", "x", "--token", "short"), "shorter than 16 characters"),
    (("--device", "x", "--name", "a" * 200), "session name"),
    (("--device", "x", "--supervisor", "ftp://board/api"), "ftp://board/api"),
    (("--device", "x", "--host", "0.0.0.0", "--port", "0"), "token"),
    (("--device", "no such device anywhere"), "`coach devices`"),  # not found, or no devices at all
])
def test_bad_live_settings_are_one_line_errors(args, needle):
    r = _live(*args)
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("coach: error:")]
    assert len(errors) == 1 and needle in errors[0], r.stderr
    assert "Traceback" not in r.stderr


def test_record_never_replaces_an_input(tmp_path):
    pb = tmp_path / "playbook.yaml"
    pb.write_text((REPO / "coach" / "configs" / "playbook.yaml").read_text())
    before = pb.read_bytes()
    r = _live("--device", "x", "--playbook", str(pb), "--record", str(pb), "--force")
    assert r.returncode == 2 and "record" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert pb.read_bytes() == before
