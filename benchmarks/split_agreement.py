"""Split execution against the golden reference on any model, random weights: onnxruntime runs
normal.onnx, the generated TA runs the CPM in the simulator process (stream mode, one image at a
time), and the labels must equal mirrornet.onnx's `label` on every input.

    python benchmarks/split_agreement.py [--models lenet5,vgg7,resnet50,squeezenet] [--inputs 1000] [-C 2]

Models are examples/models/<name>.onnx or the onnx package's model-zoo files (light_<name>.onnx).
Every backbone and CPM weight is random (the zoo files' weights are constant), drawn so that the
signal survives depth (He: N(0, 2/fan_in), zero biases). An untrained network still sends most
inputs to one class, so a constant Add in the CPM shifts its logits by minus the mean MirrorNet
logits over the inputs: still a random-weight model, but one whose labels vary, whatever the head
(Gemm, or conv and pooling).
The table prints how many distinct labels occurred and the smallest top-1/top-2 logit margin, so an
agreement that is trivial shows as such."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from record import write_results  # noqa: E402

from examples.make_models import write_all  # noqa: E402
from mirrorc.attack.thief import reinitialize  # noqa: E402
from mirrorc.backend.secure_build import build_secure  # noqa: E402
from mirrorc.pipeline import build_mirrornet  # noqa: E402
from mirrorc.tee.runtime import ProtectedModel  # noqa: E402
from mirrorc.zoo import zoo_model_path  # noqa: E402
from passes import contract  # noqa: E402


def model_path(name: str, work: Path) -> Path:
    if name in ("lenet5", "vgg7"):
        return write_all(work / "models")[name]
    path = zoo_model_path(name)
    if not path.exists():
        raise SystemExit(f"split_agreement: no model '{name}' (examples: lenet5, vgg7; zoo: {path.parent})")
    return path


def reference(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mirrornet.onnx's label and logits, one image at a time (some zoo graphs pin their batch)."""
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = [
        ref.run([contract.LABEL, contract.MIRRORNET_LOGITS], {ref.get_inputs()[0].name: x[i : i + 1]})
        for i in range(len(x))
    ]
    return np.array([o[0][0] for o in out]), np.array([o[1][0] for o in out])


def layer_parameters(model: onnx.ModelProto) -> set[str]:
    """The weights and biases of every Conv/Gemm/MatMul (not other float constants, e.g. Clip bounds)."""
    inits = {t.name for t in model.graph.initializer}
    return {t for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul") for t in n.input[1:3] if t in inits}


def center_labels(model: onnx.ModelProto, logits: np.ndarray) -> None:
    """Add minus the mean logits to cpm_logits, in the secure graph (a constant Add the C lowering
    runs like any other node), whatever kind of head the CPM has."""
    k = logits.shape[1]
    shift = onnx.numpy_helper.from_array(-logits.mean(0, keepdims=True).astype(np.float32), "cpm/center")
    model.graph.initializer.append(shift)
    final = next(n for n in model.graph.node if contract.CPM_LOGITS in n.input)
    final.input[list(final.input).index(contract.CPM_LOGITS)] = "cpm_logits_centred"
    add = onnx.helper.make_node(
        "Add", [contract.CPM_LOGITS, "cpm/center"], ["cpm_logits_centred"], name="cpm/center_add"
    )
    add.metadata_props.add(key=contract.META_WORLD, value="secure")
    model.graph.node.insert(list(model.graph.node).index(final), add)
    assert shift.dims == [1, k]


def check(name: str, inputs: int, channels: int, work: Path) -> dict:
    mirrornet, _ = build_mirrornet(model_path(name, work), channels=channels, seed=0, init="random")
    shape = [d.dim_value or 1 for d in mirrornet.graph.input[0].type.tensor_type.shape.dim][1:]
    x = np.random.default_rng(1).standard_normal((inputs, *shape), dtype=np.float32)
    # He-normal weights, zero biases: the default uniform(+-1/sqrt(fan_in)) shrinks the signal at every
    # layer, so a deep random network (SqueezeNet) answers the same logits, to float noise, for every input
    params = layer_parameters(mirrornet)
    mirrornet = reinitialize(mirrornet, lambda n: n in params, seed=2)
    center_labels(mirrornet, reference(mirrornet, x)[1])
    label, logits = reference(mirrornet, x)
    build = work / name
    fields = build_secure(mirrornet, build)
    (build / "plan.json").write_text(json.dumps({"format": contract.PLAN_FORMAT, "model": f"{name}.onnx", **fields}))
    top2 = np.sort(logits, axis=1)[:, -2:]
    with ProtectedModel(build, tee="sim", mode="stream") as protected:
        protected.predict(x[:1])  # the simulator is built and started on first use: not timed
        t0 = time.perf_counter()
        split_labels = np.array([protected.predict(x[i : i + 1])[0] for i in range(inputs)])
    seconds = time.perf_counter() - t0
    return {
        "model": name,
        "taps": len(fields["taps"]),
        "inputs": inputs,
        "agree": int((split_labels == label).sum()),
        "distinct_labels": int(len(np.unique(label))),
        "min_margin": float((top2[:, 1] - top2[:, 0]).min()),
        "ms_per_image": 1000 * seconds / inputs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="lenet5,vgg7,resnet50,squeezenet")
    ap.add_argument("--inputs", type=int, default=1000)
    ap.add_argument("-C", "--channels", type=int, default=2)
    args = ap.parse_args()
    print(f"{'model':12} {'taps':>4} {'agree':>11} {'distinct labels':>15} {'min top-2 margin':>16} {'ms/image':>9}")
    worst = True
    rows = []
    with tempfile.TemporaryDirectory(prefix="mirrorc-split-") as tmp:
        for name in args.models.split(","):
            r = check(name, args.inputs, args.channels, Path(tmp))
            worst &= r["agree"] == r["inputs"]
            rows.append(r)
            print(
                f"{r['model']:12} {r['taps']:4d} {r['agree']:5d}/{r['inputs']:<5d} {r['distinct_labels']:15d} "
                f"{r['min_margin']:16.3g} {r['ms_per_image']:9.2f}",
                flush=True,
            )
    write_results(
        "split_agreement",
        "split execution (normal.onnx in onnxruntime, the TA in the simulator, "
        "stream mode) against mirrornet.onnx: labels agreeing, distinct labels, smallest top-1/top-2 margin",
        {"setup": {"inputs": args.inputs, "channels": args.channels, "weights": "random He-normal"}, "rows": rows},
    )
    sys.exit(0 if worst else 1)


if __name__ == "__main__":
    main()
