"""A name -> builder registry that rejects duplicates and suggests close names."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from cnnkit._core.errors import ConfigError, did_you_mean, short


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


#: the types of plain data a file (JSON, YAML) can hold
_PLAIN = (type(None), bool, int, float, str)


def check_plain_data(value: Any, what: str, depth: int = 0) -> None:
    """``value`` is plain data (None, bool, int, float, str, lists/tuples and str-keyed
    mappings of these), as a JSON or YAML file holds: never a callable, a module or an
    object. ConfigError naming ``what`` otherwise."""
    if isinstance(value, _PLAIN):
        return
    if depth > 32:
        raise ConfigError(f"{what} is nested more than 32 levels deep; expected plain data.")
    if isinstance(value, (list, tuple)):
        for item in value:
            check_plain_data(item, what, depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{what} has the key {short(key)}; expected string keys.")
            check_plain_data(item, f"{what}.{key}", depth + 1)
        return
    raise ConfigError(
        f"{what} is a {type(value).__name__}; a saved config holds only plain data "
        "(numbers, strings, lists, mappings)."
    )


def check_arguments(
    fn: Callable[..., Any],
    args: Any,
    what: str,
    *,
    skip: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Check, without calling ``fn``, that the mapping ``args`` read from a file binds to
    ``fn``'s keyword parameters (less ``skip``, plus the names in ``extra``) and holds
    plain data; returns it as a dict. ConfigError naming ``what`` and the accepted
    arguments otherwise (unknown or missing ones, a value that is not data)."""
    if not isinstance(args, Mapping):
        raise ConfigError(f"{what}: the arguments must be a mapping; received {short(args)}.")
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip
    ]
    accepted = [p.name for p in params] + [n for n in extra if n not in skip]
    for key in args:
        if not isinstance(key, str) or key not in accepted:
            raise ConfigError(
                f"{what} takes no argument {short(key)}; it accepts "
                f"{', '.join(accepted) or 'none'}." + did_you_mean(str(key), accepted)
            )
    missing = [p.name for p in params if p.default is p.empty and p.name not in args]
    if missing:
        raise ConfigError(
            f"{what} needs the argument(s) {', '.join(missing)}; it accepts {', '.join(accepted)}."
        )
    check_plain_data(dict(args), what)
    return dict(args)
