"""The ``openai`` teacher: any OpenAI-compatible chat-completions endpoint writes the rationales, through
the official ``openai`` client (vLLM, llama.cpp's server, Ollama, TGI, ``transformers serve``, or a
hosted API).

``--teacher "openai[model=NAME,base_url=http://127.0.0.1:8000/v1,api_key_env=MY_KEY]"``.  The API
key is read from the environment variable the user names (``api_key_env``; empty for a local server
that needs none) and is never stored.  Requests go ``concurrency`` at a time; the client's own retries
with exponential backoff cover 429 and 5xx answers and dropped connections (``max_retries``), each
attempt bounded by ``timeout`` seconds.  An answer whose ``finish_reason`` is ``length`` is truncated
(counted ``too_long``).  ``pip install "stmbench[openai]"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from stmbench import hookimpl, StmbenchError, Teacher, TeacherAnswer, TeacherOptions, TeacherRequest

INSTALL = 'the openai teacher needs the openai package: pip install "stmbench[openai]"'
PREFLIGHT_TIMEOUT = 10.0  #: seconds the pre-flight check waits for the server


@dataclass
class OpenAITeacherOptions(TeacherOptions):
    model: str = field(default="", metadata={"help": "the model name the server knows"})
    base_url: str = field(default="https://api.openai.com/v1", metadata={"help": "the server's /v1 address"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "help": "the environment variable that holds the API key ('' for a server that needs none)"})
    max_new_tokens: int = field(default=128, metadata={"help": "length budget of one rationale, in tokens"})
    temperature: float = field(default=0.0, metadata={"help": "0: greedy"})
    concurrency: int = field(default=4, metadata={"help": "requests in flight at once"})
    timeout: float = field(default=60.0, metadata={"help": "seconds one attempt may take"})
    max_retries: int = field(default=5, metadata={"help": "retries (with backoff) on 429, 5xx and dropped connections"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("the openai teacher needs model=NAME")
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http:// or https:// address")
        if not 1 <= self.max_new_tokens <= 32768:
            raise ValueError("max_new_tokens must be between 1 and 32768")
        if not 1 <= self.concurrency <= 256:
            raise ValueError("concurrency must be between 1 and 256")
        if self.timeout <= 0 or self.max_retries < 0 or self.temperature < 0:
            raise ValueError("timeout must be positive, max_retries and temperature not negative")


def _key(options: Any) -> str:
    if not options.api_key_env:
        return "not-needed"  # the client insists on a key; a local server ignores it
    value = os.environ.get(options.api_key_env)
    if not value:
        raise StmbenchError(f"teacher openai: the environment variable {options.api_key_env} (api_key_env) is not "
                            "set; export it, or pass api_key_env= for a server that needs no key")
    return value


def client(options: Any, *, timeout: float | None = None, max_retries: int | None = None) -> Any:
    try:
        import openai
    except ImportError:
        raise StmbenchError(INSTALL) from None
    return openai.OpenAI(base_url=options.base_url, api_key=_key(options),
                         timeout=options.timeout if timeout is None else timeout,
                         max_retries=options.max_retries if max_retries is None else max_retries)


class OpenAITeacher(Teacher):
    name = "openai"
    description = "an OpenAI-compatible server (vLLM, llama.cpp, Ollama, TGI, transformers serve, a hosted API)"
    options_class = OpenAITeacherOptions
    runtime_options = ("api_key_env", "concurrency", "timeout", "max_retries")

    def preflight(self, options: Any, context: Any) -> str | None:
        """The key's variable is set, the server answers, and it serves the model."""
        try:
            import openai
        except ImportError:
            return INSTALL

        try:
            api = client(options, timeout=PREFLIGHT_TIMEOUT, max_retries=1)
            served = [m.id for m in api.models.list()]
        except StmbenchError as exc:
            return str(exc)
        except openai.AuthenticationError as exc:
            return f"teacher openai: {options.base_url} refused the key in {options.api_key_env} ({exc.status_code})"
        except openai.APIConnectionError as exc:
            return f"teacher openai: cannot reach {options.base_url} ({exc.__cause__ or exc})"
        except openai.APIError as exc:
            return f"teacher openai: {options.base_url}/models failed: {exc}"
        if options.model in served:
            return None
        try:  # some servers list only part of what they serve: ask for one token
            api.chat.completions.create(model=options.model, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
        except openai.APIError as exc:
            shown = ", ".join(served[:10]) + (" ..." if len(served) > 10 else "")
            return (f"teacher openai: {options.base_url} does not serve model {options.model!r} "
                    f"({type(exc).__name__}); it lists: {shown or 'nothing'}")
        return None

    def generate(self, requests: list[TeacherRequest], *, task: Any, options: Any,
                 context: Any) -> Iterator[list[TeacherAnswer]]:
        api = client(options)  # says how to install openai where it is missing
        import openai

        def ask(request: TeacherRequest) -> TeacherAnswer:
            try:
                reply = api.chat.completions.create(model=options.model, messages=list(request.messages),
                                                    max_tokens=request.max_new_tokens,
                                                    temperature=options.temperature)
            except openai.APIError as exc:
                raise StmbenchError(f"teacher openai ({options.base_url}, model {options.model!r}): {exc}") from None
            choice = reply.choices[0]
            return TeacherAnswer(text=(choice.message.content or "").strip(), truncated=choice.finish_reason == "length")

        chunk = max(1, options.concurrency) * 4
        with ThreadPoolExecutor(max_workers=options.concurrency) as pool:
            for start in range(0, len(requests), chunk):
                yield list(pool.map(ask, requests[start:start + chunk]))


@hookimpl
def register_teachers(register):
    register(OpenAITeacher())
