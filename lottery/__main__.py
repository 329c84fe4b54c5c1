"""``python -m lottery [overrides]``: the Hydra entry point (also the ``lottery`` command).

Hydra and the package's config are imported inside :func:`main`, so that :func:`command`
restarts the process (:mod:`lottery.kernels.huge_pages`) before it has spent time on imports.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from lottery.kernels import huge_pages, xla_cpu

if TYPE_CHECKING:
    from omegaconf import DictConfig


def _run(cfg: DictConfig) -> float | None:
    """One job: its objective, for a sweeper that optimises one (lottery.cli.objective)."""
    from lottery import cli, sweeps

    sweeps.end_with_the_command()
    result = cli.run_job(cfg)
    if result.code and os.environ.get("SUBMITIT_FOLDER"):
        # A job of submitit's launchers: an exception, which Hydra keeps in the job's
        # result for the submitter to report (an exit would leave no result to read).
        raise cli.JobFailed(result.code)
    if result.code:
        sys.exit(result.code)
    sweeps.mark_job_finished()
    return result.objective


def main() -> None:
    """Check the overrides (one-line errors), then hand over to Hydra.

    The command's own CPU settings (:func:`lottery.use_cpu_settings`) come first, before
    anything starts JAX: importing ``lottery`` sets none of them.
    """
    xla_cpu.use_cpu_settings()
    import hydra

    from lottery import cli, sweeps
    from lottery.config import register

    register()
    sys.argv[1:] = cli.plain_experiment(cli.multirun_flag_first(sys.argv[1:]))
    cli.exit_on_bad_overrides(sys.argv[1:])
    # An absolute path: the same folder for `python -m lottery` and the `lottery` script,
    # which Hydra would otherwise resolve differently (file-relative vs. package-relative).
    app = hydra.main(config_path=str(cli.CONFIG_DIR), config_name="config", version_base="1.3")
    sweeps.SWEEP.reset()  # a caller may run several commands in one process
    try:
        with sweeps.sbatch_refusals_in_one_line(cli.slurm_launcher(sys.argv[1:])):
            app(_run)()
    except SystemExit as done:  # a failed sweep leaves no folder (lottery/sweeps.py)
        if done.code not in (0, None):
            sweeps.remove_failed_sweep()
        raise
    except BaseException:
        sweeps.remove_failed_sweep()
        raise


def command() -> None:
    """The ``lottery`` command and ``python -m lottery``: :func:`main`, in a process that
    ``malloc`` serves with huge pages where that helps (:mod:`lottery.kernels.huge_pages`)."""
    huge_pages.restart_with_huge_pages()
    main()


if __name__ == "__main__":
    command()
