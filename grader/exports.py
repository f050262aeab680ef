"""Grades out to where instructors keep them: `seqgrade export OUT --roster R ...`.

    gradebook(results, roster, ...)  -> DataFrame   a row per rostered student (missing ones included) and
                                                    per unmatched submission, with status, late penalty, final
    write_canvas(df, path, column)                  Canvas's gradebook import CSV (Student, ID, SIS User ID,
                                                    SIS Login ID, Section, "<assignment>"; Points Possible)
    write_csv(df, path) / write_excel(df, path)     plain gradebook; Excel adds a sheet of what needs a look

Late policy (optional): `LatePolicy(due, per_day, max_days, grace_minutes)`: each started day after the due
time (after the grace) costs `per_day` of the score; after `max_days` the score is 0. Submission times come
from `seqgrade collect`'s collect.csv (Gradescope exports carry them); Canvas downloads only say LATE, which
is reported, not penalised.

pandas lives here for the tables; openpyxl is needed for .xlsx only (pandas' Excel writer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from grader.errors import ConfigError, InputError
from grader.report import atomic_write, csv_safe
from grader.roster import MANIFEST, Roster, parse_entry, parse_time, read_manifest

CANVAS_KEYS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")


@dataclass(frozen=True)
class LatePolicy:
    due: datetime
    per_day: float = 0.1  # fraction of the score lost per started day late
    max_days: float | None = None  # later than this: score 0
    grace_minutes: float = 0.0

    def penalty(self, submitted: datetime | None) -> tuple[float, float]:
        """(days late, fraction of the score lost); (0, 0) when on time or the time is unknown."""
        if submitted is None:
            return 0.0, 0.0
        due = self.due
        if (due.tzinfo is None) != (submitted.tzinfo is None):
            raise ConfigError("the due date and the submission times must both have a time zone, or neither")
        late = submitted - due - timedelta(minutes=self.grace_minutes)
        if late <= timedelta(0):
            return 0.0, 0.0
        days = late.total_seconds() / 86400
        if self.max_days is not None and days > self.max_days:
            return days, 1.0
        return days, min(1.0, self.per_day * math.ceil(days))


def gradebook(
    results: list[dict[str, Any]],
    roster: Roster,
    *,
    manifest: dict[str, dict[str, str]] | None = None,
    late: LatePolicy | None = None,
):
    """A row per rostered student (graded or missing) and per unmatched submission (status unmatched)."""
    import pandas as pd

    manifest = manifest or {}
    functions: list[str] = []
    for r in results:
        for fn in r["extra_data"].get("functions", {}):
            if fn not in functions:
                functions.append(fn)
    max_score = float(results[0]["max_score"]) if results else 0.0
    by_key: dict[str, dict[str, Any]] = {}
    unmatched: list[dict[str, Any]] = []
    for r in results:
        sid = str(r["extra_data"]["student"])
        row_meta = manifest.get(sid, {})
        student = roster.by_key(row_meta.get("student", "")) if row_meta.get("student") else None
        student = student or roster.by_key(sid) or _recognise(sid, roster)
        submitted = parse_time(row_meta.get("submitted_at", "")) if row_meta.get("submitted_at") else None
        flagged_late = row_meta.get("late") == "yes" or parse_entry(sid).late
        days, lost = late.penalty(submitted) if late else (0.0, 0.0)
        raw = float(r["score"])
        row: dict[str, Any] = {
            "student": student.key if student else sid,
            "name": student.name if student else "",
            "email": student.email if student else "",
            "section": student.section if student else "",
            "status": "graded" if student else "unmatched",
            "submission": sid,
            **{fn: r["extra_data"].get("functions", {}).get(fn, {}).get("score") for fn in functions},
            "raw_score": raw,
            "submitted_at": submitted.isoformat() if submitted else "",
            "late": "yes" if (days > 0 or flagged_late) else "",
            "days_late": round(days, 3),
            "late_penalty": round(lost, 4),
            "score": round(raw * (1 - lost), 4),
            "max_score": float(r["max_score"]),
            "loaded": not r["extra_data"].get("import_error"),
        }
        if late and flagged_late and submitted is None:
            row["late"] = "yes (no time: not penalised)"
        if student is None:
            unmatched.append(row)
        elif student.key in by_key:  # two submissions for one student: keep the better-scoring, say so
            prev = by_key[student.key]
            keep, other = (row, prev) if row["score"] > prev["score"] else (prev, row)
            keep["status"] = f"graded (also submitted {other['submission']})"
            by_key[student.key] = keep
        else:
            by_key[student.key] = row
    rows = []
    for s in roster.students:
        rows.append(
            by_key.get(s.key)
            or {
                "student": s.key,
                "name": s.name,
                "email": s.email,
                "section": s.section,
                "status": "missing",
                "submission": "",
                **{fn: None for fn in functions},
                "raw_score": None,
                "submitted_at": "",
                "late": "",
                "days_late": None,
                "late_penalty": None,
                "score": None,
                "max_score": max_score,
                "loaded": None,
            }
        )
    rows += unmatched
    df = pd.DataFrame(rows)
    if not df.empty:
        df["percent"] = (100 * df["score"].astype(float) / df["max_score"].astype(float)).round(2)
    return df


def _recognise(sid: str, roster: Roster):
    for token in parse_entry(sid).tokens:
        s = roster.lookup(token)
        if s is not None:
            return s
    return None


def _cells(df):
    """Every text cell made formula-safe (pandas >= 2.1 calls it map, older ones applymap)."""
    return df.map(csv_safe) if hasattr(df, "map") else df.applymap(csv_safe)


def write_csv(df, path: Path) -> Path:
    atomic_write(Path(path), _cells(df).to_csv(index=False))
    return Path(path)


def write_excel(df, path: Path) -> Path:
    """The gradebook sheet, plus a 'needs a look' sheet: unmatched, missing, late, not loadable."""
    import io

    import pandas as pd

    try:
        import openpyxl  # noqa: F401
    except ImportError:
        raise ConfigError("writing .xlsx needs openpyxl: pip install openpyxl (or export --csv)") from None
    look = df[(df["status"] != "graded") | (df["late"] != "") | (df["loaded"] == False)]  # noqa: E712
    buf = io.BytesIO()
    with pd.ExcelWriter(buf, engine="openpyxl") as xw:
        _cells(df).to_excel(xw, sheet_name="gradebook", index=False)
        _cells(look).to_excel(xw, sheet_name="needs a look", index=False)
    atomic_write(Path(path), buf.getvalue())
    return Path(path)


def write_canvas(df, roster: Roster, path: Path, *, column: str, missing: str = "blank") -> Path:
    """Canvas's gradebook import: the identity columns Canvas matches on, then one assignment column.

    `column` is the assignment's header as Canvas shows it in its own export ("RNN (123456)" updates that
    assignment; a new name creates one). Missing students get a blank (Canvas leaves their grade alone) or
    0 with `missing="zero"`. Unmatched submissions cannot be imported and are left out (listed by the CLI).
    """
    import pandas as pd

    if missing not in ("blank", "zero"):
        raise ConfigError("missing must be 'blank' or 'zero'")
    if not any(s.canvas_id or s.sis_id or s.login for s in roster.students):
        raise ConfigError(
            "the roster has no Canvas ID, SIS User ID or SIS Login ID column: export the Canvas "
            "gradebook and use that CSV as --roster"
        )
    scores = {row["student"]: row["score"] for row in df.to_dict("records") if row["status"] != "unmatched"}
    max_score = df["max_score"].dropna().max() if not df.empty else 0
    rows = [
        {
            "Student": "    Points Possible",
            "ID": "",
            "SIS User ID": "",
            "SIS Login ID": "",
            "Section": "",
            column: max_score,
        }
    ]
    for s in roster.students:
        score = scores.get(s.key)
        if score is None or (isinstance(score, float) and math.isnan(score)):
            score = 0 if missing == "zero" else ""
        rows.append(
            {
                "Student": s.name,
                "ID": s.canvas_id,
                "SIS User ID": s.sis_id,
                "SIS Login ID": s.login,
                "Section": s.section,
                column: score,
            }
        )
    out = pd.DataFrame(rows, columns=[*CANVAS_KEYS, column])
    atomic_write(Path(path), _cells(out).to_csv(index=False))
    return Path(path)


def load_reports(out: Path) -> list[dict[str, Any]]:
    from grader.classreport import load_results

    if not Path(out).is_dir():
        raise InputError(f"{out}: not a report folder (run seqgrade grade ... --out {out} first)")
    results = load_results(out)
    if not results:
        raise InputError(f"{out}: no per-student reports (<student>.json) found")
    return results


def find_manifest(submissions: Path | None) -> dict[str, dict[str, str]]:
    if submissions is None:
        return {}
    p = Path(submissions)
    p = p / MANIFEST if p.is_dir() else p
    if not p.is_file():
        raise InputError(f"{p}: no {MANIFEST} (made by seqgrade collect)")
    return read_manifest(p)
