"""Real images that ship with a dependency: scikit-learn's handwritten digits, as an ImageFolder.

The UCI "Optical Recognition of Handwritten Digits" test set as scikit-learn distributes it
(``sklearn.datasets.load_digits``: 1,797 grey-level 8x8 images of the digits 0-9 written by 43
people, each pixel a count 0..16 of the on-pixels in a 4x4 block of the 32x32 bitmap). Nothing
is downloaded: the data is a file inside the scikit-learn wheel. It is the default main job's
data set (the ``mini`` scale) because it is real, labelled, small enough for a CPU, and needs no
network; the transforms upsample the 8x8 images to the model's input size.

Layout below ``OUT`` (``python -m benchmark.data.digits --out OUT``)::

    digits/{train,val,test}/<digit>/<NNNN>.png    ImageFolder, 8x8 8-bit grey PNG (value x 255/16)
    digits.json                                   manifest: split sizes, seed, source, sklearn version

The splits are stratified by class and fixed by ``seed``: ``test`` (500 images) is what the
tables report, ``val`` (297) is where settings are chosen, ``train`` (1,000) is what pre-training
(labels unused) and fine-tuning (a class-balanced fraction of its labels) see.
``NNNN`` is the image's index in ``load_digits``, so a file can be traced back to its source.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmark.errors import EXIT_BAD_INPUT, error_line
from benchmark.utils.io import write_json

SPLIT_SIZES = {"test": 500, "val": 297}   # the rest (1,000) is train
MANIFEST = "digits.json"


def split_indices(labels: np.ndarray, seed: int) -> dict[str, list[int]]:
    """Stratified train / val / test indices (scikit-learn's ``train_test_split``), sorted."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=SPLIT_SIZES["test"], stratify=labels, random_state=seed)
    train, val = train_test_split(rest, test_size=SPLIT_SIZES["val"], stratify=labels[rest], random_state=seed)
    return {name: sorted(int(i) for i in part) for name, part in (("train", train), ("val", val), ("test", test))}


def write_digits(out: str | Path, seed: int = 0) -> Path:
    """Writes the digits ImageFolder and its manifest below ``out`` (atomically: a crash leaves
    no half-written set where a finished one is expected); returns ``out``."""
    import sklearn
    from sklearn.datasets import load_digits

    out = Path(out)
    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    splits = split_indices(digits.target, seed)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".digits-", dir=out))
    try:
        for split, indices in splits.items():
            for i in indices:
                folder = staging / split / str(int(digits.target[i]))
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(images[i], mode="L").save(folder / f"{i:04d}.png")
        if (out / "digits").exists():
            shutil.rmtree(out / "digits")
        staging.rename(out / "digits")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_json(out / MANIFEST, {
        "source": "sklearn.datasets.load_digits (UCI optical recognition of handwritten digits)",
        "sklearn": sklearn.__version__, "seed": seed, "classes": [str(c) for c in range(10)],
        "counts": {split: len(indices) for split, indices in splits.items()}, "image_size": [8, 8],
    })
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.data.digits",
                                     description="Write scikit-learn's handwritten digits as an ImageFolder (train/val/test).")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0, help="the seed of the stratified split")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        write_digits(args.out, args.seed)
    except ImportError:
        print("error: scikit-learn is not installed (pip install scikit-learn); the digits ship inside it", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        print(f"error: could not write {args.out}: {error_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {Path(args.out) / 'digits'} (train/val/test) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
