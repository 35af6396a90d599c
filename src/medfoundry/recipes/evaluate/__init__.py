"""Job: a transfer study (``medfoundry evaluate``): its config, the checked plan of cells, the
encoders it loads, the workers that run cells, and the run that starts them and writes the tables.
The building blocks a study is made of (probes, fine-tuning, splits, statistics, tables, the
report) are the library's, in ``medfoundry.evaluation``."""

from medfoundry.recipes.evaluate.job import RUN_ONLY_KEYS, read_study, run

__all__ = ["RUN_ONLY_KEYS", "read_study", "run"]
