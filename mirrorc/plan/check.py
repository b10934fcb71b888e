"""`mirrorc check`: before any training, whether a classifier goes all the way (partition, train,
lower to C), and if not every node that stops it, in one list.

Three steps, each run only when the one before found nothing:
1. load, canonicalize and find the taps (`pipeline.analyze`); a refusal is one problem (a file
   that is not a readable ONNX classifier is bad input: MirrorcError, exit 2);
2. the op registry, node by node: every node is trained (its `torch` part); the nodes of stages
   2..n are also copied into the CPM (`narrow`) and lowered to C (`emit`);
3. the real thing on untrained weights: all ten passes (`pipeline.compile_to_c`), then the torch
   interpreter built on the mirrornet and one training-mode forward on a zero input.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mirrorc.errors import MirrorcError
from passes import ops

# what each missing registry part means for the user
_MISSING = {
    "narrow": "the mirror pass cannot narrow it",
    "torch": "not supported for training",
    "emit": "no C emitter",
}
_NODE = re.compile(r"node '([^']*)'")


def _problem(node: str | None, op: str | None, reason: str) -> dict[str, Any]:
    return {"node": node, "op": op, "reason": reason}


def _from_error(message: str, op_of: dict[str, str]) -> dict[str, Any]:
    """A MirrorcError ("<pass>: node '<name>': <reason>") as a problem naming its node and op."""
    found = _NODE.search(message)
    node = found.group(1) if found else None
    op = None if node is None else op_of.get(node, op_of.get(node.removeprefix("cpm/")))
    return _problem(node, op, message)


def registry_gaps(nodes: list[tuple[str, str, str, int]]) -> list[dict[str, Any]]:
    """(name, op, domain, stage) per node -> one problem per node lacking a registry part it needs."""
    problems = []
    for name, op_type, domain, stage in nodes:
        op = ops.get(op_type) if domain in ("", "ai.onnx") else None
        needed = ("narrow", "torch", "emit") if stage >= 2 else ("torch",)
        missing = [part for part in needed if op is None or getattr(op, part) is None]
        if missing:
            problems.append({**_problem(name, op_type, ", ".join(_MISSING[p] for p in missing)), "missing": missing})
    return problems


def _zero_forward(mirrornet: Any, input_shape: list) -> None:
    """Build the training interpreter on the mirrornet and run one training-mode forward on zeros
    (batch 2: a BatchNorm in training mode needs more than one value per channel)."""
    import torch

    from mirrorc.train.interpreter import OnnxModule

    module = OnnxModule(mirrornet)
    module.train()
    shape = [2 if isinstance(d, str) or d is None else int(d) for d in input_shape]
    with torch.no_grad():
        module(torch.zeros(shape))


def check(path: str | Path, *, channels: int = 2) -> dict[str, Any]:
    """What `mirrorc check` reports: {"model", "goes_through", "problems", "steps", ...}; each
    problem is {"node", "op", "reason"} (registry gaps also have "missing": the parts)."""
    from mirrorc.pipeline import analyze, compile_to_c

    result: dict[str, Any] = {"model": str(path), "goes_through": False, "problems": [], "steps": []}
    try:
        graph, info = analyze(path)
    except MirrorcError as e:
        if str(e).startswith("load:"):
            raise  # not a model mirrorc can read at all: bad input
        result["problems"].append(_from_error(str(e), {}))
        result["steps"].append("canonicalize")
        return result
    op_of = {n.name: n.op for n in graph.nodes}
    stage_of = info["stage_of"]
    result.update(nodes=len(graph.nodes), taps=len(info["tap_tensors"]), ops=sorted(set(op_of.values())))
    result["steps"].append("registry")
    result["problems"] = registry_gaps([(n.name, n.op, n.domain or "", stage_of[n.name]) for n in graph.nodes])
    if result["problems"]:
        return result
    result["steps"].append("compile_to_c")
    try:
        mirrornet, secure = compile_to_c(path, "check", channels=channels)
    except MirrorcError as e:
        result["problems"].append(_from_error(str(e), op_of))
        return result
    result["steps"].append("torch forward")
    try:
        _zero_forward(mirrornet, info["input"]["shape"])
    except Exception as e:  # any failure of the interpreter is a problem to report, with its node
        notes = " ".join(getattr(e, "__notes__", []))
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        problem = _from_error(f"{notes} {first}".strip(), op_of) if isinstance(e, MirrorcError) or notes else None
        result["problems"].append(problem or _problem(None, None, f"torchgraph: {type(e).__name__}: {first}"))
        return result
    result["goes_through"] = True
    result["c_files"] = len(secure.lowered.files) if secure.lowered is not None else 0
    return result


def format_check(result: dict[str, Any]) -> str:
    """The text `mirrorc check` prints: a verdict, then one line per problem."""
    if result["goes_through"]:
        return (
            f"{result['model']}: goes all the way ({result['nodes']} nodes, {result['taps']} taps): "
            f"partition, C lowering ({result['c_files']} files) and a training forward all ran\n"
        )
    lines = [f"{result['model']}: will not go through; {len(result['problems'])} problem(s):"]
    for p in result["problems"]:
        if p["node"] is not None and "missing" in p:  # a registry gap: the reason is what is missing
            lines.append(f"  node '{p['node']}' ({p['op']}): {p['reason']}")
        else:
            lines.append(f"  {p['reason']}")
    return "\n".join(lines) + "\n"
