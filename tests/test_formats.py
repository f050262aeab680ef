"""One solution in every accepted format — a .py, a folder holding it, a notebook (with IPython magics and
shell lines that are stripped, never run), a .zip — is graded exactly like the .py; and a class handed in
as a folder of per-student entries or as a .zip of that folder gets the same grades either way."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import nbformat
import pytest
from conftest import SUBMISSIONS

from grader import pipeline

SOLUTIONS = {
    "correct": SUBMISSIONS / "rnn" / "correct_loops.py",
    "buggy": SUBMISSIONS / "rnn" / "bug_hT_first.py",  # partial credit: messages and scores to compare
}


def signature(result) -> tuple:
    return result.score, tuple((t.name, t.passed, round(t.score, 9), t.message) for t in result.tests)


def json_signature(data: dict) -> tuple:
    return data["score"], tuple((t["name"], t["status"], t["score"], t["output"]) for t in data["tests"])


def notebook(source: str, path: Path, marker: Path) -> Path:
    """The solution split into cells, between magics and shell lines that would touch `marker` if run."""
    chunks = source.split("\n\n\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Assignment 1: RNNs\nRun `!pip install torch` first."),
        nbformat.v4.new_code_cell(
            f"%load_ext autoreload\n%autoreload 2\n!pip install torch --quiet\n!touch {marker}"
        ),
        *(nbformat.v4.new_code_cell(c) for c in chunks),
        nbformat.v4.new_code_cell(f"%%bash\ntouch {marker}"),
        nbformat.v4.new_code_cell(f"listing = !ls\n%time x = 1\n%env SEQ=1\n! rm -rf {marker.parent}/*"),
    ]
    nbformat.write(nb, str(path))
    return path


def zipped(dest: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return dest


def forms(src: Path, root: Path, marker: Path) -> dict[str, Path]:
    """Every single-submission form of `src`."""
    code = src.read_bytes()
    root.mkdir(parents=True)
    out = {"py": root / "sol.py"}
    out["py"].write_bytes(code)
    (root / "folder").mkdir()
    (root / "folder" / "rnn.py").write_bytes(code)
    out["folder"] = root / "folder"
    (root / "folder_named").mkdir()
    (root / "folder_named" / "my_rnn_solution.py").write_bytes(code)
    out["folder, other file name"] = root / "folder_named"
    out["ipynb"] = notebook(code.decode(), root / "sol.ipynb", marker)
    (root / "nb_folder").mkdir()
    notebook(code.decode(), root / "nb_folder" / "rnn.ipynb", marker)
    out["folder holding rnn.ipynb"] = root / "nb_folder"
    out["zip"] = zipped(root / "sol.zip", {"rnn.py": code})
    out["zip of a folder"] = zipped(root / "solf.zip", {"sol/rnn.py": code})
    out["zip of a notebook"] = zipped(root / "solnb.zip", {"rnn.ipynb": out["ipynb"].read_bytes()})
    return out


@pytest.mark.parametrize("which", sorted(SOLUTIONS))
def test_every_format_is_graded_like_the_py(grade_hidden, tmp_path, which):
    marker = tmp_path / "shell_ran"
    reference = grade_hidden("rnn", SOLUTIONS[which])
    assert (reference.score == 10) == (which == "correct")
    for name, path in forms(SOLUTIONS[which], tmp_path / "forms", marker).items():
        r = grade_hidden("rnn", path)
        assert not r.import_error, f"{name}: {r.import_error}"
        assert signature(r) == signature(reference), name
    assert not marker.exists(), "a shell line or cell magic of the notebook was run"
    assert (tmp_path / "forms" / "sol.py").exists()


def build_class(root: Path, marker: Path) -> Path:
    good, bad = SOLUTIONS["correct"].read_bytes(), SOLUTIONS["buggy"].read_bytes()
    cls = root / "class"
    cls.mkdir(parents=True)
    (cls / "alice.py").write_bytes(good)
    (cls / "bob").mkdir()
    (cls / "bob" / "rnn.py").write_bytes(bad)
    notebook(good.decode(), cls / "carol.ipynb", marker)
    zipped(cls / "dave.zip", {"rnn.py": bad})
    (cls / "erin").mkdir()
    notebook(bad.decode(), cls / "erin" / "rnn.ipynb", marker)
    return cls


def test_class_folder_and_class_zip_get_the_same_grades(zygote, grade_hidden, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything the pipeline keeps in ./.seqgrade stays here
    marker = tmp_path / "shell_ran"
    cls = build_class(tmp_path, marker)
    archive = zipped(
        tmp_path / "class.zip",
        {p.relative_to(cls).as_posix(): p.read_bytes() for p in sorted(cls.rglob("*")) if p.is_file()},
    )
    options = pipeline.GradeOptions(workers=2, timeout=5.0, fresh=True)
    runs = {}
    for name, path in (("folder", cls), ("zip", archive)):
        out = tmp_path / f"out_{name}"
        run = pipeline.grade("rnn", path, out, options, zygote=zygote)
        assert run.graded == 5
        runs[name] = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
        assert (out / "gradebook.csv").is_file()
    assert sorted(runs["folder"]) == ["alice", "bob", "carol", "dave", "erin"]
    want = {k: grade_hidden("rnn", p) for k, p in SOLUTIONS.items()}
    expected = {"alice": "correct", "carol": "correct", "bob": "buggy", "dave": "buggy", "erin": "buggy"}
    for student, which in expected.items():
        got = runs["folder"][student]
        assert json_signature(got) == json_signature(runs["zip"][student]), student
        assert got["score"] == pytest.approx(want[which].score), student
        assert [t["name"] for t in got["tests"]] == [t.name for t in want[which].tests]
    assert not marker.exists()
