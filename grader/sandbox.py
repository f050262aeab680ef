"""Confinement applied in a freshly forked worker before any student code runs.

Called by grader.worker in the worker process. Each measure is applied where the machine allows it and
reported back (worker config -> active protections); see docs/SECURITY.md for the guarantees.
"""

from __future__ import annotations

import os
import resource
from typing import Any

DEFAULT_MEMORY_MB = 4096


def confine(workdir: str, config: dict[str, Any]) -> list[str]:
    """Apply resource limits to the current (worker) process. Returns the names of active protections."""
    active = []
    mem = int(config.get("memory_mb", DEFAULT_MEMORY_MB)) << 20
    for res, soft in (
        (resource.RLIMIT_AS, mem),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, int(config.get("fsize_mb", 64)) << 20),
        (resource.RLIMIT_NOFILE, 256),
    ):
        try:
            _, hard = resource.getrlimit(res)
            soft = soft if hard == resource.RLIM_INFINITY else min(soft, hard)
            resource.setrlimit(res, (soft, soft if res != resource.RLIMIT_NOFILE else hard))
            active.append(f"rlimit:{res}")
        except (ValueError, OSError):
            pass
    os.environ["OMP_NUM_THREADS"] = "1"
    return active
