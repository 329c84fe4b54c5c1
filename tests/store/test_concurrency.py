"""Two runs of one experiment at once: one writes, the other waits; one correct store."""

import os
import subprocess
import sys

import pytest

from conftest import DIGITS, summaries


@pytest.mark.slow
def test_two_concurrent_runs_end_with_one_correct_store(tmp_path):
    args = [*DIGITS, "train.steps=4000it", "train.eval_every=500it", f"results_root={tmp_path}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "lottery", *args]
    first = subprocess.Popen(command, cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = subprocess.run(command, cwd=tmp_path, env=env, text=True, capture_output=True,
                            timeout=600)
    out, err = first.communicate(timeout=600)
    for code, stderr in ((first.returncode, err), (second.returncode, second.stderr)):
        assert code == 0, stderr
        assert "Traceback" not in stderr
    waited = [e for e in (err, second.stderr) if "waiting for it to finish" in e]
    assert len(waited) == 1, "exactly one of the runs waited for the other"
    # Each level trained once, by one run; the store has exactly levels 0-2.
    trained = out + second.stdout
    for level in range(3):
        assert trained.count(f"level {level:>2}: ") == 1, trained
    found = summaries(tmp_path)
    assert sorted(found) == [(0, 0), (0, 1), (0, 2)]
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name or "tmp" in p.name]
    curve = next(tmp_path.rglob("curve.csv")).read_text().splitlines()
    assert len(curve) == 4
