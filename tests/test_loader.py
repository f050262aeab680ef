"""grader.loader: finding and loading submissions (.py, folder, .ipynb, per-student folder, .zip) without
executing anything; notebooks lose their IPython magics and shell lines; archives are unpacked safely."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import nbformat
import pytest

from grader.errors import InputError
from grader.loader import discover, notebook_to_source

SOURCE = b"import torch\n\n\ndef rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):\n    return x_t\n"


def write_notebook(path: Path, cells: list[tuple[str, str]]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(s) if kind == "code" else nbformat.v4.new_markdown_cell(s)
        for kind, s in cells
    ]
    nbformat.write(nb, str(path))
    return path


def zip_folder(folder: Path, dest: Path, *, prefix: str = "") -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(folder).as_posix())
    return dest


def test_single_file(tmp_path):
    f = tmp_path / "my_rnn.py"
    f.write_bytes(SOURCE)
    (sub,) = discover(f, "rnn", workdir=tmp_path / "w")
    assert sub.student == "my_rnn" and sub.files == {"rnn.py": SOURCE} and not sub.problem


def test_folder_holding_the_module_carries_its_files(tmp_path):
    d = tmp_path / "ann"
    (d / "helpers").mkdir(parents=True)
    (d / "rnn.py").write_bytes(SOURCE)
    (d / "helpers" / "util.py").write_text("X = 1\n")
    (d / "weights.npz").write_bytes(b"npz")
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "rnn.cpython-311.pyc").write_bytes(b"junk")
    (d / ".secret.py").write_text("hidden\n")
    (d / "movie.mp4").write_bytes(b"not carried")
    (sub,) = discover(d, "rnn", workdir=tmp_path / "w")
    assert sub.student == "ann"
    assert set(sub.files) == {"rnn.py", "helpers/util.py", "weights.npz"}


def test_folder_of_students_in_every_form(tmp_path):
    cls = tmp_path / "class"
    cls.mkdir()
    (cls / "alice.py").write_bytes(SOURCE)
    (cls / "bob").mkdir()
    (cls / "bob" / "rnn.py").write_bytes(SOURCE)
    write_notebook(cls / "carol.ipynb", [("code", SOURCE.decode())])
    inner = tmp_path / "dave_src"
    inner.mkdir()
    (inner / "rnn.py").write_bytes(SOURCE)
    zip_folder(inner, cls / "dave.zip")
    (cls / "erin").mkdir()
    (cls / "erin" / "rnn_final.py").write_bytes(SOURCE)
    (cls / "frank").mkdir()
    (cls / "frank" / "README.txt").write_text("I ran out of time\n")
    (cls / "notes.txt").write_text("not a submission\n")
    (cls / ".DS_Store").write_bytes(b"\0")
    subs = {s.student: s for s in discover(cls, "rnn", workdir=tmp_path / "w")}
    assert sorted(subs) == ["alice", "bob", "carol", "dave", "erin", "frank"]
    for sid in ("alice", "bob", "dave", "erin"):
        assert subs[sid].files["rnn.py"] == SOURCE, sid
        assert not subs[sid].problem
    assert "converted from a notebook" in subs["carol"].notes
    assert "rnn_step" in subs["carol"].files["rnn.py"].decode()
    assert "graded rnn_final.py as rnn.py" in subs["erin"].notes
    assert "no rnn.py or rnn.ipynb" in subs["frank"].problem


def test_zip_of_the_class_equals_the_folder(tmp_path):
    cls = tmp_path / "class"
    (cls / "bob").mkdir(parents=True)
    (cls / "alice.py").write_bytes(SOURCE)
    (cls / "bob" / "rnn.py").write_bytes(SOURCE)
    flat = zip_folder(cls, tmp_path / "flat.zip")
    nested = zip_folder(cls, tmp_path / "nested.zip", prefix="class/")  # one top folder: descended into
    for z in (flat, nested):
        subs = discover(z, "rnn", workdir=tmp_path / z.stem)
        assert [(s.student, s.files) for s in subs] == [
            ("alice", {"rnn.py": SOURCE}),
            ("bob", {"rnn.py": SOURCE}),
        ]


def test_zip_of_one_submission(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "rnn.py").write_bytes(SOURCE)
    (sub,) = discover(zip_folder(d, tmp_path / "ann.zip"), "rnn", workdir=tmp_path / "w")
    assert sub.student == "ann" and sub.files == {"rnn.py": SOURCE}


def test_zip_members_cannot_escape(tmp_path):
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("rnn.py", SOURCE)
        zf.writestr("../escaped.py", "x = 1\n")
        zf.writestr("/tmp/absolute_escape_seqgrade.py", "x = 1\n")
        zf.writestr("sub/../../escaped2.py", "x = 1\n")
        link = zipfile.ZipInfo("link.py")
        link.external_attr = 0o120777 << 16  # a symbolic link member
        zf.writestr(link, "/etc/passwd")
    work = tmp_path / "w"
    (sub,) = discover(z, "rnn", workdir=work)
    assert sub.files == {"rnn.py": SOURCE}
    assert not (tmp_path / "escaped.py").exists() and not (work / "escaped.py").exists()
    assert not (work / "escaped2.py").exists()
    assert not Path("/tmp/absolute_escape_seqgrade.py").exists()


def test_unreadable_entries_become_problems_not_crashes(tmp_path):
    cls = tmp_path / "class"
    cls.mkdir()
    (cls / "alice.py").write_bytes(SOURCE)
    (cls / "broken.zip").write_bytes(b"this is not a zip")
    (cls / "bad.ipynb").write_text("{not json")
    os.symlink("/etc", cls / "linked")
    subs = {s.student: s for s in discover(cls, "rnn", workdir=tmp_path / "w")}
    assert not subs["alice"].problem
    assert "not a readable zip archive" in subs["broken"].problem
    assert "not a readable notebook" in subs["bad"].problem
    assert "symbolic link" in subs["linked"].problem


def test_bad_paths_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file or directory"):
        discover(tmp_path / "missing", "rnn")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no rnn.py, rnn.ipynb or per-student entries"):
        discover(tmp_path / "empty", "rnn")


# ----------------------------------------------------------------------------------------------- notebooks


def test_notebook_magics_and_shell_lines_are_stripped(tmp_path):
    nb = write_notebook(
        tmp_path / "rnn.ipynb",
        [
            ("markdown", "# My RNN\n!not code"),
            ("code", "%matplotlib inline\n!pip install torch\nimport torch"),
            ("code", "%%bash\ntouch /tmp/should_not_exist"),
            ("code", "files = !ls\nx = 1  # kept\ny = x != 2"),
            ("code", "def rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):\n    return x_t"),
        ],
    )
    src = notebook_to_source(nb)
    compile(src, "rnn.py", "exec")
    assert "import torch" in src and "x = 1  # kept" in src and "y = x != 2" in src
    assert "def rnn_step" in src
    for gone in ("%matplotlib", "pip install", "!ls", "touch", "# My RNN"):
        assert gone not in src


def test_indented_shell_line_keeps_the_block_valid(tmp_path):
    """IPython runs `!cmd` inside a block (e.g. a for loop); stripping it must leave valid Python.

    Fails today: the line is replaced by an unindented `pass`, so the whole notebook stops compiling and
    the student scores 0 for a shell line the grader meant to ignore.
    """
    nb = write_notebook(
        tmp_path / "rnn.ipynb",
        [
            (
                "code",
                "for f in ['a', 'b']:\n    !echo {f}\n    y = 2\n\ndef rnn_step(x_t, *w):\n    return x_t",
            )
        ],
    )
    src = notebook_to_source(nb)
    compile(src, "rnn.py", "exec")
    assert "    y = 2" in src


def test_percent_continuation_line_is_python_not_a_magic(tmp_path):
    """A line that starts with the % operator inside brackets is Python (string formatting), not a magic.

    Fails today: it is replaced by `pass`, which is a SyntaxError inside the open parenthesis.
    """
    nb = write_notebook(
        tmp_path / "rnn.ipynb", [("code", "n = 3\nmsg = ('%d steps'\n       % n)\nprint(msg)")]
    )
    src = notebook_to_source(nb)
    compile(src, "rnn.py", "exec")
    assert "% n)" in src
