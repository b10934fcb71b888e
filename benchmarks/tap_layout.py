"""What handing out the taps costs onnxruntime, and the ways around it that were tried.

    python benchmarks/tap_layout.py [--model vgg7] [--channels 2] [--calls 1000] [--block 16]

normal.onnx takes its taps with a Gather of the selected channels. On x86, onnxruntime runs the
convolutions in its blocked NCHWc layout and must convert every tapped tensor back to NCHW, all
channels, before the Gather (a `ReorderOutput` per tap). Variants of normal.onnx, each checked to
give the same outputs, timed against the original model, batch 1, single-threaded, the variants
taking turns call by call (median and mean wall time):

- `gather`: normal.onnx as mirrorc writes it;
- `select-conv K`: a 1x1 convolution with one-hot weights picks the channels (K outputs, the first
  C kept by a Slice), so that onnxruntime keeps it in NCHWc and converts only its output;
- `block-split`: every tapped conv chain (Conv, BatchNorm, Relu, MaxPool) split at `--block`
  channels (onnxruntime's NCHWc block: 16 with AVX-512, 8 with AVX2) so that only the first block,
  which holds the tapped channels, is converted; the next conv becomes two convs and an Add;
- `no-nchwc`: normal.onnx with onnxruntime's NchwcTransformer disabled (and the original beside).

Not here: a ReorderOutput of only the tapped channels, which onnxruntime refuses
(`X_shape[1] - channels_ < nchwc_block_size`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record import write_results  # noqa: E402
from secure_world import INPUT_SHAPES, interleaved, session  # noqa: E402  (same timing as the end to end)

from mirrorc.pipeline import build_mirrornet  # noqa: E402
from passes.split import split  # noqa: E402

CHANNELWISE = ("Relu", "BatchNormalization", "MaxPool")  # ops a channel split passes through


def tap_gathers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    inits = {i.name for i in model.graph.initializer}
    return [
        n
        for n in model.graph.node
        if n.op_type == "Gather" and n.input[1] in inits and n.output[0] in {o.name for o in model.graph.output}
    ]


class Graph:
    """The nodes and initializers of a model, edited in place; `finish` sorts and checks it."""

    def __init__(self, model: onnx.ModelProto):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.g = self.model.graph
        self.inits = {i.name: numpy_helper.to_array(i) for i in self.g.initializer}

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits[name] = np.ascontiguousarray(value)
        return name

    def finish(self, nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
        ready = {i.name for i in self.g.input} | set(self.inits) | {""}
        order, pending = [], list(nodes)
        while pending:  # topological order
            rest = [n for n in pending if not all(i in ready for i in n.input)]
            if len(rest) == len(pending):
                raise RuntimeError("cycle or dangling input while rebuilding the graph")
            for n in pending:
                if n not in rest:
                    order.append(n)
                    ready |= set(n.output)
            pending = rest
        used = {i for n in order for i in n.input}
        del self.g.node[:]
        self.g.node.extend(order)
        del self.g.initializer[:]
        self.g.initializer.extend(numpy_helper.from_array(v, k) for k, v in self.inits.items() if k in used)
        onnx.checker.check_model(self.model)
        return self.model


def select_conv(normal: onnx.ModelProto, outputs: int, shapes: dict) -> onnx.ModelProto:
    """Each feature-map tap's Gather replaced by a 1x1 conv with one-hot weights (and a Slice to C
    channels); a dense tap keeps its Gather."""
    gr = Graph(normal)
    nodes = []
    taps = {n.name for n in tap_gathers(gr.model)}
    for n in gr.g.node:
        if n.name not in taps or len(shapes[n.input[0]]) != 4:
            nodes.append(n)
            continue
        idx = gr.inits[n.input[1]]
        w = np.zeros((max(outputs, idx.size), shapes[n.input[0]][1], 1, 1), np.float32)
        w[np.arange(idx.size), idx] = 1.0
        wide = n.output[0] + "/wide" if w.shape[0] > idx.size else n.output[0]
        nodes.append(helper.make_node("Conv", [n.input[0], gr.const(n.name + "/onehot", w)], [wide], name=n.name))
        if wide != n.output[0]:
            ends = [
                gr.const(n.name + f"/{k}", np.array([v], np.int64))
                for k, v in (("start", 0), ("end", idx.size), ("axis", 1))
            ]
            nodes.append(helper.make_node("Slice", [wide, *ends], [n.output[0]], name=n.name + "/slice"))
    return gr.finish(nodes)


def block_split(normal: onnx.ModelProto, block: int) -> onnx.ModelProto:
    """Every tapped Conv(+BN+Relu+MaxPool) chain computed as two chains, channels [0, block) and the
    rest; the tap reads the first; a Conv reading the tapped tensor becomes two convs and an Add,
    any other reader a Concat of the two."""
    gr = Graph(normal)
    nodes = list(gr.g.node)
    producer = {o: n for n in nodes for o in n.output}
    readers = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    halves, dropped, added = {}, set(), []
    gathers = {n.name: n for n in nodes if n.name in {g.name for g in tap_gathers(gr.model)}}
    for gather in gathers.values():
        tapped, chain, t = gather.input[0], [], gather.input[0]
        while producer[t].op_type in CHANNELWISE and len(readers[producer[t].input[0]]) == 1:
            chain.insert(0, producer[t])
            t = producer[t].input[0]
        if producer[t].op_type != "Conv":
            continue
        conv = producer[t]
        chain.insert(0, conv)
        k = gr.inits[conv.input[1]].shape[0]
        if k <= block or gr.inits[gather.input[1]].max() >= block:
            continue
        ends = {}
        for part, sl in (("a", slice(0, block)), ("b", slice(block, k))):
            prev = conv.input[0]
            for n in chain:
                ins = [prev]
                if n.op_type == "Conv":
                    ins += [gr.const(f"{x}/{part}", gr.inits[x][sl]) for x in n.input[1:] if x]
                elif n.op_type == "BatchNormalization":
                    ins += [gr.const(f"{x}/{part}", gr.inits[x][sl]) for x in n.input[1:]]
                added.append(helper.make_node(n.op_type, ins, [f"{n.output[0]}/{part}"], name=f"{n.name}/{part}"))
                added[-1].attribute.extend(n.attribute)
                prev = f"{n.output[0]}/{part}"
            ends[part] = prev
        dropped |= {n.name for n in chain}
        gather.input[0] = ends["a"]
        halves[tapped] = (ends["a"], ends["b"])
    out = []
    for n in [n for n in nodes if n.name not in dropped] + added:
        split_in = [i for i in n.input if i in halves]
        if not split_in or n.name in gathers:
            out.append(n)
            continue
        a, b = halves[split_in[0]]
        if n.op_type == "Conv" and n.input[0] == split_in[0]:
            w, y = gr.inits[n.input[1]], n.output[0]
            pa = helper.make_node(
                "Conv",
                [a, gr.const(f"{n.input[1]}/in_a/{n.name}", w[:, :block]), *n.input[2:]],
                [y + "/pa"],
                name=n.name + "/pa",
            )
            pb = helper.make_node(
                "Conv", [b, gr.const(f"{n.input[1]}/in_b/{n.name}", w[:, block:])], [y + "/pb"], name=n.name + "/pb"
            )
            pa.attribute.extend(n.attribute)
            pb.attribute.extend(n.attribute)
            out += [pa, pb, helper.make_node("Add", [y + "/pa", y + "/pb"], [y], name=n.name + "/sum")]
        else:
            out += [helper.make_node("Concat", [a, b], [split_in[0]], axis=1, name=split_in[0] + "/concat"), n]
    return gr.finish(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vgg7", choices=sorted(INPUT_SHAPES))
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--calls", type=int, default=1000, help="timed calls of each variant")
    ap.add_argument("--block", type=int, default=16, help="channel block of block-split")
    args = ap.parse_args()

    original_path = str(ROOT / "examples" / "models" / f"{args.model}.onnx")
    normal = split(build_mirrornet(Path(original_path), channels=args.channels)[0])[0]
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in onnx.shape_inference.infer_shapes(normal).graph.value_info
    }
    variants = {"original": session(original_path), "gather (normal.onnx)": session(normal)}
    for k in (2, 4, 16):
        variants[f"select-conv {k}"] = session(select_conv(normal, k, shapes))
    variants[f"block-split {args.block}"] = session(block_split(normal, args.block))
    variants["no-nchwc"] = session(normal, ["NchwcTransformer"])
    variants["original, no-nchwc"] = session(original_path, ["NchwcTransformer"])

    x = np.random.default_rng(0).normal(size=(1, *INPUT_SHAPES[args.model])).astype(np.float32)
    feed = {variants["original"].get_inputs()[0].name: x}
    want = variants["gather (normal.onnx)"].run(None, feed)
    diffs = {}
    for name, s in variants.items():
        if not name.startswith("original"):
            got = s.run(None, feed)
            diffs[name] = max(float(np.abs(a - b).max()) for a, b in zip(want, got))
    times = interleaved({k: (lambda i, s=s: s.run(None, feed)) for k, s in variants.items()}, 1, args.calls)

    o50, omean = np.median(times["original"]), np.mean(times["original"])
    print(
        f"\n{args.model}, C = {args.channels}, batch 1, 1 thread, {args.calls} calls each, wall us; "
        f"max |output - normal.onnx| over all outputs"
    )
    print(f"{'variant':22} {'p50':>9} {'vs original':>11} {'mean':>9} {'vs original':>11} {'max diff':>9}")
    rows = []
    for k in variants:
        p50, mean = np.median(times[k]), np.mean(times[k])
        rows.append(
            {
                "variant": k,
                "p50_us": float(p50 * 1e6),
                "p50_vs_original": float(p50 / o50 - 1),
                "mean_us": float(mean * 1e6),
                "mean_vs_original": float(mean / omean - 1),
                "max_diff": diffs.get(k),
            }
        )
        diff = f"{diffs[k]:9.1e}" if k in diffs else f"{'':9}"
        print(
            f"{k:22} {p50 * 1e6:9.1f} {100 * (p50 / o50 - 1):+10.1f}% {mean * 1e6:9.1f} "
            f"{100 * (mean / omean - 1):+10.1f}% {diff}"
        )
    write_results(
        "tap_layout",
        "normal.onnx variants that hand out the tapped channels: wall us per call and "
        "the change against the original model (p50, mean)",
        {
            "setup": {"model": args.model, "channels": args.channels, "calls": args.calls, "block": args.block},
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
