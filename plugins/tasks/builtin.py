"""Registers the task YAML files shipped in ``stmbench_tasks`` (the repository's ``tasks/``) and the
generators of its synthetic tasks (a task file names a registered generator, never code)."""

from stmbench import hookimpl, load_task_dir


@hookimpl
def register_tasks(register):
    from stmbench_tasks import TASK_DIR

    for task in load_task_dir(TASK_DIR):
        register(task)


@hookimpl
def register_generators(register):
    from stmbench import FunctionGenerator
    from stmbench_tasks import sample, sample_long, sample_ner

    register(FunctionGenerator("sample", sample.generate, "SYNTHETIC Chinese question pairs (the embedded default)"))
    register(FunctionGenerator("sample-long", sample_long.generate, "SYNTHETIC long reviews of one polarity"))
    register(FunctionGenerator("sample-ner", sample_ner.generate, "SYNTHETIC sentences with ambiguous names (NER)"))
