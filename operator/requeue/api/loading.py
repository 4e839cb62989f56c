"""Turn a manifest (dict or YAML text) into a validated resource, or a SpecInvalid
whose message names every bad field the way ``kubectl`` users know them."""

from __future__ import annotations

from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from requeue.errors import SpecInvalid

M = TypeVar("M", bound=BaseModel)


def field_path(loc: tuple[int | str, ...]) -> str:
    """``('spec', 'gates', 0, 'http', 'url')`` -> ``spec.gates[0].http.url``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in part:
            continue  # pydantic's validator frames, not fields
        else:
            out += f".{part}"
    return out.lstrip(".") or "<root>"


def describe(error: ValidationError) -> str:
    """One ``field: problem`` line per error, most specific first."""
    lines = []
    for err in error.errors(include_url=False):
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{field_path(tuple(err['loc']))}: {message}")
    return "; ".join(lines)


def parse(model: type[M], document: dict[str, Any] | str, *, name: str = "") -> M:
    """Validate ``document`` as ``model``; raises SpecInvalid naming the fields."""
    if isinstance(document, str):
        try:
            document = yaml.safe_load(document)
        except yaml.YAMLError as exc:
            raise SpecInvalid(f"{name or 'manifest'}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise SpecInvalid(f"{name or 'manifest'}: expected a mapping, got {type(document).__name__}")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        prefix = f"{name}: " if name else ""
        raise SpecInvalid(f"{prefix}invalid {model.__name__}: {describe(exc)}") from None
