"""`seqgrade report OUT`: a self-contained, valid summary.html from a real grading run, and code similarity
that sees through renaming and reformatting but not across independently written solutions."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader import classreport, pipeline
from grader.cli import main
from grader.plan import load_plan

ROOT = Path(__file__).resolve().parent.parent
RNN_SUBS = ROOT / "tests" / "submissions" / "rnn"
EXAMPLES = ROOT / "examples" / "rnn"
EVIL = "eve<b onmouseover=x>&co"


def renamed_copy(source: str) -> str:
    """What a copier does: rename the locals, reformat, add comments. The code is the same."""
    out = re.sub(r"\bh\b", "state", source)
    out = re.sub(r"\bhs\b", "all_states", out)
    out = re.sub(r"\bgrads\b", "gs", out)
    return "# my own work\n" + out.replace("    ", "  ").replace(" = ", "=")


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("classreport")
    subs = base / "subs"
    subs.mkdir()
    shutil.copy(EXAMPLES / "correct.py", subs / "alice.py")
    (subs / "bob.py").write_text(renamed_copy((EXAMPLES / "correct.py").read_text()))
    shutil.copy(EXAMPLES / "buggy.py", subs / "carol.py")
    shutil.copy(RNN_SUBS / "correct_loops.py", subs / "dave.py")
    (subs / f"{EVIL}.py").write_text("def rnn_step(:\n")
    (base / "secret").write_text("classreport-test-secret-0123456789\n")
    out = base / "out"
    pipeline.grade(
        "rnn", subs, out, pipeline.GradeOptions(workers=2, secret_path=base / "secret", fresh=True)
    )
    return out, subs


class Checker(HTMLParser):
    """Well-formedness of the page: every non-void element closed in order; collects URLs and images."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.images: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        d = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("href", "src") and v]
        if tag == "img":
            self.images.append(d.get("src", ""))
            if not d.get("alt"):
                self.errors.append("img without alt")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def test_summary_html_is_valid_self_contained_and_complete(graded):
    out, subs = graded
    r = CliRunner().invoke(main, ["report", str(out), "--submissions", str(subs)])
    assert r.exit_code == 0, r.output
    page = (out / "summary.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    c = Checker()
    c.feed(page)
    c.close()
    assert c.errors == [] and c.stack == []
    assert c.tags.count("html") == 1 and "title" in c.tags and 'charset="utf-8"' in page
    # nothing from the network: links are relative files, images are embedded PNGs
    assert not [u for u in c.urls if re.match(r"^(https?:)?//", u)]
    assert "<script" not in page.lower() and "<link" not in page
    assert len(c.images) == 2
    for src in c.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # per-student links to feedback that exists
    for student in ("alice", "bob", "carol", "dave"):
        assert f'href="{student}.md"' in page and (out / f"{student}.md").exists()
    assert "eve&lt;b onmouseover=x&gt;&amp;co" in page and "<b " not in page  # escaped, never markup
    # pass rates, failures, similarity
    assert "rnn_step: forward" in page and "Most common failures" in page
    assert "not loadable" in page
    sim = page[page.index("Similar submissions") : page.index("<h2>Students")]
    assert "alice" in sim and "bob" in sim and "dave" not in sim


def test_pass_rates_and_common_failures_count_students(graded):
    out, _ = graded
    results = classreport.load_results(out)
    assert len(results) == 5
    rates = {r.key: r for r in classreport.check_rates(results)}
    step = rates["rnn_step: forward"]
    assert step.students == 5 and step.students_passing == 3  # alice, bob, dave; carol buggy, eve unloadable
    failures = classreport.common_failures(results)
    assert failures and failures[0][2] >= 1
    checks = {f[0] for f in failures}
    assert "rnn_step: forward" in checks and "(loading)" in checks
    assert classreport.normalise_message("max abs error 3.1e-2 at [0, 3, 5] (atol 1e-6)") == (
        "max abs error # at [#, #, #] (atol #)"
    )


def test_similarity_sees_through_renaming_not_across_independent_solutions():
    plan = load_plan("rnn")
    keep = frozenset(f.name for f in plan.functions)
    template = (ROOT / "student_template" / "rnn.py").read_text()
    correct = (EXAMPLES / "correct.py").read_text()
    sources = {
        "alice": correct,
        "bob": renamed_copy(correct),
        "dave": (RNN_SUBS / "correct_loops.py").read_text(),
        "erin": (RNN_SUBS / "correct_vectorised.py").read_text(),
        "stub1": template,
        "stub2": template,
        "broken": "def rnn_step(:\n",
    }
    pairs = classreport.similar_pairs(sources, template=template, keep=keep, threshold=0.8)
    assert [(p.a, p.b) for p in pairs] == [("alice", "bob")]
    assert pairs[0].similarity > 0.95 and pairs[0].functions[0][1] > 0.95
    everything = classreport.similar_pairs(sources, template=template, keep=keep, threshold=0.0)
    independent = {(p.a, p.b): p.similarity for p in everything}
    assert independent[("alice", "dave")] < 0.5 and independent[("dave", "erin")] < 0.5
    assert not any("stub" in p.a or "stub" in p.b for p in everything)  # untouched templates never pair


def test_report_without_submissions_and_errors(graded, tmp_path):
    out, _ = graded
    path = classreport.write_report(out)
    assert "Not computed" in path.read_text()
    r = CliRunner().invoke(main, ["report", str(tmp_path / "nothing")])
    assert r.exit_code != 0 and "not a report folder" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "No graded submissions" in classreport.write_report(empty).read_text()
    assert CliRunner().invoke(main, ["report", "--help"]).exit_code == 0


def test_report_json_reads_back_as_written_with_one_line_per_test():
    """Per-student JSON: what json.loads gives back is the report, whatever its values hold (unicode, NaN,
    nesting, empty containers); each test sits on its own line for a reader."""
    from grader import report

    data = {
        "score": 1.5,
        "tests": [{"name": "rnn_forward: forward (hidden, float32)", "output": 'é\n"x"', "tags": ["a"]}] * 3,
        "extra_data": {
            "student": "Zoë",
            "nested": {"a": [1, {"b": None}], "e": {}, "l": []},
            "nan": float("nan"),
        },
        "empty": [],
    }
    text = report.json_dumps(data)
    back = json.loads(text)
    assert back["tests"] == data["tests"] and back["empty"] == []
    assert back["extra_data"]["nested"] == data["extra_data"]["nested"]
    assert back["extra_data"]["student"] == "Zoë" and back["extra_data"]["nan"] != back["extra_data"]["nan"]
    test_lines = [line for line in text.splitlines() if '"name": "rnn_forward' in line]
    assert len(test_lines) == 3 and all('"tags": ["a"]' in line for line in test_lines)


def test_a_runs_gradebook_is_what_its_reports_say_new_and_kept_alike(graded, tmp_path):
    """The run's results (gradebook, summary) come from the reports it wrote, kept in memory, and from
    the reports of earlier runs, read back: both exactly as the files on disk say."""
    from grader import report

    first, subs = graded
    out = tmp_path / "out"
    shutil.copytree(first, out)
    more = tmp_path / "subs"
    shutil.copytree(subs, more)
    shutil.copy(RNN_SUBS / "correct_loops.py", more / "zoe.py")  # the one new student
    (out / "notes.json").write_text('{"not": "a report"}')  # another JSON file in OUT: left out
    secret = first.parent / "secret"
    run = pipeline.grade("rnn", more, out, pipeline.GradeOptions(workers=1, secret_path=secret))
    assert (run.graded, run.skipped) == (1, 5)
    on_disk = [
        pipeline._slim(data)
        for path in report.report_files(out)
        if (data := report.read_report(path)) is not None
    ]
    assert run.results == on_disk
    assert [r["extra_data"]["student"] for r in run.results] == sorted(
        ["alice", "bob", "carol", "dave", EVIL, "zoe"], key=lambda s: report.file_stem(s)
    )
    book = (out / "gradebook.csv").read_text().splitlines()
    assert len(book) == 7 and any(line.startswith("zoe,") for line in book)
