"""Pieces the built-in strategies share: prompt/answer encoding and answer-word scoring."""

from __future__ import annotations

from typing import Any

from stmbench import keeps_logits, model_device, pad_batch, PaddingMeter, sorted_batches, TokenBudget


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
                  max_len: int, batch_size: int | TokenBudget, mode: str = "auto",
                  meter: PaddingMeter | None = None) -> tuple[list[list[float]], str]:
    """Log-likelihood of every choice after every context: ``scores[i][k]``.

    When every choice is one token after every context, one forward pass per context scores all
    choices at the answer position.  Otherwise each (context, choice) is scored as a sequence, the
    sum of its tokens' log-probabilities, exactly as lm-eval's ``acc`` does.  Returns the scores and
    the mode used (``first_token`` or ``sequence``); ``mode="sequence"`` forces sequence scoring.

    Batches are length-sorted (longest first; scores land at their own index), and where the model
    takes ``logits_to_keep`` only the scored positions are projected onto the vocabulary.
    ``meter`` counts real against processed tokens.
    """
    return score_requests(model, tokenizer, [[(ctx, c) for c in choices] for ctx in contexts], max_len=max_len,
                          batch_size=batch_size, mode=mode, meter=meter)


def score_requests(model: Any, tokenizer: Any, requests: list[list[tuple[str, str]]], *, max_len: int,
                   batch_size: int | TokenBudget, mode: str = "auto",
                   meter: PaddingMeter | None = None) -> tuple[list[list[float]], str]:
    """``scores[i][k]``: the log-likelihood of continuation k after context k of example i (lm-eval's
    ``loglikelihood`` requests, grouped by example), each pair encoded as lm-eval encodes it and cut
    from the left to ``max_len`` tokens.  One forward pass per example when its choices share the
    context and are one token each (``first_token``), else one per pair (``sequence``)."""
    flat = [pair for choices in requests for pair in choices]
    encoded = encode_pairs(tokenizer, [c for c, _ in flat], [x for _, x in flat], max_len)
    per_example, at = [], 0
    for choices in requests:
        per_example.append(encoded[at:at + len(choices)])
        at += len(choices)
    scores = [[0.0] * len(choices) for choices in requests]
    single = mode != "sequence" and all(
        len(cont) == 1 and ctx == pairs[0][0] for pairs in per_example for ctx, cont in pairs)
    if single:
        _score_first_tokens(model, tokenizer.pad_token_id, [pairs[0][0] for pairs in per_example],
                            [[cont[0] for _, cont in pairs] for pairs in per_example], scores,
                            batch_size=batch_size, meter=meter)
        return scores, "first_token"
    shared = mode != "sequence" and caches_keys(model) and all(
        ctx == pairs[0][0] for pairs in per_example for ctx, _ in pairs)
    if shared:
        _score_shared_contexts(model, tokenizer.pad_token_id, per_example, scores, batch_size=batch_size, meter=meter)
        return scores, "shared_context"
    jobs = [(i, k, ctx, cont) for i, pairs in enumerate(per_example) for k, (ctx, cont) in enumerate(pairs)]
    _score_sequences(model, tokenizer.pad_token_id, jobs, scores, batch_size=batch_size, meter=meter)
    return scores, "sequence"


def caches_keys(model: Any) -> bool:
    """Whether ``model`` can run a context once and its continuations on the context's key/value cache:
    a transformers causal LM (or a LoRA-style adapter on one) that takes ``past_key_values``, not a
    soft-prompt method (whose virtual tokens are a cache of their own: ``keeps_logits`` refuses them)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    can_generate = getattr(inner, "can_generate", None)
    return keeps_logits(model) and callable(can_generate) and bool(can_generate())


def _score_first_tokens(model: Any, pad: int, contexts: list[list[int]], tokens: list[list[int]],
                        scores: list[list[float]], *, batch_size: int | TokenBudget, meter: PaddingMeter | None) -> None:
    """``scores[i][k]``: log-probability of ``tokens[i][k]`` right after ``contexts[i]``."""
    import torch

    device = model_device(model)
    keep = keeps_logits(model)
    model.eval()
    with torch.inference_mode():
        for idx in sorted_batches([len(c) for c in contexts], batch_size):
            ctx = [contexts[i] for i in idx]
            ids, mask = pad_batch(ctx, pad, "right")
            if meter is not None:
                meter.add_mask(mask)
            last = torch.tensor([len(c) - 1 for c in ctx], device=device)
            if keep:  # project the answer position only
                out = model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=last[:, None])
                answer = out.logits[:, 0]
            else:
                answer = forward_logits(model, ids.to(device), mask.to(device))[torch.arange(len(idx), device=device), last]
            logp = torch.log_softmax(answer.float(), dim=-1)  # float32 of [batch, vocab] only
            tok = torch.tensor([tokens[i] for i in idx], device=device)
            for j, i in enumerate(idx):
                scores[i] = logp[j].gather(0, tok[j]).tolist()


def _score_sequences(model: Any, pad: int, jobs: list[tuple[int, int, list[int], list[int]]],
                     scores: list[list[float]], *, batch_size: int | TokenBudget, meter: PaddingMeter | None) -> None:
    """``scores[i][k]``: summed log-probability of each job's continuation after its context."""
    import torch

    device = model_device(model)
    keep = keeps_logits(model)
    model.eval()
    with torch.inference_mode():
        # the input is context + continuation without its last token (whose prediction is never read)
        for chunk in sorted_batches([len(ctx) + len(cont) for _, _, ctx, cont in jobs], batch_size):
            batch = [jobs[j] for j in chunk]
            ids, mask = pad_batch([(ctx + cont)[:-1] for _, _, ctx, cont in batch], pad, "right")
            if meter is not None:
                meter.add_mask(mask)
            if keep:  # project the continuation's positions only: [scored positions, vocab]
                wanted = torch.zeros_like(mask, dtype=torch.bool)
                for row, (_, _, ctx, cont) in enumerate(batch):
                    wanted[row, len(ctx) - 1:len(ctx) - 1 + len(cont)] = True
                out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                            logits_to_keep=wanted.to(device))
                kept, offset = out.logits, 0
            else:
                logits = forward_logits(model, ids.to(device), mask.to(device))
            for row, (i, k, ctx, cont) in enumerate(batch):
                if keep:
                    picked, offset = kept[offset:offset + len(cont)], offset + len(cont)
                else:
                    picked = logits[row, len(ctx) - 1:len(ctx) - 1 + len(cont)]
                # float32 of the continuation's positions only (log_softmax is per position)
                logp = torch.log_softmax(picked.float(), dim=-1)
                tok = torch.tensor(cont, device=device)
                scores[i][k] = float(logp[torch.arange(len(cont), device=device), tok].sum())


