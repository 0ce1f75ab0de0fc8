"""The task schema: :class:`TaskConfig`, what a task YAML file says (as lm-eval's ``TaskConfig`` is
for its tasks), validated as it is read.

A task says where its data comes from (a generator, local files in their original format under
``--data-dir``, or a hub data set loaded with ``datasets``), which fields hold ``text_a``,
``text_b`` and the label, the labels with their verbalizer words, its prompt templates and metrics.
The readers of :mod:`stmbench.tasks.readers` turn that into rows; :class:`stmbench.tasks.task.Task` is the
schema plus loading, as the catalogue holds it.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stmbench.common.errors import StmbenchError
from stmbench.common.untrusted import safe_url

if TYPE_CHECKING:  # pragma: no cover
    import datasets

SPLITS = ("train", "validation", "test")
KINDS = ("pair", "nli", "single", "tokens")  #: ``tokens``: a tag per token (NER), CoNLL-style data
#: the metrics of a task that lists none: accuracy and macro-F1, or seqeval's entity-level F1 for a tag
#: per token; a task may list any registered metric (``register_metrics``) that serves its kind
DEFAULT_METRICS = {"sentence": ("accuracy", "macro_f1"), "tokens": ("entity_f1",)}
METRIC_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")  #: the form of a metric's name
PLACEHOLDERS = {"text_a", "text_b"}


@dataclass(frozen=True)
class Label:
    """One class: ``value`` as written in the original files, a readable ``name``, and the
    verbalizer ``word`` a generative model answers with."""

    value: str
    name: str
    word: str


@dataclass
class TaskData:
    """One loaded split: a ``datasets.Dataset`` with ``text_a``, ``text_b``, ``label`` (label index)
    and, where the source has one, ``rationale``; plus what validation counted."""

    dataset: datasets.Dataset
    source: str
    fingerprint: str
    report: dict[str, int] = field(default_factory=dict)


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise StmbenchError(f"{where}: {msg}")


REFERENCE_KEYS = ("model", "metric", "value", "split", "citation", "url", "note")


def _reference(ref: Any, i: int, where: str, eval_split: str) -> dict[str, Any]:
    """One published result of a task's ``references:`` list, checked and completed."""
    _check(isinstance(ref, dict), where, f"reference {i} must be a mapping with model, value and citation")
    unknown = sorted(set(ref) - set(REFERENCE_KEYS))
    _check(not unknown, where, f"reference {i} has unknown keys {unknown}; known: {', '.join(REFERENCE_KEYS)}")
    for key in ("model", "citation"):
        _check(isinstance(ref.get(key), str) and ref[key].strip() != "", where, f"reference {i} needs a {key!r}")
    value = ref.get("value")
    _check(isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 100, where,
           f"reference {i} ({ref.get('model')}): value must be a percentage between 0 and 100")
    url = ref.get("url", "")
    _check(url == "" or (isinstance(url, str) and safe_url(url) == url), where,
           f"reference {i}: url must be an http:// or https:// address")
    out = {"model": ref["model"], "metric": ref.get("metric", "accuracy"), "value": float(value),
           "split": ref.get("split", eval_split), "citation": ref["citation"], "url": ref.get("url", ""),
           "note": ref.get("note", "")}
    _check(isinstance(out["metric"], str) and METRIC_NAME.fullmatch(out["metric"]) is not None, where,
           f"reference {i}: metric must be a metric's name (accuracy, macro_f1, entity_f1, ...)")
    _check(out["split"] in SPLITS, where, f"reference {i}: split must be one of {', '.join(SPLITS)}")
    return out


TEACHER_KEYS = ("system", "prompt", "examples")
MAX_TEACHER_EXAMPLES = 16
TEACHER_FIELDS = {"text_a", "text_b", "word", "label", "marker", "prompt"}


