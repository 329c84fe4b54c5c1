"""``lottery.load(path)``: a finished level or branch as a network you can run, no dataset needed.

The level's folder holds the mask and final weights; the experiment's ``config.yaml`` names
the model; the level's ``summary.json`` records the input shape and number of classes. The
mask and weights are checked against the network built from these (paths, shapes, dtypes)
before they are read: a damaged level is one :class:`ConfigError` line, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from omegaconf import OmegaConf

from lottery import models
from lottery.config import Config, ConfigError
from lottery.store import Layout, folder_problem, load_tree_npz, read_summary
from lottery.store.files import CONFIG_FILE, MASK_FILE, PARAMS_FILE


@dataclass(frozen=True)
class Ticket:
    """A trained, pruned network: ``ticket.predict(x)`` gives logits for a batch of inputs."""

    network: models.Network
    params: Any
    mask: Any
    batch_stats: Any
    summary: dict[str, Any]
    config: Config

    def predict(self, x: Any) -> jnp.ndarray:
        """Logits of the network in inference mode (BatchNorm uses its running statistics)."""
        logits, _ = self.network.apply(
            self.params, self.batch_stats, jnp.asarray(x, jnp.float32), train=False
        )
        return logits


def _experiment_config(folder: Path) -> Path:
    """The ``config.yaml`` of the experiment holding a level or branch folder."""
    for parent in folder.parents:
        if (parent / CONFIG_FILE).is_file():
            return parent / CONFIG_FILE
    raise ConfigError(f"no config.yaml above {folder}; give a level folder of a results store")


def load(path: str | Path) -> Ticket:
    """The ticket of a finished level or branch folder (``…/replicate_0/level_3``)."""
    folder = Path(path).expanduser().absolute()
    summary = read_summary(folder)
    if summary is None:
        raise ConfigError(
            f"{folder} is not a finished level (no readable summary.json); give a folder like "
            "results/<name>/<hash>/replicate_<seed>/level_<L>"
        )
    schema = OmegaConf.structured(Config)
    cfg: Config = OmegaConf.to_object(
        OmegaConf.merge(schema, OmegaConf.load(_experiment_config(folder)))
    )
    network = models.build(cfg.model, tuple(summary["input_shape"]), summary["num_classes"])
    problem = folder_problem(folder, Layout.of(*jax.eval_shape(network.init, jax.random.key(0))))
    if problem is not None:
        raise ConfigError(
            f"{folder} is damaged ({problem}); run its experiment again with the same "
            "command: the level is set aside and made again"
        )
    weights = load_tree_npz(folder / PARAMS_FILE)
    mask = load_tree_npz(folder / MASK_FILE)["mask"]
    params = jax.tree.map(jnp.asarray, weights.get("params", {}))
    batch_stats = jax.tree.map(jnp.asarray, weights.get("batch_stats", {}))
    return Ticket(network, params, mask, batch_stats, summary, cfg)
