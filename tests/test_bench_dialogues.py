"""The dialogue-replay benchmark (benchmarks/bench_dialogues.py) on a slice of the real dev dialogues.

The benchmark asserts nothing (its targets are the issue's); this checks that it runs on
the shipped model and that its pooled line adds up from the per-corpus lines.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO, SHARED_DATA


@pytest.mark.slow
def test_bench_dialogues_runs_and_pools_its_corpora() -> None:
    need = [SHARED_DATA / "text" / "meld" / "dev_sent_emo.csv",
            SHARED_DATA / "text" / "dailydialog" / "dailydialog_utterances.tsv"]
    if not all(f.is_file() for f in need):
        pytest.skip(f"{need} missing: the benchmark reads the MELD and DailyDialog dev dialogues")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_dialogues.py"), "--limit", "25"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    per = re.findall(r"calm dialogues with apologize/set_boundary/call_security: (\d+)/(\d+) .*?"
                     r"within two customer turns: (\d+)/(\d+)", proc.stdout)
    turns = re.findall(r"no smoothing: angry dialogues (\d+)/(\d+) .*?calm dialogues (\d+)/(\d+)", proc.stdout)
    assert len(per) == 2 and len(turns) == 2, proc.stdout
    both = re.search(r"both: calm dialogues with an alarm (\d+)/(\d+) = .*?angry dialogues met (\d+)/(\d+) = "
                     r".*?angry (\d+)/(\d+), calm (\d+)/(\d+)", proc.stdout)
    assert both, proc.stdout
    sums = [sum(int(p[i]) for p in per) for i in range(4)]
    assert [int(x) for x in both.groups()[:4]] == sums
    assert [int(x) for x in both.groups()[4:]] == [sum(int(t[i]) for t in turns) for i in range(4)]
    assert sums[1] > 0 and sums[3] > 0  # the first 25 dialogues of each corpus hold calm and angry ones
    pairs = [(p[0], p[1]) for p in per] + [(p[2], p[3]) for p in per] + [(t[0], t[1]) for t in turns] \
        + [(t[2], t[3]) for t in turns]
    assert all(0 <= int(a) <= int(n) for a, n in pairs)
    # the per-turn counts cover the same dialogues as the prompt counts
    assert [(t[1], t[3]) for t in turns] == [(p[3], p[1]) for p in per]