def _teacher_prompt(raw: Any, where: str, values: list[str]) -> dict[str, Any]:
    """A task's ``teacher:`` section: ``prompt`` (a template of ``{text_a}``, ``{text_b}``, ``{word}``:
    the gold answer word, ``{label}``: its name, ``{marker}``: the answer marker, ``{prompt}``: the
    task's own prompt for the example), an optional ``system`` turn and few-shot ``examples`` of good
    rationales (``text_a``, ``text_b``, ``label``: a label value, ``rationale``)."""
    _check(isinstance(raw, dict), where, "teacher must be a mapping with a 'prompt' (and maybe 'system', 'examples')")
    unknown = sorted(set(raw) - set(TEACHER_KEYS))
    _check(not unknown, where, f"teacher has unknown keys {unknown}; known: {', '.join(TEACHER_KEYS)}")
    prompt, system = raw.get("prompt"), raw.get("system", "")
    _check(isinstance(prompt, str) and prompt.strip() != "", where, "teacher.prompt must be a text template")
    _check(isinstance(system, str), where, "teacher.system must be text")
    fields = check_template(prompt, where, "teacher.prompt")
    _check(fields <= TEACHER_FIELDS, where, f"teacher.prompt uses unknown fields {sorted(fields - TEACHER_FIELDS)}; "
           f"known: {', '.join(sorted(TEACHER_FIELDS))}")
    examples = raw.get("examples") or []
    _check(isinstance(examples, list) and len(examples) <= MAX_TEACHER_EXAMPLES, where,
           f"teacher.examples must be a list of at most {MAX_TEACHER_EXAMPLES} examples")
    shots = []
    for i, ex in enumerate(examples, 1):
        _check(isinstance(ex, dict) and all(isinstance(ex.get(k), str) and ex.get(k) for k in ("text_a", "rationale")),
               where, f"teacher example {i} needs text_a and rationale (text)")
        _check(str(ex.get("label")) in values, where, f"teacher example {i}: label must be one of {', '.join(values)}")
        _check(isinstance(ex.get("text_b", ""), str), where, f"teacher example {i}: text_b must be text")
        shots.append({"text_a": ex["text_a"], "text_b": ex.get("text_b", ""), "label": str(ex["label"]),
                      "rationale": ex["rationale"]})
    return {"system": system, "prompt": prompt, "examples": shots}


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  #: a task name: also its folder under --data-dir
MAX_FORMAT_NUMBER = 200  #: the largest width or precision a prompt's format spec may ask for


def check_template(template: str, where: str, pname: str) -> set[str]:
    """The fields of a prompt template, after refusing what ``str.format`` could be made to do with
    it: nested fields, attribute or index look-ups (only plain names pass the caller's check), and
    format specs with a width or precision over :data:`MAX_FORMAT_NUMBER` (``{text_a:>2000000000}``)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # an unbalanced { or }
        raise StmbenchError(f"{where}: prompt {pname!r} is not a valid template ({exc}; write "
                            "{{ and }} for literal braces)") from None
    fields = set()
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        fields.add(field_name)
        _check(conversion in (None, "s"), where, f"prompt {pname!r}: conversion !{conversion} is not allowed")
        _check("{" not in (spec or "") and "}" not in (spec or ""), where, f"prompt {pname!r}: nested fields are not allowed")
        numbers = [int(n) for n in re.findall(r"\d+", spec or "")]
        _check(all(n <= MAX_FORMAT_NUMBER for n in numbers), where,
               f"prompt {pname!r}: format spec {spec!r} asks for more than {MAX_FORMAT_NUMBER} characters")
    return fields


def _check_source(config: dict[str, Any], where: str) -> None:
    """A task's data source names data, never code or a place outside the data folder."""
    generator, local = config.get("generator"), config.get("local")
    if generator is not None:
        _check(isinstance(generator, dict), where, "generator must be a mapping with a 'name'")
        wanted = generator.get("name") or generator.get("function")
        _check(isinstance(wanted, str) and bool(wanted), where,
               "generator needs the 'name' of a generator a plugin registered (see stmbench plugins)")
    if local is not None:
        _check(isinstance(local, dict), where, "local must be a mapping")
        files = local.get("files") or {}
        _check(isinstance(files, dict), where, "local.files must map splits to file names")
        for split, names in files.items():
            for name in [names] if isinstance(names, str) else (names if isinstance(names, list) else [None]):
                _check(isinstance(name, str) and bool(name), where, f"local.files.{split}: a file name is text")
                parts = name.replace("\\", "/").split("/")
                _check(not name.startswith(("/", "\\")) and ".." not in parts and ":" not in name, where,
                       f"local.files.{split}: {name[:80]!r} must be a file inside the task's data folder "
                       "(no '..', no absolute path)")


