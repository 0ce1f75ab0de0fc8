"""The ``gguf`` backbone without a real model: which names it serves, and its errors (the real-model
tier, tests/test_real_model.py, loads and trains a real GGUF file)."""

from __future__ import annotations

import importlib.util

import pytest

from stmbench.common.errors import StmbenchError


def test_gguf_names_go_to_the_gguf_backbone_and_others_do_not(session):
    assert session.catalogue.backbone_for("models/SmolLM2.Q4_1.gguf").name == "gguf"
    assert session.catalogue.backbone_for("org/repo::model.Q8_0.GGUF").name == "gguf"
    assert session.catalogue.backbone_for("Qwen/Qwen2.5-0.5B").name == "hf"
    assert session.catalogue.backbone_for("tiny-llama").name == "tiny-llama"


def test_a_missing_file_and_a_malformed_hub_name_are_clear_errors(session, tmp_path):
    backbone = session.catalogue.backbone_for("x.gguf")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is not installed (its absence is tested below)")
    with pytest.raises(StmbenchError, match="no such GGUF file"):
        backbone.resolve(str(tmp_path / "nope.gguf"), session.context)
    with pytest.raises(StmbenchError, match="org/repo::file.gguf"):
        backbone.resolve("::x.gguf", session.context)


def test_a_hub_file_offline_fails_at_once_saying_so(session):
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is not installed")
    backbone = session.catalogue.backbone_for("someone/some-model::model.Q4_0.gguf")
    with pytest.raises(StmbenchError, match="not in the Hugging Face cache, and offline mode is set"):
        backbone.resolve("someone/some-model::model.Q4_0.gguf", session.context)


def test_without_the_gguf_package_one_line_says_what_to_install(session, monkeypatch, cli, tmp_path):
    import stmbench_plugins.backbones.gguf as plugin

    real = importlib.util.find_spec
    monkeypatch.setattr(plugin.importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(StmbenchError, match=r'pip install "stmbench\[gguf\]"'):
        session.catalogue.backbone_for("m.gguf").resolve(str(tmp_path / "m.gguf"), session.context)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    code, out, err = cli("run", "--backbones", str(tmp_path / "m.gguf"), "--results-dir", str(tmp_path / "r"))
    assert code != 0 and 'pip install "stmbench[gguf]"' in err + out and "Traceback" not in err
