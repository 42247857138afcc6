"""manifest.json: what a run started from (fingerprints of its data, model and config.yaml), checked on resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cotkit.config import config_diff, load_yaml
from cotkit.errors import ConfigError, CotkitError
from cotkit.jsonl import atomic_write_json
from cotkit.models import sha256_file
from cotkit.run.context import RunContext
from cotkit.run.fingerprint import data_fingerprint, git_revision, hardware, model_fingerprint, package_versions
from cotkit.run.rank import is_main_process
from cotkit.run.state import timestamp


def write_manifest(ctx: RunContext, splits: list[str], argv: list[str] | None = None) -> dict[str, Any]:
    """Write manifest.json (first start) or check it and record a resume; refuse changed data or model."""
    path = ctx.path / "manifest.json"
    task = ctx.task
    examples = {s: task.examples(s) for s in splits}
    data_fp = data_fingerprint(examples)
    model_fp = model_fingerprint(ctx.base_model)
    now = timestamp()
    if path.exists():
        manifest = json.loads(path.read_text(encoding="utf-8"))
        changed = [s for s in data_fp if manifest.get("data", {}).get(s, {}).get("sha256") != data_fp[s]["sha256"]]
        if changed:
            raise CotkitError(
                f"cannot resume {ctx.path}: the task data changed since the run started (splits {', '.join(changed)})"
            )
        old_files = manifest.get("model", {}).get("files")
        if old_files is not None and old_files != model_fp.get("files"):
            raise CotkitError(f"cannot resume {ctx.path}: the model files of {ctx.run_config.model!r} changed since the run started")
        manifest.setdefault("resumes", []).append({"at": now, "completed_phases": len(ctx.state.phases), "argv": argv})
        if "config_sha256" not in manifest:  # a run from before fingerprints: guard it from now on
            manifest.update(_config_fingerprint(ctx.path))
    else:
        manifest = {
            "cotkit_run": 1,
            "created": now,
            "method": ctx.run_config.method,
            "task": task.full_name,
            "model_spec": ctx.run_config.model,
            "model": model_fp,
            "data": data_fp,
            "data_dir": str(ctx.data_dir) if ctx.data_dir else None,
            "seeds": {"seed": ctx.seed, "split_seed": ctx.run_config.split_seed},
            "packages": package_versions(),
            "hardware": hardware(),
            "git": git_revision(),
            "argv": argv,
            "resumes": [],
            **_config_fingerprint(ctx.path),
        }
    if is_main_process():
        atomic_write_json(path, manifest)
    return manifest


def _config_fingerprint(path: Path) -> dict[str, Any]:
    """config.yaml as the run started with it: its sha256 (what `--resume` checks) and its content (for the message)."""
    cfg_path = path / "config.yaml"
    return {"config_sha256": sha256_file(cfg_path), "config": load_yaml(cfg_path)}


def check_config_unedited(path: Path) -> None:
    """Refuse to resume a run whose config.yaml no longer matches the fingerprint in its manifest."""
    cfg_path, manifest_path = path / "config.yaml", path / "manifest.json"
    if not cfg_path.exists() or not manifest_path.exists():
        return  # killed before its manifest was written: config.yaml is as the run wrote it
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CotkitError(f"{manifest_path}: not valid JSON ({e}); the run directory is damaged") from None
    expected = manifest.get("config_sha256") if isinstance(manifest, dict) else None
    if not expected or sha256_file(cfg_path) == expected:
        return  # runs from before fingerprints have none to compare with
    original = manifest.get("config")
    try:
        current = load_yaml(cfg_path)
    except ConfigError:
        current = None
    if isinstance(original, dict) and isinstance(current, dict):
        changes = config_diff(original, current)
        if not changes:
            return  # comments, layout, or where the data and the run live: nothing the run computes with
        what = "; ".join(line.strip() for line in changes[:4]) + ("; ..." if len(changes) > 4 else "")
    else:
        what = "its sha256 no longer matches the one in manifest.json"
    raise ConfigError(
        f"cannot resume {path}: {cfg_path} was edited after the run started ({what}); put it back as it was "
        f"to resume, or start a new run with the edited options: cotkit train --config {cfg_path} --output-dir NEW_DIR"
    )
