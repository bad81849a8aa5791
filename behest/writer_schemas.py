"""The writer schemas behest can read, by fingerprint: shipped, published, or refused.

Schemas in `schemas/` are parsed once, at import, into a registry keyed by the
CRC-64-AVRO fingerprint (little-endian) of their Parsing Canonical Form. A writer schema
published at run time (on `<topic>.schemas`, or kept in a projection's store) joins it when
the current schema can read what it writes (`behest.compat`), and is refused with a reason
otherwise. `behest.codec` looks up the schema named by each event's header here.
"""

from __future__ import annotations

import contextlib
import json
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from behest.errors import CodecError, IncompatibleSchemaError, UnknownSchemaError
from behest.events import Variant

NAMESPACE = "behest"
CURRENT_SCHEMA_FILE = "agent_event.avsc"


def _schema_dir() -> Path:
    """`schemas/` beside the package in a source checkout, inside it once installed."""
    here = Path(__file__).resolve().parent
    installed = here / "schemas"
    return installed if (installed / CURRENT_SCHEMA_FILE).exists() else here.parent / "schemas"


SCHEMA_DIR = _schema_dir()


def _strip_logical_types(node: Any) -> Any:
    """The same schema without logicalType annotations: identical wire format, and
    fastavro then hands us text and integers instead of converting (half its cost)."""
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


def schema_fingerprint(schema: str | dict[str, Any]) -> bytes:
    """The 8 header bytes for a schema: CRC-64-AVRO of its Parsing Canonical Form,
    little-endian. Logical-typed primitives reduce to their simple form (`"string"`),
    as Java, Rust and fastavro compute it."""
    raw = json.loads(schema) if isinstance(schema, str) else schema
    canonical = to_parsing_canonical_form(fastavro.parse_schema(raw, _write_hint=False))
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))  # hex of the LE bytes


@dataclass(frozen=True)
class SchemaVersion:
    """One writer schema (a `schemas/*.avsc` file, or one published on `<topic>.schemas`):
    its raw and parsed (logical-type-free) forms and fingerprint."""

    name: str
    raw: dict[str, Any]
    parsed: dict[str, Any]
    fingerprint: bytes
    published: bool = False
    """Added at run time (published on a schemas topic), not shipped in `schemas/`."""

    @classmethod
    def load(cls, path: Path) -> SchemaVersion:
        return cls.from_json(path.name, json.loads(path.read_text()))

    @classmethod
    def from_json(cls, name: str, raw: dict[str, Any], *, published: bool = False) -> SchemaVersion:
        parsed = cast(dict[str, Any], fastavro.parse_schema(_strip_logical_types(raw)))
        return cls(name, raw, parsed, schema_fingerprint(raw), published)

    def record(self) -> tuple[bytes, bytes]:
        """Its record on `<topic>.schemas`: key = the 8 header bytes as 16 lowercase hex
        characters, value = the schema's JSON text (UTF-8)."""
        return self.fingerprint.hex().encode(), json.dumps(self.raw, separators=(",", ":")).encode()


def _load_registry(schema_dir: Path) -> tuple[SchemaVersion, dict[bytes, SchemaVersion]]:
    current = SchemaVersion.load(schema_dir / CURRENT_SCHEMA_FILE)
    versions = {current.fingerprint: current}
    for path in sorted(schema_dir.glob("agent_event.v*.avsc")):
        version = SchemaVersion.load(path)
        versions.setdefault(version.fingerprint, version)
    return current, versions


CURRENT, VERSIONS = _load_registry(SCHEMA_DIR)
"""The current (reader) schema, and every known writer schema by fingerprint (the files of
`schemas/`, then those added at run time by `add_writer_schema`)."""
REFUSED: dict[bytes, str] = {}
"""Writer schemas seen and refused, by fingerprint: why the current schema cannot read them."""


class SchemaSource(Protocol):
    """Somewhere writer schemas are kept (a projection's store): asked on an unknown one."""

    def get_schema(self, fingerprint: bytes) -> bytes | None: ...


_SOURCES: weakref.WeakSet[SchemaSource] = weakref.WeakSet()
_uses = threading.local()


