"""Where a projection's state lives on disk: generations, partitions, the served one, owners.

    <state_dir>/<projection>/
        CURRENT                   names the served generation ("g2"); replaced with os.replace
        g1/  manifest.json        version, topic, partition count, build targets, when ready
             p0/ p1/ …            one RocksDB per partition: its runs and its stored offset
             owners/<member>.json which partitions a live projector owns now (a heartbeat)
        g2/  …

A *generation* is one complete build of a projection from offset 0. A new projection
version, or `behest project --rebuild`, builds a new generation beside the served one;
readers keep reading the served one until `switch` points CURRENT at the new one, in one
atomic rename, once it has caught up. Older generations stay for `rollback` until dropped.

A *partition store* holds exactly the runs of one Kafka partition and that partition's
next offset, so it moves with the partition: the projector opens it on assignment and
closes it on revocation, and a node that gets a partition back resumes from its offset.

This module is the file layout only (paths, JSON, renames); no RocksDB, no Kafka.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import orjson

from behest.errors import StoreError

__all__ = [
    "CURRENT",
    "DEFAULT_OWNER_MAX_AGE",
    "MANIFEST",
    "Layout",
    "Manifest",
    "Owner",
    "generation_name",
    "parse_generation",
    "parse_partition_dir",
    "partition_dir_name",
]

CURRENT: Final = "CURRENT"
MANIFEST: Final = "manifest.json"
OWNERS: Final = "owners"
LOCK: Final = "LOCK"
DEFAULT_OWNER_MAX_AGE: Final = 10.0
"""Seconds after its last heartbeat an owner file stops counting (its projector is gone)."""

_GENERATION = re.compile(r"g([1-9][0-9]*)")
_PARTITION = re.compile(r"p(0|[1-9][0-9]*)")
_FORMAT: Final = 1


def generation_name(number: int) -> str:
    """`g<number>`: the folder of a generation (numbered from 1)."""
    if number < 1:
        raise ValueError(f"generations are numbered from 1, not {number}")
    return f"g{number}"


def parse_generation(name: str) -> int | None:
    """The number of a generation folder name (`g3` -> 3), or None for any other name."""
    match = _GENERATION.fullmatch(name.strip())
    return int(match.group(1)) if match else None


def partition_dir_name(partition: int) -> str:
    """`p<partition>`: the folder of one partition's RocksDB."""
    if partition < 0:
        raise ValueError(f"no partition {partition}")
    return f"p{partition}"


