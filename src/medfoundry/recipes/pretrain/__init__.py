"""Job: pretraining (``medfoundry pretrain``): its config, the checked set-up of a run, the loop."""

from medfoundry.recipes.pretrain.job import NonFiniteLossError, run

__all__ = ["NonFiniteLossError", "run"]
