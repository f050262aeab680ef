"""seqgrade: grade sequence-model assignments safely, correctly and fast.

The data's journey, one module per step:

    loader    find & load a submission (.py, .ipynb, folder, .zip)       -> Submission
    plan      an assignment's check plan (functions, cases, probes)       -> Plan
    cases     make public/hidden cases and the reference's expectations  -> CaseSet
    wire      the array-only message format between grader and worker
    worker    the forked process that runs student code (untrusted side)
    runner    drives one worker through a submission's calls            -> replies
    compare   the pure comparison core                                   -> Comparison
    score     turn comparisons into points                               -> SubmissionResult
    report    per-student JSON/Markdown, gradebook, summary
    cli       the `seqgrade` command
"""

__version__ = "0.1.0"
