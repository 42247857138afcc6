"""What identifies a run's inputs, recorded in manifest.json: data, model, packages, machine, source.

`--resume` compares the data and model fingerprints with the recorded ones and refuses a run whose
inputs changed; the rest tells a reader what produced the numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from cotkit.models import sha256_file
from cotkit.run.rank import world_size

#: The checkout cotkit runs from, if it is one (this file is cotkit/run/fingerprint.py).
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def sha256_text(text: str) -> str:
    """Hex sha256 of a string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def data_fingerprint(examples_by_split: dict[str, list[Any]]) -> dict[str, Any]:
    """Per split: the number of examples and a sha256 of their content (ids, questions, answers)."""
    out: dict[str, Any] = {}
    for split, examples in examples_by_split.items():
        payload = json.dumps([e.to_dict() for e in examples], sort_keys=True, ensure_ascii=False, default=str)
        out[split] = {"n": len(examples), "sha256": sha256_text(payload)}
    return out


def model_fingerprint(path: str) -> dict[str, Any]:
    """What identifies a model: for a folder, sha256 of its config and of each weight file."""
    p = Path(path)
    if not p.is_dir():
        return {"source": path, "kind": "hub id"}
    files = {}
    for f in sorted(p.iterdir()):
        if f.is_file() and (f.suffix in (".safetensors", ".bin", ".json", ".gguf") or f.name == "tokenizer.model"):
            files[f.name] = sha256_file(f)
    return {"source": str(p.resolve()), "kind": "folder", "files": files}


def package_versions() -> dict[str, str]:
    """Versions of the packages a run's numbers depend on."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("cotkit", "torch", "transformers", "accelerate", "peft", "trl", "tokenizers", "vllm", "lm-eval", "sympy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def hardware() -> dict[str, Any]:
    """CPU, memory, threads and accelerators of this machine."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "processes": world_size(),
    }
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    # Imported here, not only when already loaded: what loaded torch before the manifest is written
    # changes with refactors, and a manifest without its GPUs cannot say where a number came from.
    try:
        import torch
    except ImportError:
        return info
    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def git_revision() -> dict[str, Any] | None:
    """The git commit of the cotkit source tree and whether it has local changes, if it is a checkout."""
    root = SOURCE_ROOT
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
