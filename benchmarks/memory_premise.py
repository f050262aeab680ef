"""Measure the `memory` premise: trained as taught, an LSTM/GRU learns the task and a plain RNN does not.

For each seed, trains reference.train_memory's model (one process per run, one torch thread each):
    lstm, gru   Adam, forget/update-gate bias, stop at the target accuracy or after `--budget` steps;
    rnn         Adam (and SGD with momentum, `--sgd`), default init, the same clipping, for `--factor` x the
                budget (its accuracy at the budget is read off the same run), stopping early only on success.
First prints how much gradient reaches the first token at initialisation (float64, 256 sequences): the norm of
dL/dx_1 over that of dL/dx_T, per cell and seed. Then one row per run: seed, cell, optimiser, steps,
held-out accuracy (1000 sequences), seconds; then a summary per cell. Seconds are wall time of one core
(noisy on a busy machine: compare rows from the same run).

    python benchmarks/memory_premise.py --seeds 0 1 2 3 4 --budget 1500 --factor 3 --sgd --jobs 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RNN_SGD_LR = 0.05


def run(job: dict) -> dict:
    import torch

    from reference.train_memory import train

    torch.set_num_threads(1)
    kw = {k: job[k] for k in ("cell", "seed", "steps", "optimizer", "length", "hidden", "gate_bias")}
    if job["optimizer"] == "sgd":
        kw["lr"] = RNN_SGD_LR
    _, info = train(**kw, target=job["target"], every=job["every"], log=False)
    at_budget = [a for s, a in info["history"] if s <= job["budget"]]
    return {**job, **info, "at_budget": at_budget[-1] if at_budget else None}


def main() -> None:
    from reference.memory import LENGTH
    from reference.train_memory import gradient_reach

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cells", nargs="+", default=["lstm", "gru", "rnn"])
    p.add_argument(
        "--budget", type=int, default=1500, help="steps for the gated cells and the RNN's first mark"
    )
    p.add_argument("--factor", type=int, default=3, help="the RNN trains for factor x budget steps")
    p.add_argument("--sgd", action="store_true", help="also train the RNN with SGD + momentum")
    p.add_argument("--length", type=int, default=LENGTH)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--gate-bias", type=float, default=4.0)
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--json", default="", help="also append every result as a JSON line to this file")
    a = p.parse_args()

    common = dict(length=a.length, hidden=a.hidden, gate_bias=a.gate_bias, target=a.target, every=a.every)
    jobs = []
    for seed in a.seeds:
        for cell in a.cells:
            optimizers = ["adam", "sgd"] if cell == "rnn" and a.sgd else ["adam"]
            for opt in optimizers:
                steps = a.budget * (a.factor if cell == "rnn" else 1)
                jobs.append(dict(cell=cell, seed=seed, optimizer=opt, steps=steps, budget=a.budget, **common))
    print(
        f"T={a.length} H={a.hidden} gate bias {a.gate_bias} budget {a.budget} steps "
        f"(rnn x{a.factor}), target {a.target:.0%}, {len(jobs)} runs on {a.jobs} processes",
        flush=True,
    )
    print("gradient reaching token 1 at initialisation, |dL/dx_1| / |dL/dx_T| (float64), one per seed:")
    for cell in a.cells:
        for gb in sorted({0.0, a.gate_bias if cell != "rnn" else 0.0}):
            reach = [gradient_reach(cell, s, hidden=a.hidden, gate_bias=gb, length=a.length) for s in a.seeds]
            print(f"  {cell:4} gate bias {gb:3.1f}: " + "  ".join(f"{r:.1e}" for r in reach), flush=True)
    print(
        f"{'seed':>4} {'cell':>4} {'opt':>4} {'steps':>6} {'acc@budget':>10} {'acc':>6} {'seconds':>8}",
        flush=True,
    )
    results = []
    with multiprocessing.get_context("spawn").Pool(a.jobs) as pool:
        for r in pool.imap_unordered(run, jobs):
            results.append(r)
            print(
                f"{r['seed']:>4} {r['cell']:>4} {r['optimizer']:>4} {r['steps']:>6} "
                f"{r['at_budget']:>10.3f} {r['accuracy']:>6.3f} {r['seconds']:>8.1f}",
                flush=True,
            )
            if a.json:
                with open(a.json, "a") as f:
                    f.write(json.dumps({k: v for k, v in r.items() if k != "history"}) + "\n")
    print("summary (held-out accuracy at the end of each run):")
    for cell in a.cells:
        for opt in ("adam", "sgd"):
            rs = [r for r in results if r["cell"] == cell and r["optimizer"] == opt]
            if rs:
                accs = [r["accuracy"] for r in rs]
                secs = [r["seconds"] for r in rs]
                steps = [r["steps"] for r in rs]
                print(
                    f"  {cell} {opt}: accuracy min {min(accs):.3f} max {max(accs):.3f}; "
                    f"steps {min(steps)}-{max(steps)}; {min(secs):.0f}-{max(secs):.0f} s; {len(rs)} seeds"
                )


if __name__ == "__main__":
    main()
