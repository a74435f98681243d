"""One registry mechanism: a table of names -> objects (builders, losses, readers, ...) whose lookup
error lists the valid names and the closest match. Closed choices that params.yaml may name are
also declared as `Literal` fields in core/config.py (tested to match)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from pipeline.core.config import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A table of names -> objects with an error that lists the valid names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            names = sorted(self._items)
            raise ConfigError(f"unknown {self.kind} {name!r}.{did_you_mean(name, names)} Available: {names}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
