"""ImageNet (tfds ``imagenet2012``) streamed from its ArrayRecord files through grain.

Too big to hold in memory, so unlike the other datasets it is read batch by batch on the host:
``tfds.data_source`` reads and decodes each JPEG (with PIL, no TensorFlow), grain shuffles,
transforms on threads and batches. The transforms are torchvision's: train
``RandomResizedCrop(224)`` + ``RandomHorizontalFlip()``, eval ``Resize(256)`` +
``CenterCrop(224)``, then ``Normalize`` with the ImageNet mean and std.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np
from PIL import Image

from lottery.data.dataset import StreamingDataset
from lottery.data.tfds_source import files_fingerprint, open_split

NAME = "imagenet2012"
NUM_CLASSES = 1000
CROP = 224
RESIZE = 256
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)

Example = tuple[np.ndarray, np.int32]  # image float32 (224, 224, 3), label
Batch = tuple[np.ndarray, np.ndarray]  # images float32 (B, 224, 224, 3), labels int32 (B,)


def random_resized_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of torchvision's ``RandomResizedCrop`` box in a height x width image.

    Up to 10 tries of a random area fraction in ``scale`` and a log-uniform aspect ratio in
    ``ratio``; if none fits, the largest central box whose ratio is clamped to ``ratio``.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _normalize(image: Image.Image) -> np.ndarray:
    x = np.asarray(image, np.float32) / 255.0
    return (x - MEAN) / STD


def _rgb(example: dict[str, Any]) -> Image.Image:
    return Image.fromarray(np.asarray(example["image"], np.uint8)).convert("RGB")


def train_transform(
    example: dict[str, Any], rng: np.random.Generator, crop: int = CROP
) -> Example:
    """Random resized crop to crop x crop (bilinear), flip with p = 1/2, normalise."""
    image = _rgb(example)
    top, left, h, w = random_resized_crop_box(rng, image.height, image.width)
    image = image.resize(
        (crop, crop), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h)
    )
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _normalize(image), np.int32(example["label"])


def eval_transform(example: dict[str, Any], crop: int = CROP) -> Example:
    """Shorter side to 256/224 of the crop (bilinear), central crop x crop, normalise."""
    image = _rgb(example)
    resize = round(crop * RESIZE / CROP)
    short, long = sorted((image.width, image.height))
    long = int(resize * long / short)
    size = (resize, long) if image.width <= image.height else (long, resize)
    image = image.resize(size, Image.Resampling.BILINEAR)
    top = round((image.height - crop) / 2)
    left = round((image.width - crop) / 2)
    image = image.crop((left, top, left + crop, top + crop))
    return _normalize(image), np.int32(example["label"])


def imagenet_batches(
    data_dir: str | None,
    split: str,
    batch_size: int,
    seed: int,
    train: bool,
    *,
    first_step: int = 0,
    image_size: int = CROP,
    num_threads: int = 16,
    process: tuple[int, int] | None = None,
) -> Iterator[Batch]:
    """Batches of (images float32 NHWC normalised, labels int32) of an imagenet2012 split.

    ``train``: reshuffled every epoch, random resized crop and flip, endless, full batches
    only, starting at batch ``first_step`` (batch s is the same whatever the start: grain's
    map datasets are random access). Otherwise: one pass in the stored order, resize and
    centre crop, the last batch smaller if the split does not divide. Deterministic given
    ``seed``. ``split`` is a tfds split (``train``, ``validation``, ``train[:1%]``...);
    ``data_dir`` None is tfds' default. Raises ConfigError (one line) if the dataset is not
    prepared in ``data_dir``. ``process=(index, count)`` (training only): that process's
    rows of each batch, ``batch_size // count`` of them, read and decoded alone.
    """
    dataset = grain.MapDataset.source(open_split(NAME, split, data_dir))
    if train:
        transform = functools.partial(train_transform, crop=image_size)
        dataset = dataset.shuffle(seed=seed).repeat(None).random_map(transform, seed=seed)
        dataset = dataset.slice(slice(first_step * batch_size, None))
        if process is not None:
            dataset, batch_size = _rows_of_process(dataset, batch_size, *process)
    else:
        dataset = dataset.map(functools.partial(eval_transform, crop=image_size))
    # Prefetch decoded examples (not batches) on threads: PIL decodes and resizes without
    # the GIL. Batching after it keeps the buffer to a couple of batches of examples.
    options = grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=max(2 * batch_size, num_threads)
    )
    stream = dataset.to_iter_dataset(options).batch(batch_size, drop_remainder=train)
    return iter(stream)


def _rows_of_process(
    dataset: grain.MapDataset, batch_size: int, index: int, count: int
) -> tuple[grain.MapDataset, int]:
    """The examples process ``index`` of ``count`` reads of each batch of ``batch_size``
    (a contiguous block: the devices of a process hold one block of the global batch), and
    the size of its block. Random access picks them, so the others are never decoded."""
    rows = batch_size // count
    parent = dataset

    def example(j: int) -> Any:
        return parent[(j // rows) * batch_size + index * rows + j % rows]

    return grain.MapDataset.range(len(parent) // batch_size * rows).map(example), rows


def imagenet_dataset(
    data_dir: str | None, validation_size: int, image_size: int = CROP
) -> StreamingDataset:
    """ImageNet as a :class:`StreamingDataset`: train minus its last ``validation_size``
    images, those images as the validation split, and tfds' ``validation`` as the test split.
    """
    train_split = f"train[:-{validation_size}]" if validation_size else "train"
    num_train = len(open_split(NAME, train_split, data_dir))  # fails early if not prepared
    evals = {"test": "validation"}
    if validation_size:
        evals = {"val": f"train[-{validation_size}:]", **evals}

    def train_batches(batch_size: int, seed: int, first_step: int) -> Iterator[Batch]:
        return imagenet_batches(data_dir, train_split, batch_size, seed, True,
                                first_step=first_step, image_size=image_size)

    def process_train_batches(
        batch_size: int, seed: int, first_step: int, index: int, count: int
    ) -> Iterator[Batch]:
        return imagenet_batches(data_dir, train_split, batch_size, seed, True,
                                first_step=first_step, image_size=image_size,
                                process=(index, count))

    def eval_batches(split: str) -> Any:
        return lambda batch_size: imagenet_batches(
            data_dir, split, batch_size, 0, False, image_size=image_size
        )

    return StreamingDataset(
        NAME,
        NUM_CLASSES,
        (image_size, image_size, 3),
        num_train,
        train_batches,
        {name: eval_batches(split) for name, split in evals.items()},
        files_fingerprint(NAME, data_dir),
        process_train_batches,
    )
