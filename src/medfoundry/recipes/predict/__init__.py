"""Jobs on new images with a trained model: ``medfoundry predict`` (the heads' predictions, with
how each source type reads its inputs and each task type's outputs are written) and
``medfoundry embed`` (the encoder's features)."""

from medfoundry.recipes.predict.job import PredictConfig, run, supervised_tasks

__all__ = ["PredictConfig", "run", "supervised_tasks"]
