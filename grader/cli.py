"""The `seqgrade` command: parses options and calls grader.pipeline. Errors become one clear line."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from pathlib import Path

import click

from grader.errors import SeqgradeError


def _fail(e: SeqgradeError) -> click.ClickException:
    return click.ClickException(str(e))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="seqgrade")
def main() -> None:
    """Grade sequence-model assignments: RNN, LSTM/GRU, attention, transformers, Hopfield networks."""
    # SIGTERM (a CI runner's or Gradescope's timeout, `kill`) unwinds like Ctrl-C: the zygote and its
    # workers are stopped and temporary folders removed; reports already written stay (atomic writes)
    signal.signal(signal.SIGTERM, _signalled)
    signal.signal(signal.SIGINT, _signalled)


_STOP: list[
    BaseException
] = []  # set by a signal: raised again after each report, should a finaliser swallow it


def _signalled(signum: int, frame: object) -> None:
    """Ctrl-C raises KeyboardInterrupt, SIGTERM SystemExit(143) (a second SIGTERM kills at once)."""
    if signum == signal.SIGTERM:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _STOP.append(SystemExit(128 + signum))
    else:
        _STOP.append(KeyboardInterrupt())
    raise _STOP[-1]


def _stop_if_signalled() -> None:
    """A signal's exception raised inside a finaliser (__del__, a weakref callback) is printed and dropped by
    Python: the run would go on. Raise it again at the next safe point."""
    if _STOP:
        raise _STOP[0]


@main.command("check")
@click.argument("assignment")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--timeout", default=10.0, show_default=True, help="Seconds allowed per call.")
def check_cmd(assignment: str, path: Path | None, timeout: float) -> None:
    """Self-check a solution on the public cases (students). PATH defaults to ./ASSIGNMENT.py or .ipynb."""
    _validate(assignment, path or Path("."))
    if path is None:
        path = next((c for c in (Path(f"{assignment}.py"), Path(f"{assignment}.ipynb")) if c.exists()), None)
        if path is None:
            raise click.ClickException(f"no {assignment}.py or {assignment}.ipynb here; give the PATH")
    zygote = _start_zygote()
    try:
        from grader import pipeline

        result = pipeline.check(assignment, path, timeout=timeout, zygote=zygote)
    except SeqgradeError as e:
        raise _fail(e) from None
    finally:
        zygote.stop()
    _print_check(result)
    sys.exit(0 if all(t.passed for t in result.tests) else 1)


def _start_zygote():
    """The zygote, started before this process imports torch (grader.pipeline does): the two imports then
    run side by side instead of one after the other, 1.5 s sooner on 2 cores. Before any plan, reference
    or secret is loaded, too."""
    from grader.worker import Zygote

    return Zygote().start()


def _validate(assignment: str, path: Path) -> None:
    """Refuse an unknown assignment or a missing path at once, before a worker process is started."""
    from grader.plan import available

    if assignment not in available():
        raise click.ClickException(f"unknown assignment {assignment!r} (known: {', '.join(available())})")
    if not Path(path).exists():
        raise click.ClickException(f"{path}: no such file or directory")


def _print_check(result) -> None:
    if result.import_error:
        click.secho(f"Could not load your submission: {result.import_error}", fg="red")
    width = max((len(t.name) for t in result.tests), default=20)
    for t in result.tests:
        mark = click.style("PASS", fg="green") if t.passed else click.style("FAIL", fg="red")
        click.echo(f"{mark}  {t.name.ljust(width)}")
        if not t.passed and t.message:
            click.echo(f"      {t.message}")
    n_pass = sum(t.passed for t in result.tests)
    click.echo("")
    click.echo(
        f"{n_pass} of {len(result.tests)} public checks passed ({result.score:.2f} / {result.max_score:g} "
        "points on public cases)."
    )
    click.echo(
        "Your grade is decided by hidden cases of other shapes and values: passing these is necessary, "
        "not sufficient."
    )
    if result.output.strip():
        click.echo("\nYour code printed (excerpt):\n" + result.output[:1500])


@main.command("grade")
@click.argument("assignment")
@click.argument("submissions", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Report directory.")
@click.option("--workers", default=2, show_default=True, help="Submissions graded at once.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds allowed per call.")
@click.option("--memory-mb", default=4096, show_default=True, help="Memory cap per worker.")
@click.option(
    "--secret",
    "secret",
    type=click.Path(path_type=Path),
    default=None,
    help="Secret file for hidden cases (default: $SEQGRADE_SECRET or ./.seqgrade/secret).",
)
@click.option("--fresh", is_flag=True, help="Regrade everything instead of resuming.")
@click.option("--public/--no-public", default=False, help="Also grade the public cases (visible in reports).")
@click.option(
    "--executor",
    type=click.Choice(["local", "dask"]),
    default="local",
    show_default=True,
    help="Where submissions are graded: this machine, or a Dask cluster (docs/SCALING.md).",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="The Dask scheduler for --executor dask, e.g. tcp://10.0.0.5:8786.",
)
@click.option("--student", "students", multiple=True, help="Grade only this student id (repeatable).")
@click.option("--cpu-seconds", type=float, default=None, help="CPU-time cap per worker [runner default].")
@click.option("--disk-mb", type=int, default=None, help="Size of each worker's private directory [default].")
def grade_cmd(
    assignment,
    submissions,
    out,
    workers,
    timeout,
    memory_mb,
    secret,
    fresh,
    public,
    executor,
    scheduler,
    students,
    cpu_seconds,
    disk_mb,
) -> None:
    """Grade every submission in SUBMISSIONS (instructors): writes OUT/<student>.json/.md and gradebook.csv."""
    if workers < 1 or timeout <= 0:
        raise click.ClickException("--workers must be >= 1 and --timeout > 0")
    if executor == "dask" and not scheduler:
        raise click.ClickException("--executor dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
    _validate(assignment, submissions)
    bar_state: dict = {}

    def progress(done: int, total: int, student: str) -> None:
        _stop_if_signalled()
        bar = bar_state.get("bar")
        if bar is None:
            bar = click.progressbar(
                length=total,
                label="grading",
                show_eta=True,
                show_pos=True,
                file=sys.stderr,
                item_show_func=lambda s: s,
            )
            bar.__enter__()
            bar_state["bar"] = bar
        bar.update(1, student)

    zygote = _start_zygote() if executor == "local" else None
    try:
        from grader import pipeline, report

        opts = pipeline.GradeOptions(
            workers=workers,
            timeout=timeout,
            memory_mb=memory_mb,
            secret_path=secret,
            fresh=fresh,
            visibilities=("public", "hidden") if public else ("hidden",),
            executor=executor,
            scheduler=scheduler,
            students=tuple(students),
            cpu_seconds=cpu_seconds,
            disk_mb=disk_mb,
        )
        run = pipeline.grade(assignment, submissions, out, opts, progress=progress, zygote=zygote)
    except SeqgradeError as e:
        raise _fail(e) from None
    finally:
        if "bar" in bar_state:
            bar_state["bar"].__exit__(None, None, None)
        if zygote is not None:
            zygote.stop()
    _stop_if_signalled()
    click.echo(run.secret_note, err=True)
    if run.cache_note:
        click.echo(run.cache_note, err=True)
    protections = next(
        (r["extra_data"].get("protections") for r in run.results if r["extra_data"].get("protections")), None
    )
    if protections:
        click.echo(f"Worker protections: {', '.join(protections)} (docs/SECURITY.md)", err=True)
    if run.skipped:
        click.echo(
            f"Resumed: {run.skipped} submissions already graded with these cases were kept "
            "(--fresh regrades them, --student ID regrades one).",
            err=True,
        )
    click.echo(report.summary_text(run.results, seconds=run.seconds, graded=run.graded))
    click.echo(f"Reports in {run.out}/ (gradebook.csv, <student>.json, <student>.md)")


@main.command("list")
def list_cmd() -> None:
    """List the assignments this grader knows."""
    from grader.plan import available, load_plan

    for name in available():
        try:
            plan = load_plan(name)
            click.echo(f"{name:12s} {plan.max_score:5g} pts  {plan.title}")
        except SeqgradeError as e:
            click.echo(f"{name:12s} (broken plan: {e})")


# ------------------------------------------------------------------------------------ instructors' workflow
# release / autograde / gradescope / collect / export / report (grader/release.py, gradescope.py, roster.py,
# exports.py, classreport.py)


@main.command("release")
@click.argument("assignment")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Folder to write it to.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["py", "ipynb"]),
    default="py",
    show_default=True,
    help="Hand out a .py template or a notebook.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is not empty.")
def release_cmd(assignment: str, out: Path, fmt: str, overwrite: bool) -> None:
    """Build what students get: template, handout, public cases, self-check; no reference, no secret."""
    from grader.release import release

    try:
        r = release(assignment, out, fmt=fmt, overwrite=overwrite)
    except SeqgradeError as e:
        raise _fail(e) from None
    for note in r.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(
        f"Released {assignment} to {r.out}/ ({len(r.files)} files): students edit "
        f"{r.student_file.name}, install ./seqgrade-check, run `seqgrade check {assignment} "
        f"{r.student_file.name}`."
    )


@main.command("autograde")
@click.argument("assignment")
@click.argument("submission", type=click.Path(path_type=Path))
@click.option(
    "--results",
    "results",
    required=True,
    type=click.Path(path_type=Path),
    help="Where to write Gradescope's results.json.",
)
@click.option(
    "--secret",
    "secret",
    type=click.Path(path_type=Path),
    default=None,
    help="Secret file for hidden cases (default: $SEQGRADE_SECRET or ./.seqgrade/secret).",
)
@click.option(
    "--metadata",
    type=click.Path(path_type=Path),
    default=None,
    help="Gradescope's submission_metadata.json (names the student).",
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds allowed per call.")
@click.option("--memory-mb", default=4096, show_default=True, help="Memory cap of the worker.")
@click.option(
    "--scrub",
    is_flag=True,
    help="Inside an autograder bundle only: delete the secret and the "
    "reference once the hidden cases are prepared, before student code runs.",
)
def autograde_cmd(assignment, submission, results, secret, metadata, timeout, memory_mb, scrub) -> None:
    """Grade ONE submission on public and hidden cases into a Gradescope results.json."""
    zygote = _start_zygote()
    try:
        from grader.gradescope import autograde

        data = autograde(
            assignment,
            submission,
            results,
            secret_path=secret,
            timeout=timeout,
            memory_mb=memory_mb,
            metadata=metadata,
            scrub=scrub,
            zygote=zygote,
        )
    except SeqgradeError as e:
        raise _fail(e) from None
    finally:
        zygote.stop()
    failed = sum(t["status"] == "failed" for t in data["tests"])
    click.echo(
        f"{data['score']:.2f} / {data['extra_data']['max_score']:g} points; {failed} of "
        f"{len(data['tests'])} checks failed. Wrote {results}"
    )


@main.command("gradescope")
@click.argument("assignment")
@click.option(
    "--out",
    "out",
    default=Path("autograder.zip"),
    show_default=True,
    type=click.Path(path_type=Path),
    help="The zip to upload to Gradescope.",
)
@click.option(
    "--secret",
    "secret",
    type=click.Path(path_type=Path),
    default=None,
    help="Secret file for hidden cases (default: $SEQGRADE_SECRET or ./.seqgrade/secret).",
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds allowed per call on Gradescope.")
@click.option("--memory-mb", default=4096, show_default=True, help="Memory cap of the worker on Gradescope.")
def gradescope_cmd(assignment, out, secret, timeout, memory_mb) -> None:
    """Build the Gradescope autograder zip (setup.sh, run_autograder, grader, reference, secret)."""
    from grader.gradescope import build_bundle

    try:
        path = build_bundle(assignment, out, secret_path=secret, timeout=timeout, memory_mb=memory_mb)
    except SeqgradeError as e:
        raise _fail(e) from None
    click.echo(
        f"Wrote {path}: upload it as the autograder of a Gradescope programming assignment. It holds "
        "the secret and the reference: keep it private."
    )


@main.command("report")
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--submissions",
    type=click.Path(path_type=Path),
    default=None,
    help="The graded submissions: adds code-similarity pairs.",
)
@click.option("--threshold", default=0.8, show_default=True, help="Similarity (0..1) listed from.")
@click.option("--title", default=None, help="Page title.")
def report_cmd(out: Path, submissions: Path | None, threshold: float, title: str | None) -> None:
    """Write OUT/summary.html: histogram, pass rates, common failures, feedback links, similar code."""
    from grader.classreport import write_report

    if not 0 <= threshold <= 1:
        raise click.ClickException("--threshold must be between 0 and 1")
    try:
        path = write_report(out, submissions=submissions, threshold=threshold, title=title)
    except SeqgradeError as e:
        raise _fail(e) from None
    click.echo(f"Wrote {path} (self-contained: open it in a browser)")


@main.command("collect")
@click.argument("download", type=click.Path(path_type=Path))
@click.option("--roster", "roster_path", required=True, type=click.Path(path_type=Path), help="Roster CSV.")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of per-student submissions to write (then: seqgrade grade ASSIGNMENT OUT ...).",
)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is not empty.")
def collect_cmd(download: Path, roster_path: Path, out: Path, overwrite: bool) -> None:
    """Sort a Canvas/Gradescope/GitHub Classroom bulk download into one folder per rostered student."""
    from grader.roster import MANIFEST, Roster, collect

    try:
        result = collect(download, Roster.from_csv(roster_path), out, overwrite=overwrite)
    except SeqgradeError as e:
        raise _fail(e) from None
    matched = sum(m.status == "matched" for m in result.matches)
    click.echo(
        f"{matched} submissions matched to the roster, {len(result.unmatched)} unmatched, "
        f"{len(result.missing)} students without a submission. Details: {out / MANIFEST}"
    )
    for m in result.unmatched:
        click.echo(f"  unmatched: {m.entry} (graded as {m.folder!r}; add the student to the roster?)")
    for m in result.missing:
        click.echo(f"  missing:   {m.folder} {m.student.name if m.student else ''}")


@main.command("export")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--roster", "roster_path", required=True, type=click.Path(path_type=Path), help="Roster CSV.")
@click.option(
    "--collected",
    type=click.Path(path_type=Path),
    default=None,
    help="The folder `seqgrade collect` wrote (its collect.csv has submission times).",
)
@click.option("--canvas", type=click.Path(path_type=Path), default=None, help="Canvas import CSV to write.")
@click.option("--canvas-column", default=None, help='Assignment column, e.g. "RNN (123456)" (default: name).')
@click.option(
    "--missing",
    type=click.Choice(["blank", "zero"]),
    default="blank",
    show_default=True,
    help="Canvas grade of students without a submission.",
)
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None, help="Plain CSV gradebook.")
@click.option("--xlsx", type=click.Path(path_type=Path), default=None, help="Excel gradebook.")
@click.option("--due", default=None, help="Due time, ISO 8601 (e.g. 2025-03-01T23:59:00+01:00): late policy.")
@click.option("--late-per-day", default=0.1, show_default=True, help="Fraction lost per started day late.")
@click.option("--late-max-days", type=float, default=None, help="Later than this many days: score 0.")
@click.option("--grace-minutes", default=0.0, show_default=True, help="Minutes after --due still on time.")
def export_cmd(
    out,
    roster_path,
    collected,
    canvas,
    canvas_column,
    missing,
    csv_path,
    xlsx,
    due,
    late_per_day,
    late_max_days,
    grace_minutes,
) -> None:
    """Export OUT's grades: Canvas import CSV, plain CSV or Excel, with the roster and a late policy."""
    from grader import exports
    from grader.roster import Roster, parse_time

    try:
        roster = Roster.from_csv(roster_path)
        results = exports.load_reports(out)
        late = None
        if due:
            due_at = parse_time(due)
            if due_at is None:
                raise click.ClickException(f"--due {due!r} is not an ISO 8601 time")
            late = exports.LatePolicy(due_at, late_per_day, late_max_days, grace_minutes)
        df = exports.gradebook(results, roster, manifest=exports.find_manifest(collected), late=late)
        written = []
        if csv_path or not (canvas or xlsx):
            written.append(exports.write_csv(df, csv_path or Path(out) / "grades.csv"))
        if xlsx:
            written.append(exports.write_excel(df, xlsx))
        if canvas:
            column = canvas_column or str(results[0]["extra_data"].get("assignment", "seqgrade"))
            written.append(exports.write_canvas(df, roster, canvas, column=column, missing=missing))
    except SeqgradeError as e:
        raise _fail(e) from None
    counts = df["status"].str.split(" ").str[0].value_counts().to_dict()
    click.echo(
        f"{counts.get('graded', 0)} graded, {counts.get('missing', 0)} missing, "
        f"{counts.get('unmatched', 0)} unmatched (not in the roster: fix the roster and re-export), "
        f"{int((df['late'] != '').sum())} late."
    )
    for row in df[df["status"] == "unmatched"].to_dict("records"):
        click.echo(f"  unmatched: {row['submission']}")
    click.echo("Wrote " + ", ".join(str(p) for p in written))


def entry() -> None:
    """The `seqgrade` command (and `python -m grader.cli`): main(), then a quick exit.

    Python's own shutdown with torch loaded took 0.3 to 0.5 s on the machine this was measured on: it tears
    down every module and torch's C++ operator registrations, and saves nothing once the command is done.
    So once main() has ended, the exit handlers run (they remove ended workers' folders, stop a Dask run's
    zygote), the output is flushed and the process ends at once, with main()'s exit status. An exception
    that main() lets through (a bug: its traceback), a text status and threads still running take Python's
    usual way out."""
    try:
        main()  # click's standalone mode: always ends in SystemExit
    except SystemExit as e:
        code = e.code
    else:  # pragma: no cover - standalone mode does not return
        code = 0
    busy = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if busy or not (code is None or isinstance(code, int)):
        # running threads' joins are the interpreter's to do (concurrent.futures registers them there), and
        # so is a text status (printed, exit status 1)
        sys.exit(code)
    atexit._run_exitfuncs()  # noqa: SLF001 - the handlers Python would run, in its order
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`seqgrade ... | head`), a closed stream
            pass
    os._exit((code or 0) & 0xFF)


if __name__ == "__main__":  # pragma: no cover
    entry()
