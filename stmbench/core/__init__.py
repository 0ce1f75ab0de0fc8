"""The plugin contract and what serves it: the base classes, the hook specifications, the catalogue of
registered plugins, the :class:`~stmbench.core.context.Context` plugins receive, the
:class:`~stmbench.core.session.Session`, and the model and memory helpers plugins use.
"""
