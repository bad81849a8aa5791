"""Compiled Avro readers: a schema turned, once, into one straight-line Python function.

`compile_decoder` is what `behest.codec` decodes every event with on the projector's hot
path (one call per event, no tuple); `compile_reader` reads one value anywhere in a buffer.
How the code is generated, and which errors the callers translate: `behest.avro_compile`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from behest.avro_compile import (
    EIGHT_BYTES,
    GATHER,
    LOW7,
    STOP_BITS,
    Source,
    emit_tree,
)
from behest.errors import CodecError

__all__ = ["compile_decoder", "compile_reader"]

_SHIFTS = tuple(range(7, 64, 7))
(_G1, _H1, _), (_G2, _H2, _), (_G3, _H3, _) = GATHER
# Defined here, not imported: CPython compiles `name.method()` on an imported name to an
# attribute load that makes a bound method on every call (`_U64` in the varint helpers).
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")
_U64 = struct.Struct("<Q")


def _read_long_tail(buf: bytes, pos: int, byte: int) -> tuple[int, int]:
    """Finish a zigzag varint whose first byte (at `pos - 1`) had the continuation bit.

    Two fast paths: two bytes (sequences, lengths), and eight bytes, gathered from one
    64-bit load instead of a loop (every timestamp-micros between 1978 and 3111)."""
    b = buf[pos]
    if b < 0x80:
        value = (byte & 0x7F) | (b << 7)
        return (value >> 1) ^ -(value & 1), pos + 1
    if pos + 7 <= len(buf):
        (word,) = _U64.unpack_from(buf, pos - 1)
        if word & STOP_BITS == EIGHT_BYTES:
            word &= LOW7
            word = (word & _G1) | ((word >> 1) & _H1)
            word = (word & _G2) | ((word >> 2) & _H2)
            word = (word & _G3) | ((word >> 4) & _H3)
            return (word >> 1) ^ -(word & 1), pos + 7
    value = byte & 0x7F
    for shift in _SHIFTS:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >> 64:
                raise CodecError(f"corrupt event: the varint ending at byte {pos} exceeds 64 bits")
            return (value >> 1) ^ -(value & 1), pos
    raise CodecError(f"corrupt event: the varint ending at byte {pos} is longer than 10 bytes")


def _read_index_tail(buf: bytes, pos: int, byte: int) -> tuple[int, int]:
    """A union or enum index written in more than one byte (no encoder does, but it is
    valid Avro), as its zigzag form: the generated code compares that with `2 * index`."""
    value, pos = _read_long_tail(buf, pos, byte)
    return (value << 1) ^ (value >> 63), pos


def _string_bounds(buf: bytes, pos: int, size: int, path: str) -> tuple[int, int]:
    """Start and end of a string or bytes value whose length is not a one-byte varint."""
    b = buf[pos]
    if b < 0x80:
        n = (b >> 1) ^ -(b & 1)
        pos += 1
    else:
        n, pos = _read_long_tail(buf, pos + 1, b)
    end = pos + n
    if n < 0 or end > size:
        _bad_length(n, pos, size, path)
    return pos, end


def _bad_length(length: int, pos: int, size: int, path: str) -> None:
    raise CodecError(
        f"corrupt or truncated event: {path} declares {length} bytes at byte {pos}, "
        f"but only {size - pos} remain"
    )


def _bad_index(index: int, branches: int, path: str) -> None:
    raise CodecError(
        f"corrupt event: {path} has index {index}, but the schema has only {branches} "
        f"choices (0 to {branches - 1})"
    )


def _bad_boolean(byte: int, path: str) -> None:
    raise CodecError(f"corrupt event: {path} is a boolean but its byte is {byte}")


def _short(path: str) -> None:
    raise IndexError(path)


def _left_over(extra: int) -> None:
    raise CodecError(f"corrupt event: {extra} bytes left over after the record")


_READ_HELPERS = {
    "_read_long_tail": _read_long_tail,
    "_read_index_tail": _read_index_tail,
    "_string_bounds": _string_bounds,
    "_left_over": _left_over,
    "_bad_length": _bad_length,
    "_bad_index": _bad_index,
    "_bad_boolean": _bad_boolean,
    "_short": _short,
    "_FLOAT": _FLOAT,
    "_DOUBLE": _DOUBLE,
    "_U64": _U64,
}


def _emit_read_long(src: Source, target: str, ind: int) -> None:
    """Inline: one byte, two bytes, or eight bytes gathered from one 64-bit load (every
    timestamp-micros between 1978 and 3111); anything else in `_read_long_tail`."""
    src.add(
        ind,
        "b = buf[pos]",
        "if b < 128:",
        f"    {target} = (b >> 1) ^ -(b & 1)",
        "    pos += 1",
        "else:",
        "    c = buf[pos + 1]",
        "    if c < 128:",
        "        c = (b & 0x7F) | (c << 7)",
        f"        {target} = (c >> 1) ^ -(c & 1)",
        "        pos += 2",
        "    elif pos + 8 <= size and (",
        f"        (w := _U64.unpack_from(buf, pos)[0]) & {STOP_BITS:#x} == {EIGHT_BYTES:#x}",
        "    ):",
        f"        w &= {LOW7:#x}",
        f"        w = (w & {_G1:#x}) | ((w >> 1) & {_H1:#x})",
        f"        w = (w & {_G2:#x}) | ((w >> 2) & {_H2:#x})",
        f"        w = (w & {_G3:#x}) | ((w >> 4) & {_H3:#x})",
        f"        {target} = (w >> 1) ^ -(w & 1)",
        "        pos += 8",
        "    else:",
        f"        {target}, pos = _read_long_tail(buf, pos + 1, b)",
    )


def _emit_read_index(src: Source, ind: int) -> None:
    """`i` = the zigzag form of a union or enum index: `2 * index` when it is valid."""
    src.add(
        ind,
        "i = buf[pos]",
        "pos += 1",
        "if i > 127:",
        "    i, pos = _read_index_tail(buf, pos, i)",
    )


def _emit_read(src: Source, node: Any, target: str, ind: int, path: str) -> None:
    kind, node = src.resolve(node)
    if kind in ("int", "long"):
        _emit_read_long(src, target, ind)
    elif kind in ("string", "bytes"):
        decode = ".decode()" if kind == "string" else ""
        src.add(
            ind,
            "b = buf[pos]",
            "if b & 129:",  # longer than 63 bytes, or a negative length
            f"    pos, end = _string_bounds(buf, pos, size, {path!r})",
            "else:",
            "    pos += 1",
            "    end = pos + (b >> 1)",
            "    if end > size:",
            f"        _bad_length(b >> 1, pos, size, {path!r})",
            f"{target} = buf[pos:end]{decode}",
            "pos = end",
        )
    elif kind == "null":
        src.add(ind, f"{target} = None")
    elif kind == "boolean":
        src.add(
            ind,
            "b = buf[pos]",
            "pos += 1",
            "if b > 1:",
            f"    _bad_boolean(b, {path!r})",
            f"{target} = b == 1",
        )
    elif kind in ("float", "double"):
        fmt, width = ("_FLOAT", 4) if kind == "float" else ("_DOUBLE", 8)
        src.add(
            ind,
            f"if pos + {width} > size:",
            f"    _short({path!r})",
            f"{target}, = {fmt}.unpack_from(buf, pos)",
            f"pos += {width}",
        )
    elif kind == "enum":
        symbols = src.constant(tuple(node["symbols"]))
        count = len(node["symbols"])
        _emit_read_index(src, ind)
        src.add(
            ind,
            f"if i & 1 or i >= {2 * count}:",
            f"    _bad_index((i >> 1) ^ -(i & 1), {count}, {path!r})",
            f"{target} = {symbols}[i >> 1]",
        )
    elif kind == "record":
        src.expanding.append(node["name"])
        values = []
        for field in node["fields"]:
            local = src.local()
            _emit_read(src, field["type"], local, ind, f"{node['name']}.{field['name']}")
            values.append(f"{field['name']!r}: {local}")
        src.expanding.pop()
        src.add(ind, f"{target} = {{{', '.join(values)}}}")
    elif kind == "union":
        _emit_read_index(src, ind)
        src.add(
            ind,
            f"if i & 1 or i >= {2 * len(node)}:",
            f"    _bad_index((i >> 1) ^ -(i & 1), {len(node)}, {path!r})",
        )

        def branch(zigzag: int, at: int) -> None:
            branch_kind, definition = src.resolve(node[zigzag >> 1])
            if branch_kind == "record":
                local = src.local()
                _emit_read(src, definition, local, at, path)
                src.add(at, f"{target} = ({definition['name']!r}, {local})")
            else:
                _emit_read(src, node[zigzag >> 1], target, at, path)

        emit_tree(src, "i", [2 * index for index in range(len(node))], ind, branch)
    else:
        raise NotImplementedError(f"Avro type {kind!r} ({path}) is not supported by the codec")


def compile_reader(schema: dict[str, Any]) -> Callable[[bytes, int], tuple[Any, int]]:
    """`read(buf, pos) -> (value, end)` for a parsed, logical-type-free schema."""
    src = Source(schema)
    src.add(0, "def read(buf, pos):", "    size = len(buf)")
    _emit_read(src, schema, "value", 1, schema["name"])
    src.add(1, "return value, pos")
    return src.function("read", _READ_HELPERS)


def compile_decoder(schema: dict[str, Any]) -> Callable[[bytes, int], Any]:
    """`decode(buf, pos) -> value`: the value from `pos` to the very end of `buf`, a
    CodecError if bytes are left over (one call and no tuple on the hot path)."""
    src = Source(schema)
    src.add(0, "def decode(buf, pos):", "    size = len(buf)")
    _emit_read(src, schema, "value", 1, schema["name"])
    src.add(1, "if pos != size:", "    _left_over(size - pos)", "return value")
    return src.function("decode", _READ_HELPERS)
