"""An example third-party stmbench plugin (see ``plugin.py``)."""
