"""onnx's light model zoo: the classifiers the onnx package ships (weights built by ConstantOfShape),
on which the tests and benchmarks check mirrorc beyond the example models."""

from __future__ import annotations

from pathlib import Path

import onnx

ZOO_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
ZOO_MODELS = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)


def zoo_model_path(name: str) -> Path:
    """The zoo's file of model `name` (one of ZOO_MODELS)."""
    return ZOO_DIR / f"light_{name}.onnx"
