"""Reference implementations of every model graded by seqgrade.

Pure functions of tensors, in torch.nn's names and layouts, each tested against torch.nn in float64.
This package is trusted: it is imported only by the grading process, never by a worker that runs
student code.
"""
