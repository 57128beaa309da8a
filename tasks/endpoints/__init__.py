"""The removal endpoints: one module each, all described by an ``EndpointInfo``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel

from tasks.endpoints.local import LocalOptions
from tasks.formats import OutputFormat


class EndpointName(StrEnum):
    local = "local"
    pixelcut = "pixelcut"
    birefnet = "birefnet"


@dataclass(frozen=True)
class EndpointInfo:
    """What the flow needs to know of an endpoint to plan, price and verify its jobs."""

    name: EndpointName
    options_model: type[BaseModel]

    @property
    def option_fields(self) -> set[str]:
        return set(self.options_model.model_fields)

    def output_format(self, options: BaseModel) -> OutputFormat:
        fmt = getattr(options, "resolved_format", None)
        if not isinstance(fmt, OutputFormat):
            raise TypeError(f"{self.name} options do not resolve an output format")
        return fmt

    def transparent(self, options: BaseModel) -> bool:
        return bool(getattr(options, "transparent", False))


ENDPOINTS: dict[EndpointName, EndpointInfo] = {
    EndpointName.local: EndpointInfo(EndpointName.local, LocalOptions),
}


def endpoint_info(name: EndpointName | str) -> EndpointInfo:
    key = EndpointName(name)
    if key not in ENDPOINTS:
        raise NotImplementedError(f"endpoint {key.value!r} is not available in this build")
    return ENDPOINTS[key]
