"""The evaluator's parts, one job per module: :mod:`.predictors` (who answers), :mod:`.metrics`
(how the answers score, overall and per slice) and :mod:`.report` (tables, JSON, plots).
:func:`training.evaluate.evaluate` puts them together."""
