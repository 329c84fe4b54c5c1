"""The package's Hydra launchers (Hydra takes launchers only from the ``hydra_plugins``
namespace): ``hydra/launcher=slurm`` and ``slurm_cpu`` name
``hydra_plugins.lottery_launchers.SlurmLauncher``."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """submitit's Slurm launcher, waiting for its jobs with ``squeue``: one line per job as
    it ends, with its log, and one ``error:`` line for a job pending on a request no node
    can meet (:mod:`lottery.slurm_jobs`)."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from lottery.slurm_jobs import launch  # here: Hydra imports plugins at every start

        return launch(self, job_overrides, initial_job_idx)
