"""Training's top floor: the study and the shipped models. Presets, the study and its job pool, evaluation,
reports and figures, the ship run and its report, model cards and shipping. Stands on ``data`` and ``stages``."""
