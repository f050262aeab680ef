"""Grade on a Dask cluster (`seqgrade grade ... --executor dask --scheduler ADDRESS`).

    this process (trusted client)                         each Dask worker process (trusted machine)
    ─────────────────────────────                         ──────────────────────────────────────────
    cases prepared once (grader.cache), encoded ──scatter──> held by Dask, decoded once per process
    one task per submission (files as bytes) ───submit───> grade_one(): its own zygote and sandboxed
                                                           workers, exactly as `seqgrade grade` locally
    reports written here, in completion order <──────────── (results.json dict, feedback Markdown)

Each Dask worker thread grades one submission at a time, so a worker started with `--nthreads 4`
runs four sandboxed workers at once (`--workers` is the local executor's setting). Every Dask worker
process starts its own zygote (a fresh interpreter, grader.worker) on first use; student code never
runs in a Dask process. At most a few tasks per Dask thread are in flight, so the client's memory does
not grow with the class. Before grading, each Dask process checks that its grader and plan sources are
the client's: a cluster running other code would grade differently, so it fails loudly instead.

Hidden inputs and expected outputs travel to the Dask workers (never to student code): run the
cluster on machines and a network you trust, or with Dask's TLS (docs/SCALING.md).
dask.distributed is optional: `pip install 'seqgrade[dask]'`.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grader.cases import CaseSet
from grader.errors import ConfigError, SeqgradeError
from grader.loader import Submission
from grader.plan import Plan
from grader.runner import RunOptions

IN_FLIGHT_PER_THREAD = 4
CONNECT_TIMEOUT = "20s"
GRADER_DIR = Path(__file__).resolve().parent


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise ConfigError(
            "--executor dask needs dask.distributed, which is not installed: pip install 'seqgrade[dask]'"
        ) from None
    return distributed


# ----------------------------------------------------------------------------------------------- client side


def grade_dask(
    scheduler: str,
    plan: Plan,
    case_sets: list[CaseSet],
    subs: list[Submission],
    options: RunOptions,
    *,
    workers: int = 0,
    case_key: str,
) -> Iterator[tuple[dict[str, Any], str]]:
    """Reports of `subs` graded on the Dask cluster at `scheduler`, in completion order."""
    from grader import cache, pipeline

    distributed = _import_distributed()
    try:
        client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
    with client:
        threads = sum(client.nthreads().values())
        if not threads:
            raise ConfigError(f"the Dask cluster at {scheduler} has no workers")
        blob = cache.encode(pipeline.merge(plan, case_sets))
        blob_key = hashlib.sha256(blob).hexdigest()
        blob_future = client.scatter(blob, broadcast=True, hash=False)
        code = code_fingerprint(plan)
        run = dataclasses.asdict(options)
        todo = iter(subs)
        ready = distributed.as_completed(loop=client.loop)

        def submit_next() -> None:
            sub = next(todo, None)
            if sub is not None:
                ready.add(
                    client.submit(
                        _grade_task,
                        plan.name,
                        code,
                        blob_key,
                        blob_future,
                        case_key,
                        _sub_dict(sub),
                        run,
                        pure=False,
                        retries=1,
                    )
                )

        for _ in range(IN_FLIGHT_PER_THREAD * threads):
            submit_next()
        for future in ready:
            try:
                data, markdown = future.result()
            except SeqgradeError:
                raise
            except Exception as e:
                raise ConfigError(
                    f"grading on the Dask cluster failed: {e.__class__.__name__}: {e}"
                ) from None
            future.release()
            submit_next()
            yield data, markdown


def _sub_dict(sub: Submission) -> dict[str, Any]:
    return {
        "student": sub.student,
        "files": dict(sub.files),
        "origin": sub.origin,
        "notes": tuple(sub.notes),
        "problem": sub.problem,
    }


def code_fingerprint(plan: Plan) -> str:
    """What a Dask worker must share with the client to grade identically: the grader package and the
    plan's modules (the reference is not needed there: cases arrive prepared)."""
    from grader import __version__, cache

    h = hashlib.sha256(f"seqgrade {__version__}\0".encode())
    for path in sorted(GRADER_DIR.glob("*.py")):
        h.update(f"{path.name}={hashlib.sha256(path.read_bytes()).hexdigest()}\0".encode())
    for name, digest in cache.source_digests(plan):
        if name.startswith("assignments."):
            h.update(f"{name}={digest}\0".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- worker side

_lock = threading.Lock()
_zygote: Any = None
_cases: dict[str, CaseSet] = {}
_checked: dict[str, str] = {}


def _grade_task(
    assignment: str,
    code: str,
    blob_key: str,
    blob: bytes,
    case_key: str,
    sub: dict[str, Any],
    run: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    """Runs in a Dask worker thread: grade one submission with this process's zygote."""
    from grader import pipeline
    from grader.plan import load_plan

    plan = load_plan(assignment)
    zygote, cases = _worker_state(plan, code, blob_key, blob)
    options = RunOptions(**run)
    options.overlap_end = False  # a task ends with its worker gone and its folder removed
    return pipeline.grade_one(zygote, plan, cases, Submission(**sub), options, case_key)


def _worker_state(plan: Plan, code: str, blob_key: str, blob: bytes) -> tuple[Any, CaseSet]:
    global _zygote
    from grader import cache

    with _lock:
        if _checked.get(plan.name) is None:
            _checked[plan.name] = code_fingerprint(plan)
        if _checked[plan.name] != code:
            raise ConfigError(
                f"this Dask worker's grader or {plan.name} plan differs from the client's: install the same "
                "seqgrade version (and assignments) on every worker"
            )
        if blob_key not in _cases:
            _cases.clear()  # one case set at a time: a new run replaces the previous one
            _cases[blob_key] = cache.decode(plan, blob)
        proc = getattr(_zygote, "proc", None)
        if _zygote is None or (proc is not None and proc.poll() is not None):
            _zygote = _start_zygote()
        return _zygote, _cases[blob_key]


def _start_zygote() -> Any:
    """Start the zygote from a thread that lives as long as this process: the zygote asks the kernel to
    end it when the thread that started it ends (PR_SET_PDEATHSIG), and Dask's task threads come and go."""
    from grader import pipeline

    box: dict[str, Any] = {}
    started = threading.Event()

    def host() -> None:
        try:
            box["zygote"] = pipeline.start_zygote()
        except BaseException as e:  # noqa: BLE001 - reported to the task below
            box["error"] = e
        started.set()
        threading.Event().wait()  # keep this thread (the zygote's parent) alive

    threading.Thread(target=host, name="seqgrade-zygote", daemon=True).start()
    started.wait()
    if "error" in box:
        raise box["error"]
    atexit.register(box["zygote"].stop)
    return box["zygote"]
