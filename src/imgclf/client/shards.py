"""Splitting one validation job over several client processes or hosts, and merging their outputs.

`--shard i/N` (0 <= i < N) keeps the files whose path relative to DIR hashes to i modulo N: the
assignment depends only on the file's relative path, so every process agrees without talking to the
others, wherever DIR is mounted, and a file added later never moves the others. With --output, shard
i of N writes `<name>.shard-<i>-of-<N><ext>` beside OUTPUT, and `imgclf merge-results --output OUTPUT` merges
the N of them into OUTPUT, checking that every shard is there and complete.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from imgclf.client.base import ClientError
from imgclf.settings import shard_spec


def parse_shard(text: str) -> tuple[int, int]:
    """'2/8' -> (2, 8); ClientError naming the rule when it is not i/N with 0 <= i < N."""
    try:
        index, _, count = shard_spec(text or "x").partition("/")
    except ValueError as error:
        raise ClientError(f"SHARD {text!r}: {error}") from None
    return int(index), int(count)


def shard_of(relative_path: str, count: int) -> int:
    """The shard (0..count-1) a file belongs to, from its path relative to DIR (POSIX separators)."""
    digest = hashlib.sha256(PurePosixPath(relative_path).as_posix().encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def select(paths: Iterable[Path], root: Path, shard: str) -> Iterator[Path]:
    """The paths of this shard, in the order given (all of them when shard is "")."""
    if not shard:
        yield from paths
        return
    index, count = parse_shard(shard)
    for path in paths:
        if shard_of(path.relative_to(root).as_posix(), count) == index:
            yield path


def shard_output(output: str, shard: str) -> str:
    """Where shard i of N writes OUTPUT: <stem>.shard-<i>-of-<N><suffix> beside it."""
    if not shard or not output:
        return output
    index, count = parse_shard(shard)
    path = Path(output)
    return str(path.with_name(f"{path.stem}.shard-{index}-of-{count}{path.suffix}"))


def shard_files(output: str | Path) -> list[Path]:
    """The shard outputs of OUTPUT, in shard order; ClientError unless all N are there, complete."""
    path = Path(output)
    pattern = re.compile(rf"^{re.escape(path.stem)}\.shard-(\d+)-of-(\d+){re.escape(path.suffix)}$")
    found = {}
    for candidate in path.parent.glob(f"{path.stem}.shard-*"):
        match = pattern.match(candidate.name)
        if match:
            found.setdefault(int(match.group(2)), {})[int(match.group(1))] = candidate
    if len(found) != 1:
        what = f"shards of {sorted(found)} different counts" if found else "no shard outputs"
        raise ClientError(f"{output}: {what} beside it ({path.stem}.shard-<i>-of-<N>{path.suffix})")
    (count, shards), = found.items()
    missing = sorted(set(range(count)) - set(shards))
    if missing:
        partial = [str(path.with_name(f"{path.stem}.shard-{i}-of-{count}{path.suffix}.partial")) for i in missing]
        present = [p for p in partial if Path(p).exists()]
        raise ClientError(f"{output}: shards {missing} of {count} are missing"
                          + (f" (incomplete: {', '.join(present)})" if present else ""))
    return [shards[i] for i in range(count)]
