"""Compiling an Avro schema, once, into straight-line Python: what reading and writing share.

fastavro interprets the schema for every event. The projector's hot path decodes
millions of events, so `behest.codec` compiles the current schema into generated
functions, about twice as fast: readers (`behest.avro_reader`) and writers
(`behest.avro_writer`, from dicts or straight from the models' objects). Events written
under an older schema take fastavro's schema resolution. Tests check the generated
code against fastavro and the Apache `avro` package.

Each emitter appends the statements that read (or write) one value of a schema node.
Readers advance `pos` in `buf` (length `size`) and assign the value to `target`;
writers append the value of the expression `value` to the bytearray `out`.
Truncation surfaces as IndexError and bad UTF-8 as UnicodeDecodeError; the callers
turn both into CodecError. Everything else is checked by the generated code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from itertools import count
from typing import Any, cast

__all__ = [
    "EIGHT_BYTES",
    "GATHER",
    "LOW7",
    "STOP_BITS",
    "Source",
    "emit_tree",
]

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})

# A long of exactly eight varint bytes (every timestamp-micros between 1978 and 3111) is
# read and written as one 64-bit word: its 7-bit groups gathered (or spread) in three steps.
STOP_BITS = 0x8080808080808080
EIGHT_BYTES = 0x0080808080808080  # continuation bits of a varint of exactly eight bytes
LOW7 = 0x7F7F7F7F7F7F7F7F
GATHER = (  # (mask kept, mask of the bits shifted down by `shift`, shift), 2 → 4 → 8 bytes
    (0x007F007F007F007F, 0x3F803F803F803F80, 1),
    (0x00003FFF00003FFF, 0x0FFFC0000FFFC000, 2),
    (0x000000000FFFFFFF, 0x00FFFFFFF0000000, 4),
)


class Source:
    """Generated lines, fresh local names and the constants the code refers to."""

    def __init__(
        self,
        schema: dict[str, Any],
        classes: Mapping[str, type] | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self.named: dict[str, Any] = schema["__named_schemas"]
        self._names: Iterator[int] = count()
        self.expanding: list[str] = []
        self.classes = classes
        """Writing objects: the Python class of each record (None: records are dicts)."""
        self.fields = fields or {}
        """Writing objects: `Record.field` → expression of the value, `{0}` the object."""

    def add(self, indent: int, *lines: str) -> None:
        self.lines.extend("    " * indent + line for line in lines)

    def local(self) -> str:
        return f"v{next(self._names)}"

    def constant(self, value: Any) -> str:
        name = f"_K{len(self.constants)}"
        self.constants[name] = value
        return name

    def resolve(self, node: Any) -> tuple[str, Any]:
        """The kind of a schema node (`record`, `union`, `long`, ...) and its definition."""
        if isinstance(node, list):
            return "union", node
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node, node
            if node in self.expanding:
                raise NotImplementedError(f"recursive type {node} is not supported by the codec")
            node = self.named[node]
        return node["type"], node

    def function(self, name: str, helpers: dict[str, Any]) -> Callable[..., Any]:
        namespace = {**helpers, **self.constants}
        code = compile("\n".join(self.lines), f"<behest.avro_compile {name}>", "exec")
        exec(code, namespace)  # noqa: S102 -- source generated from our own schema files
        return cast(Callable[..., Any], namespace[name])


def emit_tree(
    src: Source, var: str, keys: list[int], ind: int, leaf: Callable[[int, int], None]
) -> None:
    """Branch on `var`, known to be one of `keys` (ascending), by bisection: about log2(n)
    comparisons where an if/elif chain over a 17-branch union makes up to 17."""
    if len(keys) == 1:
        leaf(keys[0], ind)
        return
    middle = len(keys) // 2
    src.add(ind, f"if {var} < {keys[middle]}:")
    emit_tree(src, var, keys[:middle], ind + 1, leaf)
    src.add(ind, "else:")
    emit_tree(src, var, keys[middle:], ind + 1, leaf)
