"""Rosters from Canvas, Gradescope and GitHub Classroom; ids in bulk-download names; `seqgrade collect`
sorting downloads into one folder per student, listing unmatched entries and students who did not submit."""

from __future__ import annotations

import csv
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.cli import main
from grader.errors import InputError
from grader.loader import discover
from grader.roster import MANIFEST, Roster, collect, gradescope_metadata, parse_entry, parse_time

CANVAS_ROSTER = """Student,ID,SIS User ID,SIS Login ID,Section,RNN (999)
    Points Possible,,,,,10
"Lovelace, Ada",101,S001,ada,Sec A,
"Turing, Alan",102,S002,alan,Sec A,
"Hopper, Grace",103,S003,grace,Sec B,
"Noether, Emmy",104,S004,emmy,Sec B,
"Student, Test",105,,,Sec B,
"""

GRADESCOPE_ROSTER = """First Name,Last Name,SID,Email,Role
Ada,Lovelace,S001,ada@uni.edu,Student
Alan,Turing,S002,alan@uni.edu,Student
"""

GITHUB_ROSTER = """identifier,github_username,github_id,name
ada@uni.edu,ada-l,1,Ada Lovelace
alan@uni.edu,alan-t,2,Alan Turing
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


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_roster_formats(tmp_path):
    canvas = Roster.from_csv(write(tmp_path / "canvas.csv", CANVAS_ROSTER))
    assert [s.key for s in canvas.students] == [
        "S001",
        "S002",
        "S003",
        "S004",
    ]  # no Points Possible/Test Student
    ada = canvas.students[0]
    assert (ada.name, ada.canvas_id, ada.login, ada.section) == ("Lovelace, Ada", "101", "ada", "Sec A")
    for alias in ("101", "s001", "ada", "lovelaceada", "adalovelace"):
        assert canvas.lookup(alias) == ada
    gs = Roster.from_csv(write(tmp_path / "gs.csv", GRADESCOPE_ROSTER))
    assert gs.students[1].name == "Alan Turing" and gs.lookup("alan@uni.edu").key == "S002"
    gh = Roster.from_csv(write(tmp_path / "gh.csv", GITHUB_ROSTER))
    assert gh.lookup("ada-l").key == "ada@uni.edu" and gh.lookup("ada").key == "ada@uni.edu"
    with pytest.raises(InputError, match="twice"):
        Roster.from_csv(write(tmp_path / "dup.csv", "SID,Name\n1,A\n1,B\n"))
    with pytest.raises(InputError, match="no rows"):
        Roster.from_csv(write(tmp_path / "empty.csv", "SID,Name\n"))


def test_ambiguous_aliases_never_guess(tmp_path):
    r = Roster.from_csv(write(tmp_path / "r.csv", "SID,Name\n1,Jo Smith\n2,Jo Smith\n3,Ann Lee\n"))
    assert r.lookup("josmith") is None and r.lookup("smithjo") is None
    assert r.lookup("annlee").key == "3" and r.lookup("2").key == "2"


def test_entry_names():
    e = parse_entry("lovelaceada_101_5551_rnn.py")
    assert (e.source, e.tokens, e.late, e.file, e.submission_id) == (
        "canvas",
        ("101", "lovelaceada"),
        False,
        "rnn.py",
        "5551",
    )
    e = parse_entry("turingalan_LATE_102_5552_rnn-2.py")
    assert e.source == "canvas" and e.late and e.file == "rnn.py" and e.tokens[0] == "102"
    assert parse_entry("submission_9001").source == "gradescope"
    e = parse_entry("rnn-assignment-ada-l")
    assert e.source == "github" and "ada-l" in e.tokens
    assert parse_entry("S001.py").tokens[0] == "S001"


def test_gradescope_metadata_and_times(tmp_path):
    meta = gradescope_metadata(write(tmp_path / "submission_metadata.yml", GS_METADATA))
    assert set(meta) == {"submission_9001", "submission_9002", "submission_9003"}
    assert meta["submission_9002"]["submitters"][0] == {
        "name": "Alan Turing",
        "sid": "S002",
        "email": "alan@uni.edu",
    }
    assert len(meta["submission_9002"]["submitters"]) == 2
    pst = timezone(timedelta(hours=-8))
    assert meta["submission_9001"]["created_at"] == datetime(2025, 3, 1, 10, 0, 0, 123456, tzinfo=pst)
    assert parse_time("2025-03-01T10:00:00Z") == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert parse_time("yesterday") is None


def test_collect_canvas_zip(tmp_path):
    roster = Roster.from_csv(write(tmp_path / "roster.csv", CANVAS_ROSTER))
    dl = tmp_path / "submissions.zip"
    with zipfile.ZipFile(dl, "w") as zf:
        zf.writestr("lovelaceada_101_5551_rnn.py", "# ada\n")
        zf.writestr("lovelaceada_101_5551_helpers.py", "# ada's helper\n")
        zf.writestr("turingalan_LATE_102_5552_rnn-1.py", "# alan, old\n")
        zf.writestr("turingalan_LATE_102_5552_rnn-2.py", "# alan, latest\n")
        zf.writestr("noetheremmy_104_5554_rnn.py", "# emmy\n")
        zf.writestr("strangerdanger_999_5559_rnn.py", "# who?\n")
    result = collect(dl, roster, tmp_path / "collected")
    status = {m.folder: m.status for m in result.matches}
    assert status == {
        "S001": "matched",
        "S002": "matched",
        "S004": "matched",
        "S003": "missing",
        "strangerdanger_999_5559_rnn": "unmatched",
    }
    out = tmp_path / "collected"
    assert (out / "S001" / "rnn.py").read_text() == "# ada\n" and (out / "S001" / "helpers.py").exists()
    assert (out / "S002" / "rnn.py").read_text() == "# alan, latest\n"
    assert [m.late for m in result.matches if m.folder == "S002"] == [True]
    rows = {r["folder"]: r for r in csv.DictReader((out / MANIFEST).open())}
    assert rows["S003"]["status"] == "missing" and rows["S003"]["name"] == "Hopper, Grace"
    assert rows["S002"]["late"] == "yes" and rows["strangerdanger_999_5559_rnn"]["student"] == ""
    # the collected folder is what `seqgrade grade` reads: one submission per folder, unmatched ones included
    subs = {s.student: s for s in discover(out, "rnn", workdir=tmp_path / "w")}
    assert set(subs) == {"S001", "S002", "S004", "strangerdanger_999_5559_rnn"}
    assert subs["S002"].files["rnn.py"] == b"# alan, latest\n"


def test_collect_gradescope_export_and_github_classroom(tmp_path):
    roster = Roster.from_csv(write(tmp_path / "roster.csv", CANVAS_ROSTER))
    export = tmp_path / "export"
    write(export / "submission_metadata.yml", GS_METADATA)
    for sid in ("9001", "9002", "9003"):
        write(export / f"submission_{sid}" / "rnn.py", f"# {sid}\n")
    result = collect(export, roster, tmp_path / "gs")
    by = {m.folder: m for m in result.matches}
    assert by["S001"].status == "matched" and by["S001"].submitted_at.day == 1
    assert by["S002"].status == "matched" and (tmp_path / "gs" / "S002" / "rnn.py").read_text() == "# 9002\n"
    assert by["submission_9003"].status == "unmatched"
    assert {m.folder for m in result.missing} == {"S003", "S004"}

    gh_roster = Roster.from_csv(write(tmp_path / "gh.csv", GITHUB_ROSTER))
    classroom = tmp_path / "classroom"
    write(classroom / "rnn-assignment-ada-l" / "rnn.py", "# ada\n")
    write(classroom / "rnn-assignment-alan-t" / "rnn.ipynb", "{}")
    write(classroom / "rnn-assignment-nobody" / "rnn.py", "# ?\n")
    result = collect(classroom, gh_roster, tmp_path / "gh")
    assert {m.folder: m.status for m in result.matches} == {
        "ada@uni.edu": "matched",
        "alan@uni.edu": "matched",
        "rnn-assignment-nobody": "unmatched",
    }
    assert (tmp_path / "gh" / "alan@uni.edu" / "rnn.ipynb").exists()


def test_collect_cli(tmp_path):
    write(tmp_path / "roster.csv", CANVAS_ROSTER)
    dl = tmp_path / "dl"
    write(dl / "lovelaceada_101_5551_rnn.py", "# ada\n")
    write(dl / "whoever.py", "# ?\n")
    args = ["collect", str(dl), "--roster", str(tmp_path / "roster.csv"), "--out", str(tmp_path / "c")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "1 submissions matched to the roster, 1 unmatched, 3 students without a submission" in r.output
    assert "unmatched: whoever.py" in r.output and "missing:   S003 Hopper, Grace" in r.output
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and "not empty" in r.output
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0
    assert CliRunner().invoke(main, ["collect", "--help"]).exit_code == 0
