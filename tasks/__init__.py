"""Built-in task definitions (one YAML file each) and the generator of the synthetic ``sample`` set.

Installed as the package ``stmbench_tasks``; the folder in the repository is ``tasks/``.
"""

from pathlib import Path

TASK_DIR = Path(__file__).resolve().parent
