"""Liveness-based memory plan for the secure schedule.

The schedule is a list of steps (one per node) grouped into commands (one per TA invocation). A
tensor whose whole life lies inside one command goes to the static arena, shared by all sessions,
since nothing in it survives the command. A tensor produced at one command and read at a later one
(a CPM activation waiting for the next tap, or a tap input read after its own command) goes to the
per-session carry state. Both regions are packed the same way: tensors whose step intervals overlap
get disjoint offsets; largest first, lowest fitting offset (deterministic).

Element-wise steps may write their output over their first input when that input dies at the step
(`inplace`): the two tensors then share one buffer (`alias_of`), which halves the arena of chains
such as Conv -> Relu on wide maps."""

from __future__ import annotations

import dataclasses
from collections.abc import Set as AbstractSet

ALIGN_FLOATS = 4  # 16-byte offsets keep vector loads aligned


@dataclasses.dataclass
class Buffer:
    name: str
    floats: int
    first: int  # step that writes it (-1 for an input present when its command starts)
    last: int  # last step that reads it
    carry: bool  # lives across commands -> per-session state
    offset: int = 0  # in floats, within the arena or the carry region
    alias_of: str | None = None  # shares the buffer of this tensor (in-place step)


@dataclasses.dataclass
class MemoryPlan:
    buffers: dict[str, Buffer]
    arena_floats: int
    carry_floats: int
    naive_floats: int  # every planned tensor in its own buffer

    def summary(self) -> dict:
        return {
            "arena_bytes": 4 * self.arena_floats,
            "carry_bytes": 4 * self.carry_floats,
            "naive_bytes": 4 * self.naive_floats,
            "tensors": len(self.buffers),
            "in_place": sum(1 for b in self.buffers.values() if b.alias_of is not None),
            "carried": sorted(b.name for b in self.buffers.values() if b.carry),
        }


@dataclasses.dataclass
class Step:
    command: int
    inputs: list[str]
    outputs: list[str]


def _align(n: int) -> int:
    return (n + ALIGN_FLOATS - 1) // ALIGN_FLOATS * ALIGN_FLOATS


def _pack(buffers: list[Buffer]) -> int:
    placed: list[Buffer] = []
    top = 0
    for b in sorted(buffers, key=lambda b: (-b.floats, b.first, b.name)):
        overlapping = sorted((p for p in placed if p.first <= b.last and b.first <= p.last), key=lambda p: p.offset)
        offset = 0
        for p in overlapping:
            if offset + b.floats <= p.offset:
                break
            offset = max(offset, _align(p.offset + p.floats))
        b.offset = offset
        placed.append(b)
        top = max(top, offset + b.floats)
    return _align(top)


def plan(
    steps: list[Step],
    floats: dict[str, int],
    inputs: dict[str, int],
    external: AbstractSet[str] = frozenset(),
    inplace: AbstractSet[int] = frozenset(),
) -> MemoryPlan:
    """Plan every tensor written by a step or listed in `inputs` (name -> command at which the
    caller hands it in). `floats` gives each tensor's size; tensors in `external` (graph outputs
    written straight to a caller's buffer, weights) are not planned. An input read only during its
    own command needs no storage (the caller's buffer is used); one read later is carried. Steps in
    `inplace` may reuse their first input's buffer for their first output."""
    produced: dict[str, tuple[int, int]] = {}  # name -> (step, command)
    last_use: dict[str, tuple[int, int]] = {}
    for i, step in enumerate(steps):
        for t in step.inputs:
            if t:
                last_use[t] = (i, step.command)
        for t in step.outputs:
            if t:
                produced[t] = (i, step.command)

    buffers: dict[str, Buffer] = {}
    for name, command in inputs.items():
        use_step, use_cmd = last_use.get(name, (-1, command))
        if use_cmd > command and name not in external:
            first = next((i for i, s in enumerate(steps) if s.command >= command), len(steps))
            buffers[name] = Buffer(name, floats[name], first, use_step, carry=True)
    for name, (at, command) in produced.items():
        if name in external:
            continue
        use_step, use_cmd = last_use.get(name, (at, command))
        buffers[name] = Buffer(name, floats[name], at, max(use_step, at), carry=use_cmd > command)

    # in-place: the output joins its input's group when the input dies here, in the same region
    group: dict[str, Buffer] = {}  # member -> the group's representative buffer
    for i in sorted(inplace):
        step = steps[i]
        if not step.inputs or not step.outputs:
            continue
        x, o = step.inputs[0], step.outputs[0]
        if x not in buffers or o not in buffers or x in inputs or x in step.inputs[1:]:
            continue
        rep = group.get(x, buffers[x])
        bx, bo = buffers[x], buffers[o]
        if rep.last == i and bx.carry == bo.carry and bx.floats == bo.floats:
            rep.last = max(rep.last, bo.last)
            bo.alias_of = rep.name
            group[o] = rep
    reps = [b for b in buffers.values() if b.alias_of is None]
    arena = _pack([b for b in reps if not b.carry])
    carry = _pack([b for b in reps if b.carry])
    for b in buffers.values():
        if b.alias_of is not None:
            b.offset = buffers[b.alias_of].offset
    naive = sum(_align(b.floats) for b in buffers.values())
    return MemoryPlan(buffers, arena, carry, naive)
