"""Compiling an Avro schema, once, into straight-line Python reader and writer functions.

fastavro interprets the schema for every event. The projector's hot path decodes
millions of events, so `behest.codec` compiles the current schema into two generated
functions (`compile_reader`, `compile_writer`), about twice as fast; events written
under an older schema take fastavro's schema resolution. Tests check the generated
code against fastavro and the Apache `avro` package.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping
from itertools import count
from typing import Any, cast

from behest.errors import CodecError

__all__ = ["compile_decoder", "compile_object_writer", "compile_reader", "compile_writer"]

# --- compiling a schema into Python ---------------------------------------------------------
#
# Each emitter appends the statements that read (or write) one value of a schema node.
# Readers advance `pos` in `buf` (length `size`) and assign the value to `target`;
# writers append the value of the expression `value` to the bytearray `out`.
# Truncation surfaces as IndexError and bad UTF-8 as UnicodeDecodeError; the callers
# turn both into CodecError. Everything else is checked by the generated code.

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")


class _Source:
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


_SHIFTS = tuple(range(7, 64, 7))
_U64 = struct.Struct("<Q")
_STOP_BITS = 0x8080808080808080
_EIGHT_BYTES = 0x0080808080808080  # continuation bits of a varint of exactly eight bytes
_LOW7 = 0x7F7F7F7F7F7F7F7F
_GATHER = (  # (mask kept, mask of the bits shifted down by `shift`, shift), 2 → 4 → 8 bytes
    (0x007F007F007F007F, 0x3F803F803F803F80, 1),
    (0x00003FFF00003FFF, 0x0FFFC0000FFFC000, 2),
    (0x000000000FFFFFFF, 0x00FFFFFFF0000000, 4),
)
(_G1, _H1, _), (_G2, _H2, _), (_G3, _H3, _) = _GATHER


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
        if word & _STOP_BITS == _EIGHT_BYTES:
            word &= _LOW7
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


def _emit_read_long(src: _Source, target: str, ind: int) -> None:
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
        f"        (w := _U64.unpack_from(buf, pos)[0]) & {_STOP_BITS:#x} == {_EIGHT_BYTES:#x}",
        "    ):",
        f"        w &= {_LOW7:#x}",
        f"        w = (w & {_G1:#x}) | ((w >> 1) & {_H1:#x})",
        f"        w = (w & {_G2:#x}) | ((w >> 2) & {_H2:#x})",
        f"        w = (w & {_G3:#x}) | ((w >> 4) & {_H3:#x})",
        f"        {target} = (w >> 1) ^ -(w & 1)",
        "        pos += 8",
        "    else:",
        f"        {target}, pos = _read_long_tail(buf, pos + 1, b)",
    )


def _emit_read_index(src: _Source, ind: int) -> None:
    """`i` = the zigzag form of a union or enum index: `2 * index` when it is valid."""
    src.add(
        ind,
        "i = buf[pos]",
        "pos += 1",
        "if i > 127:",
        "    i, pos = _read_index_tail(buf, pos, i)",
    )


def _emit_tree(
    src: _Source, var: str, keys: list[int], ind: int, leaf: Callable[[int, int], None]
) -> None:
    """Branch on `var`, known to be one of `keys` (ascending), by bisection: about log2(n)
    comparisons where an if/elif chain over a 17-branch union makes up to 17."""
    if len(keys) == 1:
        leaf(keys[0], ind)
        return
    middle = len(keys) // 2
    src.add(ind, f"if {var} < {keys[middle]}:")
    _emit_tree(src, var, keys[:middle], ind + 1, leaf)
    src.add(ind, "else:")
    _emit_tree(src, var, keys[middle:], ind + 1, leaf)


def _emit_read(src: _Source, node: Any, target: str, ind: int, path: str) -> None:
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

        _emit_tree(src, "i", [2 * index for index in range(len(node))], ind, branch)
    else:
        raise NotImplementedError(f"Avro type {kind!r} ({path}) is not supported by the codec")


def compile_reader(schema: dict[str, Any]) -> Callable[[bytes, int], tuple[Any, int]]:
    """`read(buf, pos) -> (value, end)` for a parsed, logical-type-free schema."""
    src = _Source(schema)
    src.add(0, "def read(buf, pos):", "    size = len(buf)")
    _emit_read(src, schema, "value", 1, schema["name"])
    src.add(1, "return value, pos")
    return src.function("read", _READ_HELPERS)


def compile_decoder(schema: dict[str, Any]) -> Callable[[bytes, int], Any]:
    """`decode(buf, pos) -> value`: the value from `pos` to the very end of `buf`, a
    CodecError if bytes are left over (one call and no tuple on the hot path)."""
    src = _Source(schema)
    src.add(0, "def decode(buf, pos):", "    size = len(buf)")
    _emit_read(src, schema, "value", 1, schema["name"])
    src.add(1, "if pos != size:", "    _left_over(size - pos)", "return value")
    return src.function("decode", _READ_HELPERS)


def _put_varint(out: bytearray, zigzag: int, value: int, bits: int, path: str) -> None:
    """Append a zigzag-encoded value of at least one byte, after checking its range."""
    if not 0 <= zigzag < 1 << bits:
        raise CodecError(f"{path} = {value} does not fit an Avro {bits}-bit integer")
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)


def _put_long(out: bytearray, zigzag: int, value: int, path: str) -> None:
    """`_put_varint` of a long, with fast paths for two bytes (sequences) and eight (every
    timestamp-micros between 1978 and 3111: the 7-bit groups spread apart in three steps,
    `_GATHER` backwards, and written at once)."""
    if 0 <= zigzag < 1 << 14:
        out.append((zigzag & 0x7F) | 0x80)
        out.append(zigzag >> 7)
    elif 1 << 49 <= zigzag < 1 << 56:
        word = (zigzag & _G3) | ((zigzag & _H3) << 4)
        word = (word & _G2) | ((word & _H2) << 2)
        word = (word & _G1) | ((word & _H1) << 1)
        out += _U64.pack(word | _EIGHT_BYTES)
    else:
        _put_varint(out, zigzag, value, 64, path)


def _not_a(expected: str, value: Any, path: str) -> None:
    raise CodecError(f"{path} must be {expected}, not {type(value).__name__} {value!r:.80}")


_WRITE_HELPERS = {
    "_put_varint": _put_varint,
    "_put_long": _put_long,
    "_U64": _U64,
    "_not_a": _not_a,
    "_FLOAT": _FLOAT,
    "_DOUBLE": _DOUBLE,
}


def _emit_write_long(src: _Source, value: str, ind: int, bits: int, path: str) -> None:
    src.add(
        ind,
        f"z = ({value} << 1) ^ ({value} >> {bits - 1})",
        "if 0 <= z < 128:",
        "    out.append(z)",
        "elif 128 <= z < 16384:",
        "    out.append((z & 0x7F) | 0x80)",
        "    out.append(z >> 7)",
    )
    if bits == 64:  # eight bytes inline: every timestamp-micros between 1978 and 3111
        src.add(
            ind,
            f"elif {1 << 49} <= z < {1 << 56}:",
            f"    z = (z & {_G3:#x}) | ((z & {_H3:#x}) << 4)",
            f"    z = (z & {_G2:#x}) | ((z & {_H2:#x}) << 2)",
            f"    z = (z & {_G1:#x}) | ((z & {_H1:#x}) << 1)",
            f"    out += _U64.pack(z | {_EIGHT_BYTES:#x})",
        )
    src.add(
        ind,
        "else:",
        f"    _put_long(out, z, {value}, {path!r})"
        if bits == 64
        else f"    _put_varint(out, z, {value}, {bits}, {path!r})",
    )


def _emit_write(src: _Source, node: Any, value: str, ind: int, path: str) -> None:
    kind, node = src.resolve(node)
    if kind in ("int", "long"):
        _emit_write_long(src, value, ind, 32 if kind == "int" else 64, path)
    elif kind in ("string", "bytes"):
        data = src.local()
        if kind == "string":
            src.add(ind, f"{data} = {value}.encode()")
        else:
            src.add(
                ind,
                f"if not isinstance({value}, (bytes, bytearray)):",
                f"    _not_a('bytes', {value}, {path!r})",
                f"{data} = {value}",
            )
        src.add(
            ind,
            f"n = len({data})",
            "if n < 64:",
            "    out.append(n << 1)",
            "else:",
            f"    _put_varint(out, n << 1, n, 64, {path!r})",
            f"out += {data}",
        )
    elif kind == "null":
        src.add(ind, f"if {value} is not None:", f"    _not_a('None', {value}, {path!r})")
    elif kind == "boolean":
        src.add(
            ind,
            f"if {value} is True:",
            "    out.append(1)",
            f"elif {value} is False:",
            "    out.append(0)",
            "else:",
            f"    _not_a('a bool', {value}, {path!r})",
        )
    elif kind in ("float", "double"):
        src.add(ind, f"out += {'_FLOAT' if kind == 'float' else '_DOUBLE'}.pack({value})")
    elif kind == "enum":
        indexes = src.constant({symbol: i for i, symbol in enumerate(node["symbols"])})
        src.add(
            ind,
            f"i = {indexes}.get({value})",
            "if i is None:",
            f"    _not_a('one of {', '.join(node['symbols'])}', {value}, {path!r})",
        )
        _emit_write_long(src, "i", ind, 64, path)
    elif kind == "record":
        src.expanding.append(node["name"])
        for field in node["fields"]:
            local, where = src.local(), f"{node['name']}.{field['name']}"
            if src.classes is None:
                src.add(ind, f"{local} = {value}[{field['name']!r}]")
            else:
                src.add(
                    ind,
                    f"{local} = " + src.fields.get(where, "{0}.{1}").format(value, field["name"]),
                )
            _emit_write(src, field["type"], local, ind, where)
        src.expanding.pop()
    elif kind == "union":
        _emit_write_union(src, node, value, ind, path)
    else:
        raise NotImplementedError(f"Avro type {kind!r} ({path}) is not supported by the codec")


def _emit_write_union(src: _Source, branches: list[Any], value: str, ind: int, path: str) -> None:
    """A record branch is chosen by the name in a `(name, fields)` tuple, the null branch
    by None, and the one other branch (if any) by anything else."""
    records, plain = [], []
    for index, branch in enumerate(branches):
        kind, definition = src.resolve(branch)
        if kind == "record":
            records.append((index, definition))
        else:
            plain.append((index, kind, branch))
    null = [entry for entry in plain if entry[1] == "null"]
    other = [entry for entry in plain if entry[1] != "null"]
    if len(other) > 1:
        raise NotImplementedError(f"{path}: unions with several non-record branches")
    keyword = "if"
    if records and src.classes is not None:  # objects: the branch is the object's class
        classes = src.constant({src.classes[d["name"]]: index for index, d in records})
        src.add(ind, f"i = {classes}.get(type({value}))", "if i is not None:")
        by_index = dict(records)

        def by_class(index: int, at: int) -> None:
            src.add(at, f"out.append({index << 1})")
            _emit_write(src, by_index[index], value, at, path)

        _emit_tree(src, "i", sorted(by_index), ind + 1, by_class)
        keyword = "elif"
    elif records:
        name, fields = src.local(), src.local()
        indexes = src.constant({definition["name"]: index for index, definition in records})
        expected = f"a branch of {path}: " + ", ".join(d["name"] for _, d in records)
        src.add(
            ind,
            f"if type({value}) is tuple:",
            f"    {name}, {fields} = {value}",
            f"    i = {indexes}.get({name})",
            "    if i is None:",
            f"        _not_a({expected!r}, {name}, {path!r})",
        )
        definitions = dict(records)

        def branch(index: int, at: int) -> None:
            src.add(at, f"out.append({index << 1})")
            _emit_write(src, definitions[index], fields, at, path)

        _emit_tree(src, "i", sorted(definitions), ind + 1, branch)
        keyword = "elif"
    if null:
        src.add(ind, f"{keyword} {value} is None:", f"    out.append({null[0][0] << 1})")
        keyword = "elif"
    if keyword == "if":  # only the one plain branch
        src.add(ind, f"out.append({other[0][0] << 1})")
        _emit_write(src, other[0][2], value, ind, path)
        return
    src.add(ind, "else:")
    if other:
        src.add(ind + 1, f"out.append({other[0][0] << 1})")
        _emit_write(src, other[0][2], value, ind + 1, path)
    elif src.classes is not None:
        names = ", ".join(src.classes[d["name"]].__name__ for _, d in records)
        src.add(ind + 1, f"_not_a({'one of ' + names!r}, {value}, {path!r})")
    else:
        src.add(ind + 1, f"_not_a('a (name, fields) tuple', {value}, {path!r})")


def compile_writer(schema: dict[str, Any]) -> Callable[[bytearray, Any], None]:
    """`write(out, value)`, appending the Avro binary form of `value` to `out`."""
    src = _Source(schema)
    src.add(0, "def write(out, value):")
    _emit_write(src, schema, "value", 1, schema["name"])
    return src.function("write", _WRITE_HELPERS)


def compile_object_writer(
    schema: dict[str, Any],
    classes: Mapping[str, type],
    fields: Mapping[str, str],
    params: tuple[str, ...] = (),
    helpers: Mapping[str, Any] | None = None,
) -> Callable[..., None]:
    """`write(out, value, *params)` for a tree of objects instead of dicts: a record's
    field is the attribute of that name, or the expression `fields["Record.field"]`
    (`{0}` the object, `{1}` the field's name; may call `helpers` or use `params`), and a
    union of records picks its branch by the object's class (`classes`, by record name).
    Saves building the plain record first (the producers' path from models to bytes)."""
    src = _Source(schema, classes, fields)
    src.add(0, f"def write({', '.join(('out', 'value', *params))}):")
    _emit_write(src, schema, "value", 1, schema["name"])
    return src.function("write", {**_WRITE_HELPERS, **(helpers or {})})
