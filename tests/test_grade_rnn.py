"""Grade real `rnn` submissions on the hidden cases: correct ones in several styles get full marks, and each
classic bug (one file each in tests/submissions/rnn/) loses points in the check that names it, while the
other functions keep theirs. Then the `seqgrade` command line, through click's CliRunner.
"""

from __future__ import annotations

import gc
import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import ROOT, SUBMISSIONS, Bug, assert_caught, assert_full_marks, hidden_entry_count

from grader.cli import main
from grader.plan import label, load_plan

PLAN = load_plan("rnn")
FOLDER = SUBMISSIONS / "rnn"
POINTS = {f.name: f.points for f in PLAN.functions}


def clip_labels(above: bool, several: bool | None = None) -> list[str]:
    """Labels of the hidden clip cases above (or below) the threshold, with several tensors or one."""
    return [
        re.escape(label(p))
        for p in PLAN.function("clip_grad_norm").hidden
        if (p["_ratio"] > 1) == above and (several is None or (len(p["shapes"]) > 1) == several)
    ]


def clip_share(above: bool) -> float:
    """The share of clip_grad_norm's hidden cases that lie above (or below) the threshold."""
    cases = PLAN.function("clip_grad_norm").hidden
    return sum((p["_ratio"] > 1) == above for p in cases) / len(cases)


def clip(labels: list[str], dtype: str = "float(32|64)") -> str:
    assert labels, "the plan has no such clip case"
    return rf"clip_grad_norm: forward \(hidden, {dtype}, ({'|'.join(labels)})\)"


F64 = r"\(hidden, float64, "
SHAPE_MSG = "could not differentiate the outputs: ValueError: an output has shape"
NO_GRAD = "no gradient reaches"

