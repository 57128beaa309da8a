"""The CLI's endpoint-option flags, derived from the endpoints' option models.

Each option becomes a typer flag with the option's description as its help (a ``--x/--no-x``
pair for booleans, a choice for enums), shown under "Endpoint options" in ``--help``; a command
decorated with ``with_option_flags`` receives the values in its ``**options``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from enum import Enum, StrEnum
from typing import Annotated, Any

import typer

from tasks.endpoints.run_options import RunOption, run_options

PANEL = "Endpoint options (a manifest column of the same name overrides one per row)"


def flag_type(option: RunOption) -> Any:
    """The value type typer parses: the enum (a merged one when endpoints differ), bool,
    int, float, or text that the endpoint's model parses later (a colour)."""
    kinds = option.value_types
    choices = option.choices
    if choices is not None:
        if len(kinds) == 1:
            return kinds[0]
        return StrEnum(f"{option.name}_choice", {value: value for value in choices})
    if len(kinds) == 1 and kinds[0] in (bool, int, float):
        return kinds[0]
    return str


def option_flag(option: RunOption) -> inspect.Parameter:
    """The command parameter of one option: default None, i.e. the endpoint's own default."""
    kind = flag_type(option)
    names = []
    if kind is bool:
        flag = option.name.replace("_", "-")
        names = [f"--{flag}/--no-{flag}"]
    info = typer.Option(*names, help=option.description, rich_help_panel=PANEL)
    return inspect.Parameter(
        option.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind | None, info],
    )


def with_option_flags(command: Callable[..., None]) -> Callable[..., None]:
    """Give a typer command one flag per endpoint option; the values arrive in ``**options``
    as plain values (enum members as their values), None for the flags not given."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    flags = [option_flag(option) for option in run_options().values()]
    names = {p.name for p in flags}

    @functools.wraps(command)
    def with_flags(**values: Any) -> None:
        plain = {k: v.value if k in names and isinstance(v, Enum) else v for k, v in values.items()}
        command(**plain)

    with_flags.__signature__ = signature.replace(parameters=[*own, *flags])  # type: ignore[attr-defined]
    return with_flags
