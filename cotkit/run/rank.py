"""Which process this is in a multi-process launch (`accelerate launch`, torchrun).

The main process (rank 0) samples, evaluates and writes the run directory; training runs in every
process. The launcher tells each process its rank through environment variables.
"""

from __future__ import annotations

import os


def process_index() -> int:
    """This process's rank under `accelerate launch` / torchrun (0 when run alone)."""
    return int(os.environ.get("RANK", os.environ.get("PROCESS_INDEX", "0")) or 0)


def world_size() -> int:
    """Number of processes in the launch (1 when run alone)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    """True on rank 0: the process that samples, evaluates and writes the run directory."""
    return process_index() == 0
