"""``medfoundry demo``: the built-in demo, end to end on real packaged images (``job``), with the
two configs it runs next to it (``demo_pretrain.yaml``, ``demo_study.yaml``)."""

from medfoundry.recipes.demo.job import demo_config, run

__all__ = ["demo_config", "run"]
