"""Generate a student template from a reference module: same module docstring, imports, signatures and
docstrings; every function body replaced by `raise NotImplementedError`. The template and the reference
therefore cannot drift apart (tests/test_artifacts.py regenerates and compares).

    python -m grader.template NAME [NAME ...]     writes student_template/NAME.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from grader.plan import load_plan

ROOT = Path(__file__).resolve().parent.parent


def make_template(reference_source: str, functions: list[str], *, assignment: str) -> str:
    """Stubs for `functions` (in the reference's order), keeping the reference's docstrings."""
    tree = ast.parse(reference_source)
    lines = reference_source.splitlines()
    out: list[str] = []
    doc = ast.get_docstring(tree, clean=False)
    if doc is not None:
        out.append(f'"""{doc}')
        out.append("")
        out.append(f"Self-check: seqgrade check {assignment} {assignment}.py")
        out.append('"""')
        out.append("")
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not _imports_reference(node):
            out.extend(lines[node.lineno - 1 : node.end_lineno])
    constants = [n for n in tree.body if _is_constant(n)]
    if constants:
        out.append("")
        for node in constants:
            out.extend(lines[node.lineno - 1 : node.end_lineno])
    out.append("")
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in functions:
            body_start = node.body[0]
            has_doc = isinstance(body_start, ast.Expr) and isinstance(
                getattr(body_start, "value", None), ast.Constant
            )
            header_end = body_start.end_lineno if has_doc else body_start.lineno - 1
            out.append("")
            out.extend(lines[node.lineno - 1 - len(node.decorator_list) : header_end])
            out.append(f'    raise NotImplementedError("{node.name}: your code here")')
            out.append("")
    text = "\n".join(out).rstrip() + "\n"
    return text.replace("\n\n\n\n", "\n\n\n")


def _imports_reference(node: ast.Import | ast.ImportFrom) -> bool:
    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
    return any(n == "reference" or n.startswith("reference.") for n in names)


def _is_constant(node: ast.stmt) -> bool:
    """A top-level ALL_CAPS = <literal> assignment (token ids, sizes) that students need too."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Tuple):
        names = [e.id for e in node.targets[0].elts if isinstance(e, ast.Name)]
        name = "_".join(names) if len(names) == len(node.targets[0].elts) else "x"
        value = node.value
    elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        name, value = node.targets[0].id, node.value
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        name, value = node.target.id, node.value
    else:
        return False
    if not name.isupper():
        return False
    try:
        ast.literal_eval(value)
    except ValueError:
        return False
    return True


def template_for(name: str) -> str:
    plan = load_plan(name)
    ref_mod = (plan.reference or f"reference.{plan.name}").replace(".", "/") + ".py"
    source = (ROOT / ref_mod).read_text()
    return make_template(source, [f.name for f in plan.functions], assignment=name)


def main(argv: list[str]) -> int:
    for name in argv:
        path = ROOT / "student_template" / f"{load_plan(name).module}.py"
        path.write_text(template_for(name))
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