@dataclass(eq=False)
class TaskConfig:
    """A classification task over one sentence or a sentence pair, as its YAML file describes it."""

    name: str
    labels: list[Label]
    prompts: dict[str, str]  #: prompt name -> template with ``{text_a}`` (and ``{text_b}``)
    description: str = ""
    task_kind: str = "pair"  #: ``pair``, ``nli`` or ``single`` (the YAML key ``kind``)
    synthetic: bool = False  #: generated data: its scores say nothing about real accuracy
    citation: str = ""
    ignore_labels: set[str] = field(default_factory=set)  #: label values whose rows are dropped
    answer_marker: str = "答案："
    metrics: list[str] = field(default_factory=lambda: ["accuracy", "macro_f1"])
    eval_split: str = "test"
    eval_note: str = ""
    generator: dict[str, Any] | None = None  #: ``function: module:attr`` and its keyword arguments
    hub: dict[str, Any] | None = None  #: ``path``, ``name``, ``splits``, ``fields``
    local: dict[str, Any] | None = None  #: ``format`` (tsv, jsonl), ``files``, ``fields``, ``header``, ``columns``
    #: published results (``model``, ``metric``, ``value`` in %, ``split``, ``citation``, ``url``, ``note``),
    #: shown on leaderboards as reference rows, never as measured ones
    references: list[dict[str, Any]] = field(default_factory=list)
    #: the prompt a teacher writes rationales from (``system``, ``prompt``, few-shot ``examples``);
    #: ``None``: the default teacher prompt (:data:`stmbench.core.teacher.DEFAULT_TEACHER_PROMPT`)
    teacher: dict[str, Any] | None = None
    #: the published row count of each split (``train: 238766``), what a bill counts where the data is
    #: not at hand (``stmbench run --dry-run`` offline)
    sizes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, config: dict[str, Any], where: str | None = None) -> dict[str, Any]:
        """The validated fields of a task mapping (errors name ``where``, the file)."""
        where = where or f"task {config.get('name')!r}"
        name = config.get("name", "")
        _check(bool(name) and isinstance(name, str), where, "a task needs a 'name'")
        _check(NAME.fullmatch(name) is not None, where, "a task name is letters, digits, '.', '_' and '-' "
               "(it names the task's folder under --data-dir)")
        kind = config.get("kind", "pair")
        _check(kind in KINDS, where, f"kind must be one of {', '.join(KINDS)}")
        raw_labels = config.get("labels") or []
        _check(isinstance(raw_labels, list) and len(raw_labels) >= 2, where, "a task needs a list of at least two labels")
        tokens = kind == "tokens"
        for i, lab in enumerate(raw_labels, 1):
            _check(isinstance(lab, dict), where, f"label {i} must be a mapping with 'value' and 'word'")
            for key in ("value",) if tokens else ("value", "word"):  # a tag needs no answer word
                _check(lab.get(key) not in (None, ""), where, f"label {i} ({lab.get('value', '?')!r}) has no {key!r}")
        labels = [Label(str(lab["value"]), str(lab.get("name", lab["value"])), str(lab.get("word", lab["value"])))
                  for lab in raw_labels]
        values = [lab.value for lab in labels]
        _check(len(set(values)) == len(values), where, "label values must be distinct")
        words = [lab.word for lab in labels]
        _check(len(set(words)) == len(words), where, "verbalizer words must be distinct")
        prompts = dict(config.get("prompts") or {})
        _check(bool(prompts) or tokens, where, "a task needs at least one prompt template")
        needed = {"text_a"} if kind == "single" else {"text_a", "text_b"}
        for pname, template in prompts.items():
            _check(isinstance(template, str), where, f"prompt {pname!r} must be a text template")
            fields = check_template(template, where, pname)
            _check(fields <= PLACEHOLDERS, where, f"prompt {pname!r} uses unknown fields {sorted(fields - PLACEHOLDERS)}")
            _check(needed <= fields, where, f"prompt {pname!r} must use {sorted(needed)}")
        metrics = config.get("metrics", list(DEFAULT_METRICS["tokens" if tokens else "sentence"]))
        _check(isinstance(metrics, list) and bool(metrics) and all(
            isinstance(m, str) and METRIC_NAME.fullmatch(m) for m in metrics) and len(set(metrics)) == len(metrics),
            where, "metrics must be a list of distinct metric names (the first ranks the task)")
        eval_split = config.get("eval_split", "test")
        _check(eval_split in SPLITS, where, f"eval_split must be one of {', '.join(SPLITS)}")
        _check_source(config, where)
        generator, hub, local = config.get("generator"), config.get("hub"), config.get("local")
        _check(bool(generator or hub or local), where, "a task needs a data source: 'generator', 'hub' or 'local'")
        if local:
            formats = ("conll",) if tokens else ("tsv", "jsonl")
            _check(local.get("format") in formats, where, f"local.format must be {' or '.join(map(repr, formats))}")
        references = [_reference(ref, i, where, eval_split) for i, ref in enumerate(config.get("references") or [], 1)]
        teacher = _teacher_prompt(config.get("teacher"), where, values) if "teacher" in config else None
        sizes = config.get("sizes") or {}
        _check(isinstance(sizes, dict) and all(k in SPLITS and isinstance(v, int) and not isinstance(v, bool)
                                               and 0 < v <= 10 ** 10 for k, v in sizes.items()),
               where, f"sizes must map splits ({', '.join(SPLITS)}) to their numbers of rows")
        return {"teacher": teacher, "sizes": dict(sizes), "references": references, "name": name, "labels": labels, "prompts": prompts, "description": config.get("description", ""),
                "task_kind": kind, "synthetic": bool(config.get("synthetic", False)),
                "citation": config.get("citation", ""),
                "ignore_labels": {str(v) for v in config.get("ignore_labels", [])},
                "answer_marker": config.get("answer_marker", "答案："), "metrics": metrics,
                "eval_split": eval_split, "eval_note": config.get("eval_note", ""),
                "generator": generator, "hub": hub, "local": local}

    @classmethod
    def from_dict(cls, config: dict[str, Any], where: str | None = None) -> TaskConfig:
        return cls(**cls.parse(config, where))

    # -- description ------------------------------------------------------------------------
    @property
    def label_words(self) -> list[str]:
        return [lab.word for lab in self.labels]

    @property
    def is_pair(self) -> bool:
        return self.task_kind not in ("single", "tokens")

    @property
    def is_tokens(self) -> bool:
        """A tag per token (``kind: tokens``): rows have ``tokens`` and ``tags``, not texts and a label."""
        return self.task_kind == "tokens"

    @property
    def primary_metric(self) -> str:
        """The metric leaderboards rank by: the first of ``metrics``."""
        return self.metrics[0]

    def sources(self) -> list[str]:
        out = []
        if self.generator:
            out.append("generated (synthetic)")
        if self.local:
            out.append(f"--data-dir/{self.name}/ ({self.local['format']})")
        if self.hub:
            cfg = f" ({self.hub['name']})" if self.hub.get("name") else ""
            out.append(f"hub {self.hub['path']}{cfg}")
        return out

    def render(self, prompt: str, example: dict[str, Any]) -> str:
        """The prompt text for one example (no answer)."""
        try:
            template = self.prompts[prompt]
        except KeyError:
            from stmbench.common.errors import UnknownNameError

            raise UnknownNameError(f"prompt of task {self.name!r}", prompt, self.prompts) from None
        return template.format(text_a=example["text_a"], text_b=example.get("text_b") or "")

    def field_name(self, name: str) -> str:
        """The source field that holds ``name`` (``text_a``, ``text_b``, ``label``) in local files."""
        return str((self.local or {}).get("fields", {}).get(name, name))

    def file_names(self, split: str) -> list[str]:
        """The local file names a split may have (the first found is read)."""
        files = (self.local or {}).get("files", {}).get(split)
        if files is None:
            return []
        return [files] if isinstance(files, str) else list(files)
