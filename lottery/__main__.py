"""``python -m lottery [overrides]``: the Hydra entry point (also the ``lottery`` command)."""

import sys

import hydra
from omegaconf import DictConfig

from lottery import cli
from lottery.config import register

register()


# An absolute path: the same folder for `python -m lottery` and the `lottery` script, which
# Hydra would otherwise resolve differently (file-relative vs. package-relative).
@hydra.main(config_path=str(cli.CONFIG_DIR), config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    code = cli.run(cfg)
    if code:
        sys.exit(code)


def main() -> None:
    """Check the overrides (one-line errors), then hand over to Hydra."""
    sys.argv[1:] = cli.multirun_flag_first(sys.argv[1:])
    cli.exit_on_bad_overrides(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
