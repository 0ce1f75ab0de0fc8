"""A fake third-party plugin that implements every stmbench hook.

Tests register it as a module, or install it through real entry-point metadata (a ``dist-info``
folder on ``sys.path``) as the distribution ``stmbench-fake``.  It records the lifecycle events it
sees in ``EVENTS``.
"""

from __future__ import annotations

from transformers import TrainerCallback

from stmbench import Adapter, Executor, hookimpl, hookspec
from stmbench_plugins.strategies.discriminative import DiscriminativeStrategy

EVENTS: list[tuple[str, str]] = []


class HeadOnlyAdapter(Adapter):
    """Trains the classification head and the last layer's norm: a third-party adapter."""

    name = "fake_head_only"
    description = "fake: head and final norm train"
    default_learning_rate = 1e-3

    def wrap(self, model, *, head, info, options):
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(("score", "classifier", "lm_head")) or name.endswith("norm.weight"))
        return model


class FakeStrategy(DiscriminativeStrategy):
    """A third-party strategy: the discriminative one under another name."""

    name = "fake_discriminative"
    description = "fake: discriminative under another name"


class RecordingExecutor(Executor):
    name = "fake_serial"
    description = "fake: runs specs in reverse order"

    def execute(self, work, *, run, options):
        specs = []
        while (spec := work.take()) is not None:  # claim everything first, then run backwards
            specs.append(spec)
        for spec in reversed(specs):
            work.done(spec, *run(spec))


class StepCounter(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1
        if self.steps == 1:
            EVENTS.append(("trainer_step", ""))


class FakeHooks:
    """A hook this plugin declares for other plugins (nobody implements it here)."""

    @hookspec
    def fake_announce(self, message):
        """Told a message."""


@hookimpl
def register_hookspecs(plugin_manager):
    plugin_manager.add_hookspecs(FakeHooks)


@hookimpl
def register_adapters(register):
    register(HeadOnlyAdapter())


@hookimpl
def register_strategies(register):
    register(FakeStrategy())


@hookimpl
def register_executors(register):
    register(RecordingExecutor())


@hookimpl
def register_backbones(register):
    from stmbench_plugins.backbones.tiny import TinyBackbone, TinyShape

    register(TinyBackbone("llama", TinyShape(hidden_size=32, intermediate_size=64, num_attention_heads=2),
                          name="fake-micro-llama"))


@hookimpl
def register_tasks(register):
    from stmbench.tasks.task import Task, load_task_file
    from stmbench_tasks import TASK_DIR

    base = load_task_file(TASK_DIR / "sample.yaml").config
    register(Task({**base, "name": "fake_sample_small",
                   "generator": {**base["generator"], "train": 200, "validation": 50, "test": 60}}))


def _fake_rows(split, labels, rows=40):
    """Two kinds of pair, one per label: a fake synthetic data set."""
    return [{"text_a": f"问题{i}", "text_b": f"问题{i}" if i % 2 else f"别的{i}", "label": labels[i % 2].value}
            for i in range(rows)]


@hookimpl
def register_generators(register):
    from stmbench import FunctionGenerator

    register(FunctionGenerator("fake-pairs", _fake_rows, "a fake generator of a third-party plugin"))


@hookimpl
def register_metrics(register):
    from stmbench import Metric

    class FakeErrorRate(Metric):
        name = "fake_error_rate"
        description = "a fake metric of a third-party plugin: the share predicted wrong"
        higher_is_better = False

        def compute(self, gold, predicted, *, labels):
            return sum(g != p for g, p in zip(gold, predicted)) / len(gold) if gold else 0.0

    register(FakeErrorRate())


@hookimpl
def register_teachers(register):
    from dataclasses import dataclass, field

    from stmbench import Teacher, TeacherAnswer

    @dataclass
    class FakeTeacherOptions:
        verdict: str = "right"  #: right, wrong, none (no final answer), empty, long, mixed (by row)
        chunk: int = 4
        fail_after: int = -1  #: raise after this many chunks (a killed generation)
        keep: str = "consistent"

    class FakeTeacher(Teacher):
        name = "fake_teacher"
        description = "a fake teacher of a third-party plugin: a template rationale per row"
        options_class = FakeTeacherOptions
        runtime_options = ("chunk", "fail_after")

        def generate(self, requests, *, task, options, context):
            kinds = ("right", "wrong", "none", "empty", "long")
            for start in range(0, len(requests), options.chunk):
                if start // options.chunk == options.fail_after:
                    raise RuntimeError("the fake teacher was stopped")
                answers = []
                for k, request in enumerate(requests[start:start + options.chunk], start):
                    EVENTS.append(("generate", request.example["text_a"]))
                    verdict = kinds[k % len(kinds)] if options.verdict == "mixed" else options.verdict
                    gold = request.example["label"]
                    word = task.labels[gold if verdict != "wrong" else 1 - gold].word
                    text = {"none": "a reason", "empty": "", "long": "a reason that goes on and on"}.get(
                        verdict, f"{request.example['text_a']}: a reason {task.answer_marker}{word}")
                    answers.append(TeacherAnswer(text, truncated=verdict == "long"))
                yield answers

    register(FakeTeacher())


@hookimpl
def trainer_callbacks(run):
    EVENTS.append(("trainer_callbacks", run.run_id))
    return [StepCounter()]


@hookimpl
def run_started(run):
    EVENTS.append(("run_started", run.run_id))


@hookimpl
def run_finished(run, result):
    EVENTS.append(("run_finished", result["status"]))


@hookimpl
def generate_rationales(task, examples, run):
    return [f"fake rationale {i}" for i, _ in enumerate(examples)]
