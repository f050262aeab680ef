"""The class report: `seqgrade report OUT` writes OUT/summary.html from the per-student reports of a run.

One self-contained page (inline CSS, plots as base64 PNGs, no script, no network): a score histogram, the
pass rate of every check, the most common failure messages with counts, a table linking each student's
feedback, and pairs of submissions whose code is similar enough to deserve a look.

Similarity (`similar_pairs`) works like MOSS on a normalised AST: docstrings, imports, annotations and
constants are dropped, local names are renamed in order of appearance (so renaming variables or reformatting
changes nothing), the tree is flattened into tokens in source order, and the k-grams of tokens are compared
with Jaccard similarity. k-grams of the handed-out template are removed first, so unchanged stubs never match.
It is a pointer for a human, never evidence on its own.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import html
import io
import re
import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader import report

K_GRAM = 10
MIN_GRAMS = 15  # submissions with less own code than this (after removing the template) are not compared


# ----------------------------------------------------------------------------------------------- results


def load_results(out: Path) -> list[dict[str, Any]]:
    """Every per-student report (OUT/<student>.json) of a grading run, sorted by student."""
    results = []
    for p in sorted(Path(out).glob("*.json")):
        data = report.read_student(p)
        if (
            isinstance(data, dict)
            and isinstance(data.get("extra_data"), dict)
            and "student" in data["extra_data"]
        ):
            data["_stem"] = p.stem
            results.append(data)
    return sorted(results, key=lambda d: str(d["extra_data"]["student"]))


def check_key(test_name: str) -> str:
    """'rnn_step: forward (hidden, float32, B=3 ...)' -> 'rnn_step: forward'."""
    return test_name.split(" (")[0]


_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def normalise_message(message: str) -> str:
    """Failure messages with the numbers blanked, so one mistake made by many students counts once."""
    text = _NUM.sub("#", message.strip().splitlines()[0] if message.strip() else "")
    return re.sub(r"\s+", " ", text)[:240]


@dataclass(frozen=True)
class CheckRate:
    key: str
    students_passing: int
    students: int
    entries_passed: int
    entries: int


def check_rates(results: list[dict[str, Any]]) -> list[CheckRate]:
    per: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        for t in r.get("tests", []):
            per[check_key(t["name"])][r["extra_data"]["student"]].append(t["status"] == "passed")
    rates = []
    for key, by_student in per.items():
        flat = [ok for oks in by_student.values() for ok in oks]
        rates.append(
            CheckRate(key, sum(all(v) for v in by_student.values()), len(by_student), sum(flat), len(flat))
        )
    return rates


def common_failures(results: list[dict[str, Any]], *, top: int = 15) -> list[tuple[str, str, int, str]]:
    """(check, normalised message, number of students, an example message), most frequent first."""
    students: dict[tuple[str, str], set[str]] = defaultdict(set)
    example: dict[tuple[str, str], str] = {}
    for r in results:
        if r["extra_data"].get("import_error"):  # one entry for the loading failure, not one per check
            key = ("(loading)", normalise_message(r["extra_data"]["import_error"]))
            students[key].add(r["extra_data"]["student"])
            example.setdefault(key, r["extra_data"]["import_error"])
            continue
        for t in r.get("tests", []):
            if t["status"] == "failed":
                key = (check_key(t["name"]), normalise_message(t.get("output", "")))
                students[key].add(r["extra_data"]["student"])
                example.setdefault(key, t.get("output", ""))
    ranked = sorted(students.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [(k[0], k[1], len(v), example[k]) for k, v in ranked[:top]]


# ----------------------------------------------------------------------------------------------- similarity


def _strip(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def tokens(source: str, *, keep: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Normalised token streams, one per top-level function ('<module>' for the rest); {} if unparsable.

    Names bound in the submission (arguments, locals, helpers) become v0, v1, ... in order of first use,
    except those in `keep` (the graded functions' names); attributes (torch.tanh, x.T) are kept.
    """
    try:
        tree = _strip(ast.parse(source))
    except (SyntaxError, ValueError):
        return {}
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    bound |= {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    bound |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    bound -= keep
    streams: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        name = node.name if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else "<module>"
        names: dict[str, str] = {}
        streams.setdefault(name, []).extend(_walk(node, bound, names))
    return streams


def _walk(node: ast.AST, bound: set[str], names: dict[str, str]) -> Iterator[str]:
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.expr_context)):
        return
    if isinstance(node, ast.Constant):
        yield "C"
        return
    if isinstance(node, ast.Name):
        yield names.setdefault(node.id, f"v{len(names)}") if node.id in bound else node.id
        return
    if isinstance(node, ast.arg):
        yield names.setdefault(node.arg, f"v{len(names)}") if node.arg in bound else node.arg
        return
    yield type(node).__name__
    if isinstance(node, ast.Attribute):
        yield from _walk(node.value, bound, names)
        yield "." + node.attr
        return
    for field, value in ast.iter_fields(node):
        if field in ("annotation", "returns", "type_comment", "decorator_list"):
            continue
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, ast.AST):
                yield from _walk(child, bound, names)


