"""Build what students get: `seqgrade release ASSIGNMENT --out DIR`.

    DIR/
      README.md                       the handout (assignments/<name>/README.md) + how to self-check
      <module>.py  or  <module>.ipynb the template: stubs with the reference's signatures and docstrings
      selfcheck.sh                    installs the checker if needed and runs `seqgrade check` (CI writes
                                      its result to the GitHub job summary)
      .github/workflows/selfcheck.yml runs selfcheck.sh on every push (GitHub Classroom)
      seqgrade-check/                 a pip-installable self-check: grader/, the plan, the public cases

Nothing of the reference or the secret goes out: the template is regenerated from the reference and must
equal student_template/<module>.py (so the two cannot drift apart), the public cases must equal a fresh
build, and before returning, every released file is scanned for any function body of the reference and for
the secret's bytes. Each failure is a ConfigError naming the file and the fix.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from grader.errors import ConfigError
from grader.plan import Plan, load_plan

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DIR = ROOT / "student_template"
WORKFLOW = TEMPLATE_DIR / ".github" / "workflows" / "selfcheck.yml"
CHECKER = "seqgrade-check"
INSTRUCTOR_ONLY = ("matplotlib", "openpyxl")  # dependencies the self-check never imports
PLACEHOLDER = "__ASSIGNMENT__"


@dataclass
class Release:
    out: Path
    student_file: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def release(
    assignment: str, out: Path, *, fmt: str = "py", overwrite: bool = False, check_public: bool = True
) -> Release:
    """Write the student release of `assignment` into `out` (which must be empty unless `overwrite`)."""
    if fmt not in ("py", "ipynb"):
        raise ConfigError(f"unknown template format {fmt!r} (py or ipynb)")
    plan = load_plan(assignment)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} is not empty (use --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []

    template = checked_template(plan)
    if fmt == "py":
        student_file = out / f"{plan.module}.py"
        student_file.write_text(template)
    else:
        import nbformat

        student_file = out / f"{plan.module}.ipynb"
        nbformat.write(notebook_from_template(template, plan), str(student_file))

    handout = ROOT / "assignments" / plan.name / "README.md"
    if handout.is_file():
        text = handout.read_text()
    else:
        text = default_handout(plan)
        notes.append(f"assignments/{plan.name}/README.md is missing: the release has a generated handout")
    # a plan that grades files (weights) is checked on the whole folder, where the files lie beside the code
    target = "." if plan.graded_files else student_file.name
    (out / "README.md").write_text(
        text.rstrip() + "\n\n" + selfcheck_section(plan, student_file.name, target)
    )

    public = TEMPLATE_DIR / f"{plan.name}_public.npz"
    if not public.is_file():
        raise ConfigError(
            f"{public.relative_to(ROOT)} is missing: run python -m grader.cases build-public {plan.name}"
        )
    if check_public:
        _check_public_current(plan, public)
    write_checker(plan, out / CHECKER, public)

    script = out / "selfcheck.sh"
    script.write_text(selfcheck_script(plan, target))
    script.chmod(0o755)
    wf = out / ".github" / "workflows" / "selfcheck.yml"
    wf.parent.mkdir(parents=True, exist_ok=True)
    wf.write_text(WORKFLOW.read_text().replace(PLACEHOLDER, plan.name))
    (out / ".gitignore").write_text("__pycache__/\n*.egg-info/\nbuild/\n.venv/\n")

    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert_nothing_secret(plan, files)
    return Release(out, student_file, files, notes)


# ----------------------------------------------------------------------------------------------- template


def checked_template(plan: Plan) -> str:
    """The template generated from the reference; it must equal student_template/<module>.py if present.
    Where the reference defines no function for students to write (memory: they train and submit weights),
    the template is written by hand and shipped as it is."""
    from grader.template import template_for

    fresh = template_for(plan.name)
    shipped = TEMPLATE_DIR / f"{plan.module}.py"
    if "raise NotImplementedError" not in fresh:
        if not shipped.is_file():
            raise ConfigError(f"student_template/{plan.module}.py is missing (it is written by hand)")
        return shipped.read_text()
    if shipped.is_file() and shipped.read_text() != fresh:
        raise ConfigError(
            f"student_template/{plan.module}.py differs from what the reference generates: "
            f"run python -m grader.template {plan.name} (or fix the reference's docstrings)"
        )
    return fresh


def notebook_from_template(template: str, plan: Plan):
    """A notebook version of the template: the docstring as a title cell, a cell per function, a check cell.

    The grader reads the notebook's code cells as one module (grader.loader.notebook_to_source), so the
    stubs keep exactly the template's signatures; the `!seqgrade check` line is stripped when grading.
    """
    import nbformat

    tree = ast.parse(template)
    lines = template.splitlines()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    title = plan.title or f"Assignment {plan.name}"
    doc = ast.get_docstring(tree) or ""
    cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n{_md_text(doc)}".rstrip())]
    imports = [
        ast.get_source_segment(template, n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
    ]
    if imports:
        cells.append(nbformat.v4.new_code_cell("\n".join(s for s in imports if s)))
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        start = node.lineno - 1 - len(node.decorator_list)
        src = "\n".join(lines[start : node.end_lineno])
        try:
            fn = plan.function(node.name)
            head = f"## `{fn.signature or node.name}` ({fn.points:g} points)"
        except ConfigError:
            head = f"## `{node.name}`"
        cells.append(nbformat.v4.new_markdown_cell(head))
        cells.append(nbformat.v4.new_code_cell(src))
    cells.append(
        nbformat.v4.new_markdown_cell(
            "## Self-check\n\nSave the notebook, then run the cell below: it runs the public cases on this "
            "notebook and prints what passed and why not. The grade is decided by hidden cases of other "
            "shapes and values."
        )
    )
    cells.append(nbformat.v4.new_code_cell(f"!seqgrade check {plan.name} {plan.module}.ipynb"))
    nb.cells = cells
    return nb


def _md_text(doc: str) -> str:
    """A module docstring as Markdown: indented blocks stay code; the self-check line is dropped."""
    kept = [ln for ln in doc.splitlines() if not ln.strip().startswith("Self-check:")]
    return "\n".join(kept).strip()


def default_handout(plan: Plan) -> str:
    rows = "\n".join(f"| `{f.signature or f.name}` | {f.points:g} |" for f in plan.functions)
    return (
        f"# Assignment `{plan.name}` ({plan.max_score:g} points)\n\n{plan.title}\n\n"
        f"Implement the functions of `{plan.module}.py`.\n\n| function | points |\n|---|---|\n{rows}\n"
    )


def selfcheck_section(plan: Plan, student_file: str, target: str) -> str:
    """The handout's "Getting started": `target` is what `seqgrade check` is run on (the file, or `.`)."""
    return (
        "## Getting started\n\n"
        f"Your file is `{student_file}`. Install the self-check once (it brings the public cases, not the "
        "solutions):\n\n"
        f"    python -m pip install ./{CHECKER}\n\n"
        "then, after each change:\n\n"
        f"    seqgrade check {plan.name} {target}\n\n"
        + (
            f"(run in this folder: the check reads {' or '.join(plan.graded_files)} beside your code)\n\n"
            if plan.graded_files
            else ""
        )
        + "or `bash selfcheck.sh`, which installs the checker if needed and runs it. On GitHub, every push "
        "runs the same check (`.github/workflows/selfcheck.yml`) and shows the result in the job summary.\n"
    )


