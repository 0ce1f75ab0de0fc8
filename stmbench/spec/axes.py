"""The text forms of axis values: ``NAME[KEY=VALUE,...]`` entries, train sizes, comma lists, and the display
label of a variant."""

from __future__ import annotations

from typing import Any

from stmbench.common.errors import StmbenchError

FULL = "full"


def parse_train_size(value: Any) -> int | str:
    if isinstance(value, str) and value.strip().lower() in (FULL, "all"):
        return FULL
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise StmbenchError(f"train size {value!r} is neither a number nor 'full'") from None
    if n < 0:
        raise StmbenchError(f"train size must not be negative, got {n}")
    return n


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``[...]`` (so ``lora[r=4,lora_alpha=8],full`` is 2 items)."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [v.strip() for v in out if v.strip()]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return _split_top_level(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def parse_assignment(item: str, usage: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)`` with the value read as YAML (``r=16`` -> 16, ``x=true`` ->
    True); an empty value is ``""``.  ``usage`` is the error message for a malformed item."""
    key, eq, value = item.partition("=")
    if not eq or not key.strip():
        raise StmbenchError(usage)
    from stmbench.common.untrusted import parse_yaml  # bounded, no aliases
    return key.strip(), parse_yaml(value, usage) if value.strip() else ""


def parse_axis_entry(entry: Any) -> tuple[str, dict[str, Any]]:
    """A strategy / adapter axis entry -> ``(name, options)``.

    ``"lora"`` has no options of its own; ``"lora[r=4,use_dora=true]"`` and the YAML mapping
    ``{name: lora, r: 4, use_dora: true}`` carry options that override the grid-wide ones, so one
    grid can hold several variants of the same plugin.
    """
    if isinstance(entry, dict):
        options = dict(entry)
        name = options.pop("name", None)
        if not name:
            raise StmbenchError(f"an axis entry given as a mapping needs a 'name': {entry!r}")
        return str(name), options
    text = str(entry).strip()
    if text.endswith("]") and "[" in text:
        name, _, inner = text[:-1].partition("[")
        usage = f"axis entry {text!r}: expected NAME[KEY=VALUE,...]"
        return name.strip(), dict(parse_assignment(item, usage) for item in _split_top_level(inner))
    return text, {}


def axis_label(name: str, options: dict[str, Any], defaults: dict[str, Any]) -> str:
    """``name`` plus the options that differ from the defaults, e.g. ``lora[r=12,lora_alpha=32]``."""
    changed = [f"{k}={_short(v)}" for k, v in sorted(options.items()) if defaults.get(k, object()) != v]
    return f"{name}[{','.join(changed)}]" if changed else name


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return str(value)

