"""LarPO: `python run.py [overrides]` runs (or resumes) the whole pipeline. See README.md."""

import logging
import sys

import hydra
from omegaconf import DictConfig

import larpo.config  # noqa: F401  (registers the config schemas with Hydra's ConfigStore)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from larpo.pipeline import run

    try:
        run(cfg)
    except KeyboardInterrupt:
        # The pipeline has logged where it stopped; a traceback would add nothing a user needs.
        logging.getLogger("larpo").error("interrupted; run the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
