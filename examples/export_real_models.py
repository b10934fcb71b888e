"""Export real CNN architectures (torchvision, timm; random weights, 10 classes) to ONNX with both
`torch.onnx` exporters, into a cache outside the repo: the held-out corpus mirrorc is tried on.

    python examples/export_real_models.py [--out DIR] [--only NAME,...] [--list]

The files are never committed: this script regenerates them (seeded, so the same weights each time).
The default folder is $MIRRORC_CACHE/real_models, else ~/.cache/mirrorc/real_models. Each entry
varies exporter (legacy TorchScript-based or dynamo), opset (13 to 20), input size (32x32 or
224x224) and batch (symbolic, or fixed at 1 as a plain export writes it), so that the corpus looks
like what users bring. Needs torchvision and timm (pip install torchvision==0.28.0 timm onnxscript).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    name: str  # file stem
    source: str  # "torchvision" or "timm"
    arch: str  # the library's constructor name
    size: int  # input height = width
    exporter: str  # "legacy" or "dynamo"
    opset: int
    dynamic_batch: bool = True

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"


# 21 entries, 17 architectures. A ViT is in the corpus on purpose: attention is not a CNN, and mirrorc
# must refuse it with one line naming what it cannot do.
CORPUS = [
    Entry("resnet18-legacy-32", "torchvision", "resnet18", 32, "legacy", 13),
    Entry("resnet18-dynamo-224", "torchvision", "resnet18", 224, "dynamo", 18),
    Entry("resnet50-dynamo-224", "torchvision", "resnet50", 224, "dynamo", 20),
    Entry("densenet121-dynamo-224", "torchvision", "densenet121", 224, "dynamo", 18),
    Entry("mobilenet_v2-dynamo-224", "torchvision", "mobilenet_v2", 224, "dynamo", 18),
    Entry("mobilenet_v2-legacy-32", "torchvision", "mobilenet_v2", 32, "legacy", 17),
    Entry("mobilenet_v3_small-legacy-224", "torchvision", "mobilenet_v3_small", 224, "legacy", 15),
    Entry("mobilenet_v3_small-dynamo-32", "torchvision", "mobilenet_v3_small", 32, "dynamo", 19),
    Entry("regnet_x_400mf-dynamo-224", "torchvision", "regnet_x_400mf", 224, "dynamo", 18),
    Entry("googlenet-dynamo-224", "torchvision", "googlenet", 224, "dynamo", 18),
    Entry("squeezenet1_1-dynamo-224", "torchvision", "squeezenet1_1", 224, "dynamo", 18),
    Entry("efficientnet_b0-dynamo-224", "torchvision", "efficientnet_b0", 224, "dynamo", 18),
    Entry("shufflenet_v2_x0_5-legacy-224", "torchvision", "shufflenet_v2_x0_5", 224, "legacy", 14),
    Entry("shufflenet_v2_x0_5-dynamo-32", "torchvision", "shufflenet_v2_x0_5", 32, "dynamo", 18),
    Entry("convnext_tiny-legacy-32", "torchvision", "convnext_tiny", 32, "legacy", 17),
    Entry("vgg11-dynamo-32-batch1", "torchvision", "vgg11", 32, "dynamo", 18, dynamic_batch=False),
    Entry("mnasnet0_5-legacy-224", "torchvision", "mnasnet0_5", 224, "legacy", 13),
    Entry("alexnet-dynamo-224", "torchvision", "alexnet", 224, "dynamo", 18),
    Entry("resnet10t-timm-legacy-32", "timm", "resnet10t", 32, "legacy", 17),
    Entry("ghostnet-timm-dynamo-224", "timm", "ghostnet_100", 224, "dynamo", 18),
    Entry("vit_tiny-timm-dynamo-224", "timm", "vit_tiny_patch16_224", 224, "dynamo", 18),
]


def default_dir() -> Path:
    root = os.environ.get("MIRRORC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mirrorc")
    return Path(root) / "real_models"


def _import_torchvision():
    """torchvision without its C++ ops. PyPI's torchvision 0.28.0 is a CUDA build whose operators
    (nms, roi_align) do not register against the CPU torch installed here, so its import fails on
    registering their fake kernels; classification models use none of them."""
    import torch.library

    original = torch.library.register_fake

    def register_fake(op, *args, **kwargs):
        if isinstance(op, str) and op.startswith("torchvision::"):
            return lambda fn: fn
        return original(op, *args, **kwargs)

    torch.library.register_fake = register_fake
    try:
        import torchvision
    finally:
        torch.library.register_fake = original
    return torchvision


def build(entry: Entry):
    import torch

    torch.manual_seed(0)
    tv = _import_torchvision()  # timm imports torchvision too
    if entry.source == "torchvision":
        kwargs = {"num_classes": 10}
        if entry.arch == "googlenet":
            kwargs.update(aux_logits=False, init_weights=True)
        model = getattr(tv.models, entry.arch)(**kwargs)
    else:
        import timm

        kwargs = {"num_classes": 10, "pretrained": False}
        if entry.arch.startswith("vit"):
            kwargs["img_size"] = entry.size
        model = timm.create_model(entry.arch, **kwargs)
    return model.eval()


def export(entry: Entry, out_dir: Path) -> Path:
    import torch

    model = build(entry)
    x = torch.randn(1, 3, entry.size, entry.size)
    path = out_dir / entry.file
    tmp = path.with_suffix(".onnx.tmp")
    if entry.exporter == "legacy":
        dynamic_axes = {"input": {0: "N"}, "logits": {0: "N"}} if entry.dynamic_batch else None
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            dynamo=False,
            opset_version=entry.opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
        )
    else:
        dynamic_shapes = ({0: torch.export.Dim("N", min=1, max=4096)},) if entry.dynamic_batch else None
        program = torch.onnx.export(
            model,
            (x,),
            dynamo=True,
            opset_version=entry.opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
        program.save(str(tmp))
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_dir())
    parser.add_argument("--only", default=None, help="comma-separated file stems")
    parser.add_argument("--force", action="store_true", help="export again even if the file exists")
    parser.add_argument("--list", action="store_true", help="print the corpus as JSON and exit")
    args = parser.parse_args(argv)
    entries = CORPUS
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {e.name for e in CORPUS}
        if unknown:
            print(f"export_real_models: unknown entries {sorted(unknown)}", file=sys.stderr)
            return 2
        entries = [e for e in CORPUS if e.name in wanted]
    if args.list:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        path = args.out / entry.file
        if path.exists() and not args.force:
            print(f"{entry.name}: cached {path}")
            continue
        began = time.perf_counter()
        try:
            export(entry, args.out)
        except Exception as e:  # an exporter failing on one architecture must not stop the corpus
            print(f"{entry.name}: export failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        print(f"{entry.name}: {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - began:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
