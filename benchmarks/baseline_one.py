"""The baseline most course graders use: one fresh Python per submission that imports torch, prepares
the cases, imports the student's module and runs the same checks in-process (no sandbox, no zygote).

    python benchmarks/baseline_one.py ASSIGNMENT SUBMISSION.py OUT.json

It judges and scores with seqgrade's own checks, so its grades match `seqgrade grade`'s; only the
process model differs. Used by benchmarks/throughput.py; not a grader (student code runs unconfined).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402  (what every per-submission container pays for)

from grader import cases, wire  # noqa: E402
from grader.plan import Reply, load_plan  # noqa: E402
from grader.runner import RunResult  # noqa: E402
from grader.score import score_submission  # noqa: E402


def run_call(module, call) -> Reply:
    fn = getattr(module, call.function, None)
    if fn is None:
        return Reply(failure="missing", error=f"{call.function} is not defined")
    args = [a.detach().clone() if isinstance(a, torch.Tensor) else a for a in call.args]
    for i in call.grad_wrt:
        args[i] = args[i].requires_grad_(True)
    start = time.perf_counter()
    try:
        value = fn(*args)
        grads = None
        if call.grad_wrt:
            outs = [o for o in _leaves(value)]
            projs = _leaves(call.projection)
            terms = [
                (o * p.to(o.dtype)).sum()
                for o, p in zip(outs, projs, strict=False)
                if p is not None and isinstance(o, torch.Tensor) and o.requires_grad
            ]
            leaves_in = [args[i] for i in call.grad_wrt]
            grads = (
                list(torch.autograd.grad(sum(terms), leaves_in, allow_unused=True))
                if terms
                else [None] * len(leaves_in)
            )
            value = None
    except Exception as e:  # the student's failure, recorded like the grader does
        return Reply(failure="exception", error=f"{type(e).__name__}: {e}"[:300])
    seconds = time.perf_counter() - start
    data = wire.encode({}, {"value": value, "grads": grads})  # what the grader would receive
    jlen, _ = wire.HEADER.unpack_from(data, 0)
    _, tree = wire.decode(data[wire.HEADER.size : wire.HEADER.size + jlen], data[wire.HEADER.size + jlen :])
    g = tree["grads"]
    return Reply(value=tree["value"], grads=tuple(g) if isinstance(g, list) else None, seconds=seconds)


def _leaves(tree):
    if isinstance(tree, (tuple, list)):
        return [x for t in tree for x in _leaves(t)]
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _leaves(v)]
    return [tree]


def main(assignment: str, path: str, out: str) -> None:
    torch.set_num_threads(1)
    plan = load_plan(assignment)
    case_set = cases.build(plan, "hidden", os.environ.get("SEQGRADE_SECRET", "baseline").encode())
    result = RunResult()
    try:
        spec = importlib.util.spec_from_file_location(plan.module, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as e:
        module = None
        result.import_error = f"{type(e).__name__}: {e}"
    for i, p in enumerate(case_set.items):
        if module is None:
            result.replies[i] = [Reply(failure="missing", error=result.import_error) for _ in p.calls]
        else:
            result.replies[i] = [run_call(module, c) for c in p.calls]
    scored = score_submission(Path(path).stem, plan, case_set, result)
    student = sum(r.seconds for rs in result.replies.values() for r in rs)
    Path(out).write_text(json.dumps({"score": scored.score, "student_seconds": student}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