def parse_partition_dir(name: str) -> int | None:
    """The partition of a partition folder name (`p5` -> 5), or None."""
    match = _PARTITION.fullmatch(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Manifest:
    """What a generation is: which projection version built it, from which topic, with how
    many partitions (readers route a run to its partition store with that count)."""

    projection: str
    version: int
    generation: int
    topic: str
    partitions: int
    run_keyed: bool
    created_at: float
    """Unix time the build started."""
    targets: dict[int, int] = field(default_factory=dict)
    """Per partition, the log end offset when the build started: it is caught up once it
    has folded that far (and then the live end, see `Projector`)."""
    ready_at: float | None = None
    """Unix time it first caught up and was switched to; None while it is being built."""
    rolled_back_at: float | None = None
    """Unix time readers were rolled back from it; a projector of its version then does
    not switch back to it by itself (drop it, or `--switch` to it, to carry on)."""
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Tells a generation from a later one built under the same name after a wipe."""

    @property
    def name(self) -> str:
        return generation_name(self.generation)

    @property
    def ready(self) -> bool:
        return self.ready_at is not None

    def to_json(self) -> bytes:
        data = asdict(self)
        data["format"] = _FORMAT
        data["targets"] = {str(p): o for p, o in sorted(self.targets.items())}
        return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: Path | str = "manifest") -> Manifest:
        try:
            raw: dict[str, Any] = orjson.loads(data)
            raw.pop("format", None)
            raw["targets"] = {int(p): int(o) for p, o in raw.get("targets", {}).items()}
            return cls(**raw)
        except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as error:
            raise StoreError(
                f"the generation manifest {where} is unreadable ({error}): drop that "
                "generation (`behest generations drop G`) or rebuild"
            ) from None


@dataclass(frozen=True)
class Owner:
    """A live projector's claim: these partitions of this generation are folded by it now."""

    member: str
    host: str
    pid: int
    partitions: tuple[int, ...]
    heartbeat: float
    """Unix time of its last write; it counts for `DEFAULT_OWNER_MAX_AGE` seconds."""

    def alive(self, now: float, max_age: float = DEFAULT_OWNER_MAX_AGE) -> bool:
        """Fresh heartbeat, and (on this host) a process that still exists."""
        if now - self.heartbeat > max_age:
            return False
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        return True


def write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write a small file so that readers see either the old or the new bytes, never a
    mix: a temporary file beside it, fsynced (unless not `durable`), renamed over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        if durable:
            file.flush()
            os.fsync(file.fileno())
    os.replace(tmp, path)
    if not durable:
        return
    with contextlib.suppress(OSError):  # the rename itself durable (not on every platform)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


class Layout:
    """The folders of one projection under a state dir, and the operations on them."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @classmethod
    def of(cls, state_dir: Path | str, projection: str) -> Layout:
        return cls(Path(state_dir) / projection)

    @property
    def name(self) -> str:
        return self.root.name

    # --- what is there ------------------------------------------------------------------------

    def is_legacy(self) -> bool:
        """Whether the root holds a single RocksDB for all partitions (behest before
        generations): its own MANIFEST-* files sit right in the root."""
        try:
            return any(p.name.startswith("MANIFEST-") for p in self.root.iterdir())
        except FileNotFoundError:
            return False

    def check_not_legacy(self) -> None:
        if self.is_legacy():
            raise StoreError(
                f"{self.root} holds a single-store projection state from an older behest; "
                "state is now kept per generation and partition: rebuild it from the log "
                "with `behest project --rebuild` (it replaces the old store)"
            )

    def remove_legacy(self) -> None:
        """Delete an old single-store state (its files, not generation folders)."""
        for path in list(self.root.iterdir()):
            if parse_generation(path.name) is None:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def generations(self) -> list[int]:
        """Numbers of the generations that have a manifest, oldest first."""
        try:
            entries = list(self.root.iterdir())
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            number = parse_generation(entry.name)
            if number is not None and (entry / MANIFEST).is_file():
                found.append(number)
        return sorted(found)

    def current(self) -> int | None:
        """The served generation, or None if none has been switched to yet."""
        try:
            text = (self.root / CURRENT).read_text()
        except FileNotFoundError:
            return None
        number = parse_generation(text)
        if number is None:
            self.check_not_legacy()  # RocksDB's own CURRENT: the single store of old
            raise StoreError(
                f"{self.root / CURRENT} names no generation ({text.strip()!r}): point it at "
                "one with `behest generations switch G` (see `behest generations list`)"
            )
        return number

    def generation_dir(self, generation: int) -> Path:
        return self.root / generation_name(generation)

    def partition_dir(self, generation: int, partition: int) -> Path:
        return self.generation_dir(generation) / partition_dir_name(partition)

    def stored_partitions(self, generation: int) -> list[int]:
        """Partitions of a generation that have a store on disk (a RocksDB CURRENT file)."""
        try:
            entries = list(self.generation_dir(generation).iterdir())
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            partition = parse_partition_dir(entry.name)
            if partition is not None and (entry / CURRENT).is_file():
                found.append(partition)
        return sorted(found)

    def manifest(self, generation: int) -> Manifest:
        path = self.generation_dir(generation) / MANIFEST
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StoreError(
                f"no generation {generation_name(generation)} of {self.name} at {self.root}: "
                "`behest generations list` shows the ones there are"
            ) from None
        return Manifest.from_json(data, path)

    def manifests(self) -> list[Manifest]:
        return [self.manifest(g) for g in self.generations()]

    # --- changes ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the projection's lock file: projectors of one state dir (workers of a node)
        decide which generation to write, and create or switch one, one at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a+b") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(file.fileno(), fcntl.LOCK_UN)

    def write_manifest(self, manifest: Manifest) -> None:
        folder = self.generation_dir(manifest.generation)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomically(folder / MANIFEST, manifest.to_json())

    def create(
        self,
        *,
        version: int,
        topic: str,
        partitions: int,
        run_keyed: bool,
        targets: Mapping[int, int] | None = None,
    ) -> Manifest:
        """A new, empty generation numbered after every existing one."""
        self.root.mkdir(parents=True, exist_ok=True)
        used = [parse_generation(p.name) for p in self.root.iterdir()]
        number = max([n for n in used if n is not None], default=0) + 1
        while True:
            try:
                self.generation_dir(number).mkdir()
                break
            except FileExistsError:  # another process took that number meanwhile
                number += 1
        manifest = Manifest(
            projection=self.name,
            version=version,
            generation=number,
            topic=topic,
            partitions=partitions,
            run_keyed=run_keyed,
            created_at=time.time(),
            targets=dict(targets or {}),
        )
        self.write_manifest(manifest)
        return manifest

    def switch(self, generation: int) -> Manifest:
        """Serve `generation` from now on: one atomic rename readers notice on their next
        refresh. Marks it ready (and no longer rolled back from)."""
        manifest = self.manifest(generation)
        if not manifest.ready or manifest.rolled_back_at is not None:
            manifest = replace(
                manifest, ready_at=manifest.ready_at or time.time(), rolled_back_at=None
            )
            self.write_manifest(manifest)
        write_atomically(self.root / CURRENT, f"{manifest.name}\n".encode())
        return manifest

    def rollback(self) -> Manifest:
        """Serve the newest ready generation older than the served one again; the one
        left is marked rolled back from, so its projector does not switch back to it."""
        served = self.current()
        if served is None:
            raise StoreError(f"{self.name} serves no generation yet: nothing to roll back")
        older = [m for m in self.manifests() if m.generation < served and m.ready]
        if not older:
            raise StoreError(
                f"{self.name} has no ready generation older than {generation_name(served)} "
                "to roll back to (`behest generations list`)"
            )
        left = self.manifest(served)
        self.write_manifest(replace(left, rolled_back_at=time.time()))
        return self.switch(older[-1].generation)

    def drop(self, generation: int) -> None:
        """Delete a generation that is not served (refused for the served one)."""
        if generation == self.current():
            raise StoreError(
                f"{generation_name(generation)} is the generation readers are served: switch "
                "to another first (`behest generations rollback` or `switch G`), then drop it"
            )
        self.manifest(generation)  # a clear error for an unknown one
        owners = self.owners(generation)
        if owners:
            raise StoreError(
                f"{generation_name(generation)} is being written by a live projector "
                f"(pid {owners[0].pid} on {owners[0].host}): stop it first"
            )
        # The manifest goes first: a half-deleted folder is then no generation at all.
        (self.generation_dir(generation) / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(self.generation_dir(generation), ignore_errors=True)

    # --- owners -------------------------------------------------------------------------------

    def write_owner(self, generation: int, member: str, partitions: Iterable[int]) -> None:
        """Claim (or heartbeat) the partitions this process folds now."""
        folder = self.generation_dir(generation) / OWNERS
        folder.mkdir(parents=True, exist_ok=True)
        owner = Owner(
            member, socket.gethostname(), os.getpid(), tuple(sorted(partitions)), time.time()
        )
        # a heartbeat, rewritten every second: atomic, but not worth an fsync
        write_atomically(folder / f"{member}.json", orjson.dumps(asdict(owner)), durable=False)

    def remove_owner(self, generation: int, member: str) -> None:
        (self.generation_dir(generation) / OWNERS / f"{member}.json").unlink(missing_ok=True)

    def owners(self, generation: int, max_age: float = DEFAULT_OWNER_MAX_AGE) -> list[Owner]:
        """The live owners of a generation's partitions (stale and dead ones left out)."""
        folder = self.generation_dir(generation) / OWNERS
        try:
            files = list(folder.glob("*.json"))
        except FileNotFoundError:
            return []
        now = time.time()
        found = []
        for path in files:
            try:
                raw = orjson.loads(path.read_bytes())
                owner = Owner(**{**raw, "partitions": tuple(raw["partitions"])})
            except (FileNotFoundError, orjson.JSONDecodeError, TypeError, KeyError):
                continue  # removed or being replaced right now
            if owner.alive(now, max_age):
                found.append(owner)
        return found

    def owned_partitions(
        self, generation: int, max_age: float = DEFAULT_OWNER_MAX_AGE
    ) -> dict[int, Owner]:
        """Partition -> its live owner, for every partition some live projector folds."""
        return {p: owner for owner in self.owners(generation, max_age) for p in owner.partitions}


def new_member_id() -> str:
    """A name for this process's owner file: host, pid and a random tail."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