def selfcheck_script(plan: Plan, student_file: str) -> str:
    return f"""#!/usr/bin/env bash
# Self-check of `{plan.name}` on the public cases: bash selfcheck.sh [PATH] (default PATH: {student_file})
# Installs ./{CHECKER} first if `seqgrade` is not on PATH. In GitHub Actions the result also goes to the job
# summary. Exit status: 0 when every public check passes, 1 when some fail, 2 when the check could not run.
set -uo pipefail
cd "$(dirname "$0")"
ASSIGNMENT={plan.name}
TARGET=${{1:-{student_file}}}
if ! command -v seqgrade >/dev/null 2>&1; then
  echo "Installing the self-check (python -m pip install ./{CHECKER}) ..."
  python3 -m pip install -q ./{CHECKER} || exit 2
fi
output=$(seqgrade check "$ASSIGNMENT" "$TARGET" 2>&1)
status=$?
printf '%s\\n' "$output"
if [ -n "${{GITHUB_STEP_SUMMARY:-}}" ]; then
  passed=$(printf '%s\\n' "$output" | grep -c '^PASS' || true)
  failed=$(printf '%s\\n' "$output" | grep -c '^FAIL' || true)
  if [ "$status" -eq 0 ]; then headline=":white_check_mark: all $passed public checks pass"
  elif [ "$status" -eq 1 ]; then headline=":x: $failed of $((passed + failed)) public checks fail"
  else headline=":warning: the self-check could not run (exit $status)"; fi
  {{
    echo "## Self-check: \\`$ASSIGNMENT\\` on \\`$TARGET\\`"
    echo
    echo "$headline"
    echo
    echo '```text'
    printf '%s\\n' "$output"
    echo '```'
  }} >> "$GITHUB_STEP_SUMMARY"
fi
exit $status
"""


# ----------------------------------------------------------------------------------------------- checker


