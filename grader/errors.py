"""One exception tree for the whole grader.

    SeqgradeError                    anything the grader raises on purpose
    ├── ConfigError                  our fault or the instructor's: bad plan, missing reference,
    │                                unknown assignment, unreadable secret. Fails loudly.
    ├── InputError                   a path or archive the user gave us is unusable. One clear line.
    └── StudentError                 the student's fault: recorded in the report and scored, never raised
        │                            past the runner.
        ├── ImportFailed             the submission could not be loaded (syntax error, exception, missing file)
        ├── MissingFunction          a graded function is not defined
        ├── TimedOut                 a call ran past --timeout
        ├── WorkerCrashed            the worker died (segfault, os._exit, memory cap, ...)
        └── BadReply                 the worker's reply was malformed, too large or of the wrong kind

The CLI turns SeqgradeError into a click.ClickException with one line; StudentError never reaches it.
"""

from __future__ import annotations


class SeqgradeError(Exception):
    """Base of every error the grader raises on purpose."""


class ConfigError(SeqgradeError):
    """The assignment, plan, reference or secret is wrong: the instructor's or our fault."""


class InputError(SeqgradeError):
    """A path or archive given on the command line cannot be used."""


class StudentError(SeqgradeError):
    """Something about the student's code; recorded and scored."""


class ImportFailed(StudentError):
    pass


class MissingFunction(StudentError):
    pass


class TimedOut(StudentError):
    pass


class WorkerCrashed(StudentError):
    pass


class BadReply(StudentError):
    pass
