"""Every endpoint option as a run-wide setting, derived from the endpoints' option models.

An option is declared once, in its endpoint's option model (type, default, description). A run
may set it for all its rows (the flow's parameters, the CLI's flags) and a manifest row may
override it (a column). This module reads the models and says, per option name, which endpoints
take it, what a run may set it to (the union of the endpoints' types, or nothing: the
endpoint's default) and how to describe it; ``flows/params.py`` and ``flows/cli.py`` build
their fields and flags from it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from enum import Enum
from functools import reduce
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from tasks.endpoints import ENDPOINTS, EndpointName


@dataclass(frozen=True)
class RunOption:
    """One option name across the endpoints that declare it."""

    name: str
    declared: tuple[tuple[EndpointName, FieldInfo], ...]  # endpoint order

    @property
    def endpoints(self) -> tuple[EndpointName, ...]:
        return tuple(endpoint for endpoint, _ in self.declared)

    @property
    def annotation(self) -> Any:
        """What a run may set: any endpoint's type (bounds included), or None.

        A structured value (a colour) is set as text, as in a manifest cell; the endpoint's
        model parses it when the run plans its jobs.
        """
        types = []
        for _, info in self.declared:
            typed = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
            if not all(_is_scalar(kind) for kind in _plain(info.annotation)):
                typed = str
            if typed not in types:
                types.append(typed)
        return reduce(operator.or_, types, type(None))

    @property
    def value_types(self) -> list[Any]:
        """The plain types a value may have (bounds, validators and None left out)."""
        found: list[Any] = []
        for _, info in self.declared:
            for kind in _plain(info.annotation):
                if kind not in found:
                    found.append(kind)
        return found

    @property
    def choices(self) -> list[str] | None:
        """The allowed values when every endpoint takes one of an enum's, else None."""
        kinds = self.value_types
        if not all(isinstance(k, type) and issubclass(k, Enum) for k in kinds):
            return None
        return [str(member.value) for kind in kinds for member in kind]

    @property
    def description(self) -> str:
        """Each endpoint's description and default, endpoints with the same one named together."""
        parts: dict[str, list[str]] = {}
        for endpoint, info in self.declared:
            parts.setdefault(_described(info), []).append(endpoint.value)
        return " ".join(f"{', '.join(names)}: {text}" for text, names in parts.items())


def _plain(annotation: Any) -> list[Any]:
    """``X | None`` -> [X]; ``Annotated[X, ...]`` -> [X]; unions -> their members."""
    if get_origin(annotation) is Annotated:
        return _plain(get_args(annotation)[0])
    if get_origin(annotation) in (Union, type(int | None)):
        return [kind for arg in get_args(annotation) for kind in _plain(arg)]
    return [] if annotation is type(None) else [annotation]


def _is_scalar(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Enum | bool | int | float | str)


def _described(info: FieldInfo) -> str:
    text = (info.description or "").rstrip(".") + "."
    default = info.get_default(call_default_factory=True)
    if default is None:
        return text
    if isinstance(default, Enum):
        default = default.value
    if isinstance(default, bool):
        default = str(default).lower()
    return f"{text} Default: {default}."


def run_options() -> dict[str, RunOption]:
    """Every option of every endpoint, in the order the endpoints declare them."""
    declared: dict[str, list[tuple[EndpointName, FieldInfo]]] = {}
    for name, endpoint in ENDPOINTS.items():
        for option, info in endpoint.options_model.model_fields.items():
            declared.setdefault(option, []).append((name, info))
    return {option: RunOption(option, tuple(found)) for option, found in declared.items()}
