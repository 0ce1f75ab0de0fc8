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


def test_the_bill_counts_a_gguf_models_parameters_without_loading_its_weights(session, tmp_path, monkeypatch):
    """``empty_model`` builds the converted checkpoint's model on the meta device, as the ``hf``
    backbone does, so pricing a run (the line before every ``stmbench run``) reads no weights;
    the run then loads them once.  (A converted folder is faked in the cache: a tiny checkpoint under
    the digest of a stand-in file.)"""
    import json
    import shutil

    import stmbench_plugins.backbones.gguf as plugin
    from stmbench.core.modeling import training_flops
    from stmbench.plan.grid import plan_grid
    from stmbench.run.bill import Estimator
    from stmbench.run.pipeline import RunParts
    from stmbench.spec.grid_spec import GridSpec

    if importlib.util.find_spec("gguf") is None:
        pytest.skip("the gguf package is not installed")
    task = session.get("task", "sample")
    source = session.catalogue.backbone_for("tiny-llama").checkpoint(task, session.context)
    fake = tmp_path / "stand-in.Q4_1.gguf"
    fake.write_bytes(b"GGUF stand-in")
    folder = session.settings.cache_dir / "gguf" / plugin.file_digest(fake)[:16]
    shutil.copytree(source, folder)
    (folder / plugin.SOURCE_RECORD).write_text(json.dumps({"quantization": "Q4_1", "tensor_types": {"Q4_1": 1}}))
    backbone = session.catalogue.backbone_for(str(fake))
    model, tokenizer = backbone.load(str(fake), head="sequence_classification", task=task, context=session.context,
                                     load_kwargs={})
    empty, empty_tokenizer = backbone.empty_model(str(fake), head="sequence_classification", task=task,
                                                  context=session.context)
    assert {p.device.type for p in empty.parameters()} == {"meta"}
    assert training_flops(empty, 1.0) == training_flops(model, 1.0)
    assert empty_tokenizer is not None and empty_tokenizer.pad_token_id == tokenizer.pad_token_id
    monkeypatch.setattr(plugin.GGUFBackbone, "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    plan = plan_grid(GridSpec(backbones=[str(fake)], tasks=["sample"], strategies=["discriminative"],
                              adapters=["full"], train_sizes=[32]), session)
    [spec] = plan.runs
    coefficient, _, source_text = Estimator(session)._model(spec, RunParts.of(spec, session))
    assert source_text == "parameters of the model's config" and coefficient == training_flops(model, 1.0)
