"""stmbench: is this language model a good backbone for supervised fine-tuning on NLU tasks, and
which way of fine-tuning it works best?

A plugin needs one import: ``from stmbench import hookimpl``.
"""

from stmbench.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]
