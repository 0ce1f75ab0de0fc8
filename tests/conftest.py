"""Shared fixtures.  Every test runs offline (no hub), with its own results folder."""

from __future__ import annotations

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
