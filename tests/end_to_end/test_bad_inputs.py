"""Every known bad input ends with one line, a non-zero exit and no new file (the list and
the runner are in ``tests/bad_inputs.py``, which also runs on its own)."""

import subprocess
import sys

import pytest

from conftest import REPO

SHARDS = 3  # run side by side by the suite's workers (three pack beside the other slow tests)


@pytest.mark.slow
@pytest.mark.parametrize("shard", range(SHARDS))
def test_every_bad_input_is_one_clear_line(shard: int):
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "bad_inputs.py"), "--shard", f"{shard}/{SHARDS}"],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    lines = result.stdout.strip().splitlines()
    assert lines, f"no output, exit {result.returncode}: {result.stderr[-3000:]}"
    last = lines[-1]
    print(last)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " 0 traceback, 0 silent, 0 several lines, 0 new files" in last, last
