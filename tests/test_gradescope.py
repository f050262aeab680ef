"""Gradescope: the autograder bundle runs in a directory laid out like /autograder and writes a results.json
that follows Gradescope's published spec, with the same hidden-case scores as `seqgrade grade`."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader import gradescope, pipeline
from grader.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "rnn"
SECRET = "4f1d2c3b-test-secret-for-the-gradescope-bundle-0123456789"

HOSTILE = """
import os
paths = ("source/secret", "source/seqgrade/reference/rnn.py", "source/seqgrade/reference/__init__.py")
seen = [p for p in paths if os.path.exists(os.path.join(ROOT, p))]
print("SEEN:" + ",".join(seen) if seen else "NOTHING-SEEN")
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bundle")
    (d / "secret").write_text(SECRET + "\n")
    out = d / "autograder.zip"
    r = CliRunner(env={"SEQGRADE_SECRET": None}).invoke(
        main, ["gradescope", "rnn", "--out", str(out), "--secret", str(d / "secret"), "--timeout", "20"]
    )
    assert r.exit_code == 0, r.output
    return out


def layout(bundle: Path, root: Path, submission: dict[str, str], metadata: dict | None = None) -> Path:
    """Lay out `root` as Gradescope does: the bundle unpacked in source/, the submission, results/."""
    (root / "submission").mkdir(parents=True)
    (root / "results").mkdir()
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(root / "source")
        for info in zf.infolist():  # zipfile does not restore modes; Gradescope's unzip does
            mode = info.external_attr >> 16
            if mode:
                os.chmod(root / "source" / info.filename, stat.S_IMODE(mode))
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")
    for name, text in submission.items():
        (root / "submission" / name).write_text(text)
    if metadata is not None:
        (root / "submission_metadata.json").write_text(json.dumps(metadata))
    return root


