"""The command restarts itself once with malloc's huge pages where they help
(lottery.kernels.huge_pages), keeping its arguments; results do not depend on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lottery.kernels import huge_pages
from lottery.kernels.huge_pages import HUGE_PAGES, environment_with_huge_pages

from conftest import DIGITS, ORIGINAL_GLIBC_TUNABLES

NEW_GLIBC = (2, 36)


def test_the_tunable_is_added_only_where_it_helps_and_the_user_has_not_chosen() -> None:
    assert environment_with_huge_pages({"A": "1"}, NEW_GLIBC, "madvise") == {
        "A": "1", "GLIBC_TUNABLES": HUGE_PAGES}
    # The user's other tunables are kept.
    added = environment_with_huge_pages(
        {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, NEW_GLIBC, "madvise")
    assert added == {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{HUGE_PAGES}"}
    for environ, glibc, mode in [
        ({}, NEW_GLIBC, "always"),  # already huge
        ({}, NEW_GLIBC, "never"),  # no huge pages to be had
        ({}, NEW_GLIBC, None),  # no such kernel setting (not Linux)
        ({}, (2, 34), "madvise"),  # glibc without the tunable
        ({}, None, "madvise"),  # not glibc (musl, macOS)
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, NEW_GLIBC, "madvise"),  # user's choice
        ({"LOTTERY_HUGE_PAGES": "0"}, NEW_GLIBC, "madvise"),  # opted out
        ({"LOTTERY_HUGE_PAGES": "False"}, NEW_GLIBC, "madvise"),
        ({"LOTTERY_HUGE_PAGES": " off"}, NEW_GLIBC, "madvise"),
    ]:
        assert environment_with_huge_pages(environ, glibc, mode) is None, (environ, glibc, mode)
    for on in ("", "1", "yes", "TRUE"):
        assert environment_with_huge_pages({"LOTTERY_HUGE_PAGES": on}, NEW_GLIBC, "madvise")


def test_a_bad_opt_out_value_stops_the_command_with_one_line(tmp_path) -> None:
    env = {**os.environ, "LOTTERY_HUGE_PAGES": "maybe"}
    env.pop("GLIBC_TUNABLES", None)
    done = subprocess.run([sys.executable, "-m", "lottery", f"results_root={tmp_path}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: LOTTERY_HUGE_PAGES='maybe' is not a switch: set it to 0 (no huge pages for "
        "malloc) or 1 (the default), or unset it"
    ]
    assert not list(tmp_path.iterdir())


def test_kernel_mode_reads_the_bracketed_choice(tmp_path) -> None:
    setting = tmp_path / "enabled"
    setting.write_text("always [madvise] never\n")
    assert huge_pages.kernel_mode(setting) == "madvise"
    setting.write_text("[always] madvise never\n")
    assert huge_pages.kernel_mode(setting) == "always"
    assert huge_pages.kernel_mode(tmp_path / "missing") is None


@pytest.mark.slow
def test_the_command_restarts_with_huge_pages_and_keeps_its_arguments(tmp_path) -> None:
    user_env = {key: value for key, value in os.environ.items()
                if key not in ("GLIBC_TUNABLES", "LOTTERY_HUGE_PAGES")}
    if ORIGINAL_GLIBC_TUNABLES:  # the user's own tunables, without the suite's huge pages
        user_env["GLIBC_TUNABLES"] = ORIGINAL_GLIBC_TUNABLES
    # What this machine calls for: the tunable (Linux, glibc 2.35+, huge pages on madvise),
    # or nothing, and then the command must not restart.
    expected = huge_pages.environment_here(user_env)
    args = [*DIGITS, "pruning.levels=0", "train.steps=50it", "train.eval_every=25it",
            f"results_root={tmp_path}"]
    done = subprocess.run([sys.executable, "-m", "lottery", *args], cwd=tmp_path,
                          env=user_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [summary] = tmp_path.rglob("summary.json")
    recorded = json.loads(summary.read_text())
    assert recorded["environment"]["glibc_tunables"] == (
        expected["GLIBC_TUNABLES"] if expected else "")
    # The overrides survived the restart (a 64-32 network trained for 50 iterations).
    assert recorded["train_iterations"] == 50
    assert "model.hidden" not in done.stderr
