"""Tests that register writer schemas put the codec's registry back afterwards: it is one
per process, and each test starts from the schemas behest ships."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from behest import writer_schemas


@contextlib.contextmanager
def restored_schema_registry() -> Iterator[None]:
    """The known and the refused writer schemas, as they were before the block."""
    versions, refused = dict(writer_schemas.VERSIONS), dict(writer_schemas.REFUSED)
    try:
        yield
    finally:
        writer_schemas.VERSIONS.clear()
        writer_schemas.VERSIONS.update(versions)
        writer_schemas.REFUSED.clear()
        writer_schemas.REFUSED.update(refused)
