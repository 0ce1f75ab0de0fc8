"""The typed data a study is made of: :class:`~stmbench.spec.grid_spec.GridSpec` (the axes, validated once),
:class:`~stmbench.spec.run.RunSpec` (one run with a stable id) and its
:class:`~stmbench.spec.training.TrainingSettings`, and the text forms of axis values (:mod:`~stmbench.spec.axes`).
"""
