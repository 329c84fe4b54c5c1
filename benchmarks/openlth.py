"""OpenLTH and lottery side by side: one LeNet-300-100 IMP level on Fashion-MNIST each.

Both run OpenLTH's `mnist_lenet_300_100` settings (our preset ``lenet_openlth``): level 0
(dense) and level 1 (20% pruned, rewound to initialisation), each in a process of its own.
Printed: seconds for level 1 alone (the command run again with one more level, so start-up
and level 0 are not counted), the peak memory of that process, and level 1's test accuracy,
for both, with the ratio. Nothing here is quoted: every figure is measured on this machine.

Not in CI (it needs PyTorch and a clone of OpenLTH). To run it:

    git clone https://github.com/facebookresearch/open_lth /tmp/open_lth
    python -m venv /tmp/torch && /tmp/torch/bin/pip install torch torchvision   # CPU is enough
    apt-get install dataset-fashion-mnist
    python benchmarks/openlth.py --openlth /tmp/open_lth --openlth-python /tmp/torch/bin/python

OpenLTH reads MNIST through ``torchvision.datasets.MNIST`` from
``$HOME/open_lth_datasets/mnist/MNIST/raw/``; this script puts the Fashion-MNIST IDX files
there (torchvision's layout) under a temporary ``$HOME``, so OpenLTH trains on Fashion-MNIST
and downloads nothing. For today's NumPy and PyTorch it patches, in a copy of the clone, the
calls that no longer exist (see ``patch_openlth``).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, parser, report

FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# (file, old text, new text): what today's libraries need changed in OpenLTH's code.
PATCHES = (
    # numpy >= 1.24 removed the np.int alias.
    ("datasets/base.py", "np.int)", "np.int64)"),
    ("pruning/sparse_global.py", "np.int)", "np.int64)"),
    # PyTorch's DistributedDataParallel now also derives from Joinable (an ABC), so
    # `class DistributedDataParallel(Model, DDP)` has no consistent MRO while Model lists
    # abc.ABC before nn.Module; putting nn.Module first fixes the import (Model stays abstract).
    ("models/base.py", "class Model(abc.ABC, torch.nn.Module):",
     "class Model(torch.nn.Module, abc.ABC):"),
    # numpy 2.0 removed np.product (the learning-rate schedule's multiplier).
    ("training/optimizers.py", "np.product(", "np.prod("),
)


def patch_openlth(source: Path, target: Path) -> list[str]:
    """Copy the clone to ``target`` and apply PATCHES; returns the ones applied."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".git"))
    applied = []
    for name, old, new in PATCHES:
        file = target / name
        if file.is_file() and old in (text := file.read_text()):
            file.write_text(text.replace(old, new))
            applied.append(f"{name}: {old} -> {new}")
    return applied


def fashion_in_torchvision_layout(home: Path) -> None:
    raw = home / "open_lth_datasets" / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES:
        packed = FASHION / f"{name}.gz"
        source = packed if packed.exists() else FASHION / name
        data = source.read_bytes()
        (raw / name).write_bytes(gzip.decompress(data) if source.suffix == ".gz" else data)


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of one command run to the end, in a process of its own."""
    log = Path(tempfile.mkstemp(suffix=".log")[1])
    begin = time.perf_counter()
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=output)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
    seconds = time.perf_counter() - begin
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")
    log.unlink()
    return seconds, usage.ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def openlth_level(clone: Path, work: Path, python: str) -> dict:
    home = work / "home"
    fashion_in_torchvision_layout(home)
    code = work / "open_lth"
    patches = patch_openlth(clone, code)
    env = {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1"}
    base = [python, "open_lth.py", "lottery", "--default_hparams=mnist_lenet_300_100"]
    timed([*base, "--levels=0"], code, env)
    seconds, peak = timed([*base, "--levels=1"], code, env)
    logger = next((home / "open_lth_data").rglob("level_1/main/logger"))
    accuracy = [line.split(",") for line in logger.read_text().splitlines()]
    final = max((int(it), float(v)) for name, it, v in accuracy if name == "test_accuracy")
    return {"what": "OpenLTH (PyTorch)", "level_s": seconds, "peak_rss_gb": peak,
            "test_accuracy": final[1], "patches": patches}


def lottery_level(work: Path) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    base = [sys.executable, "-m", "lottery", "+experiment=lenet_openlth", "progress=false",
            f"results_root={work / 'results'}"]
    timed([*base, "pruning.levels=0"], REPO, env)
    seconds, peak = timed([*base, "pruning.levels=1"], REPO, env)
    summary = json.loads(next((work / "results").rglob("level_1/summary.json")).read_text())
    return {"what": "lottery (JAX)", "level_s": seconds, "peak_rss_gb": peak,
            "test_accuracy": summary["test_accuracy"], "patches": []}


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--openlth", required=True, type=Path, help="a clone of open_lth")
    args.add_argument("--openlth-python", default=sys.executable,
                      help="the Python with PyTorch to run OpenLTH (default: this one)")
    opts = args.parse_args()
    if not FASHION.is_dir():
        raise SystemExit(f"no Fashion-MNIST in {FASHION}: apt-get install dataset-fashion-mnist")
    with tempfile.TemporaryDirectory() as tmp:
        theirs = openlth_level(opts.openlth, Path(tmp) / "openlth", opts.openlth_python)
        ours = lottery_level(Path(tmp) / "lottery")
    rows = [{k: v for k, v in row.items() if k != "patches"} for row in (theirs, ours)]
    extra = {
        "seconds_ratio_openlth_over_lottery": theirs["level_s"] / ours["level_s"],
        "memory_ratio_openlth_over_lottery": theirs["peak_rss_gb"] / ours["peak_rss_gb"],
        "openlth_patches": theirs["patches"],
    }
    report("One LeNet-300-100 IMP level (level 1), OpenLTH settings, Fashion-MNIST",
           ["what", "level_s", "peak_rss_gb", "test_accuracy"], rows, extra, opts.json)


if __name__ == "__main__":
    main()
