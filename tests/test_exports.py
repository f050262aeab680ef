"""From a Gradescope export to grades in Canvas, as an instructor does it: collect -> grade -> export
(Canvas import CSV, plain CSV, Excel), with a late policy from the submission times."""

from __future__ import annotations

import csv
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from grader import exports, pipeline
from grader.cli import main
from grader.errors import ConfigError
from grader.roster import Roster, collect, parse_time

ROOT = Path(__file__).resolve().parent.parent
CANVAS_ROSTER = """Student,ID,SIS User ID,SIS Login ID,Section,RNN (999)
    Points Possible,,,,,10
"Lovelace, Ada",101,S001,ada,Sec A,
"Turing, Alan",102,S002,alan,Sec A,
"Hopper, Grace",103,S003,grace,Sec B,
"Noether, Emmy",104,S004,emmy,Sec B,
"Student, Test",105,,,Sec B,
"""

GS_METADATA = """---
submission_9001:
  :submitters:
  - :name: Ada Lovelace
    :sid: S001
    :email: ada@uni.edu
  :created_at: 2025-03-01 10:00:00.123456789 -08:00
  :score: 0.0
submission_9002:
  :submitters:
  - :name: Alan Turing
    :sid: 'S002'
    :email: alan@uni.edu
  - :name: Someone Else
    :sid: S777
    :email: else@uni.edu
  :created_at: 2025-03-04 12:00:00.000000000 -08:00
submission_9003:
  :submitters:
  - :name: Mallory Intruder
    :sid: S999
    :email: mallory@elsewhere.org
  :created_at: 2025-03-01 09:00:00.000000000 -08:00
"""

EXAMPLES = ROOT / "examples" / "rnn"
EMMY_METADATA = """submission_9004:
  :submitters:
  - :name: Emmy Noether
    :sid: ''
    :email: emmy@uni.edu
  :created_at: 2025-03-02 00:30:00.000000000 -08:00
"""
DUE = "2025-03-02T00:00:00-08:00"


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> dict[str, Path]:
    """A Gradescope export (Ada correct on time, Alan buggy 2.5 days late, Emmy correct in the grace period,
    Mallory not in the roster, Grace did not submit), collected and graded."""
    base = tmp_path_factory.mktemp("course")
    roster = base / "roster.csv"
    roster.write_text(CANVAS_ROSTER.replace('"Hopper, Grace"', '"=HYPERLINK(""http://x"")"'))
    export = base / "export"
    export.mkdir()
    (export / "submission_metadata.yml").write_text(GS_METADATA + EMMY_METADATA)
    for sid, src in (
        ("9001", "correct.py"),
        ("9002", "buggy.py"),
        ("9003", "correct.py"),
        ("9004", "correct.py"),
    ):
        (export / f"submission_{sid}").mkdir()
        shutil.copy(EXAMPLES / src, export / f"submission_{sid}" / "rnn.py")
    collected = base / "collected"
    collect(export, Roster.from_csv(roster), collected)
    (base / "secret").write_text("exports-test-secret-0123456789abcdef\n")
    out = base / "out"
    pipeline.grade(
        "rnn", collected, out, pipeline.GradeOptions(workers=2, secret_path=base / "secret", fresh=True)
    )
    return {"roster": roster, "collected": collected, "out": out, "base": base}


def test_export_cli_canvas_csv_excel_with_late_policy(course):
    base = course["base"]
    args = [
        "export",
        str(course["out"]),
        "--roster",
        str(course["roster"]),
        "--collected",
        str(course["collected"]),
        "--canvas",
        str(base / "canvas.csv"),
        "--canvas-column",
        "RNN (999)",
        "--csv",
        str(base / "grades.csv"),
        "--xlsx",
        str(base / "grades.xlsx"),
        "--due",
        DUE,
        "--late-per-day",
        "0.1",
        "--grace-minutes",
        "60",
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "3 graded, 1 missing, 1 unmatched" in r.output and "1 late" in r.output
    assert "unmatched: submission_9003" in r.output

    rows = {row["student"]: row for row in csv.DictReader((base / "grades.csv").open())}
    assert rows["S001"]["status"] == "graded" and float(rows["S001"]["score"]) == pytest.approx(10.0)
    alan = rows["S002"]
    raw = float(alan["raw_score"])
    assert 0 < raw < 10 and float(alan["days_late"]) == pytest.approx(
        2.5 - 1 / 24, abs=0.01
    )  # less the grace hour
    assert float(alan["late_penalty"]) == pytest.approx(0.3) and float(alan["score"]) == pytest.approx(
        0.7 * raw
    )
    assert rows["S004"]["late"] == "" and float(rows["S004"]["score"]) == pytest.approx(10.0)  # grace period
    assert rows["S003"]["status"] == "missing" and rows["S003"]["score"] == ""
    assert rows["S003"]["name"].startswith("'=HYPERLINK")  # spreadsheet formulas neutralised
    assert rows["submission_9003"]["status"] == "unmatched"
    assert {"rnn_step", "rnn_forward", "rnn_backward", "clip_grad_norm", "percent"} <= set(alan)

    with (base / "canvas.csv").open() as f:
        canvas = list(csv.reader(f))
    assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "RNN (999)"]
    assert canvas[1][0] == "    Points Possible" and float(canvas[1][5]) == 10
    by_id = {row[1]: row for row in canvas[2:]}
    assert set(by_id) == {"101", "102", "103", "104"}  # the roster, no one else
    assert float(by_id["101"][5]) == pytest.approx(10) and float(by_id["102"][5]) == pytest.approx(0.7 * raw)
    assert by_id["103"][5] == "" and by_id["102"][2:4] == ["S002", "alan"]

    wb = openpyxl.load_workbook(base / "grades.xlsx")
    assert wb.sheetnames == ["gradebook", "needs a look"]
    look = wb["needs a look"]
    header = [c.value for c in look[1]]
    students = {row[header.index("student")] for row in look.iter_rows(min_row=2, values_only=True)}
    assert students == {"S002", "S003", "submission_9003"}  # late, missing, unmatched
    assert wb["gradebook"].max_row == 1 + 5


