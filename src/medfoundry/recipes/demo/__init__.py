"""``medfoundry demo``: the built-in demo, end to end on real packaged images (``job``), with the
two configs it runs next to it (``demo_pretrain.yaml``, ``demo_study.yaml``)."""

from medfoundry.recipes.demo.job import demo_config, labelled_tasks, run

__all__ = ["demo_config", "labelled_tasks", "run"]
