"""`coach eval standard` reproduces the project's standard benchmark (../shared/eval/standard_mapping.py)."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coach.errors import DataError
from coach.events import Scores
from coach.standard import (StandardRow, breakdown_table, model_names, run_standard, speechlike, standard_breakdown,
                            standard_figures, standard_line, standard_rows, standard_table, update_standard_card)

from conftest import REPO

SCRIPT = Path(__file__).parents[1].parent / "shared/eval/standard_mapping.py"
COACH = [sys.executable, "-m", "coach.cli"]


@pytest.fixture(scope="module")
def script():
    """The shared benchmark script as a module (its main() does not run on import)."""
    if not SCRIPT.is_file():  # a skip fails under CI=true (conftest), which must have ../shared
        pytest.skip(f"{SCRIPT} is missing: check out ../shared beside this repository")
    pytest.importorskip("sklearn", reason="the shared script imports scikit-learn")
    spec = importlib.util.spec_from_file_location("standard_mapping", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rows_are_the_scripts_items(script) -> None:
    rows = standard_rows()
    assert [(r.source, r.gold, r.text) for r in rows] == script.items()
    assert {r.source for r in rows} == {"goemotions", "tweeteval", "meld", "dailydialog", "fragment", "olid",
                                        "threatgram"}


def test_speechlike_is_the_scripts(script) -> None:
    for t in ["RT @user: I CAN'T believe this!!! #fail http://t.co/x", "  Okay...  fine\u2019 ", "", "a_b-c"]:
        assert speechlike(t) == script.speechlike(t)


def test_missing_data_is_one_line_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        standard_rows(tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and str(tmp_path / "goemotions" / "labels.txt") in msg and "COACH_DATA" in msg


# --- figures on synthetic rows -------------------------------------------------------------

def R(source: str, gold: str) -> StandardRow:
    return StandardRow(source, gold, "x")


ROWS = ([R("goemotions", "angry")] * 2 + [R("meld", "calm")] * 3 + [R("goemotions", "frustrated")]
        + [R("olid", "abusive")] * 2 + [R("olid", "not_abusive")] * 2
        + [R("threatgram", "threatening")] * 4 + [R("fragment", "calm")] * 4)
PERFECT_LEVELS = (["angry"] * 2 + ["calm"] * 3 + ["frustrated"] + ["abusive"] * 2 + ["calm"] * 2
                  + ["threatening"] * 4 + ["calm"] * 4)
PERFECT_UP = [0.9, 0.8, 0.1, 0.2, 0.0, 0.3, 0.9, 0.9, 0.1, 0.1, 1, 1, 1, 1, 0.1, 0.2, 0.0, 0.4]


def test_perfect_predictions() -> None:
    f = standard_figures(ROWS, PERFECT_LEVELS, PERFECT_UP)
    assert f == {"auc": 1.0, "n_auc": 5, "n_auc_angry": 2, "n_auc_calm": 3, "abusive_f1": 1.0, "n_abusive": 4,
                 "threat_recall": 1.0, "n_threat": 4, "threat_fp_calm": 0.0, "n_calm": 3,
                 "short_neutral_calm": 1.0, "n_short_neutral": 4}


def test_each_figure_follows_the_predictions() -> None:
    keep = object()

    def fig(i: int, level=keep, up=keep) -> dict:
        lv, p = list(PERFECT_LEVELS), list(PERFECT_UP)
        if level is not keep:
            lv[i] = level
        if up is not keep:
            p[i] = up
        return standard_figures(ROWS, lv, p)

    # AUC: one calm row (index 2) now outranks one of the two angry rows -> 5 of 6 pairs right
    assert fig(2, up=0.85)["auc"] == pytest.approx(5 / 6)
    assert fig(2, up=0.8)["auc"] == pytest.approx(5.5 / 6)  # a tie counts half
    # the frustrated row is not in the AUC at all
    assert fig(5, up=0.99)["auc"] == 1.0
    # abusive F1: one missed TIN -> P 1, R 1/2 -> F1 2/3; one NOT flagged -> P 2/3, R 1 -> 0.8
    assert fig(6, level="angry")["abusive_f1"] == pytest.approx(2 / 3)
    assert fig(8, level="threatening")["abusive_f1"] == pytest.approx(0.8)
    # threat recall from the level only, whatever the score
    assert fig(10, level="abusive")["threat_recall"] == 0.75
    assert fig(10, level=None)["threat_recall"] == 0.75  # text that normalised to nothing
    # threat FP on calm rows (not fragments, not 'not abusive' OLID tweets)
    assert fig(3, level="threatening")["threat_fp_calm"] == pytest.approx(1 / 3)
    assert fig(9, level="threatening")["threat_fp_calm"] == 0.0
    assert fig(14, level="threatening")["threat_fp_calm"] == 0.0
    # short neutral turns: frustrated is still calm enough, angry is not, nor P(angry+) >= 0.5
    assert fig(14, level="frustrated")["short_neutral_calm"] == 1.0
    assert fig(14, level="angry")["short_neutral_calm"] == 0.75
    assert fig(15, up=0.5)["short_neutral_calm"] == 0.75


def test_auc_matches_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    import numpy as np

    rng = np.random.default_rng(3)
    gold = ["angry" if x < 0.3 else "calm" for x in rng.random(400)]
    rows = [R("tweeteval", g) for g in gold]
    up = np.round(rng.random(400), 2).tolist()  # many ties
    f = standard_figures(rows, ["calm"] * 400, up)
    assert f["auc"] == pytest.approx(metrics.roc_auc_score([g == "angry" for g in gold], up), abs=1e-12)


def test_baseline_auc_score_is_separate_from_the_calm_test() -> None:
    up = [0.0] * len(ROWS)
    rank = [0.0] * len(ROWS)
    rank[0] = rank[1] = 1.0
    f = standard_figures(ROWS, ["calm"] * len(ROWS), up, auc_score=rank)
    assert f["auc"] == 1.0 and f["short_neutral_calm"] == 1.0 and f["abusive_f1"] == 0.0


def test_line_has_the_scripts_wording() -> None:
    f = standard_figures(ROWS, PERFECT_LEVELS, PERFECT_UP)
    assert standard_line(f) == ("dev, standard mapping: AUC(angry+ vs calm) 1.000 (n=5); abusive F1 1.000 (n=4); "
                                "threat recall 1.00 (n=4); threat FP on calm 0.000%; short neutral turns calm 100% (n=4)")


# --- several models side by side, the table and the card ----------------------------------------

class FakeClassifier:
    """Scores every text the same way; records the batches it was given."""

    def __init__(self, path: str, level: str, p_up: float) -> None:
        self.path, self.level, self.p_up, self.batches = Path(path), level, p_up, []

    def classify(self, texts, batch_size=None):
        self.batches.append(list(texts))
        rest = (1 - self.p_up) / 2
        esc = {"calm": rest, "frustrated": rest, "angry": self.p_up, "abusive": 0.0, "threatening": 0.0}
        return [Scores(escalation=esc, sentiment={"negative": 0, "neutral": 1, "positive": 0}, decided=self.level)
                for _ in texts]


def test_run_standard_puts_models_side_by_side(tmp_path: Path) -> None:
    rows = [StandardRow("threatgram", "threatening", "I will FIND you!!"), StandardRow("meld", "calm", "..."),
            StandardRow("fragment", "calm", "Okay."), StandardRow("olid", "abusive", "@user you idiot")]
    a = FakeClassifier("/m/a/escalation-minilm", "threatening", 0.9)
    b = FakeClassifier("/m/b/escalation-minilm", "calm", 0.1)
    report = run_standard([a, b], rows, with_baselines=False, batch_size=2)
    assert list(report["columns"]) == ["a/escalation-minilm", "b/escalation-minilm"]
    # the classifier gets the speech-like text, in batches, without text that normalises to nothing
    assert a.batches == [["i will find you"], ["okay", "you idiot"]]
    fa, fb = (report["columns"][n]["figures"] for n in report["columns"])
    assert fa["threat_recall"] == 1.0 and fb["threat_recall"] == 0.0
    assert fa["short_neutral_calm"] == 0.0 and fb["short_neutral_calm"] == 1.0
    assert fa["threat_fp_calm"] == 0.0  # the calm row was empty after normalising: no level
    table = report["table"].splitlines()
    assert table[0] == "| metric | target | a/escalation-minilm | b/escalation-minilm |"
    assert any(ln.startswith("| threat recall") and "| ≥ 0.80 | 1.000 | 0.000 |" in ln for ln in table)
    assert any("≥ VADER + 0.10" in ln and "aim 0.90" in ln for ln in table)
    assert any(ln.startswith("| short neutral turns calm (n=1) | ≥ 95% | 0.0% | 100.0% |") for ln in table)
    assert "| a/escalation-minilm | meld | - | 0 / 1 | - / 0.00 |" in report["breakdown_table"]  # "..." has no score


def test_breakdown_shows_per_source_auc_and_the_abuse_threshold_ceiling() -> None:
    rows = [StandardRow("meld", "angry", "a"), StandardRow("meld", "calm", "b"),
            StandardRow("goemotions", "angry", "c"), StandardRow("goemotions", "calm", "d"),
            StandardRow("olid", "abusive", "e"), StandardRow("olid", "abusive", "f"),
            StandardRow("olid", "not_abusive", "g"), StandardRow("olid", "not_abusive", "h"),
            StandardRow("olid", "abusive", "i")]
    up = [0.9, 0.8, 0.3, 0.2, 0.9, 0.5, 0.5, 0.2, 0.1]
    ab = [0.0, 0.0, 0.0, 0.0, 0.8, 0.35, 0.4, 0.1, 0.05]
    levels = ["angry", "angry", "calm", "calm", "abusive", "angry", "abusive", "calm", "threatening"]
    b = standard_breakdown(rows, levels, up, ab)
    # each source ranks perfectly, pooled does not: MELD's calm 0.8 outranks GoEmotions' angry 0.3
    assert b["by_source"]["meld"]["auc"] == 1.0 and b["by_source"]["goemotions"]["auc"] == 1.0
    assert standard_figures(rows, levels, up)["auc"] == 0.75
    assert b["by_source"]["meld"]["mean_up_calm"] == 0.8 and b["by_source"]["goemotions"]["n_calm"] == 1
    assert set(b["by_source"]) == {"meld", "goemotions"}  # sources without rows are left out
    a = b["abusive"]
    assert a["n"] == 5 and a["auc"] == 0.5  # 0.8 beats both calm rows, 0.35 one, 0.05 none: 3 of 6
    assert a["rule_f1"] == pytest.approx(2 / 3)  # e and i flagged, g a false alarm, f missed
    # the threat decision ("i") always counts as abusive; t = 0.35 flags e, f, g: tp 3, fp 1 -> F1 6/7
    assert a["best_threshold_f1"] == pytest.approx({"f1": 6 / 7, "threshold": 0.35, "precision": 0.75, "recall": 1.0})
    table = breakdown_table({"columns": {"m": {"kind": "model", "breakdown": b,
                                               "figures": standard_figures(rows, levels, up)}}})
    assert "| m | meld | 1.000 | 1 / 1 | 0.90 / 0.80 |" in table
    assert "| m | pooled | 0.750 | 2 / 2 | |" in table
    assert "| m | 0.500 | 0.667 | 0.857 at 0.3500 (precision 0.75, recall 1.00) |" in table
    assert breakdown_table({"columns": {"vader": {"kind": "baseline", "figures": {}}}}) == ""
    empty = standard_breakdown([StandardRow("meld", "calm", "x")], ["calm"], [0.1], [0.0])
    assert empty["abusive"] == {"auc": None, "n": 0, "rule_f1": None,
                                "best_threshold_f1": {"f1": None, "threshold": None, "precision": None, "recall": None}}


def test_model_names() -> None:
    assert model_names(["/x/one", "/y/two"]) == ["one", "two"]
    assert model_names(["/x/m", "/y/m"]) == ["x/m", "y/m"]
    assert model_names(["/x/m", "/x/m"]) == ["x/m #1", "x/m #2"]


def test_card_leads_with_the_standard_section(tmp_path: Path) -> None:
    rows = [StandardRow("threatgram", "threatening", "i will find you"), StandardRow("fragment", "calm", "okay")]
    report = run_standard([FakeClassifier("/m/mine", "threatening", 0.9), FakeClassifier("/m/other", "calm", 0.1)],
                          rows, with_baselines=False)
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# mine\n\nIntro line.\n\n## Data\n\nrows\n\n## Limits\n\n- some\n", encoding="utf-8")
    update_standard_card(card, report, "mine")
    update_standard_card(card, report, "mine")  # replaced, not repeated
    text = card.read_text(encoding="utf-8")
    assert text.count("## Standard dev benchmark") == 1
    heads = [ln for ln in text.splitlines() if ln.startswith("#")]
    assert heads == ["# mine", "## Standard dev benchmark", "## Data", "## Limits"]
    assert text.startswith("# mine\n\nIntro line.\n\n## Standard dev benchmark\n")
    section = text.split("## Standard dev benchmark")[1].split("## Data")[0]
    assert "| mine |" in section and "other" not in section and "| 1.000 |" in section
    assert text.endswith("## Data\n\nrows\n\n## Limits\n\n- some\n")
    (tmp_path / "new").mkdir()
    fresh = update_standard_card(tmp_path / "new" / "MODEL_CARD.md", report, "mine")
    assert fresh.read_text(encoding="utf-8").startswith("# mine\n\n## Standard dev benchmark\n")
    assert standard_table(report, only=["other"]).splitlines()[0] == "| metric | target | other |"


# --- the command ---------------------------------------------------------------------------------

def coach(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*COACH, *args], cwd=REPO, capture_output=True, text=True, timeout=900, env=env)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("coach: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def test_eval_standard_without_data_is_one_line(tmp_path: Path) -> None:
    import os

    env = dict(os.environ, COACH_DATA=str(tmp_path))
    one_line_error(coach("eval", "standard", env=env), str(tmp_path / "goemotions" / "labels.txt"), "COACH_DATA")


def test_eval_standard_refuses_bad_flags_in_one_line(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    one_line_error(coach("eval", "standard", "--out", str(f)), "is a file")
    one_line_error(coach("eval", "standard", "--max-per-source", "5"), "--max-per-source")
    one_line_error(coach("eval", "olid", "--model", "a", "--model", "b"), "coach eval standard")


@pytest.mark.slow
def test_eval_standard_reproduces_the_shared_script(script, tmp_path: Path) -> None:
    """One run of each (a minute or two apiece on a CPU): the script with `coach classify`, and
    `coach eval standard` on a copy of the shipped model (so --card writes a throwaway card)."""
    from coach.classifier import resolve_model_dir

    exe = Path(sys.executable).parent / "coach"
    assert exe.is_file(), f"{exe} is missing: install the package into this environment (pip install -e .)"
    # The script scores through a wrapper that keeps a copy of `coach classify`'s output.
    tee = tmp_path / "classify.jsonl"
    wrapper = tmp_path / "coach-tee"
    wrapper.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                       f"r = subprocess.run([{str(exe)!r}, *sys.argv[1:]], stdout=subprocess.PIPE)\n"
                       f"open({str(tee)!r}, 'wb').write(r.stdout)\nsys.stdout.buffer.write(r.stdout)\n"
                       "sys.exit(r.returncode)\n")
    wrapper.chmod(0o755)
    ran = subprocess.run([sys.executable, str(SCRIPT), "--coach", str(wrapper)], cwd=REPO, capture_output=True,
                         text=True, timeout=900)
    assert ran.returncode == 0, ran.stderr
    expected = ran.stdout.strip().splitlines()[-1]
    assert expected.startswith("dev, standard mapping:")

    model = tmp_path / "escalation-minilm"
    shutil.copytree(resolve_model_dir(None), model)
    out = tmp_path / "out"
    proc = coach("eval", "standard", "--model", str(model), "--out", str(out), "--card")
    assert proc.returncode == 0, proc.stderr
    assert f"escalation-minilm: {expected}" in proc.stdout.splitlines()
    report = json.loads((out / "standard.json").read_text(encoding="utf-8"))
    md = (out / "standard.md").read_text(encoding="utf-8")
    assert md == report["table"] + "\n\n## Where the figures come from\n\n" + report["breakdown_table"] + "\n"
    assert list(report["columns"]) == ["escalation-minilm", "vader", "profanity_check"]
    got = report["columns"]["escalation-minilm"]["figures"]

    # Each figure at the script's printed precision, then to 3 decimals from its own classify output.
    m = re.search(r"AUC\(angry\+ vs calm\) ([\d.]+) \(n=(\d+)\); abusive F1 ([\d.]+) \(n=(\d+)\); "
                  r"threat recall ([\d.]+) \(n=(\d+)\); threat FP on calm ([\d.]+)%; "
                  r"short neutral turns calm (\d+)% \(n=(\d+)\)", expected)
    assert m, expected
    assert f"{got['auc']:.3f}" == m[1] and got["n_auc"] == int(m[2])
    assert f"{got['abusive_f1']:.3f}" == m[3] and got["n_abusive"] == int(m[4])
    assert f"{got['threat_recall']:.2f}" == m[5] and got["n_threat"] == int(m[6])
    assert f"{got['threat_fp_calm'] * 100:.3f}" == m[7]
    assert f"{got['short_neutral_calm'] * 100:.0f}" == m[8] and got["n_short_neutral"] == int(m[9])
    outs = [json.loads(ln) for ln in tee.read_text(encoding="utf-8").splitlines() if ln.strip()]
    rows = standard_rows()
    assert len(outs) == len(rows)
    up = [None if o["escalation"] is None else sum(float(o["escalation"].get(x, 0)) for x in
                                                   ("angry", "abusive", "threatening")) for o in outs]
    theirs = standard_figures(rows, [o["level"] for o in outs], up)
    for key, value in theirs.items():
        assert round(got[key], 3) == round(value, 3), key
    # The breakdown's per-source AUC, from the same classify output, by sklearn's own AUC.
    from sklearn.metrics import roc_auc_score

    by = report["columns"]["escalation-minilm"]["breakdown"]["by_source"]
    assert set(by) == {"goemotions", "tweeteval", "meld", "dailydialog"}
    for src, d in by.items():
        idx = [i for i, r in enumerate(rows) if r.source == src and r.gold in ("angry", "calm")]
        want = roc_auc_score([rows[i].gold == "angry" for i in idx], [up[i] or 0.0 for i in idx])
        assert abs(d["auc"] - want) < 1e-3, src
    assert "| escalation-minilm | meld |" in proc.stdout
    # The rule is one threshold on P(abusive or worse) with threats kept, so the best threshold
    # can only match or beat it (one row of slack for the 4-decimal rounding).
    ab = report["columns"]["escalation-minilm"]["breakdown"]["abusive"]
    assert ab["rule_f1"] == pytest.approx(got["abusive_f1"])
    assert ab["best_threshold_f1"]["f1"] >= ab["rule_f1"] - 2 / ab["n"]

    # The baselines are in the same table; the card copy leads with it.
    table = proc.stdout.split("\n\n")[0]
    assert table == report["table"] and "| vader | profanity_check |" in table.splitlines()[0]
    card = (model / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert [ln for ln in card.splitlines() if ln.startswith("## ")][0] == "## Standard dev benchmark"