def test_missing_zero_and_default_csv(course):
    base = course["base"]
    r = CliRunner().invoke(
        main,
        [
            "export",
            str(course["out"]),
            "--roster",
            str(course["roster"]),
            "--canvas",
            str(base / "canvas0.csv"),
            "--missing",
            "zero",
            "--csv",
            str(base / "plain.csv"),
        ],
    )
    assert r.exit_code == 0, r.output
    by_id = {row[1]: row for row in csv.reader((base / "canvas0.csv").open())}
    assert float(by_id["103"][5]) == 0 and by_id["102"][0] == "Turing, Alan"
    # without --collected there are no times (no penalty); collect named the folders by roster key
    rows = {row["student"]: row for row in csv.DictReader((base / "plain.csv").open())}
    assert rows["S002"]["late_penalty"] == "0.0" and rows["S002"]["status"] == "graded"
    r = CliRunner().invoke(main, ["export", str(course["out"]), "--roster", str(course["roster"])])
    assert r.exit_code == 0 and (course["out"] / "grades.csv").exists()


def test_canvas_download_ids_are_recognised_without_collect(tmp_path):
    (tmp_path / "r.csv").write_text(CANVAS_ROSTER)
    roster = Roster.from_csv(tmp_path / "r.csv")
    results = [
        {
            "score": 7.0,
            "max_score": 10.0,
            "tests": [],
            "extra_data": {
                "student": "turingalan_LATE_102_5552_rnn",
                "functions": {"rnn_step": {"score": 2, "max_score": 2}},
            },
        },
        {"score": 9.0, "max_score": 10.0, "tests": [], "extra_data": {"student": "ada", "functions": {}}},
        {
            "score": 1.0,
            "max_score": 10.0,
            "tests": [],
            "extra_data": {"student": "zed_1_2_rnn", "functions": {}},
        },
    ]
    df = exports.gradebook(results, roster, late=exports.LatePolicy(parse_time(DUE)))
    rows = {r["student"]: r for r in df.to_dict("records")}
    assert rows["S002"]["status"] == "graded" and rows["S002"]["late"] == "yes (no time: not penalised)"
    assert rows["S002"]["score"] == 7.0 and rows["S001"]["score"] == 9.0
    assert rows["zed_1_2_rnn"]["status"] == "unmatched"
    assert {rows[k]["status"] for k in ("S003", "S004")} == {"missing"}


def test_late_policy_arithmetic():
    tz = timezone(timedelta(hours=1))
    due = datetime(2025, 3, 1, 23, 59, tzinfo=tz)
    p = exports.LatePolicy(due, per_day=0.25, max_days=2, grace_minutes=5)
    assert p.penalty(due + timedelta(minutes=4)) == (0.0, 0.0)
    days, lost = p.penalty(due + timedelta(minutes=5, hours=1))
    assert lost == 0.25 and days == pytest.approx(1 / 24)
    assert p.penalty(due + timedelta(days=1, minutes=6))[1] == 0.5
    assert p.penalty(due + timedelta(days=3))[1] == 1.0
    assert p.penalty(None) == (0.0, 0.0)
    with pytest.raises(ConfigError, match="time zone"):
        p.penalty(datetime(2025, 3, 3))


def test_canvas_export_needs_canvas_ids(tmp_path):
    (tmp_path / "r.csv").write_text("Name,Email\nAda,ada@uni.edu\n")
    roster = Roster.from_csv(tmp_path / "r.csv")
    df = exports.gradebook([], roster)
    with pytest.raises(ConfigError, match="export the Canvas gradebook"):
        exports.write_canvas(df, roster, tmp_path / "c.csv", column="RNN")


def test_export_help_and_errors(tmp_path):
    assert CliRunner().invoke(main, ["export", "--help"]).exit_code == 0
    (tmp_path / "r.csv").write_text(CANVAS_ROSTER)
    r = CliRunner().invoke(main, ["export", str(tmp_path), "--roster", str(tmp_path / "r.csv")])
    assert r.exit_code != 0 and "no per-student reports" in r.output
    r = CliRunner().invoke(main, ["export", str(tmp_path), "--roster", str(tmp_path / "nope.csv")])
    assert r.exit_code != 0 and "cannot read the roster" in r.output