def grams(stream: list[str], k: int = K_GRAM) -> set[int]:
    return {
        int.from_bytes(hashlib.blake2b(" ".join(stream[i : i + k]).encode(), digest_size=8).digest(), "big")
        for i in range(max(0, len(stream) - k + 1))
    }


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    similarity: float
    functions: tuple[tuple[str, float], ...]  # most similar functions first


def similar_pairs(
    sources: dict[str, str], *, template: str = "", keep: frozenset[str] = frozenset(), threshold: float = 0.8
) -> list[Pair]:
    """Pairs of students whose normalised code has Jaccard similarity >= threshold, most similar first."""
    base = set().union(*[grams(s) for s in tokens(template, keep=keep).values()]) if template else set()
    prints: dict[str, dict[str, set[int]]] = {}
    for student, src in sources.items():
        per_fn = {fn: grams(s) - base for fn, s in tokens(src, keep=keep).items()}
        if sum(len(g) for g in per_fn.values()) >= MIN_GRAMS:
            prints[student] = per_fn
    whole = {s: set().union(*fns.values()) for s, fns in prints.items()}
    names = sorted(prints)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            sim = _jaccard(whole[a], whole[b])
            if sim >= threshold:
                fns = sorted(
                    ((f, _jaccard(prints[a][f], prints[b].get(f, set()))) for f in prints[a] if prints[a][f]),
                    key=lambda x: -x[1],
                )
                pairs.append(Pair(a, b, sim, tuple(fns)))
    return sorted(pairs, key=lambda p: (-p.similarity, p.a, p.b))


def _jaccard(x: set[int], y: set[int]) -> float:
    return len(x & y) / len(x | y) if x or y else 0.0