BUGS: dict[str, Bug] = {
    "bug_time_major": Bug(
        {"rnn_forward": 0.0},
        (
            ("rnn_forward: forward " + F64 + "B=3 T=5 ", "hs has shape (5, 3, 6), expected (3, 5, 6)"),
            ("rnn_forward: forward", "hs has shape"),
            ("rnn_forward: gradients", SHAPE_MSG),
        ),
    ),
    "bug_whh_not_transposed": Bug(
        {"rnn_forward": 0.0},
        (("rnn_forward: forward", "hs: max abs error"), ("rnn_forward: gradients", "gradient wrong: d/dx")),
    ),
    "bug_no_b_hh": Bug(
        {"rnn_step": 0.0},
        (("rnn_step: forward", "h_t: max abs error"), ("rnn_step: gradients", "gradient wrong")),
    ),
    "bug_ignore_h0": Bug(
        {"rnn_forward": 0.0},
        (("rnn_forward: forward", "hs: max abs error"), ("rnn_forward: gradients", "gradient wrong")),
    ),
    "bug_t_minus_1": Bug(
        {"rnn_forward": 0.0},
        (
            ("rnn_forward: forward " + F64 + "B=3 T=5 ", "hs has shape (3, 4, 6), expected (3, 5, 6)"),
            (r"rnn_forward: .*T=1\b", "RuntimeError: stack expects a non-empty TensorList"),
        ),
    ),
    "bug_hs_includes_h0": Bug(
        {"rnn_forward": 0.0},
        (
            ("rnn_forward: forward " + F64 + "B=3 T=5 ", "hs has shape (3, 6, 6), expected (3, 5, 6)"),
            ("rnn_forward: gradients", SHAPE_MSG),
        ),
    ),
    "bug_hT_first": Bug(
        {"rnn_forward": 3 * 4 / 16},  # right only on the T = 1 case: 4 of 16 entries
        (("rnn_forward: forward", "h_T: max abs error"),),
        passes=(r"rnn_forward: .*T=1\b",),
    ),
    "bug_squeeze_batch_of_one": Bug(
        {"rnn_forward": 3 * 12 / 16},  # wrong only on the B = 1 case: 4 of 16 entries
        (
            ("rnn_forward: forward " + F64 + "B=1 ", "h_T has shape (3,), expected (1, 3)"),
            (r"rnn_forward: gradients .*B=1 ", SHAPE_MSG),
        ),
        passes=(r"rnn_forward: .*B=[2-9] ",),
    ),
    "bug_detach": Bug(
        {"rnn_forward": 1.5},
        (("rnn_forward: gradients", NO_GRAD + " x:"),),
        passes=("rnn_forward: forward",),
    ),
    "bug_data": Bug(
        {"rnn_step": 1.0},
        (("rnn_step: gradients", NO_GRAD + " x_t:"),),
        passes=("rnn_step: forward",),
    ),
    "bug_numpy": Bug(
        {"rnn_forward": 1.5},
        (("rnn_forward: gradients", NO_GRAD),),
        passes=("rnn_forward: forward",),
    ),
    "bug_numpy_no_detach": Bug(  # the gradient call raises; the forward check runs alone, and passes
        {"rnn_forward": 1.5},
        (("rnn_forward: gradients", "RuntimeError: Can't call numpy() on Tensor that requires grad"),),
        passes=("rnn_forward: forward",),
    ),
    "bug_inplace_dhs": Bug(
        {"rnn_backward": 2.0},
        (
            ("rnn_backward: inputs unchanged", "rnn_backward modified its input dhs in place"),
            ("rnn_backward: inputs unchanged", "50%"),
        ),
        passes=("rnn_backward: forward",),
    ),
    "bug_bptt_dwhh_uses_h_t": Bug(
        {"rnn_backward": 0.0},
        (("rnn_backward: forward", "W_hh: max abs error"),),  # x, h0 and W_ih are right: W_hh is named
    ),
    "bug_bptt_no_carry": Bug(
        {"rnn_backward": 4 * 2 / 8},  # right only on the T = 1 case, where there is no carry: 2 of 8 entries
        (("rnn_backward: forward", "max abs error"),),
        passes=(r"rnn_backward: .*T=1\b",),
    ),
    "bug_bptt_tanh_of_h_prev": Bug(
        {"rnn_backward": 0.0},
        (("rnn_backward: forward", "max abs error"),),
    ),
    "bug_clip_inplace": Bug(
        {"clip_grad_norm": 0.5},
        (("clip_grad_norm: inputs unchanged", "in place"),),
        passes=("clip_grad_norm: forward",),
    ),
    "bug_float32": Bug(
        {"rnn_step": None},
        (("rnn_step: forward " + F64, "h_t has dtype torch.float32, expected torch.float64"),),
        passes=(r"rnn_step: \w+ \(hidden, float32",),
    ),
    "bug_autograd_backward": Bug(
        {"rnn_backward": 0.0},
        (
            ("rnn_backward: banned APIs", "uses torch.autograd.grad"),
            ("rnn_backward: banned APIs", "forfeited"),
        ),
        passes=("rnn_backward: forward",),  # the values are right: the ban alone costs the points
    ),
    "bug_dot_backward": Bug(
        {"rnn_backward": 0.0},
        (("rnn_backward: banned APIs", "torch.Tensor.backward"),),
        passes=("rnn_backward: forward",),
    ),
    "bug_nn_rnn": Bug(
        {"rnn_forward": 0.0},
        (("rnn_forward: banned APIs", "uses torch.nn.RNN"), ("rnn_forward: banned APIs", "forfeited")),
        passes=("rnn_forward: forward",),
    ),
    "bug_vf": Bug(
        {"rnn_forward": 0.0},
        (("rnn_forward: banned APIs", "torch._VF"),),
        passes=("rnn_forward: forward", "rnn_forward: gradients"),
    ),
    "bug_clip_no_eps": Bug(
        {"clip_grad_norm": None},
        ((clip(clip_labels(above=True), "float64"), "clipped[0]: max abs error"),),
        passes=(clip(clip_labels(above=False)),),
    ),
    "bug_clip_always": Bug(
        {"clip_grad_norm": clip_share(above=True)},
        ((clip(clip_labels(above=False)), "clipped[0]: max abs error"),),
        passes=(clip(clip_labels(above=True)),),
    ),
    "bug_clip_per_tensor": Bug(
        {"clip_grad_norm": None},
        ((clip(clip_labels(above=True, several=True)), "max abs error"),),
        passes=(clip(clip_labels(above=True, several=False)), clip(clip_labels(above=False))),
    ),
    "bug_clip_post_norm": Bug(
        {"clip_grad_norm": clip_share(above=False)},
        ((clip(clip_labels(above=True)), "total_norm: max abs error"),),
        passes=(clip(clip_labels(above=False)),),
    ),
    "bug_raises": Bug(
        {"rnn_backward": 0.0},
        (("rnn_backward: forward", "NotImplementedError: rnn_backward: BPTT by hand (rnn.py, line"),),
    ),
    "bug_missing": Bug(
        {"clip_grad_norm": 0.0},
        (("clip_grad_norm: forward", "clip_grad_norm is not defined"),),
    ),
}

