"""Write reports: per-student JSON (Gradescope results.json fields) and Markdown feedback, the class
gradebook (pandas), and the one-screen summary. Every file is written atomically (temp file + rename),
so an interrupted run never leaves a half-written report that looks complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from grader.score import SubmissionResult

GRADER_VERSION = "seqgrade 0.1.0"


def atomic_write(path: Path, data: str | bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def file_stem(student: str) -> str:
    """A safe file name for a student id; ids that needed changes get a short hash to stay unique."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", student).strip("._")[:80]
    if slug != student or not slug:
        slug = f"{slug or 'student'}-{hashlib.sha256(student.encode()).hexdigest()[:6]}"
    return slug


def case_clashes(out: Path, students: list[str]) -> list[list[str]]:
    """Students whose report files would be one file in `out`: their stems differ only in case ("Alice"
    and "alice") and `out` does not tell case apart (vfat, exFAT, a macOS or Windows share). [] on a
    case-sensitive folder, the usual Linux one, where each keeps its own report."""
    groups: dict[str, list[str]] = {}
    for s in students:
        groups.setdefault(file_stem(s).lower(), []).append(s)
    clashes = [sorted(g) for g in groups.values() if len(g) > 1]
    return clashes if clashes and not case_sensitive(out) else []


def case_sensitive(folder: Path) -> bool:
    """Whether `folder` keeps "A" and "a" apart: a probe file with upper-case letters, looked up in lower case."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".seqgrade-CASE-", dir=folder)
    except OSError:  # not writable: writing the reports will say so
        return True
    os.close(fd)
    try:
        twin = os.path.join(os.path.dirname(probe), os.path.basename(probe).lower())
        return not os.path.exists(twin)
    finally:
        os.unlink(probe)


def to_results_json(r: SubmissionResult) -> dict[str, Any]:
    """Gradescope's results.json fields (score, max_score, tests[...], output, visibility) plus extras."""
    tests = [
        {
            "name": t.name,
            "score": round(t.score, 4),
            "max_score": round(t.max_score, 4),
            "status": "passed" if t.passed else "failed",
            "output": t.message,
            "visibility": t.visibility,
            "tags": [t.function, t.kind],
        }
        for t in r.tests
    ]
    summary = f"{r.score:.2f} / {r.max_score:g} points."
    if r.import_error:
        summary += f" The submission could not be loaded: {r.import_error}"
    return {
        "score": round(r.score, 4),
        "max_score": r.max_score,
        "output": summary,
        "stdout_visibility": "hidden",
        "visibility": "after_published",
        "tests": tests,
        "extra_data": {
            "student": r.student,
            "assignment": r.assignment,
            "functions": {k: {"score": round(v[0], 4), "max_score": v[1]} for k, v in r.functions.items()},
            "import_error": r.import_error,
            "notes": list(r.notes),
            "stdout_excerpt": r.output,
            "seconds": round(r.seconds, 3),
            "grader": GRADER_VERSION,
        },
    }


