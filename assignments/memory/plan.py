"""Check plan of the `memory` assignment: a trained recurrent model, graded by accuracy on hidden sequences.

The student trains in their own script or notebook and submits a weights file (memory_weights.pt from
torch.save(model.state_dict()), or memory_weights.npz) for the architecture fixed in the handout and in
reference.memory (one-hot tokens -> one nn.LSTM / nn.GRU / nn.RNN layer -> nn.Linear on the last hidden
state). The runner loads the file without executing anything; the trusted process evaluates it on sequences
of the "remember the first token" task (T = 100, label 99 steps back, the last token a decoy equal to the
label in 30% of the sequences) drawn from the seeded generator: 2000 hidden ones, 500 public ones. Three
bands, one check each: accuracy >= 60%, >= 80%, >= 95% (chance is 25%; the decoy alone gives 47.5%).
Measured (benchmarks/memory_premise.py, 5 seeds): the reference LSTM and GRU reach the top band; a plain tanh
RNN trained the same way for 3x as many steps stays at the decoy's 47-50%, below the first band.
"""

from __future__ import annotations

import torch

from grader.plan import Function, Plan
from grader.trained import AccuracyBand

LENGTH = 100  # = reference.memory.LENGTH: the label is 99 steps back
VOCAB = 4  # = reference.memory.VOCAB (= number of classes)
DECOY = 0.3  # = reference.memory.DECOY: the last token gives away the label 30% of the time (47.5% accuracy)
FILES = ("memory_weights.pt", "memory_weights.npz")
BANDS = (0.60, 0.80, 0.95)


def make_sequences(gen, params, dtype):
    """The task's sequences, as reference.memory.make_batch: every token uniform over the vocabulary, the label
    is the first token, and with probability DECOY the last token is overwritten by the label."""
    n = params["n"]
    tokens = torch.randint(0, VOCAB, (n, LENGTH), generator=gen)
    labels = tokens[:, 0].clone()
    copy = torch.rand(n, generator=gen, dtype=torch.float64) < DECOY
    tokens[copy, -1] = labels[copy]
    return {"tokens": tokens, "labels": labels}


PLAN = Plan(
    name="memory",
    module="memory",
    title="Long memory: train an LSTM or GRU to remember the first token of 100",
    functions=(
        Function(
            name="memory_weights",
            points=6,
            args=(),
            make_inputs=make_sequences,
            hidden=({"n": 2000},),
            public=({"n": 500},),
            outputs="weights",
            checks=tuple(AccuracyBand(t, evaluate="reference.memory:accuracy", files=FILES) for t in BANDS),
            dtypes=("float64",),
            reference="reference.memory:accuracy",
            signature="memory_weights.pt or memory_weights.npz: the state_dict of MemoryModel",
        ),
    ),
)