def _score_shared_contexts(model: Any, pad: int, per_example: list[list[tuple[list[int], list[int]]]],
                           scores: list[list[float]], *, batch_size: int | TokenBudget,
                           meter: PaddingMeter | None) -> None:
    """``scores[i][k]``: the summed log-probability of continuation k after example i's context, with
    the context run once for all its continuations: a forward pass over the contexts (left-padded,
    position ids counted from each one's first real token, so every token sits where an unpadded
    pass puts it) whose key/value cache is then repeated for each continuation, and one pass over
    the continuations (all but their last token) on it.  The first continuation token is scored at
    the context's last position, the rest at their own: lm-eval's ``loglikelihood`` with each
    context computed once instead of once per choice."""
    import inspect

    import torch

    device = model_device(model)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    cache_arg = "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"  # transformers 5.24+
    model.eval()
    with torch.inference_mode():
        for idx in sorted_batches([len(pairs[0][0]) for pairs in per_example], batch_size):
            contexts = [per_example[i][0][0] for i in idx]
            ids, mask = pad_batch(contexts, pad, "left")
            if meter is not None:
                meter.add_mask(mask)
            ids, mask = ids.to(device), mask.to(device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
            first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [contexts, vocab]
            choices = [len(per_example[i]) for i in idx]
            conts = [cont for i in idx for _, cont in per_example[i]]
            owner = torch.repeat_interleave(torch.arange(len(idx), device=device), torch.tensor(choices, device=device))
            firsts = first[owner, torch.tensor([c[0] for c in conts], device=device)]
            rest_scores = torch.zeros(len(conts), device=device)
            if any(len(c) > 1 for c in conts):
                cache = getattr(out, "cache", None) or out.past_key_values
                if choices.count(choices[0]) == len(choices):
                    cache.batch_repeat_interleave(choices[0])
                else:  # examples with different numbers of choices: gather the cache rows
                    cache.batch_select_indices(owner)
                tails = [c[:-1] for c in conts]  # inputs: every continuation token whose successor is scored
                width = max(len(t) for t in tails)
                tail_ids, tail_mask = pad_batch([t if t else [pad] for t in tails], pad, "right")
                tail_mask[[j for j, t in enumerate(tails) if not t]] = 0
                tail_ids, tail_mask = tail_ids.to(device), tail_mask.to(device)
                if meter is not None:
                    meter.add_mask(tail_mask)
                full_mask = torch.cat([mask[owner], tail_mask], dim=1)
                tail_positions = mask.sum(-1)[owner, None] + torch.arange(width, device=device)[None]
                logits = model(input_ids=tail_ids, attention_mask=full_mask, position_ids=tail_positions,
                               use_cache=True, **{cache_arg: cache}).logits
                logp = torch.log_softmax(logits.float(), dim=-1)  # [choices, width, vocab]: short continuations
                for j, cont in enumerate(conts):
                    if len(cont) > 1:
                        targets = torch.tensor(cont[1:], device=device)
                        rest_scores[j] = logp[j, torch.arange(len(cont) - 1, device=device), targets].sum()
            totals = (firsts + rest_scores).tolist()
            at = 0
            for i, n in zip(idx, choices):
                scores[i] = totals[at:at + n]
                at += n


def argmax(row: list[float]) -> int:
    return max(range(len(row)), key=row.__getitem__)


def rows(data: Any) -> list[dict[str, Any]]:
    """A ``datasets.Dataset`` as a list of dicts."""
    return data.to_list()
