"""LarPO: `python run.py [overrides]` runs (or resumes) the whole pipeline. See README.md."""

import hydra
from omegaconf import DictConfig

import larpo.config  # noqa: F401  (registers the config schemas with Hydra's ConfigStore)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from larpo.pipeline import run

    run(cfg)


if __name__ == "__main__":
    main()
