"""Reading and writing cnnkit's YAML configs as bounded plain data.

A YAML file can make a tiny text expand into a huge value: an anchor (``&a``) whose
alias (``*a``) is repeated, nested a few levels deep ("billion laughs"), turns 1 KB into
billions of nodes. cnnkit's configs never need anchors, so :func:`load_yaml` refuses:

- a file over :data:`MAX_YAML_BYTES` (checked before it is read);
- any alias (``*name``, including merge keys ``<<: *name``), at the first one met, before
  anything is expanded;
- more than :data:`MAX_YAML_NODES` nodes, or nesting deeper than Python can compose.

:func:`dump_yaml` never writes anchors (shared objects are written out in full), so a
file cnnkit wrote always reads back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cnnkit._core.errors import ConfigError

#: the largest config file read, in bytes
MAX_YAML_BYTES = 1 << 20
#: the most YAML nodes (scalars, lists, mappings) a config may hold
MAX_YAML_NODES = 10_000


class _BoundedLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that refuses aliases and counts the nodes it composes."""

    source = "<yaml>"
    nodes = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"{self.source}, line {event.start_mark.line + 1}: YAML aliases "
                f"(*{str(event.anchor)[:40]}) are not allowed in cnnkit configs; write the "
                "value out in full instead of referring to an anchor."
            )
        self.nodes += 1
        if self.nodes > MAX_YAML_NODES:
            raise ConfigError(
                f"{self.source} holds more than {MAX_YAML_NODES} YAML values; a cnnkit config "
                "is a short description (put large data into a dataset file)."
            )
        return super().compose_node(parent, index)


class _NoAliasDumper(yaml.SafeDumper):
    """A ``SafeDumper`` that writes shared objects out in full instead of as anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def parse_yaml(text: str, source: str = "<yaml>") -> Any:
    """Parse ``text`` as bounded YAML plain data (see the module docstring).

    Raises :class:`ConfigError` naming ``source`` for an alias, too many nodes, too deep
    a nesting or invalid YAML.
    """
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(
            f"{source} is {len(text)} characters, over the limit of {MAX_YAML_BYTES} for a "
            "config; a cnnkit config is a short description."
        )
    loader = _BoundedLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        raise ConfigError(f"{source} is not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(
            f"{source}: the YAML is nested too deeply to be a cnnkit config."
        ) from None
    finally:
        loader.dispose()


def load_yaml(path: str | os.PathLike, source: str | None = None) -> Any:
    """Read the file at ``path`` with :func:`parse_yaml`, refusing files over
    :data:`MAX_YAML_BYTES` before reading them. ``OSError`` passes through."""
    path = Path(path)
    source = str(path) if source is None else source
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ConfigError(
            f"{source} is {size} bytes, over the limit of {MAX_YAML_BYTES} for a config; a "
            "cnnkit config is a short description."
        )
    with open(path, encoding="utf-8") as fh:
        text = fh.read(MAX_YAML_BYTES + 1)
    return parse_yaml(text, source)


def dump_yaml(data: Any, **kwargs: Any) -> str:
    """``yaml.safe_dump`` without anchors or aliases: what :func:`load_yaml` reads back."""
    return yaml.dump(data, Dumper=_NoAliasDumper, **kwargs)