def run_autograder(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SEQGRADE_SECRET", "PYTHONPATH")}
    env.update(AUTOGRADER_ROOT=str(root), SEQGRADE_PYTHON=sys.executable)
    proc = subprocess.run(
        [str(root / "run_autograder")], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((root / "results" / "results.json").read_text())


def run_bundle(bundle: Path, root: Path, submission: dict[str, str], metadata: dict | None = None) -> dict:
    return run_autograder(layout(bundle, root, submission, metadata))


def assert_gradescope_conventions(data: dict) -> None:
    assert gradescope.spec_problems(data) == []
    assert data["stdout_visibility"] == "hidden"
    assert isinstance(data["output"], str) and "Public checks" in data["output"]
    for t in data["tests"]:
        assert set(t) <= gradescope.TEST_KEYS
        if "(public," in t["name"]:
            assert t["visibility"] == "visible"
        if "(hidden," in t["name"]:
            assert t["visibility"] == "after_published"
    names = [t["name"] for t in data["tests"]]
    assert any("(public," in n for n in names) and any("(hidden," in n for n in names)
    assert len({t["number"] for t in data["tests"]}) == len(data["tests"])
    assert data["score"] == pytest.approx(sum(t["score"] for t in data["tests"]), abs=1e-3)


def test_bundle_layout(bundle):
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
        assert zf.read("secret").decode().strip() == SECRET
    for required in (
        "setup.sh",
        "run_autograder",
        "secret",
        "requirements.txt",
        "seqgrade/grader/cli.py",
        "seqgrade/reference/rnn.py",
        "seqgrade/assignments/rnn/plan.py",
        "seqgrade/student_template/rnn_public.npz",
    ):
        assert required in names
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111
    assert not any(n.startswith("/") or ".." in n or "__pycache__" in n for n in names)
    for script in ("setup.sh", "run_autograder"):
        with zipfile.ZipFile(bundle) as zf:
            text = zf.read(script).decode()
        assert text.startswith("#!/usr/bin/env bash")
        assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_correct_submission_full_marks_and_spec(bundle, tmp_path):
    meta = {"users": [{"name": "Ada Lovelace", "email": "ada@uni.edu", "id": 11}], "id": 555}
    data = run_bundle(
        bundle, tmp_path / "autograder", {"rnn.py": (EXAMPLES / "correct.py").read_text()}, meta
    )
    assert_gradescope_conventions(data)
    assert data["score"] == pytest.approx(10.0)
    assert all(t["status"] == "passed" for t in data["tests"])
    assert data["extra_data"]["student"] == "Ada Lovelace <ada@uni.edu>"
    # --scrub removed the secret and the reference from the container before student code ran
    assert not (tmp_path / "autograder" / "source" / "secret").exists()
    assert not (tmp_path / "autograder" / "source" / "seqgrade" / "reference").exists()


def test_buggy_submission_same_hidden_scores_as_seqgrade_grade(bundle, tmp_path, monkeypatch):
    data = run_bundle(bundle, tmp_path / "autograder", {"rnn (1).py": (EXAMPLES / "buggy.py").read_text()})
    assert_gradescope_conventions(data)
    failed = [t for t in data["tests"] if t["status"] == "failed"]
    assert failed and 0 < data["score"] < 10
    assert any(t["name"].startswith("rnn_step") and "(public," in t["name"] for t in failed)
    assert "`rnn_step`" in data["output"] and "graded rnn (1).py as rnn.py" in data["output"]
    assert all(t["output"] for t in failed)

    # the instructor's own run of the hidden cases, with the same secret, agrees test by test
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    monkeypatch.delenv("SEQGRADE_SECRET", raising=False)
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(EXAMPLES / "buggy.py", subs / "someone.py")
    run = pipeline.grade(
        "rnn", subs, tmp_path / "out", pipeline.GradeOptions(workers=1, secret_path=secret, fresh=True)
    )
    local = json.loads((tmp_path / "out" / "someone.json").read_text())
    ours = {t["name"]: t["status"] for t in data["tests"] if "(hidden," in t["name"]}
    theirs = {t["name"]: t["status"] for t in local["tests"] if "(hidden," in t["name"]}
    assert ours == theirs and run.graded == 1


def test_hostile_submission_cannot_see_secret_or_reference(bundle, tmp_path):
    root = tmp_path / "autograder"
    code = f"ROOT = {str(root)!r}\n" + HOSTILE
    layout(bundle, root, {"rnn.py": code})
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert probe.stdout.startswith("SEEN:source/secret,"), probe.stdout  # unprotected, the probe sees them
    data = run_autograder(root)
    assert_gradescope_conventions(data)
    assert data["score"] == 0
    assert "NOTHING-SEEN" in data["extra_data"]["stdout_excerpt"], data["extra_data"]["stdout_excerpt"]


def test_unloadable_submission_explains_itself(bundle, tmp_path):
    data = run_bundle(bundle, tmp_path / "autograder", {"notes.txt": "I forgot the code"})
    assert_gradescope_conventions(data)
    assert data["score"] == 0 and "could not be loaded" in data["output"]


def test_spec_check_catches_what_gradescope_rejects():
    good = {
        "score": 1.0,
        "tests": [{"name": "a", "score": 1, "max_score": 1, "status": "passed"}],
        "leaderboard": [{"name": "Time", "value": 1.5, "order": "asc"}],
    }
    assert gradescope.spec_problems(good) == []
    bad = {
        "score": "10",
        "visibility": "students",
        "stdout_visibility": "never",
        "output_format": "pdf",
        "extra": 1,
        "tests": [{"name": 3, "status": "ok", "tags": "x", "max_score": float("nan"), "points": 1}],
        "leaderboard": [{"value": 1}],
    }
    problems = "\n".join(gradescope.spec_problems(bad))
    for expected in (
        "score must be a finite number",
        "visibility must be one of",
        "stdout_visibility",
        "output_format",
        "unknown top-level key 'extra'",
        "tests[0].name must be a string",
        "tests[0].status",
        "tests[0].tags",
        "tests[0].max_score",
        "unknown key 'points'",
        "leaderboard[0]",
    ):
        assert expected in problems
    assert gradescope.spec_problems({"tests": [{"name": "x"}]}) == [
        "a top-level score is required unless every test has a score"
    ]


def test_autograde_cli_writes_results_and_refuses_scrub_outside_a_bundle(tmp_path, monkeypatch):
    monkeypatch.delenv("SEQGRADE_SECRET", raising=False)
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    sub = tmp_path / "rnn.py"
    sub.write_text("def rnn_step(:\n    pass\n")  # a syntax error: graded quickly, scored 0
    results = tmp_path / "results.json"
    args = ["autograde", "rnn", str(sub), "--results", str(results), "--secret", str(secret)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "0.00 / 10 points" in r.output
    data = json.loads(results.read_text())
    assert gradescope.spec_problems(data) == [] and "could not be loaded" in data["output"]
    r = CliRunner().invoke(main, [*args, "--scrub"])
    assert r.exit_code != 0 and "only runs inside an autograder bundle" in r.output
    assert secret.exists() and (ROOT / "reference" / "rnn.py").exists()
    r = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "nope")])
    assert r.exit_code != 0 and "does not exist" in r.output
    assert CliRunner().invoke(main, ["gradescope", "--help"]).exit_code == 0
    assert CliRunner().invoke(main, ["autograde", "--help"]).exit_code == 0
