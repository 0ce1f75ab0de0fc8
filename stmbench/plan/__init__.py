"""Planning: a :class:`~stmbench.spec.grid_spec.GridSpec` becomes the runs to do (each
:class:`~stmbench.spec.run.RunSpec` derived once) and the rejected combinations, checked before anything trains.
"""
