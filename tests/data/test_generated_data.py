"""The datasets made on this machine (lottery.data.generated)."""

from __future__ import annotations

import subprocess
import sys


def test_digits_are_scikit_learns_load_digits_without_importing_it():
    """lottery reads scikit-learn's digits file itself (its import takes a second): the same
    images and labels as ``load_digits``, and scikit-learn stays unimported."""
    script = (
        "import sys, numpy as np\n"
        "from lottery.data.generated import digits\n"
        "x, y, x_test, y_test = digits()\n"
        "assert 'sklearn' not in sys.modules\n"
        "from sklearn.datasets import load_digits\n"
        "bunch = load_digits()\n"
        "images = bunch.images.astype(np.float32) / 16.0\n"
        "assert np.array_equal(np.concatenate([x, x_test])[..., 0], images)\n"
        "assert np.array_equal(np.concatenate([y, y_test]), bunch.target)\n"
        "assert (len(y), len(y_test)) == (1500, 297)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
