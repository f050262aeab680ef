"""The baseline most course graders use: one fresh Python per submission that imports torch, prepares
the cases, imports the student's module and runs the same checks in-process (no sandbox, no zygote).

    python benchmarks/baseline_one.py ASSIGNMENT SUBMISSION.py OUT.json

"The same checks" is meant literally: each call goes through the code seqgrade's workers run (the
banned-op tracer, the check that inputs are unchanged, the backward pass, one call for a forward check and
the gradient check on the same inputs), its reply through the wire format, and the scoring through
seqgrade's own (with the source scan for banned APIs), so its grades match `seqgrade grade`'s; only the
process model differs. Used by benchmarks/throughput.py; not a grader (student code runs unconfined, in
this process).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402  (what every per-submission container pays for)

from grader import cases, pipeline, runner, wire, worker  # noqa: E402
from grader.loader import Submission  # noqa: E402
from grader.plan import Reply, load_plan  # noqa: E402


def main(assignment: str, path: str, out: str) -> None:
    torch.set_num_threads(1)
    plan = load_plan(assignment)
    case_set = cases.build(plan, "hidden", os.environ.get("SEQGRADE_SECRET", "baseline").encode())
    preload = runner._preload(case_set, plan)
    calls = worker._read_preload(runner._memfile(preload.data))
    tracer = worker.Tracer()
    tracer.install(runner._all_banned(plan))
    runs = worker.Worker(None, tracer, calls)
    result = runner.RunResult()
    source = Path(path).read_bytes()
    try:
        spec = importlib.util.spec_from_file_location(plan.module, path)
        module = importlib.util.module_from_spec(spec)
        with tracer.attributed(None):
            spec.loader.exec_module(module)
        runs.module = module
    except Exception as e:
        result.import_error = f"{type(e).__name__}: {e}"
    todo = [
        runner._Pending(fn.name, i, k, call, preload.index[i, k])
        for fn in plan.functions
        for i, p in enumerate(case_set.items)
        if p.function == fn.name
        for k, call in enumerate(p.calls)
        if not call.function.startswith("file:")
    ]
    replies: dict[tuple[int, int], Reply] = {}
    if runs.module is None:
        for e in todo:
            replies[e.i, e.k] = Reply(failure="missing", error=result.import_error)
    else:
        pending = iter(todo)
        deferred, gradient_done = None, False  # a forward call whose pair raised: its reply comes third
        for entry in preload.request(todo):
            paired = isinstance(entry, list)
            j = entry[0] if paired else entry
            for body, value in runs.do_call(*calls[j], forward=calls[j - 1] if paired else None):
                data = wire.encode(body, value)  # what the grader receives, decoded as it decodes it
                jlen, _ = wire.HEADER.unpack_from(data, 0)
                resp, tree = wire.decode(
                    data[wire.HEADER.size : wire.HEADER.size + jlen], data[wire.HEADER.size + jlen :]
                )
                if resp.get("retry") is True:
                    deferred = next(pending)
                    continue
                if deferred is not None and gradient_done:
                    e, deferred, gradient_done = deferred, None, False
                else:
                    e, gradient_done = next(pending), deferred is not None
                replies[e.i, e.k] = runner._reply(e.call, resp, tree)
    for i, p in enumerate(case_set.items):
        if any((i, k) in replies for k in range(len(p.calls))):
            result.replies[i] = [replies[i, k] for k in range(len(p.calls))]
    sub = Submission(student=Path(path).stem, files={f"{plan.module}.py": source})
    scored = pipeline._score(plan, case_set, sub, result)
    student = sum(r.seconds for rs in result.replies.values() for r in rs)
    Path(out).write_text(json.dumps({"score": scored.score, "student_seconds": student}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
