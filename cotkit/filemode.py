"""The permission bits a new file should get: what `open()` gives, 0666 less the process umask.

Files made with `tempfile.mkstemp` (the atomic writes) start as 0600 whatever the umask, so a run
directory would mix private and readable files; the atomic writes set this mode instead.
"""

from __future__ import annotations

import os


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    # os.umask() can only be read by setting it, and setting it races with threads creating
    # files meanwhile; Linux (4.7+) reports it in /proc/self/status.
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """0666 & ~umask: the mode `open(path, "w")` would give a new file."""
    return 0o666 & ~current_umask()
