"""Pieces the built-in strategies share: prompt/answer encoding and answer-word scoring."""

from __future__ import annotations

from typing import Any

from stmbench.modeling import batches, model_device, pad_batch

IGNORE_INDEX = -100


def encode_pairs(tokenizer: Any, contexts: list[str], continuations: list[str], max_len: int) -> list[tuple[list[int], list[int]]]:
    """Token ids of each (context, continuation), split the way lm-eval splits them: encode the
    whole string and the context, the continuation is the rest.  Trailing spaces of the context move
    to the continuation.  The context is cut from the left to fit ``max_len``."""
    ctx_texts, whole_texts = [], []
    for ctx, cont in zip(contexts, continuations):
        n_spaces = len(ctx) - len(ctx.rstrip())
        if n_spaces:
            ctx, cont = ctx[:-n_spaces], ctx[-n_spaces:] + cont
        ctx_texts.append(ctx)
        whole_texts.append(ctx + cont)
    ctx_ids = tokenizer(ctx_texts)["input_ids"]
    whole_ids = tokenizer(whole_texts)["input_ids"]
    out = []
    for c, w in zip(ctx_ids, whole_ids):
        cont_ids = w[len(c):]
        room = max(1, max_len - len(cont_ids))
        out.append((list(c[-room:]), list(cont_ids)))
    return out


def forward_logits(model: Any, input_ids: Any, attention_mask: Any) -> Any:
    """Logits aligned with ``input_ids`` (soft-prompt methods prepend virtual positions: cut them)."""
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    logits = out.logits
    extra = logits.shape[1] - input_ids.shape[1]
    return logits[:, extra:] if extra > 0 else logits


def score_choices(model: Any, tokenizer: Any, contexts: list[str], choices: list[str], *,
                  max_len: int, batch_size: int, mode: str = "auto") -> tuple[list[list[float]], str]:
    """Log-likelihood of every choice after every context: ``scores[i][k]``.

    When every choice is one token after every context, one forward pass per context scores all
    choices at the answer position.  Otherwise each (context, choice) is scored as a sequence, the
    sum of its tokens' log-probabilities, exactly as lm-eval's ``acc`` does.  Returns the scores and
    the mode used (``first_token`` or ``sequence``); ``mode="sequence"`` forces sequence scoring.
    """
    import torch

    n = len(contexts)
    encoded = [encode_pairs(tokenizer, contexts, [c] * n, max_len) for c in choices]
    single = mode != "sequence" and all(len(enc[i][1]) == 1 for enc in encoded for i in range(n))
    device = model_device(model)
    pad = tokenizer.pad_token_id
    scores = [[0.0] * len(choices) for _ in range(n)]
    model.eval()
    with torch.inference_mode():
        if single:
            # contexts can differ per choice only through left truncation, absent when all are 1 token
            for idx in batches(list(range(n)), batch_size):
                ctx = [encoded[0][i][0] for i in idx]
                ids, mask = pad_batch(ctx, pad, "right")
                logits = forward_logits(model, ids.to(device), mask.to(device))
                last = torch.tensor([len(c) - 1 for c in ctx], device=device)
                # the answer position only, then float32: not a float32 copy of [batch, length, vocab]
                logp = torch.log_softmax(logits[torch.arange(len(idx), device=device), last].float(), dim=-1)
                for k, enc in enumerate(encoded):
                    tok = torch.tensor([enc[i][1][0] for i in idx], device=device)
                    vals = logp.gather(1, tok[:, None])[:, 0].tolist()
                    for j, i in enumerate(idx):
                        scores[i][k] = vals[j]
            return scores, "first_token"
        jobs = [(i, k) for k in range(len(choices)) for i in range(n)]
        for chunk in batches(jobs, batch_size):
            seqs = [encoded[k][i][0] + encoded[k][i][1] for i, k in chunk]
            ids, mask = pad_batch(seqs, pad, "right")
            logits = forward_logits(model, ids.to(device), mask.to(device))
            for row, (i, k) in enumerate(chunk):
                ctx_len, cont = len(encoded[k][i][0]), encoded[k][i][1]
                positions = torch.arange(ctx_len - 1, ctx_len - 1 + len(cont), device=device)
                tok = torch.tensor(cont, device=device)
                # the continuation's positions only, then float32 (log_softmax is per position)
                logp = torch.log_softmax(logits[row, positions].float(), dim=-1)
                scores[i][k] = float(logp[torch.arange(len(cont), device=device), tok].sum())
        return scores, "sequence"


def argmax(row: list[float]) -> int:
    return max(range(len(row)), key=row.__getitem__)


def rows(data: Any) -> list[dict[str, Any]]:
    """A ``datasets.Dataset`` as a list of dicts."""
    return data.to_list()
