"""A name -> builder registry that rejects duplicates and suggests close names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from cnnkit._core.errors import ConfigError, did_you_mean


class Registry:
    """Maps names to callables.

    >>> models = Registry("model")
    >>> @models.register("tiny")
    ... def tiny(**kw): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(
        self, name: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            key = name or fn.__name__
            if key in self._items:
                raise ConfigError(
                    f"A {self.kind} named {key!r} is already registered "
                    f"(by {self._items[key].__module__}.{self._items[key].__qualname__}); "
                    "choose another name."
                )
            self._items[key] = fn
            return fn

        return deco

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"Unknown {self.kind} {name!r}; {len(self._items)} are registered "
                f"(list them with list_{self.kind}s())." + did_you_mean(name, self._items)
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
