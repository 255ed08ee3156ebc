"""Chain verification throughput against raw Ed25519 verification on the same machine.

Builds one actor's chain of ~1 KiB signed entries with protocol/ (not timed), then
measures in one run:
  (a) raw PyNaCl Ed25519 verifies/s on ~1 KiB messages (the floor), measured in slices
      interleaved with (b) so that load from anything else on the machine hits both alike;
  (b) chain entries verified/s by protocol.chain.verify_next on one core
      (envelope + canonicalize + hash + verify + link check);
  (c) b / a;
and with --workers N (default: all cores), entries/s when N forked workers, started
before the clock (with --pin, pinned one to a core), verify segments of the chain with
the same verify_next (the entries inherited by fork, or with --lines the chain as a JSON
Lines file holds it, each worker decoding its byte ranges), every segment starting from
the state protocol.chain.state_before says the entries before it lead to, while this
process checks, in order, that each segment's assumed start is the state the previous
one really ended in (a mismatch is re-verified here from the true state). The parallel
run must end in the same ChainState as the sequential one. Beside it, the raw floor is
also run on all workers at once: how far N cores scale here at all.

    python bench/chain_verify.py [--quick] [--workers N] [--entries N] [--pin] [--lines]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import multiprocessing
import os
import sys
import time
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Final, NamedTuple

import msgspec
import nacl.signing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol.canonical import canonicalize
from protocol.chain import (
    ChainState,
    entry_digest,
    genesis,
    key_history,
    key_id,
    make_entry,
    rotation,
    state_before,
    verify_next,
)
from protocol.errors import ChainError
from protocol.keys import SigningKey, VerifyKey

ACTOR = "http://127.0.0.1:8000/actor"
Message = tuple[nacl.signing.VerifyKey, bytes, bytes]  # (key, message, signature)
ENTRIES: list[dict[str, Any]] = []
# The chain as a JSON Lines file holds it, one canonical entry per line; set before the
# workers fork, so they read it without any transfer.
LINES: list[bytes] = [b""]
_decode: Final = msgspec.json.Decoder().decode
_decode_lines: Final = msgspec.json.Decoder().decode_lines


def build_chain(count: int) -> list[dict[str, Any]]:
    """A chain of ``count`` entries of ~1 KiB, with one key rotation in the middle."""
    keys = [SigningKey.from_seed(bytes([n + 1]) * 32) for n in range(2)]
    key, kid = keys[0], key_id(ACTOR, 0)
    entries = [genesis(ACTOR, "Bench chapter", "chapter", key, "2026-11-26T14:00:00Z")]
    head = entry_digest(entries[0])
    for seq in range(1, count):
        published = f"2026-11-26T{14 + seq // 3600 % 10:02d}:{seq // 60 % 60:02d}:{seq % 60:02d}Z"
        if seq == count // 2:
            entry = rotation(ACTOR, seq, head, key, kid, keys[1].verify_key, published)
            key, kid = keys[1], key_id(ACTOR, seq)
        else:
            body = {
                "type": "Tally",
                "proposal": f"{ACTOR}/proposals/{seq // 7}",
                "counts": {"agree": seq % 97, "abstain": seq % 13, "disagree": seq % 31},
                "cast": seq % 97 + seq % 13 + seq % 31,
                "eligible": 200,
                "ballots_root": f"{seq:064x}",
                "roster_size": 200,
                "summary": f"Tally {seq}: " + "the chapter met and voted on the proposal. " * 2,
            }
            entry = make_entry(
                body, actor=ACTOR, seq=seq, prev=head, key=key, key_id=kid, published=published
            )
        entries.append(entry)
        head = entry_digest(entry)
    return entries


def raw_verify_time(messages: list[Message], n: int) -> tuple[float, float]:
    """(wall, CPU) seconds for n raw verifies."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        vk, message, signature = messages[i % len(messages)]
        vk.verify(message, signature)
    return time.perf_counter() - wall, time.process_time() - cpu


