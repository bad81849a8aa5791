"""Ready-made projections, by the name `behest project --projection` takes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from behest.fold.projection import Projection
from behest.projections.otel import OtelProjection
from behest.projections.run_state import RunStateProjection
from behest.projections.tool_usage import ToolUsageProjection

__all__ = ["PROJECTIONS", "OtelProjection", "RunStateProjection", "ToolUsageProjection"]

PROJECTIONS: dict[str, Callable[[], Projection[Any]]] = {
    RunStateProjection.name: RunStateProjection,
    ToolUsageProjection.name: ToolUsageProjection,
    OtelProjection.name: OtelProjection,
}
"""Each projection's factory, by its name (also its consumer group and state folder)."""
