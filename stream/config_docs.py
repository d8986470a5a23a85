"""The configuration reference (``docs/config-reference.md``), generated from the pydantic models
of ``stream.config`` so that it cannot drift: every section and key with its type, default,
bounds and description. ``python -m stream.config_docs > docs/config-reference.md`` rewrites it;
a test checks that the shipped file is current."""

from __future__ import annotations

import json
import sys
import types
from typing import Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from stream.config import Config

HEADER = """# Configuration reference

Generated from the pydantic models in `stream/config/` by `python -m stream.config_docs`
(a test checks it is current). Set a key in a YAML file (`--config FILE`, default
`configs/default.yaml`) or on the command line (`--set section.key=value`); unknown keys and
out-of-range values are one-line errors naming the key. See [configuration](configuration.md)
for how the sections fit together.
"""


def _type_name(tp: object) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _bounds(info: FieldInfo) -> str:
    parts = []
    for m in info.metadata:
        if isinstance(m, Ge):
            parts.append(f"≥ {m.ge}")
        elif isinstance(m, Gt):
            parts.append(f"> {m.gt}")
        elif isinstance(m, Le):
            parts.append(f"≤ {m.le}")
        elif isinstance(m, Lt):
            parts.append(f"< {m.lt}")
        elif isinstance(m, MinLen):
            parts.append(f"length ≥ {m.min_length}")
        elif isinstance(m, MaxLen):
            parts.append(f"length ≤ {m.max_length}")
    return ", ".join(parts)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(section)"
    else:
        value = info.default
    if value is PydanticUndefined:
        return "(required)"
    if isinstance(value, BaseModel):
        return "(section)"
    text = json.dumps(value, default=str)
    return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}…`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _section(model: type[BaseModel], prefix: str, out: list[str]) -> None:
    nested: list[tuple[str, type[BaseModel]]] = []
    rows = []
    for name, info in model.model_fields.items():
        tp = info.annotation
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            nested.append((f"{prefix}{name}", tp))
            continue
        rows.append(
            f"| `{prefix}{name}` | {_cell(_type_name(tp))} | {_cell(_default(info))} | "
            f"{_cell(_bounds(info))} | {_cell(info.description or '')} |"
        )
    if rows:
        title = prefix.rstrip(".") or "top level"
        doc = (model.__doc__ or "").strip().split("\n\n")[0] if prefix else ""
        out += ["", f"## `{title}`" if prefix else "## Top level", ""]
        if doc and model is not Config:
            out += [_cell(doc), ""]
        out += ["| key | type | default | bounds | what |", "|---|---|---|---|---|", *rows]
    for key, sub in nested:
        _section(sub, f"{key}.", out)


def reference() -> str:
    """The whole reference as Markdown."""
    out = [HEADER.rstrip()]
    _section(Config, "", out)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference())
