"""Checks of a trained model: the student submits a weights file for an architecture fixed by the handout;
the trusted process runs that architecture with those weights on hidden data and scores by accuracy bands.

    AccuracyBand(threshold, files=("memory_weights.pt", "memory_weights.npz"), evaluate="module:attr")

prepare: one Call("file:<name>") per accepted file name — answered by the runner itself, which loads the file
         safely (np.load(allow_pickle=False) / torch.load(weights_only=True), size-capped) — and the case's
         data (`data_args`, e.g. tokens and labels from the seeded generator) kept in `expected`.
judge:   the first file present is used (in `files` order); evaluate(weights, *data) -> accuracy runs in
         this process in float64 (a ValueError there is a malformed file, described); pass if accuracy >=
         threshold.

Bands are separate checks ("accuracy >= 60%", ">= 80%", ">= 95%"), so each band earns an equal share. They
judge the same weights on the same data, so the accuracy is computed once and remembered (the last few,
keyed by a hash of the weights and the data).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from grader.behaviour import resolve
from grader.checks import Check, to_numpy
from grader.compare import Comparison, describe
from grader.plan import Call
from grader.wire import Received

_SEEN: OrderedDict[tuple[str, str], float] = OrderedDict()


def _accuracy(evaluate: str, weights: dict[str, np.ndarray], data: list[np.ndarray]) -> float:
    """evaluate(weights, *data) in float64, remembered for the last 16 (weights, data) pairs."""
    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(k.encode() + str(weights[k].shape).encode() + str(weights[k].dtype).encode())
        h.update(np.ascontiguousarray(weights[k]).tobytes())
    for d in data:
        h.update(str(d.shape).encode() + str(d.dtype).encode() + np.ascontiguousarray(d).tobytes())
    key = (evaluate, h.hexdigest())
    if key not in _SEEN:
        tensors = {k: torch.from_numpy(v.astype(np.float64)) for k, v in weights.items()}
        _SEEN[key] = float(resolve(evaluate)(tensors, *(torch.from_numpy(d.copy()) for d in data)))
        while len(_SEEN) > 16:
            _SEEN.popitem(last=False)
    return _SEEN[key]


class AccuracyBand(Check):
    """The submitted weights reach `threshold` accuracy on the case's data."""

    def __init__(
        self,
        threshold: float,
        *,
        evaluate: str,
        files: tuple[str, ...],
        data_args: tuple[str, ...] = ("tokens", "labels"),
    ):
        self.threshold, self.evaluate, self.files, self.data_args = threshold, evaluate, files, data_args
        self.kind = f"accuracy >= {threshold:.0%}"

    def prepare(self, plan, fn, case, reference, gen):
        calls = [Call(f"file:{name}", ()) for name in self.files]
        return calls, {k: to_numpy(case.inputs[k]) for k in self.data_args}

    def judge(self, fn, case, expected, replies):
        present = [(name, r) for name, r in zip(self.files, replies, strict=True) if r.failure != "missing"]
        if not present:
            return Comparison(
                False,
                f"no weights file: save your trained weights as {' or '.join(self.files)} next to your code",
            )
        name, reply = present[0]
        if reply.failure is not None:
            return Comparison(False, reply.error or f"{name} could not be read")
        if not isinstance(reply.value, dict) or not all(
            isinstance(v, Received) for v in reply.value.values()
        ):
            return Comparison(False, f"{name} holds {describe(reply.value)}, expected a dict of tensors")
        weights = {k: v.array for k, v in reply.value.items()}
        data = [np.asarray(expected[k]) for k in self.data_args]
        try:
            accuracy = _accuracy(self.evaluate, weights, data)
        except ValueError as e:
            return Comparison(False, f"{name}: {e}")
        n = len(data[-1])
        where = "public" if case.visibility == "public" else "hidden"
        if accuracy >= self.threshold:
            return Comparison(True, f"accuracy {accuracy:.1%} on {n} {where} sequences (using {name})")
        return Comparison(
            False,
            f"accuracy {accuracy:.1%} on {n} {where} sequences (using {name}), below the "
            f"{self.threshold:.0%} band",
        )
