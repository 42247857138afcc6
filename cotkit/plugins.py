"""Plugin loading and the registry of everything plugins provide.

Loading order: built-in plugin modules, installed packages of the entry-point group `cotkit`
(unless COTKIT_DISABLE_PLUGIN_AUTOLOAD is set), then files given with `--plugin PATH.py`; then
`check_pending()` so a misspelt hook name fails loudly.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

from cotkit import hookspecs
from cotkit.contracts import KINDS, Plugin, Task
from cotkit.errors import CotkitError, DuplicateNameError, PluginLoadError, UnknownNameError

ENTRY_POINT_GROUP = "cotkit"
AUTOLOAD_OFF_ENV = "COTKIT_DISABLE_PLUGIN_AUTOLOAD"
PLUGIN_FILES_ENV = "COTKIT_PLUGINS"

BUILTIN_MODULES = (
    "cotkit_plugins.tasks",
    "cotkit_plugins.verifiers",
    "cotkit_plugins.step_scorers",
    "cotkit_plugins.backends",
    "cotkit_plugins.methods",
)

_HOOK_OF_KIND = {
    "task": "register_tasks",
    "verifier": "register_verifiers",
    "step_scorer": "register_step_scorers",
    "backend": "register_backends",
    "method": "register_methods",
}

KIND_LABELS = {"task": "task", "verifier": "verifier", "step_scorer": "step scorer", "backend": "backend", "method": "method"}


@dataclass(frozen=True)
class Provider:
    """Who registered something: a distribution, a file, or cotkit itself."""

    name: str
    version: str
    source: str  # "builtin", "entrypoint" or "file"


@dataclass(frozen=True)
class Entry:
    """One registered plugin class."""

    kind: str
    name: str
    cls: type[Plugin]
    provider: Provider

    def to_dict(self) -> dict[str, Any]:
        """The row `cotkit plugins --json` prints."""
        d = {
            "kind": self.kind,
            "name": self.name,
            "provider": self.provider.name,
            "version": self.provider.version,
            "source": self.provider.source,
            "description": self.cls.summary(),
            "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
        }
        if issubclass(self.cls, Task) and self.cls.subsets:
            d["subsets"] = list(self.cls.subsets)
        return d


def _cotkit_version() -> str:
    from cotkit import __version__

    return __version__


class PluginHost:
    """A pluggy manager plus the registry built from its hooks."""

    def __init__(self, plugin_files: list[str | Path] = (), autoload: bool | None = None, builtins: bool = True):
        self.pm = pluggy.PluginManager("cotkit")
        self.pm.add_hookspecs(hookspecs)
        self.providers: dict[str, Provider] = {}
        if builtins:
            for mod in BUILTIN_MODULES:
                self._register_module(mod, Provider("cotkit", _cotkit_version(), "builtin"))
        if autoload is None:
            autoload = not os.environ.get(AUTOLOAD_OFF_ENV)
        if autoload:
            self._load_entry_points()
        env_files = [f for f in os.environ.get(PLUGIN_FILES_ENV, "").split(os.pathsep) if f]
        loaded: set[Path] = set()
        for path in [*env_files, *plugin_files]:
            if Path(path).resolve() not in loaded:  # a file named twice (environment and --plugin) loads once
                loaded.add(Path(path).resolve())
                self.load_file(path)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as e:
            raise PluginLoadError(getattr(e, "plugin_name", "?"), e) from e
        self._entries: dict[str, dict[str, Entry]] | None = None

    # -- loading -----------------------------------------------------------------------------

    def _register_module(self, module_name: str, provider: Provider) -> None:
        try:
            module = importlib.import_module(module_name)
        except Exception as e:
            raise PluginLoadError(module_name, e) from e
        self._register(module, module_name, provider)

    def _register(self, plugin: Any, plugin_name: str, provider: Provider) -> None:
        try:
            self.pm.register(plugin, name=plugin_name)
        except ValueError as e:  # pluggy refuses a second plugin of the same name
            raise PluginLoadError(plugin_name, e) from e
        except pluggy.PluginValidationError as e:
            raise PluginLoadError(plugin_name, e) from e
        self.providers[plugin_name] = provider

    def _load_entry_points(self) -> None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else ep.name
            version = dist.version if dist is not None else "?"
            label = f"{dist_name} (entry point {ep.name} = {ep.value})"
            try:
                plugin = ep.load()
            except Exception as e:
                raise PluginLoadError(label, e) from e
            self._register(plugin, f"{dist_name}:{ep.name}", Provider(dist_name, version, "entrypoint"))

    def load_file(self, path: str | Path) -> None:
        """Load a single-file plugin (`--plugin PATH.py`)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise CotkitError(f"--plugin {path}: no such file")
        mod_name = f"cotkit_plugin_file_{path.stem}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise CotkitError(f"--plugin {path}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(mod_name, None)
            raise PluginLoadError(str(path), e) from e
        self._register(module, str(path.resolve()), Provider(str(path), "file", "file"))

    # -- registry ----------------------------------------------------------------------------

    @property
    def entries(self) -> dict[str, dict[str, Entry]]:
        """kind -> name -> Entry, built once from the register_* hooks."""
        if self._entries is None:
            self._entries = self._collect()
        return self._entries

    def _collect(self) -> dict[str, dict[str, Entry]]:
        out: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        for kind, hook_name in _HOOK_OF_KIND.items():
            hook = getattr(self.pm.hook, hook_name)
            # Call each implementation on its own so every class is attributed to its plugin.
            for impl in reversed(hook.get_hookimpls()):
                provider = self.providers.get(impl.plugin_name, Provider(impl.plugin_name, "?", "unknown"))

                def register(cls: type, _kind: str = kind, _provider: Provider = provider, _impl: Any = impl) -> None:
                    self._add(out[_kind], _kind, cls, _provider, _impl.plugin_name)

                try:
                    impl.function(register=register)
                except CotkitError:
                    raise
                except Exception as e:
                    raise PluginLoadError(impl.plugin_name, e) from e
        return out

    def _add(self, table: dict[str, Entry], kind: str, cls: type, provider: Provider, plugin_name: str) -> None:
        base = KINDS[kind]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginLoadError(plugin_name, TypeError(f"register_{kind}s got {cls!r}, expected a {base.__name__} subclass"))
        name = getattr(cls, "name", "")
        if not name:
            raise PluginLoadError(plugin_name, TypeError(f"{cls.__qualname__} has no `name`"))
        if name in table:
            first = table[name]
            raise DuplicateNameError(
                KIND_LABELS[kind], name, _describe(first.provider, first.cls), _describe(provider, cls)
            )
        table[name] = Entry(kind, name, cls, provider)

    def get(self, kind: str, name: str) -> type:
        """The class registered under `name` for `kind`; unknown names suggest the closest."""
        table = self.entries[kind]
        if name not in table:
            raise UnknownNameError(KIND_LABELS[kind], name, table)
        return table[name].cls

    def names(self, kind: str) -> list[str]:
        """Registered names of one kind, sorted."""
        return sorted(self.entries[kind])

    def all_entries(self) -> list[Entry]:
        """Every registered entry, by kind then name."""
        return [e for kind in KINDS for _, e in sorted(self.entries[kind].items())]

    def add_commands(self, app: Any) -> None:
        """Let plugins add Typer commands."""
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):
            try:
                impl.function(app=app)
            except Exception as e:
                raise PluginLoadError(impl.plugin_name, e) from e

    # -- task addressing ---------------------------------------------------------------------

    def task(self, spec: str, **kwargs: Any) -> Task:
        """Build a task from `name` or `name:subset` (options go to the task's constructor)."""
        name, _, subset = spec.partition(":")
        cls = self.get("task", name)
        return cls(subset=subset or None, **kwargs)

    def task_names(self) -> list[str]:
        """Every addressable task string: names and `name:subset`."""
        out: list[str] = []
        for name, entry in sorted(self.entries["task"].items()):
            cls = entry.cls
            if not cls.subsets or cls.group or cls.default_subset:
                out.append(name)
            out.extend(f"{name}:{s}" for s in cls.subsets)
        return out


def _describe(provider: Provider, cls: type) -> str:
    return f"{provider.name} ({cls.__module__}.{cls.__qualname__})"


_host: PluginHost | None = None


def configure(plugin_files: list[str | Path] = ()) -> PluginHost:
    """Build the process-wide plugin host (the CLI calls this once with `--plugin` files)."""
    global _host
    _host = PluginHost(plugin_files)
    return _host


def host() -> PluginHost:
    """The process-wide plugin host, built on first use."""
    return _host if _host is not None else configure()


def load_task(spec: str, **options: Any) -> Task:
    """The task `name` or `name:subset` with its options (`data_dir=`, `dev_size=`, task options)."""
    return host().task(spec, **options)


def reset() -> None:
    """Forget the process-wide host (tests use this after installing or removing plugins)."""
    global _host
    _host = None
