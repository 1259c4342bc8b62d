"""LarPO: `python run.py [overrides]` runs (or resumes) the whole pipeline. See README.md."""

import logging
import sys

import hydra
from omegaconf import DictConfig

import larpo.config  # noqa: F401  (registers the config schemas with Hydra's ConfigStore)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from larpo.pipeline import refusals, run
    from larpo.processes import Terminated, signals_as_interrupts

    log = logging.getLogger("larpo")
    try:
        with signals_as_interrupts():  # SIGTERM (SLURM preemption) and SIGHUP: the clean-up of Ctrl-C
            run(cfg)
    except Terminated as e:
        log.error("stopped by %s; run the same command to resume", e)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        # The pipeline has logged where it stopped; a traceback would add nothing a user needs.
        log.error("interrupted; run the same command to resume")
        sys.exit(130)
    except refusals() as e:
        # A refusal says what is wrong and what to do in one message; a traceback would bury it.
        log.error("%s", e)
        log.debug("where the refusal was raised", exc_info=True)
        sys.exit(1)


if __name__ == "__main__":
    problem = larpo.config.check_override_keys(sys.argv[1:]) or larpo.config.check_run_dirs(sys.argv[1:])
    if problem:  # before Hydra composes (and makes a run directory for) a command that cannot run
        sys.stderr.write(f"{problem}\n")
        sys.exit(2)
    main()
