"""stmbench's built-in plugins, installed as the package ``stmbench_plugins``.

Each module here is a plugin exactly like a third-party one: ``@hookimpl`` functions, listed in
``stmbench.core.catalogue.DEFAULT_PLUGINS`` and under the ``stmbench`` entry-point group.
"""
