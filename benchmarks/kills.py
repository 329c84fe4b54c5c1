"""SIGKILL during Orbax checkpoint writes, then the same command again: is the store the
uninterrupted run's, bit for bit (weights, masks, ``metrics.jsonl``, summaries, curve)?

Each killed run is the real command line in a subprocess that sends itself SIGKILL inside
the N-th checkpoint write, after Orbax has written the checkpoint into its temporary folder
and before it renames it into place (the moment a kill leaves ``<step>.orbax-checkpoint-tmp``
behind); N is drawn at random among the run's writes. The command is then run again to the
end and its store compared with the store of a run that was never interrupted. Checkpoints
every 25 steps with evaluations every 50, so half the checkpoints lie between evaluations.

    python benchmarks/kills.py [--kills 20] [--seed 0] [--json out.json]

Cases: a run with levels and a branch (random_reinit), and ``train.replicas=2``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, parser, report
from conftest import store_contents

COMMON = [
    "dataset=digits", "model.hidden=[64,32]", "train.steps=300it", "train.batch_size=50",
    "train.eval_every=50it", "train.checkpoint_every=25it", "pruning.levels=2",
    "pruning.rewind_step=50it", "progress=false",
]
CASES = {
    "levels_and_branch": [*COMMON, "branches=[random_reinit]"],
    "replicas": [*COMMON, "branches=[]", "train.replicas=2"],
}

# ``python -m lottery ARGS`` that counts its checkpoint writes in the file COUNT_FILE and,
# if KILL_AT is set, sends itself SIGKILL inside that write, before Orbax commits it.
KILLER = """
import os, signal, sys
from orbax.checkpoint._src.path import atomicity  # private: where orbax commits a write

finalize = atomicity.AtomicRenameTemporaryPath.finalize
kill_at = int(os.environ.get("KILL_AT", "0"))
writes = [0]

async def counting_finalize(self, *args, **kwargs):
    writes[0] += 1
    with open(os.environ["COUNT_FILE"], "a") as count:  # one byte a write
        count.write(".")
    if writes[0] == kill_at:
        assert self._tmp_path.exists()  # the temporary folder, written and not renamed
        os.kill(os.getpid(), signal.SIGKILL)
    return await finalize(self, *args, **kwargs)

atomicity.AtomicRenameTemporaryPath.finalize = counting_finalize
sys.argv = ["lottery", *sys.argv[1:]]
import runpy
runpy.run_module("lottery", run_name="__main__", alter_sys=True)
"""


def run(args: list[str], folder: Path, kill_at: int = 0) -> tuple[int, int]:
    """The command in ``folder``; its exit code and how many checkpoints it wrote."""
    count = folder / "writes.count"
    env = {**os.environ, "KILL_AT": str(kill_at), "COUNT_FILE": str(count),
           "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", KILLER, *args, "results_root=r"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode not in (0, -9):
        raise SystemExit(f"the command failed ({done.returncode}): {done.stderr[-2000:]}")
    writes = count.stat().st_size if count.exists() else 0
    count.unlink(missing_ok=True)
    return done.returncode, writes


def differences(a: dict[str, object], b: dict[str, object]) -> list[str]:
    return sorted(set(a) ^ set(b)) + sorted(k for k in set(a) & set(b) if a[k] != b[k])


def main() -> None:
    args = parser(__doc__.splitlines()[0])
    args.add_argument("--kills", type=int, default=20)
    args.add_argument("--seed", type=int, default=0)
    options = args.parse_args()
    draw = random.Random(options.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(options.kills):
            case = list(CASES)[index % len(CASES)]
            reference = Path(tmp) / f"{case}_uninterrupted"
            if not reference.exists():
                reference.mkdir()
                _, writes = run(CASES[case], reference)
                CASES_WRITES[case] = writes
            folder = Path(tmp) / f"kill_{index}"
            folder.mkdir()
            kill_at = draw.randint(1, CASES_WRITES[case])
            code, _ = run(CASES[case], folder, kill_at)
            left = sorted(p.name for p in folder.rglob("*orbax-checkpoint-tmp*"))
            again, _ = run(CASES[case], folder)
            diff = differences(store_contents(folder / "r"), store_contents(reference / "r"))
            rows.append({"kill": index, "case": case, "write": f"{kill_at}/{CASES_WRITES[case]}",
                         "killed": code == -9, "tmp_left": ",".join(left) or "-",
                         "rerun_exit": again, "identical": not diff,
                         "differs": ", ".join(diff)[:80] or "-"})
    identical = sum(row["identical"] and row["killed"] for row in rows)
    report("SIGKILL inside a checkpoint write, then the same command again",
           ["kill", "case", "write", "killed", "tmp_left", "rerun_exit", "identical", "differs"],
           rows, {"identical_to_uninterrupted": f"{identical} of {len(rows)}"}, options.json)
    sys.exit(0 if identical == len(rows) else 1)


CASES_WRITES: dict[str, int] = {}

if __name__ == "__main__":
    main()