def sequential(
    entries: list[dict[str, Any]], messages: list[Message]
) -> tuple[ChainState, float, float, float, float]:
    """Chain verification on one core, interleaved slice by slice with the raw floor so
    that whatever else the machine does falls on both alike.

    Returns (state, raw/s, chain/s, raw CPU µs each, chain CPU µs each)."""
    state: ChainState | None = None
    raw_wall = raw_cpu = chain_wall = chain_cpu = 0.0
    step = max(1, len(entries) // 40)
    for lo in range(0, len(entries), step):
        wall, cpu = raw_verify_time(messages, min(step, len(entries) - lo))
        raw_wall, raw_cpu = raw_wall + wall, raw_cpu + cpu
        wall, cpu = time.perf_counter(), time.process_time()
        for entry in entries[lo : lo + step]:
            state = verify_next(state, entry)
        chain_wall += time.perf_counter() - wall
        chain_cpu += time.process_time() - cpu
    assert state is not None
    n = len(entries)
    return state, n / raw_wall, n / chain_wall, raw_cpu / n * 1e6, chain_cpu / n * 1e6


_NO_ASSUMPTION: Final = "no assumption"  # a worker could not read the line before its segment
Verdict = tuple[ChainState | str | None, ChainState | str, float]


def _verify_entries(lo: int, hi: int, history: list[tuple[int, str, VerifyKey]]) -> Verdict:
    """Worker: verify ENTRIES[lo:hi] with verify_next from the state they assume.

    The entries were inherited by fork (their pages are copied on first write, which
    every reference count change is); only the bounds come in and only the assumed
    start, the end state (or why the segment failed) and the CPU seconds go back."""
    cpu = time.process_time()
    assumed = None if lo == 0 else state_before(ACTOR, lo, entry_digest(ENTRIES[lo - 1]), history)
    state = assumed
    try:
        for entry in ENTRIES[lo:hi]:
            state = verify_next(state, entry)
    except ChainError as exc:
        return assumed, str(exc), time.process_time() - cpu
    assert state is not None
    return assumed, state, time.process_time() - cpu


def _verify_lines(start: int, end: int, history: list[tuple[int, str, VerifyKey]]) -> Verdict:
    """Worker: verify the lines LINES[start:end] with verify_next from the state they
    assume, which the line before ``start`` and the claimed ``history`` give.

    The chain file was inherited by fork (one bytes object: no page of it is written, so
    none is copied); only byte offsets come in, and only the assumed start, the end state
    (or why the segment failed) and the CPU seconds go back."""
    cpu = time.process_time()
    data = LINES[0]
    assumed: ChainState | None = None
    if start:
        try:
            prev = _decode(data[data.rfind(b"\n", 0, start - 1) + 1 : start - 1])
            seq = prev["seq"] + 1
            assumed = state_before(prev["actor"], seq, entry_digest(prev), history)
        except (ChainError, msgspec.DecodeError, KeyError, TypeError):
            return _NO_ASSUMPTION, "", time.process_time() - cpu
    state = assumed
    try:
        # One line at a time: each entry is checked while its decoded objects are still
        # in cache (decoding the whole segment first measured slower).
        for line in data[start : end - 1].split(b"\n"):
            state = verify_next(state, _decode(line))
    except (ChainError, msgspec.DecodeError) as exc:
        return assumed, str(exc), time.process_time() - cpu
    assert state is not None
    return assumed, state, time.process_time() - cpu


class Parallel(NamedTuple):
    state: ChainState
    per_s: float  # entries verified per wall-clock second
    floor_per_s: float  # raw verifies/s on one core, measured between the rounds
    everywhere_per_s: float  # raw verifies/s with every worker verifying at once
    worker_cpu: float  # CPU seconds the workers spent, all together
    parent_cpu: float  # CPU seconds this process spent splitting and checking the links


def _serve(conn: Connection, core: int | None, messages: list[Message]) -> None:
    """Worker process (pinned to ``core`` if given): verify the segments sent (or run
    raw verifies, for the floor on all cores at once) until told to stop."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    while (job := conn.recv()) is not None:
        if job[0] == "raw":
            conn.send(raw_verify_time(messages, job[1]))
        elif job[0] == "lines":
            conn.send(_verify_lines(*job[1:]))
        else:
            conn.send(_verify_entries(*job[1:]))


def _raw_everywhere(conns: list[Connection], count: int) -> float:
    """Wall seconds for ``count`` raw verifies in every worker at once."""
    start = time.perf_counter()
    for conn in conns:
        conn.send(("raw", count))
    for conn in conns:
        conn.recv()
    return time.perf_counter() - start


def claimed_keys(data: bytes) -> list[tuple[int, str, VerifyKey]]:
    """key_history of the lines that may hold a Genesis or KeyRotation (a byte search,
    then only those lines decoded). A line the search misses (say, one spelling its type
    with escapes) only makes a segment's assumed start wrong, and a wrong assumption is
    caught and re-verified in order: the search is an optimisation, not a check."""
    found = []
    for needle in (b'"Genesis"', b'"KeyRotation"'):
        at = data.find(needle)
        while at >= 0:
            lo = data.rfind(b"\n", 0, at) + 1
            hi = data.find(b"\n", at)
            hi = len(data) if hi < 0 else hi
            with contextlib.suppress(msgspec.DecodeError):  # not JSON: no claim
                found.append(_decode(data[lo:hi]))
            at = data.find(needle, hi)
    return key_history(sorted(found, key=lambda e: e.get("seq", 0) if isinstance(e, dict) else 0))


def parallel(
    workers: int, messages: list[Message], *, pin: bool = False, lines: bool = False
) -> Parallel:
    """The chain verified by a pool of workers, from the inherited ENTRIES or (``lines``)
    from the JSON Lines bytes LINES; here, in order, each segment's assumed start must be
    the state the previous one ended in (else it is re-verified here from that state).

    The pool is started before the clock, as a long-lived audit service would hold it;
    the clock covers finding the segments and the keys the chain claims (in the file: a
    byte search), every entry's verification (and its line's decoding), and the ordered
    link check here. It runs in
    rounds, each preceded by a slice of the raw floor (one core), so that the floor this
    is compared with was measured under the same load. Many short segments (256) keep
    every worker busy until the end of a round; each worker holds two, so it never waits
    for this process. Forked processes on plain pipes rather than a multiprocessing.Pool:
    a Pool's helper threads cost this process about a sixth of a core, which on two cores
    is taken straight from the workers."""
    data = LINES[0]
    n = data.count(b"\n") if lines else len(ENTRIES)
    ctx = multiprocessing.get_context("fork")
    links = [ctx.Pipe() for _ in range(workers)]
    cores = sorted(os.sched_getaffinity(0))
    pin = pin and len(cores) >= workers
    procs = [
        ctx.Process(target=_serve, args=(child, cores[i] if pin else None, messages), daemon=True)
        for i, (_, child) in enumerate(links)
    ]
    for proc in procs:
        proc.start()
    conns = [parent for parent, _ in links]
    state: ChainState | None = None
    raw_time = raw_cpu = worker_cpu = everywhere = 0.0
    raw_count = everywhere_count = 0
    try:
        start, cpu = time.perf_counter(), time.process_time()
        if lines:
            cuts = {0, *(data.find(b"\n", len(data) * k // 256) + 1 for k in range(1, 256))}
            size, history = len(data), claimed_keys(data)
        else:
            cuts = {n * k // 256 for k in range(256)}
            size, history = n, key_history(ENTRIES)
        ends = sorted(cuts)
        bounds = [(lo, hi) for lo, hi in zip(ends, [*ends[1:], size], strict=True) if lo < hi]
        kind = "lines" if lines else "entries"
        per_round = max(workers, len(bounds) // 4)
        elapsed = time.perf_counter() - start
        for r in range(0, len(bounds), per_round):
            batch = bounds[r : r + per_round]
            count = n * len(batch) // len(bounds) // 4
            wall, raw = raw_verify_time(messages, count)
            raw_time, raw_cpu, raw_count = raw_time + wall, raw_cpu + raw, raw_count + count
            everywhere += _raw_everywhere(conns, count)
            everywhere_count += count * workers
            start = time.perf_counter()
            todo = iter(range(len(batch)))
            sent: dict[Connection, list[int]] = {conn: [] for conn in conns}
            for conn in conns * 2:
                if (i := next(todo, None)) is not None:
                    conn.send((kind, *batch[i], history))
                    sent[conn].append(i)
            done: dict[int, Verdict] = {}
            ready = 0
            while ready < len(batch):
                for got in wait([c for c in conns if sent[c]]):
                    assert isinstance(got, Connection)
                    conn = got
                    done[sent[conn].pop(0)] = conn.recv()
                    if (i := next(todo, None)) is not None:
                        conn.send((kind, *batch[i], history))
                        sent[conn].append(i)
                while ready in done:
                    (lo, hi), (assumed, end, seconds) = batch[ready], done.pop(ready)
                    ready += 1
                    worker_cpu += seconds
                    if assumed != state:
                        redo = _decode_lines(data[lo:hi]) if lines else ENTRIES[lo:hi]
                        for entry in redo:  # a wrong assumption: verify it here
                            state = verify_next(state, entry)
                        continue
                    if isinstance(end, str):
                        raise SystemExit(f"chain invalid: {end}")
                    state = end
            elapsed += time.perf_counter() - start
        parent_cpu = time.process_time() - cpu - raw_cpu
    finally:
        for conn in conns:
            conn.send(None)
        for proc in procs:
            proc.join()
    assert state is not None
    return Parallel(
        state,
        n / elapsed,
        raw_count / raw_time,
        everywhere_count / everywhere,
        worker_cpu,
        parent_cpu,
    )


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 entries, under 30 s")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--entries", type=int, default=None)
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin worker i to core i (on a machine shared with other work, pinned workers "
        "cannot move away from a busy core: measured slower there)",
    )
    parser.add_argument(
        "--lines",
        action="store_true",
        help="workers decode the chain's JSON Lines bytes instead of using the entries "
        "inherited by fork (measured to cost more CPU per entry)",
    )
    args = parser.parse_args()
    count = args.entries or (10_000 if args.quick else 100_000)

    load_start = os.getloadavg()[0]
    print(f"load average at start: {_load()} (1, 5, 15 min) on {os.cpu_count()} cores")
    t0 = time.perf_counter()
    ENTRIES[:] = build_chain(count)
    if args.lines:
        LINES[0] = b"".join(canonicalize(e) + b"\n" for e in ENTRIES)
    # The built entries are long-lived: freeze them out of the cyclic collector, so that
    # collections triggered while verifying do not rescan 100,000 dicts (and forked
    # workers do not copy their pages), as `convene audit` does with a loaded bundle.
    gc.collect()
    gc.freeze()
    size = sum(len(canonicalize(e)) for e in ENTRIES[1:101]) / 100
    print(f"built {count} entries, ~{size:.0f} bytes each, in {time.perf_counter() - t0:.1f} s")

    signer = SigningKey.from_seed(bytes(32))
    vk = nacl.signing.VerifyKey(bytes(signer.verify_key))
    messages = [(vk, m, signer.sign(m)) for m in (canonicalize(e) for e in ENTRIES[:1000])]
    raw_verify_time(messages, 1000)  # warm up
    state, raw, chain_rate, raw_cpu, chain_cpu = sequential(ENTRIES, messages)
    par = parallel(args.workers, messages, pin=args.pin, lines=args.lines)
    assert par.state == state, "parallel and sequential verification disagree"

    # parallel_ratio is the issue's: parallel entries/s over the one raw floor (a) this
    # line reports; floor_ratio compares with the floor measured between the parallel
    # rounds, which load at that moment hit alike.
    ratio, pratio = chain_rate / raw, par.per_s / raw
    floor_ratio = par.per_s / par.floor_per_s
    scaling = par.everywhere_per_s / par.floor_per_s
    # The chain in parallel against the raw floor in parallel on the same cores: the
    # per-core ratio the parallel run kept (1.6 needs about 0.8 of it and scaling 2.0).
    kept = par.per_s / par.everywhere_per_s
    cpu_ratio = raw_cpu / chain_cpu
    # CPU view of the parallel run: entries per second of worker CPU, times the number
    # of workers (what N cores of our own would give), against the raw floor's CPU rate.
    # The parent's CPU is charged too, spread over the workers.
    busy = par.worker_cpu + par.parent_cpu
    cpu_pratio = count / busy * args.workers * raw_cpu / 1e6
    got = par.worker_cpu / (count / par.per_s) / args.workers
    print(f"(a) raw PyNaCl Ed25519 verify, ~1 KiB messages: {raw:10.0f} /s  (floor)")
    print(f"(b) chain entries verified, 1 core:             {chain_rate:10.0f} /s")
    print(f"(c) ratio b/a:                                  {ratio:10.2f}    (target >= 0.70)")
    print(
        f"    CPU time per item: raw verify {raw_cpu:.1f} µs, chain entry {chain_cpu:.1f} µs "
        f"(CPU ratio {cpu_ratio:.2f}; overhead {chain_cpu - raw_cpu:.1f} µs per entry)"
    )
    print(f"    chain entries verified, {args.workers} workers:          {par.per_s:10.0f} /s")
    print(f"    raw floor measured between those rounds:    {par.floor_per_s:10.0f} /s")
    print(
        f"    raw verify, {args.workers} workers at once:            "
        f"{par.everywhere_per_s:10.0f} /s"
        f"  ({scaling:.2f} x one core: the most {args.workers} cores give here)"
    )
    print(f"    ratio parallel/raw on the same workers:     {kept:10.2f}")
    print(f"    ratio parallel/(a) (wall clock):            {pratio:10.2f}    (target >= 1.60)")
    print(f"    ratio parallel/floor between rounds:        {floor_ratio:10.2f}")
    print(
        f"    CPU view: {par.worker_cpu:.2f} s in workers + {par.parent_cpu:.2f} s here; "
        f"{args.workers} cores of our own would give ratio {cpu_pratio:.2f}; the workers "
        f"got {got:.0%} of their {args.workers} cores"
    )
    print(f"load average at end: {_load()}")
    print(
        f"RESULT raw_verify_per_s={raw:.0f} chain_per_s={chain_rate:.0f} ratio={ratio:.3f} "
        f"parallel_per_s={par.per_s:.0f} parallel_ratio={pratio:.3f} "
        f"parallel_floor_ratio={floor_ratio:.3f} cpu_ratio={cpu_ratio:.3f} "
        f"cpu_parallel_ratio={cpu_pratio:.3f} raw_parallel_per_s={par.everywhere_per_s:.0f} "
        f"raw_scaling={scaling:.3f} parallel_vs_raw_parallel={kept:.3f} "
        f"overhead_us={chain_cpu - raw_cpu:.1f} "
        f"load_start={load_start:.2f} load_end={os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
