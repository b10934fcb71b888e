"""Write the first N MNIST test digits as PNG files and as one raw .npy (uint8 images scaled to [0, 1]),
with their true labels, for trying `mirrorc run` on real inputs.

    python examples/mnist_digits.py MNIST_DIR OUT_DIR [N]
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main(mnist_dir: str, out_dir: str, n: int = 8) -> None:
    images = read_idx(Path(mnist_dir) / "t10k-images-idx3-ubyte.gz")[:n]
    labels = read_idx(Path(mnist_dir) / "t10k-labels-idx1-ubyte.gz")[:n]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(out / f"digit{i}.png")
    np.save(out / "digits.npy", images.astype(np.float32)[:, None] / 255.0)
    print(f"wrote {n} digits to {out}; true labels: {' '.join(map(str, labels))}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 8)
