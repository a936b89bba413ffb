"""The one plugin registry: benchmark runners, safeguard verifiers, notifiers and checkpoint stores.

Modelled on Inspect AI's registry: a plugin is registered by a decorator on the object
that provides it; built-in plugins are named here by module path and imported only when
first asked for (so `import tasks` never pulls in boto3, slack-sdk or Inspect); third-party
plugins are found through entry points, one group per kind::

    [project.entry-points."rsp_gate.notifiers"]
    pagerduty = "my_lab.rsp_plugins"        # importing the module runs @NOTIFIERS.register(...)

One set of rules for every kind: registering a different object under a taken name is an
error unless `replace=True` (two modules cannot silently fight over one name); registering
the same object again (a module reloaded in tests) is allowed; an unknown name raises
`LookupError` naming the kind and the names that are known.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, Literal, TypeVar

RegistryKind = Literal["runner", "verifier", "notifier", "store"]

T = TypeVar("T")


def _same(a: Any, b: Any) -> bool:
    # A reloaded module re-creates its functions and classes: the same qualified name is the same plugin.
    return a is b or (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == (
        getattr(b, "__module__", 0), getattr(b, "__qualname__", 0))


class UnknownPlugin(LookupError):
    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(known) or 'none'}")
        self.kind, self.name, self.known = kind, name, known


class Registry(Generic[T]):
    """Named plugins of one kind. `builtins` maps a name to the module whose import registers it."""

    def __init__(self, kind: RegistryKind, *, entry_point_group: str, builtins: Mapping[str, str] | None = None
                 ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._builtins = dict(builtins or {})
        self._plugins: dict[str, T] = {}
        self._lock = threading.RLock()
        self._entry_points_loaded = False

    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` on the plugin (a class, a factory or a function)."""

        def decorate(plugin: T) -> T:
            self.add(name, plugin, replace=replace)
            return plugin

        return decorate

    def add(self, name: str, plugin: T, *, replace: bool = False) -> None:
        with self._lock:
            existing = self._plugins.get(name)
            if existing is not None and not replace and not _same(existing, plugin):
                raise ValueError(f"a {self.kind} is already registered as {name!r} ({existing!r})")
            self._plugins[name] = plugin

    def remove(self, name: str) -> None:
        with self._lock:
            self._plugins.pop(name, None)

    def get(self, name: str) -> T:
        """The plugin registered as `name`: a built-in is imported on first use, then entry points are tried."""
        with self._lock:
            if name not in self._plugins and name in self._builtins:
                importlib.import_module(self._builtins[name])
            if name not in self._plugins:
                self._load_entry_points()
            plugin = self._plugins.get(name)
        if plugin is None:
            raise UnknownPlugin(self.kind, name, self.names())
        return plugin

    def find(self, name: str) -> T | None:
        try:
            return self.get(name)
        except UnknownPlugin:
            return None

    def names(self) -> list[str]:
        """Every name that can be asked for: registered, built in, or from an entry point."""
        with self._lock:
            return sorted(set(self._plugins) | set(self._builtins))

    def load_all(self) -> dict[str, T]:
        """Import every built-in and entry point, and return what is registered."""
        with self._lock:
            for module in dict.fromkeys(self._builtins.values()):
                importlib.import_module(module)
            self._load_entry_points()
            return dict(self._plugins)

    def registered(self) -> dict[str, T]:
        """What is registered now, without importing anything."""
        with self._lock:
            return dict(self._plugins)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.entry_point_group):
            ep.load()  # importing the module runs its registration decorators

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


__all__ = ["Registry", "RegistryKind", "UnknownPlugin"]
