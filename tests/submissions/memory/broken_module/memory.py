"""Broken at import: for this assignment the file is never imported, the weights still count."""

raise RuntimeError("half-finished training script")
