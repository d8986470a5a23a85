"""Loading the configuration: a YAML file (``configs/default.yaml`` or ``--config``), bounded in
size, values and nesting before it is built, then dotted-key overrides from the command line
(``--set``), validated into ``Config``; any refusal is one ``ConfigError`` line naming the key."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from stream.config.base import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    YamlSyntaxError,
    first_error,
    shorten,
)
from stream.config.root import Config

MAX_CONFIG_BYTES = 1 << 20  # a config file larger than this is refused unread
MAX_CONFIG_VALUES = 20_000  # values in a YAML document once its aliases are expanded


def _yaml_children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many values ``root`` stands for once every alias is expanded, counted on the node
    graph without expanding it (so an alias bomb costs its size, not its expansion); more
    than ``limit`` (or a cycle: an alias inside its own anchor) gives ``limit + 1``."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            total = 1 + sum(sizes[id(c)] for c in _yaml_children(node))
            sizes[key] = min(total, limit + 1)
            on_path.discard(key)
            continue
        if key in sizes:
            continue
        if key in on_path:
            return limit + 1
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _yaml_children(node) if id(c) not in sizes)
    return sizes[id(root)]


def load_yaml(
    text: str, what: str, loader_class: type[yaml.SafeLoader] = yaml.SafeLoader
) -> object:
    """``yaml.safe_load`` bounded to ``MAX_CONFIG_VALUES`` values after alias expansion and to
    the parser's nesting depth; anything else is a one-line ``ConfigError`` about ``what``."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{what} expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases?); refused"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise YamlSyntaxError(f"{what} is not valid YAML: {shorten(str(e))}") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply to be a config") from None
    finally:
        loader.dispose()


def _read_config_text(p: Path) -> str:
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {p} is larger than {MAX_CONFIG_BYTES // 2**10} KiB; refused"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {p} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})"
        ) from None


def _set_dotted(tree: dict[str, object], dotted: str, value: object) -> None:
    node: dict[str, object] = tree
    parts = dotted.split(".")
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{dotted}': '{p}' is not a section")
        node = child
    node[parts[-1]] = value


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key that appears twice in one mapping (a second camera of
    the same name would silently replace the first)."""

    def construct_mapping(
        self, node: yaml.MappingNode, deep: bool = False
    ) -> dict[Hashable, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {str(key)[:64]!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_config(
    path: str | Path | None = None, overrides: Mapping[str, object] | None = None
) -> Config:
    """Read a YAML config (default ``configs/default.yaml``) and apply dotted-key overrides."""
    tree: dict[str, object] = {}
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if path is not None or p.exists():
        loaded = load_yaml(_read_config_text(p), f"config file {p}", _UniqueKeyLoader)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at top level")
        tree = loaded or {}
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(first_error(e)) from None


def parse_override(item: str) -> tuple[str, object]:
    """Parse ``key.sub=value`` (value read as YAML) from ``--set``."""
    if "=" not in item:
        raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
    key, raw = item.split("=", 1)
    try:
        value: object = load_yaml(raw, f"--set {shorten(key)}") if raw else ""
    except YamlSyntaxError:
        value = raw  # not YAML: the text itself
    return key.strip(), value
