"""`mirrorc run`: protected inference on a build (backbone in onnxruntime, CPM in the TA)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from mirrorc.cli.common import echo_json, user_errors
from mirrorc.errors import MirrorcError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm")


def _preprocessing(build_dir: Path) -> dict | None:
    """The training preprocessing recorded in the build (mean, std, scale), if any."""
    for name in ("plan.json", "report.json"):
        try:
            doc = json.loads((build_dir / name).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict):
            continue
        # plan.json may carry it; `mirrorc compile` records it in report.json's training section
        prep = doc.get("preprocessing") or (doc.get("training") or {}).get("preprocessing")
        if isinstance(prep, dict) and "mean" in prep and "std" in prep:
            return prep
    return None


def load_input(path: Path, build_dir: Path, input_shape: list) -> np.ndarray:
    """An .npy batch (or one sample) as is, or an image preprocessed as the build was trained."""
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as e:
            raise MirrorcError(f"{path}: cannot read as .npy ({e})") from None
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise MirrorcError(f"{path}: --input must be a .npy array or an image ({', '.join(IMAGE_SUFFIXES)})")
    prep = _preprocessing(build_dir)
    if prep is None:
        raise MirrorcError(
            f"{build_dir}: records no preprocessing (mean/std) to apply to {path.name}; "
            "pass a preprocessed .npy instead"
        )
    from mirrorc.train.data import decode_image, preprocess

    if len(input_shape) != 3:
        raise MirrorcError(f"{path}: the model takes {input_shape}, not an image")
    img = decode_image(path.read_bytes(), str(path))[None]
    # data.preprocess converts (scale, channels, size); statistics taken from an all-zero image are
    # mean 0, std 1, so the training set's recorded ones are applied here instead
    x, _, _ = preprocess(img, img, [1, *input_shape], stats_from=np.zeros_like(img))
    mean = np.asarray(prep["mean"], np.float32)[None, :, None, None]
    std = np.asarray(prep["std"], np.float32)[None, :, None, None]
    return ((x - mean) / std).astype(np.float32)


def register(main: click.Group) -> None:
    @main.command("run")
    @click.argument("build_dir", type=click.Path(file_okay=False, path_type=Path))
    @click.option(
        "--input",
        "input_path",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help="A .npy array [N, ...] or one sample, or an image file.",
    )
    @click.option(
        "--tee",
        type=click.Choice(["sim", "optee"]),
        default="sim",
        show_default=True,
        help="sim: the TA in mirrorc's simulator process; optee: OP-TEE through libteec.",
    )
    @click.option(
        "--mode",
        type=click.Choice(["stream", "single"]),
        default="stream",
        show_default=True,
        help="stream: one command per tap; single: all taps and logits in one command.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the labels as JSON.")
    @user_errors
    def run(build_dir: Path, input_path: Path, tee: str, mode: str, as_json: bool) -> None:
        """Protected inference: normal.onnx in onnxruntime, the CPM in the TA; prints one label per input."""
        from mirrorc.tee.runtime import ProtectedModel

        if not input_path.is_file():
            raise MirrorcError(f"{input_path}: no such file")
        with ProtectedModel(build_dir, tee=tee, mode=mode) as model:
            x = load_input(input_path, build_dir, model.input_shape)
            labels = model.predict(x)
        if as_json:
            echo_json(
                {
                    "build": str(build_dir),
                    "input": str(input_path),
                    "tee": tee,
                    "mode": mode,
                    "count": int(len(labels)),
                    "labels": [int(v) for v in labels],
                }
            )
        else:
            for v in labels:
                click.echo(int(v))
