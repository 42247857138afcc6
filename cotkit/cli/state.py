"""Options given before the command (`cotkit --data-dir DIR --plugin p.py score ...`).

The root command in `cotkit.cli.main` declares and parses them, and stores them here for the commands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class GlobalOptions:
    """Global CLI options shared by every command."""

    debug: bool = False
    verbose: bool = False
    data_dir: Path | None = None
    plugin_files: list[str] = field(default_factory=list)


options = GlobalOptions()