def write_checker(plan: Plan, dest: Path, public: Path) -> None:
    """A pip-installable copy of the grader with this assignment's plan and public cases, and no reference."""
    dest.mkdir(parents=True)
    shutil.copytree(ROOT / "grader", dest / "grader", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dest / "assignments").mkdir()
    (dest / "assignments" / "__init__.py").write_text("")
    for name in plan_closure(plan.name):
        src = ROOT / "assignments" / name
        (dest / "assignments" / name).mkdir()
        for f in ("__init__.py", "plan.py"):
            if (src / f).is_file():
                shutil.copy2(src / f, dest / "assignments" / name / f)
        (dest / "assignments" / name / "__init__.py").touch()
    (dest / "student_template").mkdir()
    (dest / "student_template" / "__init__.py").write_text("")
    shutil.copy2(public, dest / "student_template" / public.name)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = [d for d in project.get("dependencies", []) if not d.lower().startswith(INSTRUCTOR_ONLY)]
    packages = [
        "grader",
        "assignments",
        *[f"assignments.{n}" for n in plan_closure(plan.name)],
        "student_template",
    ]
    (dest / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "seqgrade-check-{plan.name}"\nversion = "{project.get("version", "0")}"\n'
        f'description = "Public self-check for the {plan.name} assignment (no reference, no hidden cases)"\n'
        f'requires-python = "{project.get("requires-python", ">=3.11")}"\n'
        f"dependencies = {json.dumps(deps)}\n\n"
        '[project.scripts]\nseqgrade = "grader.cli:entry"\n\n'
        f"[tool.setuptools]\npackages = {json.dumps(packages)}\n\n"
        '[tool.setuptools.package-data]\nstudent_template = ["*.npz"]\n'
    )


def plan_closure(name: str) -> list[str]:
    """The assignment and every assignment whose plan it imports (plans share helpers), in a stable order."""
    seen: list[str] = []
    todo = [name]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        path = ROOT / "assignments" / n / "plan.py"
        if not path.is_file():
            raise ConfigError(f"assignments/{n}/plan.py is missing (imported by a released plan)")
        seen.append(n)
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            for m in mods:
                parts = m.split(".")
                if parts[0] == "reference":
                    raise ConfigError(
                        f"assignments/{n}/plan.py imports {m}: plans must name the reference by "
                        "dotted path only, or the release would need it"
                    )
                if parts[0] == "assignments" and len(parts) > 1:
                    todo.append(parts[1])
    return seen


def _check_public_current(plan: Plan, public: Path) -> None:
    from grader import cases

    difference = cases.public_difference(plan, public)
    if difference:
        raise ConfigError(
            f"student_template/{public.name} is out of date with the plan or the reference ({difference}): "
            f"run python -m grader.cases build-public {plan.name}"
        )


# ----------------------------------------------------------------------------------------------- guard


def reference_bodies(plan: Plan) -> dict[str, str]:
    """Normalised bodies (docstring dropped) of every function in the plan's reference modules."""
    modules = {
        (f.reference.partition(":")[0] if f.reference else (plan.reference or f"reference.{plan.name}"))
        for f in plan.functions
    }
    bodies: dict[str, str] = {}
    for mod in modules:
        path = ROOT / (mod.replace(".", "/") + ".py")
        if path.is_file():
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    body = _body_dump(node)
                    if body:
                        bodies[body] = f"{mod}.{node.name}"
    return bodies


def _body_dump(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    if not body or (len(body) == 1 and isinstance(body[0], (ast.Raise, ast.Pass))):
        return ""  # a stub: sharing one with the reference reveals nothing
    return "\n".join(ast.dump(s) for s in body)


def assert_nothing_secret(plan: Plan, files: list[Path]) -> None:
    """Fail if a released file holds a reference module, a reference function's body, or the secret."""
    bodies = reference_bodies(plan)
    secret = _known_secret()
    for f in files:
        if "reference" in f.parts[-3:-1]:
            raise ConfigError(f"release would contain {f}: a reference module")
        data = f.read_bytes()
        if secret and secret in data:
            raise ConfigError(f"release would contain the instructor's secret in {f}")
        sources = []
        if f.suffix == ".py":
            sources.append(data.decode("utf-8", "replace"))
        elif f.suffix == ".ipynb":
            nb = json.loads(data)
            sources.extend(
                "".join(c.get("source", "")) for c in nb.get("cells", []) if c.get("cell_type") == "code"
            )
        for src in sources:
            try:
                tree = ast.parse(src)
            except SyntaxError:
                continue  # notebook cells with `!` lines; the .py files are ours and parse
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_dump(node) in bodies:
                    raise ConfigError(f"release would contain the body of {bodies[_body_dump(node)]} in {f}")


def _known_secret() -> bytes | None:
    from grader.cases import load_secret

    try:
        secret = load_secret(create=False)[0]
    except ConfigError:
        return None
    return secret if len(secret) >= 16 else None  # too short to search for without false alarms


def main(argv: list[str]) -> int:  # pragma: no cover - the CLI is `seqgrade release`
    r = release(argv[0], Path(argv[1]))
    print(r.out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