CORRECT = sorted(p.name for p in FOLDER.glob("correct_*.py"))


def test_every_bug_file_has_an_expectation():
    assert sorted(p.stem for p in FOLDER.glob("bug_*.py")) == sorted(BUGS)
    assert len(CORRECT) >= 4


@pytest.mark.parametrize("name", CORRECT)
def test_correct_styles_get_full_marks(grade_hidden, name):
    r = grade_hidden("rnn", FOLDER / name)
    assert_full_marks(r)
    assert r.max_score == sum(POINTS.values()) == 10
    assert len(r.tests) == hidden_entry_count(PLAN)
    assert all("(hidden, " in t.name for t in r.tests if t.kind != "inputs")


@pytest.mark.parametrize("name", sorted(BUGS))
def test_bug_loses_points_in_the_right_check(grade_hidden, name):
    assert_caught(grade_hidden("rnn", FOLDER / f"{name}.py"), BUGS[name])


# ----------------------------------------------------------------------------------------------- CLI

CORRECT_FILE = FOLDER / "correct_loops.py"
BUGGY_FILE = FOLDER / "bug_whh_not_transposed.py"


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("args", [["--help"], ["check", "--help"], ["grade", "--help"], ["list", "--help"]])
def test_help(runner, args):
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output


def test_list_names_rnn_and_gated(runner):
    r = runner.invoke(main, ["list"])
    assert r.exit_code == 0, r.output
    assert re.search(r"^rnn\s+10 pts", r.output, re.M) and re.search(r"^gated\s+10 pts", r.output, re.M)


def test_check_exit_codes(runner, reuse_zygote):
    ok = runner.invoke(main, ["check", "rnn", str(CORRECT_FILE), "--timeout", "5"])
    assert ok.exit_code == 0, ok.output
    assert "FAIL" not in ok.output and "PASS  rnn_forward: forward (public, float64" in ok.output
    assert "hidden cases" in ok.output
    bad = runner.invoke(main, ["check", "rnn", str(BUGGY_FILE), "--timeout", "5"])
    assert bad.exit_code == 1, bad.output
    assert "FAIL  rnn_forward: forward (public, float64" in bad.output
    assert "PASS  rnn_step: forward (public, float64" in bad.output


