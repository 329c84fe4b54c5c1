"""``python -m lottery.data.prepare NAME [--data_dir DIR]``: download and write a tfds dataset.

Run it once on a machine with internet; it writes ``DIR/NAME/VERSION/`` as ArrayRecord files,
which :mod:`lottery.data.tfds_source` and :mod:`lottery.data.imagenet` read with
``tfds.data_source`` (no TensorFlow, no network). Copy that directory to where the training
runs and point ``dataset.path`` at ``DIR``.

Only this step needs TensorFlow (tfds encodes the images with it) and, with tfds 4.9.10 on
Python >= 3.9, ``importlib_resources``: install the optional extra, ``pip install
'lottery[prepare]'``.

imagenet2012 cannot be downloaded by tfds: put ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in ``DIR/downloads/manual`` (or pass ``--manual_dir``) first.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from lottery.config.errors import ConfigError
from lottery.data.tfds_source import NUM_CLASSES, PREFIX, builder_of, resolve_data_dir

DATASETS = (*NUM_CLASSES, "imagenet2012")
EXTRA = "prepare"
REQUIRES = ("tensorflow", "importlib_resources")


def check_requirements(name: str) -> None:
    """ConfigError (one line) if a module that preparing needs is not installed."""
    missing = [module for module in REQUIRES if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(
            f"preparing {name} needs {' and '.join(missing)} (tfds writes the files with "
            f"TensorFlow); install them with `pip install 'lottery[{EXTRA}]'` and run again "
            "(reading the prepared files later does not need them)"
        )


def prepare(name: str, data_dir: str | None, manual_dir: str | None = None) -> str:
    """Download and prepare ``name`` as array_record in ``data_dir``; returns where it is.

    ``name`` is one of :data:`DATASETS` or any tfds dataset, ``NAME[/CONFIG][:VERSION]``
    (``tfds:`` in front, as ``dataset.name`` spells it, is allowed).
    """
    name = name.removeprefix(PREFIX)
    if name not in DATASETS:
        builder_of(name, data_dir)  # one line if tfds knows no such dataset, config or version
    check_requirements(name)
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=resolve_data_dir(data_dir), file_format="array_record")
    config = None
    if manual_dir:
        config = tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir))
    builder.download_and_prepare(download_config=config)
    return str(builder.data_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lottery.data.prepare",
        description="Download a dataset and write it as tfds array_record files (needs "
        f"internet and `pip install 'lottery[{EXTRA}]'`).",
    )
    parser.add_argument(
        "name", help=f"{', '.join(DATASETS)} or any tfds dataset NAME[/CONFIG][:VERSION]"
    )
    parser.add_argument(
        "--data_dir",
        default=None,
        help="tfds data_dir to write into (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)",
    )
    parser.add_argument(
        "--manual_dir",
        default=None,
        help="directory of the hand-downloaded archives (imagenet2012's ILSVRC2012 tars)",
    )
    args = parser.parse_args(argv)
    try:
        where = prepare(args.name, args.data_dir, args.manual_dir)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    print(f"{args.name} prepared in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
