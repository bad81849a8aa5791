"""Projections by name: installed ones through an entry-point group, anyone's by import path.

    load_projection("run_state")                  # an installed projection, by its name
    load_projection("my_service.folds:Spend")     # any importable class (or factory, or instance)

A package makes its projections known to `behest project`, `behest serve` and `behest
state` by declaring them in the `behest.projections` entry-point group of its metadata
(behest declares its own `run_state`, `tool_usage` and `otel` so):

    [project.entry-points."behest.projections"]
    spend = "my_service.folds:Spend"

behest's own are found without their entry points too: metadata written before the group
existed (an old `.venv`, or a stale `behest.egg-info` beside the sources) lacks them.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Final

from behest.errors import ConfigError
from behest.fold.projection import Projection

__all__ = ["BUILT_IN", "ENTRY_POINT_GROUP", "installed_projections", "load_projection"]

ENTRY_POINT_GROUP: Final = "behest.projections"

BUILT_IN: Final = {
    "run_state": "behest.projections.run_state:RunStateProjection",
    "tool_usage": "behest.projections.tool_usage:ToolUsageProjection",
    "otel": "behest.projections.otel:OtelProjection",
}
"""behest's own projections, as pyproject.toml declares them (a test keeps the two equal)."""

_MEMBERS: Final = (
    "name",
    "run_keyed",
    "key",
    "apply",
    "encode_state",
    "decode_state",
    "index_keys",
)


def installed_projections() -> dict[str, EntryPoint]:
    """The projections installed packages declare, by name, and behest's own (`BUILT_IN`)
    even when the installed metadata is too old to declare them."""
    found = {name: EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in BUILT_IN.items()}
    found.update((ep.name, ep) for ep in entry_points(group=ENTRY_POINT_GROUP))
    return found


def load_projection(spec: str) -> Projection[Any]:
    """The projection `spec` names: an installed one's name, or `package.module:Class` (a
    class or factory called with no arguments, or a projection instance)."""
    installed = installed_projections()
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        found = _import(spec, module_name, attribute)
    elif spec in installed:
        try:
            found = installed[spec].load()
        except Exception as error:  # a broken package: say which and why
            raise ConfigError(
                f"projection {spec!r} ({installed[spec].value}) failed to load: "
                f"{type(error).__name__}: {error}"
            ) from None
    else:
        known = ", ".join(sorted(installed)) or "none"
        raise ConfigError(
            f"unknown projection {spec!r}: give an installed one ({known}) or your own as "
            "package.module:Class (importable: installed, or its folder on PYTHONPATH)"
        )
    return _instance(spec, found)


def _import(spec: str, module_name: str, attribute: str) -> object:
    if not module_name or not attribute:
        raise ConfigError(f"{spec!r} is not package.module:Class (e.g. my_service.folds:Spend)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"cannot import {module_name!r} for projection {spec!r}: {error}; is it installed, "
            "or its folder on PYTHONPATH?"
        ) from None
    found = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigError(
                f"module {module_name!r} has no {attribute!r} (from {spec!r})"
            ) from None
    return found


def _instance(spec: str, found: object) -> Projection[Any]:
    """A projection from a class, a factory or an instance, checked for every member."""
    projection = found
    if isinstance(found, type) or (callable(found) and not hasattr(found, "apply")):
        try:
            projection = found()
        except Exception as error:  # the user's constructor: any error, said plainly
            raise ConfigError(
                f"{spec!r} could not be made with no arguments ({type(error).__name__}: "
                f"{error}): point at a class or factory that takes none, or an instance"
            ) from None
    missing = [m for m in _MEMBERS if not hasattr(projection, m)]
    if missing:
        raise ConfigError(
            f"{spec!r} is not a projection: it lacks {', '.join(missing)} "
            "(see behest.fold.projection.Projection)"
        )
    if not isinstance(projection.name, str) or not projection.name:  # type: ignore[attr-defined]
        raise ConfigError(f"{spec!r}: a projection's name must be non-empty text")
    return projection  # type: ignore[return-value]
