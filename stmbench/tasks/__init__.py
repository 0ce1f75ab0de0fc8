"""Tasks: a task's definition (:class:`~stmbench.tasks.task.Task`, read from YAML by :mod:`~stmbench.tasks.config`),
its data readers, data generators, the hub catalogue and the lm-eval export.
"""