def on_published_schema(callback: Callable[[SchemaVersion], None] | None) -> None:
    """Call `callback` (in this thread) for each event decoded with a published writer
    schema: the projector keeps such schemas in its store, beside the events that need them."""
    _uses.callback = callback


def add_schema_source(source: SchemaSource) -> None:
    """Ask `source` for writer schemas the registry lacks (held weakly: it may go away)."""
    _SOURCES.add(source)


def add_writer_schema(text: str | bytes | dict[str, Any], origin: str = "") -> SchemaVersion:
    """Register a writer schema (its JSON, full or Parsing Canonical Form) so events written
    with it decode. `IncompatibleSchemaError` (and remembered in `REFUSED`) when the current
    schema cannot read what it writes; `CodecError` when it is not an AgentEvent schema."""
    from behest.compat import incompatibilities

    try:
        raw = json.loads(text) if isinstance(text, str | bytes) else text
        version = SchemaVersion.from_json(origin or "published", raw, published=True)
    except Exception as error:  # json and fastavro raise many kinds for bad schemas
        raise CodecError(
            f"not an Avro schema{f' ({origin})' if origin else ''}: {type(error).__name__}: {error}"
        ) from None
    known = VERSIONS.get(version.fingerprint)
    if known is not None:
        return known
    problems = incompatibilities(version.parsed, CURRENT.parsed)
    if problems:
        reason = (
            f"writer schema {version.fingerprint.hex()}{f' ({origin})' if origin else ''} is "
            f"incompatible with behest's {CURRENT.name}: {'; '.join(problems)}"
        )
        REFUSED[version.fingerprint] = reason
        raise IncompatibleSchemaError(reason)
    VERSIONS[version.fingerprint] = version
    return version


def lookup(fp: bytes) -> SchemaVersion:
    """The writer schema of fingerprint `fp`: known, or found in a schema source; raises
    `IncompatibleSchemaError` for a refused one and `UnknownSchemaError` for one never seen."""
    version = VERSIONS.get(fp)
    if version is None:
        refused = REFUSED.get(fp)
        if refused is not None:
            raise IncompatibleSchemaError(refused)
        version = _from_sources(fp) if _SOURCES else None
        if version is None:
            raise UnknownSchemaError(
                f"unknown writer schema fingerprint {fp.hex()}: its producer did not publish "
                "it to the <topic>.schemas topic (schemas/README.md says how), or this is "
                "not a behest event; after publishing it, send the dead letter back with "
                "`behest dlq replay`"
            )
    if version.published:
        callback = getattr(_uses, "callback", None)
        if callback is not None:
            callback(version)
    return version


def _from_sources(fp: bytes) -> SchemaVersion | None:
    for source in list(_SOURCES):
        try:
            text = source.get_schema(fp)
        except Exception:  # noqa: S112 - a source that cannot answer (closed) is passed over
            continue
        if text is not None:
            with contextlib.suppress(CodecError):
                return add_writer_schema(text, "from the projection's store")
    return None


def _union_records(node: Any, namespace: str = "") -> set[str]:
    """Full names of the records that are branches of a union anywhere in a schema."""
    found: set[str] = set()
    if isinstance(node, list):
        for branch in node:
            if isinstance(branch, dict) and branch.get("type") == "record":
                found.add(f"{branch.get('namespace', namespace)}.{branch['name']}")
            found |= _union_records(branch, namespace)
    elif isinstance(node, dict):
        inner = node.get("namespace", namespace)
        for value in node.values():
            found |= _union_records(value, inner)
    return found


def _check_variants(version: SchemaVersion) -> None:
    """`behest.events.Variant` names exactly the union branches of the current schema."""
    in_schema = _union_records(version.raw)
    known = {v.value for v in Variant}
    if in_schema != known:
        raise CodecError(
            f"{version.name} and behest.events.Variant disagree: only in the schema "
            f"{sorted(in_schema - known)}, only in Variant {sorted(known - in_schema)}; "
            "add each union branch to Variant (and its model to behest.events)"
        )


_check_variants(CURRENT)
