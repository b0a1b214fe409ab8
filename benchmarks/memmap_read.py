"""Benchmark: how fast the train loop's batches come out of a prepared ``.npy`` memmap, from
the page cache (warm) and from disk (cold: the file's pages evicted from this machine's page cache
before each round with ``posix_fadvise(DONTNEED)``; a virtual disk may still be cached by
its host, so "cold" is a best case), at each image size. Prints a table (not a test); the numbers
behind ``docs/scale.md``.

Each round reads ``--batches`` batches of ``--batch`` rows exactly as ``alphagan.training``
does (a seeded random permutation, sorted rows per batch, one fancy-index gather) from a
file of ``--images`` random images, and reports images/s. The comparison is the same
gather from an in-memory array (the upper bound).

    python benchmarks/memmap_read.py [--images 20000] [--sizes 64,128,256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from alphagan.benchmarking import Rounds, interleaved, machine_line


def write_array(path: Path, count: int, size: int) -> None:
    """``count`` random uint8 images (the content does not matter to a read) in .npy format."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, size, size, 3))
    rng = np.random.default_rng(0)
    for start in range(0, count, 1024):
        stop = min(count, start + 1024)
        array[start:stop] = rng.integers(0, 256, (stop - start, size, size, 3), dtype=np.uint8)
    array.flush()
    del array


def evict(path: Path) -> None:
    """Drop the file's clean pages from the page cache (no root needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def gather_rate(array: np.ndarray, batch: int, batches: int, seed: int) -> float:
    """Images/s of ``batches`` training-loop batches (sorted random rows, one gather each)."""
    order = np.random.default_rng(seed).permutation(len(array))
    start = time.perf_counter()
    for index in range(batches):
        rows = np.sort(order[index * batch:(index + 1) * batch])
        np.ascontiguousarray(array[rows])
    return batch * batches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    batches = min(args.batches, args.images // args.batch)
    print(machine_line())
    print(f"{args.images} images a file, {batches} batches of {args.batch} per round, {args.rounds} interleaved rounds; "
          "images/s min / median / max (spread)\n")
    print(f"| {'size':>5} | {'file':>9} | {'in memory':>28} | {'memmap, page cache':>28} | {'memmap, from disk':>28} |")
    print(f"|{'-' * 7}|{'-' * 11}|{'-' * 30}|{'-' * 30}|{'-' * 30}|")
    with tempfile.TemporaryDirectory() as scratch:
        for size in (int(s) for s in args.sizes.split(",")):
            path = Path(scratch) / f"train_{size}.npy"
            write_array(path, args.images, size)
            mapped = np.load(path, mmap_mode="r")
            in_memory = np.array(mapped)
            rounds_seen = {"cold": 0}

            def cold() -> float:
                evict(path)
                rounds_seen["cold"] += 1
                return gather_rate(np.load(path, mmap_mode="r"), args.batch, batches, seed=rounds_seen["cold"])

            def warm() -> float:
                gather_rate(mapped, args.batch, batches, seed=0)  # the cold round evicted the file: read the rows back in
                return gather_rate(mapped, args.batch, batches, seed=0)

            found: dict[str, Rounds] = interleaved({
                "memory": lambda: gather_rate(in_memory, args.batch, batches, seed=0),
                "warm": warm,
                "cold": cold,
            }, args.rounds)
            size_mib = path.stat().st_size / 2**20
            print(f"| {size:>5} | {size_mib:>5.0f} MiB | {found['memory'].summary():>28} | {found['warm'].summary():>28} | "
                  f"{found['cold'].summary():>28} |")
            del mapped, in_memory
            path.unlink()


if __name__ == "__main__":
    main()
