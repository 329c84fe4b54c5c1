"""Wall time of a 2-job local sweep (``hydra/launcher=local``, both cores) against the same
two runs one after the other, for the default experiment's seeds 0 and 1, each from an empty
results folder (so both do all their work).

    python benchmarks/sweep_time.py [--json out.json] [-- extra overrides]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import parser, report


def timed(args: list[str], cwd: Path) -> float:
    begin = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lottery", *args], cwd=cwd, check=True,
                   capture_output=True)
    return time.perf_counter() - begin


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("extra", nargs="*", help="overrides for every run")
    opts = args.parse_args()
    base = ["progress=false", *opts.extra]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        sequential = sum(
            timed([*base, f"seed={seed}", f"results_root={root / 'one_by_one'}"], root)
            for seed in (0, 1)
        )
        swept = timed(
            [*base, "seed=0,1", "-m", "hydra/launcher=local", f"results_root={root / 'sweep'}"],
            root,
        )
    rows = [
        {"how": "one after the other", "wall s": sequential},
        {"how": "sweep, hydra/launcher=local", "wall s": swept},
    ]
    report("Two seeds of the default experiment", ["how", "wall s"], rows,
           {"speed-up": sequential / swept}, opts.json)


if __name__ == "__main__":
    main()
