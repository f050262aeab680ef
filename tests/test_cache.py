"""The on-disk case cache (grader.cache): a hit grades exactly like a fresh build, the key follows every
input that decides the cases, a damaged or foreign file is never trusted, and no worker can read it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from grader import cache, cases, pipeline
from grader.loader import discover
from grader.plan import load_plan
from grader.runner import RunOptions, run_submission

SECRET = b"seqgrade-tests-fixed-secret"
SUBMISSIONS = Path(__file__).resolve().parent / "submissions"


@pytest.fixture(scope="module")
def rnn():
    return load_plan("rnn")


def _only(root: Path) -> Path:
    (path,) = root.glob("*.cases")
    return path


def test_hit_decodes_to_the_built_case_set(rnn, tmp_path):
    built, how = cache.load_or_build(rnn, "hidden", SECRET, root=tmp_path)
    assert how == "built"
    again, how = cache.load_or_build(rnn, "hidden", SECRET, root=tmp_path)
    assert how == "hit"
    assert cache._unfaithful(built, again) == ""
    assert cache._unfaithful(cases.build(rnn, "hidden", SECRET), again) == ""
    assert _only(tmp_path).read_bytes().startswith(cache.MAGIC)


@pytest.mark.parametrize("name", ["gated", "transformer"])
def test_other_assignments_survive_the_round_trip(name, tmp_path):
    plan = load_plan(name)
    built = cases.build(plan, "hidden", SECRET)
    assert cache._unfaithful(built, cache.decode(plan, cache.encode(built))) == ""


def test_cached_cases_grade_like_fresh_ones(rnn, tmp_path, zygote):
    cache.load_or_build(rnn, "hidden", SECRET, root=tmp_path)
    cached, how = cache.load_or_build(rnn, "hidden", SECRET, root=tmp_path)
    assert how == "hit"
    fresh = cases.build(rnn, "hidden", SECRET)
    for name in ("correct_loops.py", "bug_whh_not_transposed.py", "bug_clip_per_tensor.py"):
        (sub,) = discover(SUBMISSIONS / "rnn" / name, rnn.module, workdir=tmp_path / "in")
        a = pipeline.grade_submission(zygote, rnn, [cached], sub, RunOptions(timeout=5))
        b = pipeline.grade_submission(zygote, rnn, [fresh], sub, RunOptions(timeout=5))
        assert [(t.name, t.passed, t.message) for t in a.tests] == [
            (t.name, t.passed, t.message) for t in b.tests
        ]
        assert a.score == b.score
    assert a.score < a.max_score  # the buggy ones really fail


def test_key_follows_secret_visibility_and_sources(rnn, monkeypatch):
    k = cache.key(rnn, "hidden", SECRET)
    assert k == cache.key(rnn, "hidden", SECRET)
    assert k != cache.key(rnn, "hidden", SECRET + b"x")
    assert k != cache.key(rnn, "public", SECRET)
    modules = dict(cache.source_digests(rnn))
    for name in ("assignments.rnn.plan", "reference.rnn", "grader.checks", "grader.cases", "grader.wire"):
        assert name in modules
    real = cache.source_digests
    monkeypatch.setattr(
        cache,
        "source_digests",
        lambda plan: [(n, d if n != "reference.rnn" else "edited") for n, d in real(plan)],
    )
    assert cache.key(rnn, "hidden", SECRET) != k


def test_source_digests_follow_imports_between_assignments():
    names = dict(cache.source_digests(load_plan("gated")))
    assert "assignments.rnn.plan" in names  # the gated plan borrows rnn's input recipes
    assert "reference.gated" in names


def test_changed_sources_rebuild_and_drop_the_stale_file(rnn, tmp_path, monkeypatch):
    cache.load_or_build(rnn, "hidden", SECRET, root=tmp_path)
    first = _only(tmp_path)
    real = cache.source_digests
    monkeypatch.setattr(cache, "source_digests", lambda plan: real(plan) + [("reference.extra", "new")])
    _, how = cache.load_or_build(rnn, "hidden", SECRET, root=tmp_path)
    assert how == "built"
    assert _only(tmp_path) != first


def test_tampered_or_foreign_files_are_rebuilt(rnn, tmp_path):
    cache.load_or_build(rnn, "hidden", SECRET, root=tmp_path)
    path = _only(tmp_path)
    good = path.read_bytes()
    data = bytearray(good)
    data[-10] ^= 0xFF  # one flipped byte in an expected value
    path.write_bytes(bytes(data))
    _, how = cache.load_or_build(rnn, "hidden", SECRET, root=tmp_path)
    assert how == "built"
    assert path.read_bytes() == good

    path.write_bytes(good[: len(good) // 2])  # truncated
    assert cache.load_or_build(rnn, "hidden", SECRET, root=tmp_path)[1] == "built"

    # a file sealed with another secret, put under this secret's name, fails its HMAC
    other = tmp_path / "other"
    cache.load_or_build(rnn, "hidden", b"another secret", root=other)
    path.write_bytes(_only(other).read_bytes())
    assert cache.load_or_build(rnn, "hidden", SECRET, root=tmp_path)[1] == "built"


def test_files_are_private(rnn, tmp_path):
    root = tmp_path / ".seqgrade" / "cache"
    cache.load_or_build(rnn, "hidden", SECRET, root=root)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(_only(root).stat().st_mode) == 0o600
    assert (root.parent / ".gitignore").read_text() == "*\n"


def test_grade_uses_the_cache(tmp_path, zygote):
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "ann.py").write_bytes((SUBMISSIONS / "rnn" / "correct_loops.py").read_bytes())
    opts = pipeline.GradeOptions(workers=1, fresh=True, cache_dir=tmp_path / "cache")
    first = pipeline.grade("rnn", subs, tmp_path / "out1", opts, zygote=zygote)
    second = pipeline.grade("rnn", subs, tmp_path / "out2", opts, zygote=zygote)
    assert "built and cached" in first.cache_note and "from the cache" in second.cache_note
    assert first.results[0]["score"] == second.results[0]["score"] == first.plan.max_score


def test_a_worker_cannot_read_the_cache(rnn, tmp_path, zygote):
    root = tmp_path / ".seqgrade" / "cache"
    cache.load_or_build(rnn, "hidden", SECRET, root=root)
    target = _only(root)
    tmp_path.chmod(0o755)  # only the cache's own folder is private, as under a real course folder
    spy = tmp_path / "spy"
    spy.mkdir()
    source = (
        (SUBMISSIONS / "rnn" / "correct_loops.py").read_text()
        + f"""

def _peek():
    try:
        with open({str(target)!r}, "rb") as f:
            return "READ " + str(len(f.read()))
    except OSError as e:
        return "BLOCKED " + type(e).__name__


print(_peek())
"""
    )
    (spy / "rnn.py").write_text(source)
    (sub,) = discover(spy, rnn.module, workdir=tmp_path / "in")
    run = run_submission(zygote, rnn, cases.load_public(rnn), sub, RunOptions(timeout=5))
    if not ({"uid", "landlock"} & set(run.protections)) and os.geteuid() == os.stat(target).st_uid:
        pytest.skip(f"no uid drop or Landlock on this machine (protections: {run.protections})")
    assert "BLOCKED" in run.output and "READ" not in run.output
