"""ScalingDown lm-eval tasks; importable as ``eval.tasks`` for :data:`utils.TASK_NAMES`."""
