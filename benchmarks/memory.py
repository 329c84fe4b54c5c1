"""Peak host memory (and device memory on a GPU) of one IMP level.

Runs level 0 of a preset in a fresh Python process and reads that process's maximum resident
set size; on a GPU also JAX's peak bytes in use.

    python benchmarks/memory.py [--preset lenet_openlth] [--json out.json]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from common import REPO, parser, report

CHILD = """
import json, resource, sys
sys.path.insert(0, {tests!r})
from conftest import make_config
from lottery.experiment import run as run_experiment
import jax
cfg = make_config(["+experiment={preset}", "pruning.levels=0", "progress=false"], {root!r})
run_experiment(cfg)
stats = jax.devices()[0].memory_stats() or {{}}
print(json.dumps({{"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "device_peak_gb": stats.get("peak_bytes_in_use", 0) / 2**30 or None}}))
"""


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--preset", default="lenet_openlth")
    opts = args.parse_args()
    with tempfile.TemporaryDirectory() as root:
        code = CHILD.format(tests=str(REPO / "tests"), preset=opts.preset, root=root)
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True, cwd=REPO)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    row = {"preset": opts.preset, **figures}
    report("Peak memory of one level", list(row), [row], {}, opts.json)


if __name__ == "__main__":
    main()
