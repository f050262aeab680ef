"""The `seqgrade` command: parses options and calls grader.pipeline. Errors become one clear line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from grader.errors import SeqgradeError


def _fail(e: SeqgradeError) -> click.ClickException:
    return click.ClickException(str(e))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="seqgrade")
def main() -> None:
    """Grade sequence-model assignments: RNN, LSTM/GRU, attention, transformers, Hopfield networks."""


@main.command("check")
@click.argument("assignment")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--timeout", default=10.0, show_default=True, help="Seconds allowed per call.")
def check_cmd(assignment: str, path: Path | None, timeout: float) -> None:
    """Self-check a solution on the public cases (students). PATH defaults to ./ASSIGNMENT.py or .ipynb."""
    from grader import pipeline

    zygote = pipeline.start_zygote()
    try:
        if path is None:
            for cand in (Path(f"{assignment}.py"), Path(f"{assignment}.ipynb")):
                if cand.exists():
                    path = cand
                    break
            else:
                raise click.ClickException(f"no {assignment}.py or {assignment}.ipynb here; give the PATH")
        result = pipeline.check(assignment, path, timeout=timeout, zygote=zygote)
    except SeqgradeError as e:
        raise _fail(e) from None
    finally:
        zygote.stop()
    _print_check(result)
    sys.exit(0 if all(t.passed for t in result.tests) else 1)


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
    click.echo(f"{n_pass} of {len(result.tests)} public checks passed ({result.score:.2f} / {result.max_score:g} "
               "points on public cases).")
    click.echo("Your grade is decided by hidden cases of other shapes and values: passing these is necessary, "
               "not sufficient.")
    if result.output.strip():
        click.echo("\nYour code printed (excerpt):\n" + result.output[:1500])


@main.command("grade")
@click.argument("assignment")
@click.argument("submissions", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Report directory.")
@click.option("--workers", default=2, show_default=True, help="Submissions graded at once.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds allowed per call.")
@click.option("--memory-mb", default=4096, show_default=True, help="Memory cap per worker.")
@click.option("--secret", "secret", type=click.Path(path_type=Path), default=None,
              help="Secret file for hidden cases (default: $SEQGRADE_SECRET or ./.seqgrade/secret).")
@click.option("--fresh", is_flag=True, help="Regrade everything instead of resuming.")
@click.option("--public/--no-public", default=False, help="Also grade the public cases (visible in reports).")
def grade_cmd(assignment, submissions, out, workers, timeout, memory_mb, secret, fresh, public) -> None:
    """Grade every submission in SUBMISSIONS (instructors): writes OUT/<student>.json/.md and gradebook.csv."""
    from grader import pipeline, report

    if workers < 1 or timeout <= 0:
        raise click.ClickException("--workers must be >= 1 and --timeout > 0")
    zygote = pipeline.start_zygote()
    bar_state: dict = {}

    def progress(done: int, total: int, student: str) -> None:
        bar = bar_state.get("bar")
        if bar is None:
            bar = click.progressbar(length=total, label="grading", show_eta=True, show_pos=True,
                                    file=sys.stderr, item_show_func=lambda s: s)
            bar.__enter__()
            bar_state["bar"] = bar
        bar.update(1, student)

    opts = pipeline.GradeOptions(workers=workers, timeout=timeout, memory_mb=memory_mb, secret_path=secret,
                                 fresh=fresh, visibilities=("public", "hidden") if public else ("hidden",))
    try:
        run = pipeline.grade(assignment, submissions, out, opts, progress=progress, zygote=zygote)
    except SeqgradeError as e:
        raise _fail(e) from None
    finally:
        if "bar" in bar_state:
            bar_state["bar"].__exit__(None, None, None)
        zygote.stop()
    click.echo(run.secret_note, err=True)
    if run.skipped:
        click.echo(f"Resumed: {run.skipped} submissions already graded with these cases were kept "
                   "(--fresh regrades them).", err=True)
    click.echo(report.summary_text(run.results, seconds=run.seconds))
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
@click.option("--format", "fmt", type=click.Choice(["py", "ipynb"]), default="py", show_default=True,
              help="Hand out a .py template or a notebook.")
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
    click.echo(f"Released {assignment} to {r.out}/ ({len(r.files)} files): students edit "
               f"{r.student_file.name}, install ./seqgrade-check, run `seqgrade check {assignment} "
               f"{r.student_file.name}`.")


@main.command("autograde")
@click.argument("assignment")
@click.argument("submission", type=click.Path(path_type=Path))
@click.option("--results", "results", required=True, type=click.Path(path_type=Path),
              help="Where to write Gradescope's results.json.")
@click.option("--secret", "secret", type=click.Path(path_type=Path), default=None,
              help="Secret file for hidden cases (default: $SEQGRADE_SECRET or ./.seqgrade/secret).")
@click.option("--metadata", type=click.Path(path_type=Path), default=None,
              help="Gradescope's submission_metadata.json (names the student).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds allowed per call.")
@click.option("--memory-mb", default=4096, show_default=True, help="Memory cap of the worker.")
@click.option("--scrub", is_flag=True, help="Inside an autograder bundle only: delete the secret and the "
              "reference once the hidden cases are prepared, before student code runs.")
def autograde_cmd(assignment, submission, results, secret, metadata, timeout, memory_mb, scrub) -> None:
    """Grade ONE submission on public and hidden cases into a Gradescope results.json."""
    from grader.gradescope import autograde

    try:
        data = autograde(assignment, submission, results, secret_path=secret, timeout=timeout,
                         memory_mb=memory_mb, metadata=metadata, scrub=scrub)
    except SeqgradeError as e:
        raise _fail(e) from None
    failed = sum(t["status"] == "failed" for t in data["tests"])
    click.echo(f"{data['score']:.2f} / {data['extra_data']['max_score']:g} points; {failed} of "
               f"{len(data['tests'])} checks failed. Wrote {results}")


@main.command("gradescope")
@click.argument("assignment")
@click.option("--out", "out", default=Path("autograder.zip"), show_default=True,
              type=click.Path(path_type=Path), help="The zip to upload to Gradescope.")
@click.option("--secret", "secret", type=click.Path(path_type=Path), default=None,
              help="Secret file for hidden cases (default: $SEQGRADE_SECRET or ./.seqgrade/secret).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds allowed per call on Gradescope.")
@click.option("--memory-mb", default=4096, show_default=True, help="Memory cap of the worker on Gradescope.")
def gradescope_cmd(assignment, out, secret, timeout, memory_mb) -> None:
    """Build the Gradescope autograder zip (setup.sh, run_autograder, grader, reference, secret)."""
    from grader.gradescope import build_bundle

    try:
        path = build_bundle(assignment, out, secret_path=secret, timeout=timeout, memory_mb=memory_mb)
    except SeqgradeError as e:
        raise _fail(e) from None
    click.echo(f"Wrote {path}: upload it as the autograder of a Gradescope programming assignment. It holds "
               "the secret and the reference: keep it private.")


@main.command("report")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--submissions", type=click.Path(path_type=Path), default=None,
              help="The graded submissions: adds code-similarity pairs.")
@click.option("--threshold", default=0.8, show_default=True, help="Similarity (0..1) at which a pair is listed.")
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


if __name__ == "__main__":  # pragma: no cover
    main()
