"""The removal endpoints: one module each, all described by an ``EndpointInfo``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from tasks.endpoints import birefnet, pixelcut
from tasks.endpoints.local import LocalOptions
from tasks.media.formats import OutputFormat


class EndpointName(StrEnum):
    local = "local"
    pixelcut = "pixelcut"
    birefnet = "birefnet"


@dataclass(frozen=True)
class EndpointInfo:
    """What the flow needs to know of an endpoint to plan, price and verify its jobs.

    ``fal_app`` and ``build_arguments`` are set for endpoints served by fal's queue API.
    """

    name: EndpointName
    options_model: type[BaseModel]
    fal_app: str | None = None
    build_arguments: Callable[[Any, str], dict[str, Any]] | None = None

    @property
    def option_fields(self) -> set[str]:
        return set(self.options_model.model_fields)

    @property
    def is_fal(self) -> bool:
        return self.fal_app is not None

    def options(self, params: dict[str, Any]) -> BaseModel:
        """The typed options of a planned job (``params`` also holds the resolved format)."""
        fields = self.option_fields
        return self.options_model.model_validate({k: v for k, v in params.items() if k in fields})

    def output_format(self, options: BaseModel) -> OutputFormat:
        fmt = getattr(options, "resolved_format", None)
        if not isinstance(fmt, OutputFormat):
            raise TypeError(f"{self.name} options do not resolve an output format")
        return fmt

    def transparent(self, options: BaseModel) -> bool:
        return bool(getattr(options, "transparent", False))


ENDPOINTS: dict[EndpointName, EndpointInfo] = {
    EndpointName.local: EndpointInfo(EndpointName.local, LocalOptions),
    EndpointName.pixelcut: EndpointInfo(
        EndpointName.pixelcut, pixelcut.PixelcutOptions, pixelcut.APP, pixelcut.arguments
    ),
    EndpointName.birefnet: EndpointInfo(
        EndpointName.birefnet, birefnet.BirefnetOptions, birefnet.APP, birefnet.arguments
    ),
}


def endpoint_info(name: EndpointName | str) -> EndpointInfo:
    key = EndpointName(name)
    if key not in ENDPOINTS:
        raise NotImplementedError(f"endpoint {key.value!r} is not available in this build")
    return ENDPOINTS[key]
