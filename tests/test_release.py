"""`seqgrade release`: what students get works on its own, without the reference, and holds nothing secret.

The released self-check is installed into a fresh virtual environment that sees the project venv's
third-party packages (torch, numpy, ...) but not the project itself, and self-checks a correct and a wrong
solution there, from the student's point of view (a shell, `seqgrade check`, `bash selfcheck.sh`).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner

from grader import pipeline, release
from grader.cli import main
from grader.errors import ConfigError
from grader.plan import available, load_plan

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "rnn"


@pytest.fixture(scope="module")
def rnn_release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release") / "rnn"
    result = CliRunner().invoke(main, ["release", "rnn", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory, rnn_release) -> Path:
    """A new venv with the released checker installed; third-party packages come from the project venv."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # A bare path line: the project venv's .pth files (its editable install of seqgrade) are NOT processed.
    Path(purelib, "_outer_site.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # offline when the project venv's setuptools can build wheels itself (>= 70.1, or with `wheel`)
    offline = ["--no-build-isolation"] if _builds_wheels_offline() else []
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",
            *offline,
            str(rnn_release / "seqgrade-check"),
        ],
        check=True,
    )
    return venv


def _builds_wheels_offline() -> bool:
    try:
        import setuptools

        if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) >= (70, 1):
            return True
    except (ImportError, ValueError):
        return False
    return importlib.util.find_spec("wheel") is not None


def _student_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SEQGRADE_SECRET", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_release_layout_and_nothing_of_the_reference(rnn_release):
    names = {p.relative_to(rnn_release).as_posix() for p in rnn_release.rglob("*") if p.is_file()}
    for expected in (
        "README.md",
        "rnn.py",
        "selfcheck.sh",
        ".github/workflows/selfcheck.yml",
        "seqgrade-check/pyproject.toml",
        "seqgrade-check/assignments/rnn/plan.py",
        "seqgrade-check/student_template/rnn_public.npz",
        "seqgrade-check/grader/cli.py",
    ):
        assert expected in names
    assert not any("reference" in n.split("/")[:-1] or n.startswith("reference") for n in names)
    assert not any(n.endswith("secret") for n in names)
    # the template is the generated one: stubs only
    tree = ast.parse((rnn_release / "rnn.py").read_text())
    fns = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert [f.name for f in fns] == [f.name for f in load_plan("rnn").functions]
    assert all(isinstance(f.body[-1], ast.Raise) for f in fns)
    handout = (rnn_release / "README.md").read_text()
    assert "seqgrade check rnn rnn.py" in handout and "pip install ./seqgrade-check" in handout
    wf = (rnn_release / ".github/workflows/selfcheck.yml").read_text()
    assert release.PLACEHOLDER not in wf and "bash selfcheck.sh" in wf and "push" in wf


