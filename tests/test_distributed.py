"""`seqgrade grade --executor dask`: a LocalCluster grades a class, and every report is the one local
grading writes (timings aside)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader import pipeline
from grader.errors import ConfigError

distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed (seqgrade[dask])")

SUBMISSIONS = Path(__file__).resolve().parent / "submissions" / "rnn"
CLASS = (
    "correct_loops.py",
    "correct_vectorised.py",
    "bug_whh_not_transposed.py",
    "bug_clip_per_tensor.py",
    "bug_raises.py",
    "bug_missing.py",
    "bug_inplace_dhs.py",
    "bug_nn_rnn.py",
)
TIMINGS = ("seconds", "student_seconds")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
    ) as c:
        yield c


@pytest.fixture(scope="module")
def klass(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("class")
    for name in CLASS:
        shutil.copy(SUBMISSIONS / name, folder / name)
    (folder / "not_python.py").write_text("def rnn_step(:\n")  # a syntax error: graded, scored 0
    return folder


def _reports(out: Path) -> dict[str, object]:
    found: dict[str, object] = {}
    for path in sorted(out.iterdir()):
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            for k in TIMINGS:
                data["extra_data"].pop(k, None)
            found[path.name] = data
        elif path.suffix in (".md", ".csv"):
            found[path.name] = path.read_text()
    return found


def test_dask_reports_equal_local_reports(cluster, klass, tmp_path, zygote):
    local = pipeline.grade(
        "rnn", klass, tmp_path / "local", pipeline.GradeOptions(workers=2, fresh=True), zygote=zygote
    )
    seen = []
    opts = pipeline.GradeOptions(fresh=True, executor="dask", scheduler=cluster.scheduler_address)
    remote = pipeline.grade(
        "rnn", klass, tmp_path / "dask", opts, progress=lambda d, t, s: seen.append((d, t))
    )
    assert remote.graded == local.graded == len(CLASS) + 1
    a, b = _reports(tmp_path / "local"), _reports(tmp_path / "dask")
    assert sorted(a) == sorted(b) and len(a) == 2 * (len(CLASS) + 1) + 1
    for name in a:
        assert a[name] == b[name], name
    scores = {r["extra_data"]["student"]: r["score"] for r in remote.results}
    assert (
        scores["correct_loops"] == 10 and scores["bug_whh_not_transposed"] < 10 and scores["not_python"] == 0
    )
    assert seen[-1] == (len(CLASS) + 1, len(CLASS) + 1)


def test_cli_grades_on_the_cluster_and_resumes(cluster, klass, tmp_path):
    from grader.cli import main

    args = [
        "grade",
        "rnn",
        str(klass),
        "--out",
        str(tmp_path / "out"),
        "--executor",
        "dask",
        "--scheduler",
        cluster.scheduler_address,
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert f"Graded {len(CLASS) + 1} submissions" in r.output
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "Resumed: 9 submissions" in r.output


def test_dask_needs_a_scheduler(klass, tmp_path, monkeypatch):
    from grader import distributed as dist
    from grader.cli import main

    monkeypatch.setattr(dist, "CONNECT_TIMEOUT", "2s")
    r = CliRunner().invoke(main, ["grade", "rnn", str(klass), "--out", str(tmp_path), "--executor", "dask"])
    assert r.exit_code != 0 and "--scheduler" in r.output
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        opts = pipeline.GradeOptions(executor="dask", scheduler="tcp://127.0.0.1:9", fresh=True)
        pipeline.grade("rnn", klass, tmp_path / "x", opts)


def test_a_worker_with_other_code_refuses(cluster, klass, tmp_path, monkeypatch):
    from grader import distributed as dist

    monkeypatch.setattr(dist, "code_fingerprint", lambda plan: "not what the workers run")
    opts = pipeline.GradeOptions(fresh=True, executor="dask", scheduler=cluster.scheduler_address)
    with pytest.raises(ConfigError, match="differs from the client's"):
        pipeline.grade("rnn", klass, tmp_path / "out", opts)
