"""A broken submission: it fails at import time (a typo in a name), so it gets 0 with the reason."""

import torch

HIDDEN = torhc.zeros(3)  # noqa: F821


def lstm_step(x_t, h_prev, c_prev, W_ih, W_hh, b_ih, b_hh):
    raise NotImplementedError
