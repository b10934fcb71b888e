"""A *public* pretrained model for the `public-backbone` protection strategy's measurements: the given
architecture trained on images its owner's private training never sees, so that "public" is simulated
honestly (issue 16: "a disjoint split, e.g. five CIFAR-10 classes").

The private set of a `--limit-train N` compile is the first N images of mirrorc.train.data's seeded
order; the public set here is the images after them whose label is in `--classes` (default 0-4: five of
the ten classes). The model keeps all its outputs; the public training only ever asks for those classes.

    python benchmarks/public_model.py examples/models/vgg7_paper.onnx --data cifar10 --private 10000 \\
        --classes 0-4 --epochs 6 --fast -o /tmp/public/vgg7_paper-public.onnx
    # then the protected model: its backbone is this file, frozen
    mirrorc compile /tmp/public/vgg7_paper-public.onnx --data cifar10 --limit-train 10000 --protect public-backbone

Prints the public model's test accuracy on the public classes and on all ten."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def class_range(text: str) -> list[int]:
    """'0-4' or '0,2,5' -> the class indices."""
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="the architecture (ONNX; its weights are the starting draw)")
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--data-dir", default=os.environ.get("MIRRORC_DATA", str(ROOT.parent / "shared" / "datasets")))
    ap.add_argument("--private", type=int, required=True, help="the private compile's --limit-train N")
    ap.add_argument("--classes", default="0-4", help="the public classes")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args(argv)

    import onnx
    import torch

    from mirrorc.attack.thief import accuracy
    from mirrorc.outdir import atomic_file
    from mirrorc.train.data import load_dataset
    from mirrorc.train.loop import TrainConfig, logits_tensor, train

    torch.set_num_threads(args.threads)
    model = onnx.load(args.model)
    shape = tuple(d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim)
    data = load_dataset(args.data, data_dir=args.data_dir, input_shape=shape)  # the seeded order, all of it
    public = class_range(args.classes)
    rest = np.arange(args.private, len(data.y_train))  # never in the private --limit-train set
    pick = rest[np.isin(data.y_train[rest], public)]
    print(f"public set: {len(pick)} images of classes {public} (after the first {args.private} private ones)")
    out = train(
        model,
        data.x_train[pick],
        data.y_train[pick],
        TrainConfig(epochs=args.epochs, lr=args.lr, fast=args.fast, seed=0),
        logits=logits_tensor(model),
        log=print,
    )
    name = out.model.graph.output[0].name  # logits or probabilities: the same argmax
    seen = np.isin(data.y_test, public)
    print(
        f"public model, test: {accuracy(out.model, name, data.x_test[seen], data.y_test[seen]):.2f}% on "
        f"its classes, {accuracy(out.model, name, data.x_test, data.y_test):.2f}% on all {data.num_classes}"
    )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.output) as tmp:
        onnx.save(out.model, str(tmp))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
