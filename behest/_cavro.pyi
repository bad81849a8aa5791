"""Types of the compiled Avro codec (behest/_cavro.c); see behest.avro_program."""

from collections.abc import Callable
from typing import Any

VERSION: int

class Program:
    def __init__(
        self,
        spec: tuple[Any, ...],
        error: type[Exception],
        json_fits: Callable[[str], bool] | None = None,
        slow_check: Callable[[Any], None] | None = None,
    ) -> None: ...
    def decode(self, data: bytes | bytearray | memoryview, pos: int, /) -> Any: ...
    def decode_checked(self, data: bytes | bytearray | memoryview, pos: int, /) -> Any: ...
    def read(self, data: bytes | bytearray | memoryview, pos: int, /) -> tuple[Any, int]: ...
    def encode(self, prefix: bytes, value: Any, /, *arguments: Any) -> bytes: ...
    def write(self, out: bytearray, value: Any, /) -> None: ...