def feedback_markdown(r: SubmissionResult, *, hidden_note: bool = False) -> str:
    lines = [
        f"# {r.assignment}: feedback for {r.student}",
        "",
        f"**Score: {r.score:.2f} / {r.max_score:g}**",
        "",
    ]
    if r.import_error:
        lines += [f"Your submission could not be loaded: `{r.import_error}`", ""]
    for note in r.notes:
        lines.append(f"- note: {note}")
    lines += ["", "| function | points |", "|---|---|"]
    for name, (s, m) in r.functions.items():
        lines.append(f"| `{name}` | {s:.2f} / {m:g} |")
    failed = [t for t in r.tests if not t.passed]
    lines += ["", f"## What to fix ({len(failed)} checks failed)" if failed else "## All checks passed", ""]
    for t in failed:
        lines.append(f"- **{t.name}**: {t.message}")
    if hidden_note:
        lines += ["", "Public cases only: the grade is decided by hidden cases of other shapes and values."]
    if r.output.strip():
        lines += ["", "## Output of your code (excerpt)", "", "```", r.output[:4000].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def json_dumps(data: Any, depth: int = 2, level: int = 0) -> str:
    """JSON laid out for reading: the first `depth` levels indented, one line per deeper value (a test, a
    field of extra_data). Those lines come from json's C encoder: an indent anywhere makes json use its
    Python encoder instead, 3.5 times slower (0.7 ms of a 56-check report)."""
    if depth <= 0 or not isinstance(data, (dict, list)) or not data:
        return json.dumps(data, ensure_ascii=False)
    pad = "  " * (level + 1)
    if isinstance(data, dict):
        lines = [
            f"{pad}{json.dumps(str(k), ensure_ascii=False)}: {json_dumps(v, depth - 1, level + 1)}"
            for k, v in data.items()
        ]
        return "{\n" + ",\n".join(lines) + "\n" + "  " * level + "}"
    lines = [pad + json_dumps(v, depth - 1, level + 1) for v in data]
    return "[\n" + ",\n".join(lines) + "\n" + "  " * level + "]"


def read_student(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))  # as written, whatever the locale
    except (OSError, ValueError):
        return None


def report_files(out: Path) -> list[Path]:
    """The JSON files in `out`, in file-name order: student reports, and whatever else lies there."""
    return sorted(Path(out).glob("*.json"))


def read_report(path: Path) -> dict[str, Any] | None:
    """A student report (a results.json with extra_data.student), None for any other or unreadable file."""
    data = read_student(path)
    if (
        isinstance(data, dict)
        and isinstance(data.get("extra_data"), dict)
        and "student" in data["extra_data"]
    ):
        return data
    return None


def md_escape(text: str) -> str:
    """A student id or other untrusted text, safe inside Markdown (no HTML, no emphasis, no links)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]()#!|~])", r"\\\1", text)


def csv_safe(value: Any) -> Any:
    """Neutralise spreadsheet formulas in text cells (=, +, -, @, tab, CR lead a formula)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_gradebook(out: Path, results: list[dict[str, Any]]) -> Path:
    """gradebook.csv: a row per student, a column per function, total and percentage."""
    import pandas as pd

    rows = []
    for res in results:
        extra = res.get("extra_data", {})
        row: dict[str, Any] = {"student": csv_safe(extra.get("student", ""))}
        for fn, v in extra.get("functions", {}).items():
            row[fn] = v["score"]
        row["total"] = res["score"]
        row["max_score"] = res["max_score"]
        row["percent"] = round(100 * res["score"] / res["max_score"], 2) if res["max_score"] else 0.0
        row["loaded"] = not extra.get("import_error")
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values("student", key=lambda s: s.astype(str)).reset_index(drop=True)
    path = out / "gradebook.csv"
    atomic_write(path, df.to_csv(index=False))
    return path


def summary_text(results: list[dict[str, Any]], *, seconds: float, graded: int | None = None) -> str:
    """The run in a few lines: `graded` submissions graded now; the figures below cover every report."""
    n = len(results)
    if not n:
        return "No submissions graded."
    graded = n if graded is None else graded
    scores = [r["score"] for r in results]
    max_score = results[0]["max_score"]
    full = sum(1 for s in scores if abs(s - max_score) < 1e-6)
    failed = Counter(t["name"].split(" (")[0] for r in results for t in r["tests"] if t["status"] == "failed")
    lines = [
        f"Graded {graded} submission{'s' * (graded != 1)} in {seconds:.1f} s ({graded / max(seconds, 1e-9):.1f}/s)."
        + (f" {n} reports in all." if graded != n else ""),
        f"Mean {sum(scores) / n:.2f} / {max_score:g}; full marks: {full}; "
        f"not loadable: {sum(1 for r in results if r['extra_data'].get('import_error'))}.",
    ]
    if failed:
        lines.append("Most failed checks:")
        for name, count in failed.most_common(6):
            lines.append(f"  {count:4d} x {name}")
    return "\n".join(lines)


def as_dict(r: SubmissionResult) -> dict[str, Any]:
    return dataclasses.asdict(r)
