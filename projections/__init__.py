"""Ready-made projections. `behest project --projection NAME` finds them by the names the
`behest.projections` entry points give them (pyproject.toml), as it finds anyone's."""

from __future__ import annotations

from behest.projections.otel import OtelProjection
from behest.projections.run_state import RunStateProjection
from behest.projections.tool_usage import ToolUsageProjection

__all__ = ["OtelProjection", "RunStateProjection", "ToolUsageProjection"]