def submission_sources(submissions: Path, assignment: str) -> dict[str, str]:
    """student -> source of their module, as `seqgrade grade` reads it (zips and notebooks included)."""
    import shutil
    import tempfile

    from grader.loader import discover
    from grader.plan import load_plan

    plan = load_plan(assignment)
    tmp = Path(tempfile.mkdtemp(prefix="seqgrade-sim-"))
    try:
        subs = discover(Path(submissions), plan.module, workdir=tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out: dict[str, str] = {}
    for s in subs:
        data = s.files.get(f"{plan.module}.py")
        if data is not None:
            key = s.student if s.student not in out else f"{s.student}~{len(out)}"
            out[key] = data.decode("utf-8", "replace")
    return out


# ----------------------------------------------------------------------------------------------- plots


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def histogram_png(percents: list[float]) -> str:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    ax.hist(percents, bins=[i * 5 for i in range(21)], color="#3b6ea8", edgecolor="white")
    ax.set_xlabel("score (% of points)")
    ax.set_ylabel("students")
    ax.set_xlim(0, 100)
    ax.yaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


def pass_rate_png(rates: list[CheckRate]) -> str:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rates = rates[:40]
    fig, ax = plt.subplots(figsize=(6.4, 0.28 * len(rates) + 0.8))
    ax.barh(
        [r.key for r in rates][::-1],
        [100 * r.students_passing / max(r.students, 1) for r in rates][::-1],
        color="#4c9a6a",
    )
    ax.set_xlim(0, 100)
    ax.set_xlabel("students passing every case (%)")
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


# ----------------------------------------------------------------------------------------------- the page

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:70em;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#a11}.ok{color:#176b34}.muted{color:#777}code{font-size:.92em}
img{max-width:100%}.stats span{display:inline-block;margin-right:1.6em}
"""


def render(
    results: list[dict[str, Any]],
    *,
    title: str,
    pairs: list[Pair] | None,
    threshold: float,
    links_to: Path | None = None,
) -> str:
    e = html.escape
    n = len(results)
    scores = [float(r["score"]) for r in results]
    max_score = float(results[0].get("max_score") or 0) if results else 0.0
    percents = [100 * s / max_score if max_score else 0.0 for s in scores]
    rates = sorted(check_rates(results), key=lambda r: (r.students_passing / max(r.students, 1), r.key))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{e(title)}</h1>",
    ]
    if not n:
        parts += ["<p>No graded submissions were found.</p>", "</body>", "</html>"]
        return "\n".join(parts) + "\n"
    full = sum(1 for s in scores if abs(s - max_score) < 1e-6)
    unloadable = sum(1 for r in results if r["extra_data"].get("import_error"))
    parts.append(
        '<p class="stats">'
        + "".join(
            f"<span>{e(x)}</span>"
            for x in (
                f"{n} submissions",
                f"mean {statistics.fmean(scores):.2f} / {max_score:g}",
                f"median {statistics.median(scores):.2f}",
                f"full marks: {full}",
                f"not loadable: {unloadable}",
            )
        )
        + "</p>"
    )
    parts += [
        "<h2>Scores</h2>",
        f'<img alt="histogram of scores" src="data:image/png;base64,{histogram_png(percents)}">',
    ]

    parts += [
        "<h2>Pass rate per check</h2>",
        f'<img alt="pass rate per check" src="data:image/png;base64,{pass_rate_png(rates)}">',
        "<table><thead><tr><th>check</th><th>students passing every case</th><th>cases passed</th></tr>"
        "</thead><tbody>",
    ]
    for r in rates:
        pct = 100 * r.students_passing / max(r.students, 1)
        cls = "ok" if pct >= 80 else ("bad" if pct < 50 else "")
        parts.append(
            f'<tr><td><code>{e(r.key)}</code></td><td class="n {cls}">{r.students_passing} / '
            f'{r.students} ({pct:.0f}%)</td><td class="n">{r.entries_passed} / {r.entries}</td></tr>'
        )
    parts.append("</tbody></table>")

    failures = common_failures(results)
    parts += ["<h2>Most common failures</h2>"]
    if failures:
        parts.append(
            "<table><thead><tr><th>students</th><th>check</th><th>message (numbers as #)</th>"
            "<th>one instance</th></tr></thead><tbody>"
        )
        for key, msg, count, ex in failures:
            parts.append(
                f'<tr><td class="n">{count}</td><td><code>{e(key)}</code></td><td>{e(msg)}</td>'
                f'<td class="muted">{e(ex[:300])}</td></tr>'
            )
        parts.append("</tbody></table>")
    else:
        parts.append("<p>No check failed.</p>")

    parts += ["<h2>Similar submissions</h2>"]
    if pairs is None:
        parts.append(
            '<p class="muted">Not computed: run <code>seqgrade report OUT --submissions DIR</code> to '
            "compare the submissions' code.</p>"
        )
    elif not pairs:
        parts.append(f"<p>No pair at or above similarity {threshold:.2f}.</p>")
    else:
        parts.append(
            f"<p>Normalised-AST similarity (renaming and reformatting do not hide a copy; the template "
            f"is ignored) at or above {threshold:.2f}. A pointer for a human look, not evidence.</p>"
        )
        parts.append(
            "<table><thead><tr><th>similarity</th><th>student</th><th>student</th>"
            "<th>most similar functions</th></tr></thead><tbody>"
        )
        for p in pairs:
            fns = ", ".join(f"<code>{e(f)}</code> {s:.2f}" for f, s in p.functions[:4])
            parts.append(
                f'<tr><td class="n">{p.similarity:.2f}</td><td>{e(p.a)}</td><td>{e(p.b)}</td>'
                f"<td>{fns}</td></tr>"
            )
        parts.append("</tbody></table>")

    parts += [
        "<h2>Students</h2>",
        "<table><thead><tr><th>student</th><th>score</th><th>%</th>"
        "<th>failed checks</th><th>feedback</th></tr></thead><tbody>",
    ]
    for r, pct in zip(results, percents, strict=True):
        stem = r.get("_stem") or report.file_stem(r["extra_data"]["student"])
        failed = sum(t["status"] == "failed" for t in r.get("tests", []))
        note = ' <span class="bad">(not loadable)</span>' if r["extra_data"].get("import_error") else ""
        md = f"{stem}.md"
        link = (
            f'<a href="{e(md, quote=True)}">feedback</a> · '
            if links_to is None or (links_to / md).exists()
            else ""
        )
        parts.append(
            f"<tr><td>{e(str(r['extra_data']['student']))}{note}</td>"
            f'<td class="n">{float(r["score"]):.2f} / {float(r.get("max_score") or 0):g}</td>'
            f'<td class="n">{pct:.0f}</td><td class="n">{failed}</td>'
            f'<td>{link}<a href="{e(stem + ".json", quote=True)}">json</a></td></tr>'
        )
    parts += ["</tbody></table>", f'<p class="muted">{e(report.GRADER_VERSION)}</p>', "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def write_report(
    out: Path, *, submissions: Path | None = None, threshold: float = 0.8, title: str | None = None
) -> Path:
    """Write OUT/summary.html. With `submissions` (what was graded), code-similarity pairs are included."""
    from grader.errors import InputError

    out = Path(out)
    if not out.is_dir():
        raise InputError(f"{out}: not a report folder (run seqgrade grade ... --out {out} first)")
    results = load_results(out)
    assignments = sorted({str(r["extra_data"].get("assignment", "")) for r in results} - {""})
    assignment = assignments[0] if len(assignments) == 1 else ""
    pairs = None
    if submissions is not None:
        if not assignment:
            raise InputError(f"{out}: the reports name {len(assignments)} assignments; cannot compare code")
        from grader.plan import load_plan

        plan = load_plan(assignment)
        template_path = Path(__file__).resolve().parent.parent / "student_template" / f"{plan.module}.py"
        template = template_path.read_text() if template_path.is_file() else ""
        keep = frozenset(f.name for f in plan.functions)
        pairs = similar_pairs(
            submission_sources(submissions, assignment), template=template, keep=keep, threshold=threshold
        )
    page = render(
        results,
        title=title or f"{assignment or 'seqgrade'}: class report",
        pairs=pairs,
        threshold=threshold,
        links_to=out,
    )
    path = out / "summary.html"
    report.atomic_write(path, page)
    return path
