"""`seqgrade` ends with a quick exit (grader.cli.entry): no module teardown, but the exit status, the output
and the exit handlers' work (removing ended workers' folders) are what Python's own shutdown gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# buffered output, as in a terminal-less run (PYTHONUNBUFFERED would hide a missing flush)
ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},
    "PYTHONPATH": str(ROOT),
    "SEQGRADE_SECRET": "test-secret",
}


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=ENV, timeout=120, cwd=ROOT
    )


def test_entry_runs_the_exit_handlers_flushes_and_keeps_the_status(tmp_path):
    mark = tmp_path / "handler"
    r = _python(
        "-c",
        "import atexit, sys\n"
        "from grader import cli\n"
        f"atexit.register(lambda: open({str(mark)!r}, 'w').write('ran'))\n"
        "def fake():\n"
        "    print('no newline yet', end='')\n"
        "    sys.stderr.write('to stderr')\n"
        "    sys.exit(3)\n"
        "cli.main = fake\n"
        "cli.entry()\n",
    )
    assert r.returncode == 3
    assert r.stdout == "no newline yet" and r.stderr == "to stderr"
    assert mark.read_text() == "ran"


def test_entry_exits_with_1_and_the_message_for_a_text_status():
    r = _python(
        "-c", "import sys\nfrom grader import cli\ncli.main = lambda: sys.exit('boom')\ncli.entry()\n"
    )
    assert r.returncode == 1
    assert r.stderr.strip() == "boom"


def test_entry_leaves_running_threads_to_python(tmp_path):
    """A thread that is not a daemon is joined before the process ends, as without the quick exit."""
    done = tmp_path / "thread"
    r = _python(
        "-c",
        "import sys, threading, time\n"
        "from grader import cli\n"
        "def late():\n"
        "    time.sleep(0.3)\n"
        f"    open({str(done)!r}, 'w').write('done')\n"
        "def fake():\n"
        "    threading.Thread(target=late).start()\n"
        "    sys.exit(0)\n"
        "cli.main = fake\n"
        "cli.entry()\n",
    )
    assert r.returncode == 0, r.stderr
    assert done.read_text() == "done"


def test_check_keeps_its_exit_status_and_its_whole_report():
    ok = _python("-m", "grader.cli", "check", "rnn", "examples/rnn/correct.py")
    bad = _python("-m", "grader.cli", "check", "rnn", "examples/rnn/buggy.py")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL" in bad.stdout and "FAIL" not in ok.stdout
    # nothing of the report is lost at the exit: its last line is there
    assert ok.stdout.rstrip().endswith("passing these is necessary, not sufficient.")