def test_fresh_venv_has_no_reference_and_checks_a_correct_and_a_wrong_solution(fresh_venv, tmp_path):
    env = _student_env(fresh_venv)
    py = str(fresh_venv / "bin" / "python")
    probe = subprocess.run(
        [
            py,
            "-c",
            "import grader, importlib.util as u; print(grader.__file__); print(u.find_spec('reference'))",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    where, ref = probe.stdout.split()
    assert str(fresh_venv) in where and ref == "None"

    shutil.copy(EXAMPLES / "correct.py", tmp_path / "rnn.py")
    ok = subprocess.run(
        ["seqgrade", "check", "rnn", "rnn.py"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "FAIL" not in ok.stdout and "(10.00 / 10 points" in ok.stdout

    shutil.copy(EXAMPLES / "buggy.py", tmp_path / "rnn.py")
    bad = subprocess.run(
        ["seqgrade", "check", "rnn"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL  rnn_step" in bad.stdout and "PASS  rnn_backward" in bad.stdout


def test_selfcheck_script_writes_the_github_job_summary(fresh_venv, rnn_release, tmp_path):
    env = _student_env(fresh_venv)
    repo = tmp_path / "repo"
    shutil.copytree(rnn_release, repo)
    summary = tmp_path / "summary.md"
    env["GITHUB_STEP_SUMMARY"] = str(summary)

    stub = subprocess.run(
        ["bash", "selfcheck.sh"], capture_output=True, text=True, env=env, cwd=repo, timeout=120
    )
    assert stub.returncode == 1, stub.stdout + stub.stderr
    assert "NotImplementedError" in stub.stdout
    text = summary.read_text()
    assert text.startswith("## Self-check: `rnn` on `rnn.py`") and ":x:" in text and "```text" in text

    summary.unlink()
    shutil.copy(EXAMPLES / "correct.py", repo / "rnn.py")
    good = subprocess.run(
        ["bash", "selfcheck.sh"], capture_output=True, text=True, env=env, cwd=repo, timeout=120
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert ":white_check_mark: all 18 public checks pass" in summary.read_text()


def _fill_notebook(nb, solution: Path):
    """Replace each stub cell with the solution's function of the same name, as a student would."""
    src = solution.read_text()
    tree = ast.parse(src)
    defs = {n.name: ast.get_source_segment(src, n) for n in tree.body if isinstance(n, ast.FunctionDef)}
    imports = "\n".join(
        ast.get_source_segment(src, n)
        for n in tree.body
        if isinstance(n, (ast.Import, ast.ImportFrom)) and getattr(n, "module", None) != "__future__"
    )
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            names = [n.name for n in ast.parse(cell.source).body if isinstance(n, ast.FunctionDef)]
        except SyntaxError:
            continue
        if names:
            cell.source = defs[names[0]]
        elif "import" in cell.source:
            cell.source += "\n" + imports
    return nb


def test_notebook_release_grades_like_the_py_template(tmp_path):
    out = tmp_path / "nbrelease"
    r = release.release("rnn", out, fmt="ipynb")
    assert r.student_file.name == "rnn.ipynb" and not (out / "rnn.py").exists()
    nb = nbformat.read(str(r.student_file), as_version=4)
    nbformat.validate(nb)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code[-1] == "!seqgrade check rnn rnn.ipynb"
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "`rnn_backward(" in md or "rnn_backward" in md
    assert "(4 points)" in md

    z = pipeline.start_zygote()
    try:
        stub = pipeline.check("rnn", r.student_file, zygote=z)
        assert stub.score == 0 and not stub.import_error
        assert any("NotImplementedError" in t.message for t in stub.tests)
        filled = tmp_path / "rnn.ipynb"
        nbformat.write(_fill_notebook(nb, EXAMPLES / "correct.py"), str(filled))
        good = pipeline.check("rnn", filled, zygote=z)
        assert good.score == pytest.approx(good.max_score), [t.message for t in good.tests if not t.passed]
        nbformat.write(
            _fill_notebook(nbformat.read(str(r.student_file), as_version=4), EXAMPLES / "buggy.py"),
            str(filled),
        )
        assert pipeline.check("rnn", filled, zygote=z).score < good.max_score
    finally:
        z.stop()


def test_release_refuses_a_stale_template_or_stale_public_cases(tmp_path, monkeypatch):
    fake = tmp_path / "student_template"
    fake.mkdir()
    shutil.copy(ROOT / "student_template" / "rnn_public.npz", fake)
    (fake / "rnn.py").write_text(
        (ROOT / "student_template" / "rnn.py").read_text().replace("One Elman step", "A step")
    )
    shutil.copytree(ROOT / "student_template" / ".github", fake / ".github")
    monkeypatch.setattr(release, "TEMPLATE_DIR", fake)
    with pytest.raises(ConfigError, match="python -m grader.template rnn"):
        release.release("rnn", tmp_path / "a")
    (fake / "rnn.py").unlink()  # a missing template is generated; now the cases are stale
    shutil.copy(ROOT / "student_template" / "gated_public.npz", fake / "rnn_public.npz")
    with pytest.raises(ConfigError, match="build-public rnn"):
        release.release("rnn", tmp_path / "b")
    with pytest.raises(ConfigError, match="not empty"):
        release.release("rnn", tmp_path / "b", check_public=False)


def test_guard_finds_a_reference_body_or_the_secret(tmp_path, monkeypatch):
    plan = load_plan("rnn")
    ref_src = (ROOT / "reference" / "rnn.py").read_text()
    fn = next(
        n for n in ast.parse(ref_src).body if isinstance(n, ast.FunctionDef) and n.name == "rnn_forward"
    )
    leaked = tmp_path / "helper.py"
    leaked.write_text(
        "import torch\n\n" + ast.get_source_segment(ref_src, fn).replace("rnn_forward", "renamed")
    )
    with pytest.raises(ConfigError, match="reference.rnn.rnn_forward"):
        release.assert_nothing_secret(plan, [leaked])
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(leaked.read_text())]
    leaked_nb = tmp_path / "leak.ipynb"
    nbformat.write(nb, str(leaked_nb))
    with pytest.raises(ConfigError, match="reference.rnn.rnn_forward"):
        release.assert_nothing_secret(plan, [leaked_nb])
    monkeypatch.setenv("SEQGRADE_SECRET", "0123456789abcdef-a-test-secret")
    notes = tmp_path / "notes.txt"
    notes.write_text("secret: 0123456789abcdef-a-test-secret\n")
    with pytest.raises(ConfigError, match="secret"):
        release.assert_nothing_secret(plan, [notes, tmp_path / "helper.py"])
    release.assert_nothing_secret(
        plan, [ROOT / "student_template" / "rnn.py", ROOT / "examples" / "rnn" / "buggy.py"]
    )


def test_release_cli_errors_are_one_line(tmp_path):
    r = CliRunner().invoke(main, ["release", "nope", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "unknown assignment 'nope'" in r.output
    assert CliRunner().invoke(main, ["release", "--help"]).exit_code == 0


def test_released_plan_closure_includes_shared_plan_helpers():
    assert release.plan_closure("gated") == ["gated", "rnn"]
    assert json.dumps(release.plan_closure("rnn")) == '["rnn"]'


@pytest.mark.parametrize("name", available())
def test_every_assignment_releases(name, tmp_path):
    """Each of the course's assignments builds, hand-written templates (memory) included."""
    plan = load_plan(name)
    r = release.release(name, tmp_path / name)
    assert r.student_file.read_text() == (ROOT / "student_template" / f"{plan.module}.py").read_text()
    target = "." if plan.graded_files else r.student_file.name
    assert f"TARGET=${{1:-{target}}}" in (tmp_path / name / "selfcheck.sh").read_text()


def test_a_weights_assignment_is_checked_on_the_folder(tmp_path, monkeypatch):
    """memory: `seqgrade check memory` in the student's folder (or on memory.py) reads the weights beside it."""
    r = release.release("memory", tmp_path / "memory")
    shutil.copy(ROOT / "examples" / "memory" / "gru" / "memory_weights.npz", r.out / "memory_weights.npz")
    monkeypatch.chdir(r.out)
    for args in (["check", "memory"], ["check", "memory", "memory.py"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert "3 of 3 public checks passed" in result.output
