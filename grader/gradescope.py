"""Gradescope: grade one submission into a results.json, and build the autograder bundle that does it.

    autograde(assignment, submission, results, ...) -> dict     `seqgrade autograde`: public + hidden cases
    build_bundle(assignment, out_zip, ...)         -> Path     `seqgrade gradescope`: autograder.zip
    spec_problems(results)                         -> [str]    what breaks Gradescope's results.json spec

The bundle's root holds what Gradescope asks for (https://gradescope-autograders.readthedocs.io/en/latest/specs/):
`setup.sh` (run once when the image is built: a Python >= 3.11 venv with the grader's dependencies, CPU torch)
and `run_autograder` (run per submission, working directory /autograder), plus `seqgrade/` (the grader, the
plan, the reference and the public cases) and `secret` (so hidden cases are the ones `seqgrade grade` uses).
The grader is put on PYTHONPATH, not installed, and run with `--scrub`: once the hidden cases are prepared,
the secret and the reference are deleted from the (throw-away) container before any student code runs.

Visibility: public checks are `visible`, hidden ones `after_published` (the top-level default too), the
autograder's stdout `hidden`; the top-level `output` tells the student what the public checks say.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import sys
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader import cases as cases_mod
from grader import report
from grader.errors import ConfigError, InputError
from grader.score import SubmissionResult

if TYPE_CHECKING:
    from grader.worker import Zygote

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------------------- the spec

VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
FORMATS = ("text", "html", "simple_format", "md", "ansi")
STATUSES = ("passed", "failed")
TOP_KEYS = {
    "score",
    "execution_time",
    "output",
    "output_format",
    "test_output_format",
    "test_name_format",
    "visibility",
    "stdout_visibility",
    "extra_data",
    "tests",
    "leaderboard",
}
TEST_KEYS = {
    "score",
    "max_score",
    "status",
    "name",
    "name_format",
    "number",
    "output",
    "output_format",
    "tags",
    "visibility",
    "extra_data",
}


def spec_problems(data: Any) -> list[str]:
    """Every way `data` departs from Gradescope's results.json format; [] when it conforms."""
    problems: list[str] = []

    def number(where: str, v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            problems.append(f"{where} must be a finite number, got {v!r}")

    def choice(where: str, v: Any, allowed: tuple[str, ...]) -> None:
        if v not in allowed:
            problems.append(f"{where} must be one of {', '.join(allowed)}, got {v!r}")

    def string(where: str, v: Any) -> None:
        if not isinstance(v, str):
            problems.append(f"{where} must be a string, got {type(v).__name__}")

    if not isinstance(data, dict):
        return ["results must be a JSON object"]
    for k in sorted(set(data) - TOP_KEYS):
        problems.append(f"unknown top-level key {k!r}")
    if "score" in data:
        number("score", data["score"])
    if "execution_time" in data:
        number("execution_time", data["execution_time"])
    for k in ("output",):
        if k in data:
            string(k, data[k])
    for k in ("output_format", "test_output_format", "test_name_format"):
        if k in data:
            choice(k, data[k], FORMATS)
    for k in ("visibility", "stdout_visibility"):
        if k in data:
            choice(k, data[k], VISIBILITIES)
    if "extra_data" in data and not isinstance(data["extra_data"], dict):
        problems.append("extra_data must be an object")
    tests = data.get("tests", [])
    if not isinstance(tests, list):
        problems.append("tests must be a list")
        tests = []
    if "score" not in data and (not tests or any(not isinstance(t, dict) or "score" not in t for t in tests)):
        problems.append("a top-level score is required unless every test has a score")
    for i, t in enumerate(tests):
        w = f"tests[{i}]"
        if not isinstance(t, dict):
            problems.append(f"{w} must be an object")
            continue
        for k in sorted(set(t) - TEST_KEYS):
            problems.append(f"{w}: unknown key {k!r}")
        for k in ("score", "max_score"):
            if k in t:
                number(f"{w}.{k}", t[k])
        if "status" in t:
            choice(f"{w}.status", t["status"], STATUSES)
        for k in ("name", "number", "output"):
            if k in t:
                string(f"{w}.{k}", t[k])
        for k in ("name_format", "output_format"):
            if k in t:
                choice(f"{w}.{k}", t[k], FORMATS)
        if "visibility" in t:
            choice(f"{w}.visibility", t["visibility"], VISIBILITIES)
        if "tags" in t and (
            not isinstance(t["tags"], list) or not all(isinstance(x, str) for x in t["tags"])
        ):
            problems.append(f"{w}.tags must be a list of strings")
        if "extra_data" in t and not isinstance(t["extra_data"], dict):
            problems.append(f"{w}.extra_data must be an object")
    board = data.get("leaderboard", [])
    if not isinstance(board, list):
        problems.append("leaderboard must be a list")
        board = []
    for i, e in enumerate(board):
        w = f"leaderboard[{i}]"
        if not isinstance(e, dict) or "name" not in e or "value" not in e:
            problems.append(f"{w} must be an object with name and value")
            continue
        string(f"{w}.name", e["name"])
        if not isinstance(e["value"], (int, float, str)) or isinstance(e["value"], bool):
            problems.append(f"{w}.value must be a number or a string")
        if "order" in e:
            choice(f"{w}.order", e["order"], ("asc", "desc"))
    return problems


# ----------------------------------------------------------------------------------------------- results


def gradescope_results(r: SubmissionResult, *, execution_time: float = 0.0) -> dict[str, Any]:
    """A SubmissionResult as Gradescope's results.json (built on grader.report.to_results_json)."""
    data = report.to_results_json(r)
    order = {name: i + 1 for i, name in enumerate(r.functions)}
    counters: dict[str, int] = {}
    tests = []
    for t, src in zip(data["tests"], r.tests, strict=True):
        counters[src.function] = counters.get(src.function, 0) + 1
        vis = "visible" if src.visibility == "visible" else "after_published"
        test = {
            "name": t["name"],
            "number": f"{order.get(src.function, 0)}.{counters[src.function]}",
            "score": t["score"],
            "max_score": t["max_score"],
            "status": t["status"],
            "output": t["output"] or ("passed" if src.passed else "failed"),
            "visibility": vis,
            "tags": [str(x) for x in t["tags"]],
        }
        tests.append(test)
    extra = dict(data["extra_data"])
    return {
        "score": data["score"],
        "execution_time": int(round(execution_time)),
        "output": student_summary(r),
        "output_format": "md",
        "test_output_format": "text",
        "visibility": "after_published",
        "stdout_visibility": "hidden",
        "extra_data": {**extra, "max_score": r.max_score},
        "tests": tests,
    }


def student_summary(r: SubmissionResult) -> str:
    """What every student sees at once: loading problems and the public checks; hidden ones come later."""
    lines = []
    if r.import_error:
        lines += [
            f"**Your submission could not be loaded:** `{r.import_error}`",
            "",
            "Submit your `.py` file (or notebook) with the functions of the template, and run "
            "`seqgrade check` on it before submitting.",
            "",
        ]
    public = [t for t in r.tests if t.visibility == "visible" and t.kind not in ("inputs", "banned")]
    passed = sum(t.passed for t in public)
    lines.append(
        f"Public checks: **{passed} of {len(public)} passed**"
        + (" (the cases `seqgrade check` runs)." if public else ".")
    )
    failing = sorted({t.function for t in public if not t.passed})
    if failing:
        lines.append(f"Look at: {', '.join(f'`{f}`' for f in failing)} (details below).")
    flagged = [t for t in r.tests if t.kind in ("inputs", "banned") and not t.passed]
    for t in flagged:
        lines.append(f"- {t.message}")
    for note in r.notes:
        lines.append(f"- note: {note}")
    lines += [
        "",
        "Hidden checks (other shapes and values) decide the grade; their results are shown when "
        "grades are published.",
    ]
    return "\n".join(lines)


def _student_name(metadata: Path | None, default: str) -> str:
    """'Name <email>' of the submitters from Gradescope's submission_metadata.json, when present."""
    try:
        meta = json.loads(Path(metadata).read_text()) if metadata else {}
    except (OSError, ValueError):
        return default
    users = meta.get("users") or []
    names = [f"{u.get('name', '')} <{u.get('email', '')}>".strip() for u in users if isinstance(u, dict)]
    return "; ".join(names) or default


def autograde(
    assignment: str,
    submission: Path,
    results: Path,
    *,
    secret_path: Path | None = None,
    timeout: float = 10.0,
    memory_mb: int = 4096,
    metadata: Path | None = None,
    scrub: bool = False,
    zygote: Zygote | None = None,
) -> dict[str, Any]:
    """Grade one submission on the public and the hidden cases; write Gradescope's results.json to `results`.

    `scrub` (for the throw-away Gradescope container only) deletes the secret file and the reference package
    from disk once the hidden cases are prepared, before the student's code is started.
    """
    from grader import pipeline
    from grader.loader import load_entry
    from grader.plan import load_plan
    from grader.runner import RunOptions

    start = time.monotonic()
    own_zygote = zygote is None  # a caller's zygote was started before it imported torch (grader.cli)
    if own_zygote:
        zygote = pipeline.start_zygote()  # first: the workers must not inherit the secret or the reference
    tmp = Path(tempfile.mkdtemp(prefix="seqgrade-ag-"))
    try:
        plan = load_plan(assignment)
        secret, _ = cases_mod.load_secret(secret_path, create=False)
        case_sets = [cases_mod.load_public(plan), cases_mod.build(plan, "hidden", secret)]
        if scrub:
            _scrub(secret_path)
        submission = Path(submission)
        if not submission.exists():
            raise InputError(f"{submission}: no such file or directory")
        sub = load_entry(submission, plan.module, tmp, student=_student_name(metadata, submission.name))
        r = pipeline.grade_submission(
            zygote, plan, case_sets, sub, RunOptions(timeout=timeout, memory_mb=memory_mb)
        )
    finally:
        if own_zygote:
            zygote.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    data = gradescope_results(r, execution_time=time.monotonic() - start)
    data["extra_data"]["case_key"] = f"{plan.name}:{cases_mod.fingerprint(secret)}:public,hidden"
    problems = spec_problems(data)
    if problems:  # our bug, not the student's: fail loudly rather than upload a broken file
        raise ConfigError("results.json would break Gradescope's spec: " + "; ".join(problems[:5]))
    report.atomic_write(Path(results), report.json_dumps(data))
    return data


def _scrub(secret_path: Path | None) -> None:
    """Delete the secret and the reference package; only where both lie in the bundle's source folder."""
    if secret_path is None:
        raise ConfigError("--scrub needs --secret (the bundle's secret file)")
    home = Path(secret_path).resolve().parent
    ref = sys.modules.get("reference")
    dirs = {Path(p).resolve() for p in (getattr(ref, "__path__", None) or [])}
    outside = [d for d in dirs if not d.is_relative_to(home)]
    if outside:
        raise ConfigError(
            f"--scrub deletes the reference, so it only runs inside an autograder bundle; "
            f"{outside[0]} is not under {home}"
        )
    Path(secret_path).unlink(missing_ok=True)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- the bundle


def build_bundle(
    assignment: str,
    out: Path,
    *,
    secret_path: Path | None = None,
    timeout: float = 10.0,
    memory_mb: int = 4096,
) -> Path:
    """Write autograder.zip for a Gradescope programming assignment (files at the archive's root)."""
    from grader.plan import load_plan
    from grader.release import INSTRUCTOR_ONLY, plan_closure

    plan = load_plan(assignment)
    secret, _ = cases_mod.load_secret(secret_path, create=secret_path is None)
    public = ROOT / "student_template" / f"{plan.name}_public.npz"
    if not public.is_file():
        raise ConfigError(
            f"student_template/{public.name} is missing: run python -m grader.cases build-public {plan.name}"
        )
    cases_mod.build(
        plan, "hidden", secret
    )  # fail here, not on Gradescope, if the reference or plan is broken
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [
        d
        for d in project.get("dependencies", [])
        if not d.lower().startswith(INSTRUCTOR_ONLY) and not d.lower().startswith("torch")
    ]
    import torch

    torch_pin = f"torch=={torch.__version__.split('+')[0]}"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_zip = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as zf:
        _add(zf, "setup.sh", setup_script(torch_pin), executable=True)
        _add(
            zf, "run_autograder", run_script(plan.name, timeout=timeout, memory_mb=memory_mb), executable=True
        )
        _add(zf, "requirements.txt", "\n".join(deps) + "\n")
        _add(zf, "secret", secret.decode() + "\n", mode=0o600)
        _add(zf, "README.md", bundle_readme(plan.name))
        for base in ("grader", "reference"):
            for p in sorted((ROOT / base).rglob("*.py")):
                if "__pycache__" not in p.parts:
                    _add(zf, f"seqgrade/{p.relative_to(ROOT).as_posix()}", p.read_bytes())
        _add(zf, "seqgrade/assignments/__init__.py", "")
        for name in plan_closure(plan.name):
            for p in sorted((ROOT / "assignments" / name).glob("*.py")):
                _add(zf, f"seqgrade/{p.relative_to(ROOT).as_posix()}", p.read_bytes())
        _add(zf, f"seqgrade/student_template/{public.name}", public.read_bytes())
    os.replace(tmp_zip, out)
    return out


def _add(
    zf: zipfile.ZipFile, name: str, data: str | bytes, *, executable: bool = False, mode: int = 0o644
) -> None:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # reproducible archives
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = ((0o755 if executable else mode) | stat.S_IFREG) << 16
    zf.writestr(info, data)


def setup_script(torch_pin: str) -> str:
    return f"""#!/usr/bin/env bash
# Gradescope runs this once, when it builds the autograder image: a venv at /autograder/venv with
# Python >= 3.11, CPU {torch_pin} and the grader's dependencies. The grader itself is not installed:
# run_autograder puts /autograder/source/seqgrade on PYTHONPATH, so deleting the reference there removes it.
set -euo pipefail
cd /autograder/source
PY=""
for c in python3.13 python3.12 python3.11 python3; do
  if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    PY=$c; break
  fi
done
if [ -z "$PY" ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3.11 python3.11-venv
  PY=python3.11
fi
"$PY" -m venv /autograder/venv || {{
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$PY-venv"
  "$PY" -m venv /autograder/venv
}}
/autograder/venv/bin/python -m pip install -q --upgrade pip
/autograder/venv/bin/python -m pip install -q "{torch_pin}" --index-url https://download.pytorch.org/whl/cpu
/autograder/venv/bin/python -m pip install -q -r requirements.txt
chmod 600 /autograder/source/secret
"""


def run_script(assignment: str, *, timeout: float, memory_mb: int) -> str:
    return f"""#!/usr/bin/env bash
# Gradescope runs this for every submission (working directory /autograder): grade
# /autograder/submission on the public and hidden cases of `{assignment}` into results/results.json.
# AUTOGRADER_ROOT and SEQGRADE_PYTHON override /autograder and its venv (for testing the bundle locally).
set -uo pipefail
AG=${{AUTOGRADER_ROOT:-/autograder}}
SRC="$AG/source"
PY=${{SEQGRADE_PYTHON:-$AG/venv/bin/python}}
cd "$AG"
mkdir -p "$AG/results"
export PYTHONPATH="$SRC/seqgrade${{PYTHONPATH:+:$PYTHONPATH}}"
exec "$PY" -m grader.cli autograde {assignment} "$AG/submission" --results "$AG/results/results.json" \\
  --secret "$SRC/secret" --metadata "$AG/submission_metadata.json" \\
  --timeout {timeout:g} --memory-mb {memory_mb} --scrub
"""


def bundle_readme(assignment: str) -> str:
    return (
        f"# Gradescope autograder for `{assignment}`\n\n"
        "Upload this zip as the autograder of a Gradescope *programming assignment* (Ubuntu base image). "
        "Students upload their `.py` file or notebook (or submit their GitHub repository). Public checks are "
        "shown at once; hidden ones when you publish grades. `secret` derives the hidden cases: keep this "
        "zip private. Made by `seqgrade gradescope`.\n"
    )
