"""Accuracies of a build, computed by onnxruntime on the saved ONNX files (never by the trainer):
the unprotected model (original.onnx), the backbone alone (`backbone_logits` of mirrornet.onnx, what a
thief who copies normal.onnx runs), the whole MirrorNet (`label`), and the gap Δp between the last two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from mirrorc.errors import MirrorcError
from mirrorc.tee.runtime import ProtectedModel, error_reason, onnx_session
from passes import contract

BATCH = 1000
SPLIT_BATCH = 500  # images per progress step of split execution


def run_outputs(path: Path, x: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
    """Run an ONNX file on x in batches and return the requested outputs, concatenated."""
    from mirrorc.cli.common import progress

    sess = onnx_session(path)
    names = {o.name for o in sess.get_outputs()}
    for name in outputs:
        if name not in names:
            raise MirrorcError(f"{path}: no output '{name}' (has {', '.join(sorted(names))})")
    feed = sess.get_inputs()[0]
    # a model whose batch canonicalize could not relax (or any file with a fixed batch) runs in its own
    batch = feed.shape[0] if feed.shape and isinstance(feed.shape[0], int) and feed.shape[0] > 0 else BATCH
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    bar = progress(total=len(x), desc=f"evaluate {path.name}", unit="img", unit_scale=True, leave=False)
    for s in range(0, len(x), batch):
        part = x[s : s + batch]
        pad = batch - len(part) if batch != BATCH else 0  # the last chunk of a fixed batch: pad it
        if pad:
            part = np.concatenate([part, np.zeros((pad, *part.shape[1:]), part.dtype)])
        try:
            values = sess.run(outputs, {feed.name: part})
        except Exception as e:  # a loadable model that does not take these inputs (onnxruntime's types)
            raise MirrorcError(f"{path}: onnxruntime cannot run it ({error_reason(e)})") from None
        if pad:
            values = [v[: len(part) - pad] for v in values]
        for name, value in zip(outputs, values):
            chunks[name].append(value)
        bar.update(len(part) - pad)
    bar.close()
    return {name: np.concatenate(v) for name, v in chunks.items()}


def predictions(values: np.ndarray) -> np.ndarray:
    """Class predictions from labels ([N]) or scores ([N, K])."""
    return values.astype(np.int64) if values.ndim == 1 else values.argmax(1)


def model_input_shape(path: Path) -> tuple[int, ...]:
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends
        raise MirrorcError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    if not model.graph.input:
        raise MirrorcError(f"{path}: the graph has no input")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims)


def original_accuracy(build: Path, x_test: np.ndarray, y_test: np.ndarray) -> float | None:
    """Test accuracy (%) of the build's unprotected model, original.onnx; None when it has none."""
    original = Path(build) / "original.onnx"
    if not original.exists():
        return None
    sess_out = onnx_session(original).get_outputs()[0].name
    pred = predictions(run_outputs(original, x_test, [sess_out])[sess_out])
    return round(100.0 * float((pred == y_test).mean()), 2)


def evaluate(
    build_dir: str | Path,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    split_check: bool = True,
    split_images: int | None = None,
) -> dict:
    """Test accuracies (in percent) of what is in `build_dir`, and (split_check) the labels of split
    execution compared with mirrornet.onnx's on the first `split_images` test images (default: all)."""
    build = Path(build_dir)
    mirrornet = build / "mirrornet.onnx"
    if not mirrornet.exists():
        raise MirrorcError(f"{build}: no mirrornet.onnx (is it a `mirrorc compile` output directory?)")
    n = len(y_test)
    out = run_outputs(mirrornet, x_test, list(contract.OUTPUTS))
    label = predictions(out[contract.LABEL])
    if not np.array_equal(label, predictions(out[contract.MIRRORNET_LOGITS])):
        raise MirrorcError(f"{mirrornet}: 'label' disagrees with argmax(mirrornet_logits)")
    result: dict[str, Any] = {
        "build": str(build),
        "test_images": int(n),
        "original_acc": original_accuracy(build, x_test, y_test),
        "backbone_acc": round(100.0 * float((predictions(out[contract.BACKBONE_LOGITS]) == y_test).mean()), 2),
        "mirrornet_acc": round(100.0 * float((label == y_test).mean()), 2),
    }
    result["delta_p"] = round(result["mirrornet_acc"] - result["backbone_acc"], 2)
    if result["original_acc"] is not None:
        result["mirrornet_minus_original"] = round(result["mirrornet_acc"] - result["original_acc"], 2)
    if split_check:
        n_split = n if split_images is None else min(split_images, n)
        result["split_execution"] = split_agreement(build, x_test[:n_split], label[:n_split])
    return result


def split_agreement(build: Path, x: np.ndarray, reference_labels: np.ndarray) -> dict | None:
    """THE call site for split execution: normal.onnx in onnxruntime + the TA (simulated or on a board)
    must give the label mirrornet.onnx gives. None when the build has no secure part."""
    from mirrorc.cli.common import progress

    if not (build / "normal.onnx").exists() or not (build / "plan.json").exists():
        return None
    bar = progress(total=len(x), desc="split execution", unit="img", unit_scale=True, leave=False)
    parts = []
    with ProtectedModel(build) as protected:
        for s in range(0, len(x), SPLIT_BATCH):
            parts.append(np.asarray(protected.predict(x[s : s + SPLIT_BATCH])).reshape(-1))
            bar.update(len(parts[-1]))
    bar.close()
    labels = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    agree = int((labels == reference_labels).sum())
    return {"images": int(len(x)), "agree": agree, "agreement": round(100.0 * agree / max(len(x), 1), 2)}


def format_evaluation(result: dict) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:6.2f}%"

    lines = [
        f"test images            {result['test_images']}",
        f"original (unprotected) {pct(result['original_acc'])}",
        f"backbone alone         {pct(result['backbone_acc'])}   (what a copy of normal.onnx gives)",
        f"MirrorNet              {pct(result['mirrornet_acc'])}",
        f"delta p                {result['delta_p']:6.2f} points",
    ]
    split = result.get("split_execution")
    if split:
        lines.append(f"split execution        {split['agree']}/{split['images']} labels agree with mirrornet.onnx")
    return "\n".join(lines)


def save_json(result: dict, path: Path) -> None:
    from mirrorc.outdir import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