@pytest.mark.parametrize("command", ["check", "autograde"])
def test_the_zygote_starts_before_the_command_imports_torch(tmp_path, command):
    """The zygote's torch import then runs beside the command's own instead of after it (1.5 s sooner)."""
    import subprocess
    import sys

    args = {
        "check": ["check", "rnn", str(CORRECT_FILE)],
        "autograde": ["autograde", "rnn", str(CORRECT_FILE), "--results", str(tmp_path / "results.json")],
    }[command]
    code = (
        "import sys\n"
        "from grader import cli, worker\n"
        "start = worker.Zygote.start\n"
        "def spy(self):\n"
        "    print('torch imported:', 'torch' in sys.modules, flush=True)\n"
        "    return start(self)\n"
        "worker.Zygote.start = spy\n"
        f"sys.argv = ['seqgrade', *{args!r}]\n"
        "cli.main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEQGRADE_SECRET": "test-secret"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "torch imported: False" in r.stdout, r.stdout + r.stderr
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_zygotes_object_arenas_ask_for_huge_pages(zygote):
    """Python's arenas (anonymous mappings, not malloc's heap) are marked for transparent huge pages, so a
    fork copies and an exit frees one page-table entry per 2 MiB of them (1.5 ms less per submission)."""
    try:
        thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        pytest.skip("no transparent huge pages on this kernel")
    if "[never]" in thp:
        pytest.skip("transparent huge pages are off on this machine")
    zygote._wait_ready()
    mappings = []  # (size, name, VmFlags) per mapping of the zygote
    for line in Path(f"/proc/{zygote.pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            mappings.append([end - start, fields[5] if len(fields) > 5 else "", ""])
        elif line.startswith("VmFlags:"):
            mappings[-1][2] = line.split(":", 1)[1].split()
    size, _, flags = max(m for m in mappings if m[1] == "")  # the largest anonymous mapping: arenas
    assert size >= 8 << 20  # torch's import leaves tens of MiB of them
    assert "hg" in flags  # madvise(MADV_HUGEPAGE)


def test_check_defaults_to_the_file_in_the_current_folder(runner, tmp_path, monkeypatch, reuse_zygote):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(main, ["check", "rnn"])
    assert r.exit_code == 1 and "no rnn.py or rnn.ipynb here" in r.output
    (tmp_path / "rnn.py").write_bytes(CORRECT_FILE.read_bytes())
    r = runner.invoke(main, ["check", "rnn"])
    assert r.exit_code == 0, r.output


def test_grade_writes_reports(runner, tmp_path, monkeypatch):
    """The real thing: the command starts (and stops) its own zygote."""
    monkeypatch.chdir(tmp_path)  # anything the pipeline keeps in ./.seqgrade stays here
    subs = tmp_path / "class"
    subs.mkdir()
    (subs / "ann.py").write_bytes(CORRECT_FILE.read_bytes())
    (subs / "ben.py").write_bytes(BUGGY_FILE.read_bytes())
    out = tmp_path / "out"
    r = runner.invoke(
        main, ["grade", "rnn", str(subs), "--out", str(out), "--workers", "2", "--timeout", "5"]
    )
    assert r.exit_code == 0, r.output
    assert "Graded 2 submissions" in r.output
    assert gc.get_freeze_count() == 0  # what the run froze is collectable again (library callers, tests)
    ann = json.loads((out / "ann.json").read_text())
    ben = json.loads((out / "ben.json").read_text())
    assert ann["score"] == ann["max_score"] == 10
    assert ben["score"] == 7
    for data in (ann, ben):
        for t in data["tests"]:
            assert {"name", "score", "max_score", "status", "output", "visibility"} <= set(t)
            assert t["status"] in ("passed", "failed")
    assert "rnn_forward" in (out / "ben.md").read_text()
    book = pd.read_csv(out / "gradebook.csv").set_index("student")
    assert sorted(book.index) == ["ann", "ben"]
    assert book.loc["ann", "total"] == 10 and book.loc["ben", "total"] == 7
    assert book.loc["ben", "rnn_forward"] == 0 and book.loc["ben", "rnn_backward"] == 4

    # regrading: nothing changed -> nothing graded; a changed file -> only that student; --student -> that one
    cmd = ["grade", "rnn", str(subs), "--out", str(out), "--timeout", "5"]
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    r = runner.invoke(main, cmd)
    assert r.exit_code == 0 and "Graded 0 submissions" in r.output and "Resumed: 2" in r.output, r.output
    (subs / "ben.py").write_bytes(CORRECT_FILE.read_bytes())  # ben resubmits, fixed
    r = runner.invoke(main, cmd)
    assert r.exit_code == 0 and "Graded 1 submission " in r.output and "Resumed: 1" in r.output, r.output
    assert json.loads((out / "ben.json").read_text())["score"] == 10
    assert (out / "ann.json").stat().st_mtime_ns == stamp["ann.json"]
    r = runner.invoke(main, [*cmd, "--student", "ann"])
    assert r.exit_code == 0 and "Graded 1 submission " in r.output, r.output
    assert (out / "ann.json").stat().st_mtime_ns != stamp["ann.json"]
    assert pd.read_csv(out / "gradebook.csv").set_index("student").loc["ben", "total"] == 10
    # a change to the code that grades (plan, reference, checks, scoring) regrades everyone
    from grader import pipeline

    monkeypatch.setattr(pipeline, "grading_code", lambda plan: "other-code")
    r = runner.invoke(main, cmd)
    assert r.exit_code == 0 and "Graded 2 submissions" in r.output, r.output


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["check", "nosuch", "x.py"], "unknown assignment 'nosuch'"),
        (["check", "rnn", "/no/such/file.py"], "no such file or directory"),
        (["grade", "nosuch", ".", "--out", "OUT"], "unknown assignment 'nosuch'"),
        (["grade", "rnn", "/no/such/folder", "--out", "OUT"], "no such file or directory"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(runner, tmp_path, args, fragment, reuse_zygote):
    args = [str(tmp_path / a) if a == "OUT" else a for a in args]
    r = runner.invoke(main, args)
    assert r.exit_code != 0
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert fragment in lines[0]


def test_students_whose_reports_would_share_a_file_stop_the_run(runner, tmp_path, monkeypatch, reuse_zygote):
    """'Alice' and 'alice' are two students on Linux, and each gets a report. On an --out folder that does
    not tell case apart (vfat, exFAT, a macOS share) their reports would be one file, one student's grade
    silently gone: the run stops before grading anyone, with one line naming both."""
    from grader import report

    monkeypatch.chdir(tmp_path)
    subs = tmp_path / "class"
    subs.mkdir()
    for sid in ("Alice", "alice", "bob"):
        (subs / f"{sid}.py").write_bytes(CORRECT_FILE.read_bytes())
    out = tmp_path / "out"
    cmd = ["grade", "rnn", str(subs), "--out", str(out), "--timeout", "5"]
    assert report.case_sensitive(tmp_path)  # this machine's folders: both reports are kept
    r = runner.invoke(main, cmd)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.glob("*.json")) == ["Alice.json", "alice.json", "bob.json"]

    monkeypatch.setattr(report, "case_sensitive", lambda folder: False)
    out2 = tmp_path / "out2"
    r = runner.invoke(main, [*cmd[:4], str(out2), *cmd[5:]])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert "'Alice' and 'alice'" in lines[0] and "bob" not in lines[0]
    assert not list(out2.glob("*.json"))


def test_examples_demo(grade_hidden):
    """The demo's examples: correct gets full marks, buggy and broken lose points."""
    examples = ROOT / "examples" / "rnn"
    assert grade_hidden("rnn", examples / "correct.py").score == 10
    assert grade_hidden("rnn", examples / "buggy.py").score < 10
    assert grade_hidden("rnn", examples / "broken.py", timeout=1.0).score < 10


# ----------------------------------------------------------------------------------------------- pairs


def test_a_forward_and_a_gradient_check_on_equal_inputs_share_one_call():
    """The worker runs the student's forward pass once for a forward check and the gradient check on the
    same inputs after it (two replies); calls that differ, or lose their partner, run alone."""
    from grader import cases, runner

    case_set = cases.build(PLAN, "hidden", b"pairs")
    preload = runner._preload(case_set, PLAN)
    metas = [(c.function, bool(c.grad_wrt)) for p in case_set.items for c in p.calls]
    steps = sum(1 for f, g in metas if f in ("rnn_step", "rnn_forward") and g)
    assert len(preload.pairs) == steps == 14  # every gradient check of rnn_step and rnn_forward
    todo = sorted(
        (
            runner._Pending(p.function, i, k, c, preload.index[i, k])
            for i, p in enumerate(case_set.items)
            for k, c in enumerate(p.calls)
        ),
        key=lambda e: e.j,
    )
    request = preload.request(todo)
    assert len(request) == len(todo) - 14 and sum(isinstance(c, list) for c in request) == 14
    pair = min(preload.pairs)
    assert preload.request(todo[pair + 1 :])[0] == pair + 1  # its forward check settled: the gradient alone
    assert preload.request(todo[pair : pair + 1]) == [pair]  # a forward check alone
    args = case_set.items[0].calls[0].args
    assert runner._same_tree(args, tuple(a.clone() for a in args))
    changed = list(args)
    changed[-1] = changed[-1] + 1e-12
    assert not runner._same_tree(args, tuple(changed))
    assert not runner._same_tree(args, tuple(a.float() for a in args))


def test_a_pair_that_raises_gives_the_forward_call_its_own_call_on_its_own_inputs():
    """Code that breaks on inputs requiring grad (here: an in-place change of h_prev) fails the gradient
    check only; the forward call is then made on its own preloaded inputs, as if it had never been paired,
    and sees the in-place change."""
    import types

    import torch

    from grader import cases, runner, worker

    case_set = cases.build(PLAN, "hidden", b"pairs")
    preload = runner._preload(case_set, PLAN)
    calls = worker._read_preload(runner._memfile(preload.data))
    j = min(preload.pairs)
    assert all(a is not b for a, b in zip(calls[j][1]["args"], calls[j + 1][1]["args"], strict=True))

    def rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
        h_prev.add_(1.0)  # raises on a leaf that requires grad
        return torch.tanh(x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh)

    runs = worker.Worker(None, worker.Tracer(), calls)
    runs.module = types.SimpleNamespace(rnn_step=rnn_step)
    h_before = calls[j][1]["args"][1].clone()
    (marker, _), (grad, grad_tree), (alone, alone_tree) = list(runs.do_call(*calls[j + 1], forward=calls[j]))
    assert marker == {"ok": False, "retry": True}
    assert not grad["ok"] and "in-place operation" in grad["error"] and grad_tree is None
    assert torch.equal(calls[j + 1][1]["args"][1], h_before)  # the failed attempt worked on copies
    assert alone["ok"] and alone["mutated"] == [[1, 0]]  # the forward call on its own sees the change
    x_t, h, W_ih, W_hh, b_ih, b_hh = (a.clone() for a in calls[j][1]["args"])
    h = h_before + 1.0
    assert torch.allclose(alone_tree["value"], torch.tanh(x_t @ W_ih.T + b_ih + h @ W_hh.T + b_hh))


def test_the_inits_copies_are_used_once_and_the_preloaded_inputs_stay_untouched():
    """The init makes each call's copies once (leaves requiring grad for the arguments whose gradients are
    checked); a worker passes them to the student's function and compares them with the preloaded tensors
    afterwards. A call made a second time in the same worker gets fresh copies, never the first call's
    (changed) ones, and the preloaded tensors never change."""
    import types

    import torch

    from grader import cases, runner, worker

    case_set = cases.build(PLAN, "hidden", b"copies")
    preload = runner._preload(case_set, PLAN)
    calls = worker._read_preload(runner._memfile(preload.data))
    for meta, tree in calls:
        tree["ready"] = worker._ready(meta, tree)
    j = min(preload.pairs) + 1  # a gradient call of rnn_step
    meta, tree = calls[j]
    args, before, leaves = tree["ready"]
    originals = [a.clone() for a in tree["args"]]
    grad_wrt = [int(i) for i in meta["grad_wrt"]]
    assert grad_wrt and all(args[i].requires_grad and args[i].is_leaf for i in grad_wrt)
    assert [id(t) for t in leaves] == [id(args[i]) for i in grad_wrt]
    assert all(a is not b for a, b in zip(args, tree["args"], strict=True))
    assert [id(t) for _, t in before] == [id(a) for a in tree["args"]]
    seen = []

    def rnn_step(x_t, h_prev, W_ih, W_hh, b_ih, b_hh):
        seen.append((x_t, h_prev.detach().clone()))
        with torch.no_grad():
            x_t.mul_(2.0)  # in place, on the inputs the function was given
        return torch.tanh(x_t @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh)

    runs = worker.Worker(None, worker.Tracer(), calls)
    runs.module = types.SimpleNamespace(rnn_step=rnn_step)
    [(first, _)], [(second, _)] = list(runs.do_call(meta, tree)), list(runs.do_call(meta, tree))
    assert first["ok"] and second["ok"]
    assert first["mutated"] == second["mutated"] == [[0, 0]]
    assert seen[0][0] is args[0] and seen[1][0] is not args[0]  # the init's copy, then a fresh one
    assert torch.equal(seen[1][0], originals[0] * 2.0)  # not the first call's doubled copy doubled again
    assert all(torch.equal(a, b) for a, b in zip(tree["args"], originals, strict=True))


def _slots_without_workers(monkeypatch, run=lambda sub: sub):
    """grade_local with stand-ins for the worker and the scorer: run(sub) is what a submission's run gives,
    and its report is {"student": sub}. Returns grade_local(subs, workers) on those."""
    from grader import pipeline

    monkeypatch.setattr(pipeline, "run_submission", lambda zygote, plan, cases, sub, options: run(sub))
    monkeypatch.setattr(pipeline, "_report", lambda plan, cases, sub, result, key: ({"student": sub}, ""))
    return lambda subs, workers: pipeline.grade_local(
        None, None, None, subs, None, workers=workers, case_key="k"
    )


def test_slots_keep_grading_while_the_caller_writes_and_stay_bounded(monkeypatch):
    """A caller busy between reports (writing them, an fsync each) does not stall the slots: they take
    their next submissions themselves, up to 4 x workers ahead of the caller and no further."""
    import threading
    import time

    started = []
    lock = threading.Lock()

    def run(sub):
        with lock:
            started.append(sub)
        return sub

    stream = _slots_without_workers(monkeypatch, run)([f"s{i}" for i in range(20)], 2)
    first = next(stream)
    deadline = time.monotonic() + 10
    while len(started) < 9 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # room for any slot that would overrun the bound
    assert len(started) == 9  # the one handed over, and 4 x 2 ahead while the caller is busy
    rest = list(stream)
    assert sorted([first[0]["student"]] + [r["student"] for r, _ in rest]) == sorted(
        f"s{i}" for i in range(20)
    )
    assert len(started) == 20


def test_our_fault_in_a_slot_stops_the_run_with_that_error(monkeypatch):
    def run(sub):
        if sub == "s3":
            raise RuntimeError("the zygote process died")
        return sub

    with pytest.raises(RuntimeError, match="zygote process died"):
        list(_slots_without_workers(monkeypatch, run)([f"s{i}" for i in range(50)], 2))


def test_an_error_while_writing_reports_stops_the_slots(monkeypatch, tmp_path, zygote):
    """A full disk (or Ctrl-C) while a report is written ends the run with that error and closes the
    stream of results, which stops the slot threads (left open, they waited forever at exit)."""
    from grader import pipeline, report

    closed = []

    def results(*args, **kwargs):
        try:
            while True:
                yield {"extra_data": {"student": "ann"}}, ""
        finally:
            closed.append(True)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "grade_local", results)
    monkeypatch.setattr(report, "atomic_write", disk_full)
    subs = tmp_path / "class"
    subs.mkdir()
    (subs / "ann.py").write_bytes(CORRECT_FILE.read_bytes())
    with pytest.raises(OSError, match="No space left") as error:
        pipeline.grade("rnn", subs, tmp_path / "out", pipeline.GradeOptions(fresh=True), zygote=zygote)
    assert closed == [True] and error.traceback  # closed by grade itself, while the error (a caller's) lives


def test_a_failing_list_of_submissions_reaches_the_caller(monkeypatch):
    def subs():
        yield "s0"
        raise RuntimeError("could not list the submissions")

    with pytest.raises(RuntimeError, match="could not list"):
        list(_slots_without_workers(monkeypatch)(subs(), 2))


def test_a_slot_that_cannot_start_stops_the_others(monkeypatch):
    """Starting the third slot fails (no thread left under a process limit): the two started end too."""
    from concurrent.futures import ThreadPoolExecutor

    from grader import pipeline

    class FewThreads(ThreadPoolExecutor):
        started = 0

        def submit(self, fn, /, *args, **kwargs):
            if fn.__name__ == "slot":
                FewThreads.started += 1
                if FewThreads.started == 3:
                    raise RuntimeError("can't start new thread")
            return super().submit(fn, *args, **kwargs)

    monkeypatch.setattr(pipeline, "ThreadPoolExecutor", FewThreads)
    with pytest.raises(RuntimeError, match="new thread"):
        list(_slots_without_workers(monkeypatch)([f"s{i}" for i in range(200)], 4))
