"""Autoregressive generation for a causal language model, over the layers' decode-mode caches.

:func:`generate` builds the model's cache (decode mode, see the custom-layer guide), runs the
prompt through the model in one call ("prefill", positions ``0 .. P-1``), then feeds back one
token per step inside a ``jax.lax.scan``: each token costs one step over the cache, never a re-run
of the prefix, and the whole loop is one compiled function per (batch, prompt length, steps).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from funcnet.core import Array, Key, Layer, Params, State, spec
from funcnet.training.cache import cached

__all__ = ["generate"]


def _check_arguments(prompt: Array, steps: Any, temperature: Any, top_k: Any) -> None:
    if not jnp.issubdtype(prompt.dtype, jnp.integer) or prompt.ndim != 2:
        raise ValueError(f"generate: `prompt` must be int token ids of shape (batch, prompt_length), got "
                         f"{prompt.dtype} of shape {tuple(prompt.shape)}; for one sequence use prompt[None].")
    if prompt.shape[1] < 1:
        raise ValueError("generate: `prompt` must hold at least one token per sequence, got prompt_length 0.")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"generate: `steps` must be a non-negative int (tokens to add), got {steps!r}.")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"generate: `temperature` must be a number >= 0 (0 = greedy), got {temperature!r}.")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"generate: `top_k` must be a positive int or None, got {top_k!r}.")


def sample(logits: Array, key: Key, temperature: float, top_k: int | None) -> Array:
    """Draws one token per row of ``logits`` ``(N, V)``: int32 ``(N,)``.

    ``temperature == 0`` is the argmax (no key used); otherwise ``jax.random.categorical`` of
    ``logits / temperature``, restricted to the ``top_k`` largest logits when ``top_k`` is given
    (ties at the k-th value are all kept).
    """
    logits = logits.astype(jnp.float32)
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits / temperature, axis=-1).astype(jnp.int32)


def _check_logits(logits: Any, prompt: Array, top_k: int | None) -> None:
    if not hasattr(logits, "shape") or logits.ndim != 3 or logits.shape[:2] != prompt.shape:
        shown = tuple(logits.shape) if hasattr(logits, "shape") else type(logits).__name__
        raise ValueError(f"generate: the model must map token ids {tuple(prompt.shape)} to logits (N, T, vocab), "
                         f"got {shown}.")
    if top_k is not None and top_k > logits.shape[-1]:
        raise ValueError(f"generate: `top_k` ({top_k}) exceeds the vocabulary size ({logits.shape[-1]}).")


def _decode_state(model: Layer, state: State, prompt: Array, total: int) -> State:
    """The state decode mode runs on: the cache init makes for ``total`` positions, every entry the
    trained state also has (BatchNorm statistics, say) taken from it."""
    context = {"decode": jax.ShapeDtypeStruct((prompt.shape[0], total), jnp.int32)}
    _, _, fresh = model.init(jax.random.key(0), spec((None, prompt.shape[1]), prompt.dtype), context=context)
    trained = {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state)}
    fresh_paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(fresh)]
    if all(path in trained for path in fresh_paths):
        raise ValueError(
            "generate: the model keeps no cache in decode mode (init with context={'decode': ...} adds no state "
            "entry), so no layer in it reads the earlier tokens step by step; a causal language model decodes "
            "through MultiHeadAttention(causal=True) or a layer of your own (see the custom-layer guide).")
    leaves = [trained.get(path, leaf) for path, leaf in zip(fresh_paths, jax.tree.leaves(fresh), strict=True)]
    return jax.tree.unflatten(jax.tree.structure(fresh), leaves)


def _build(model: Layer, steps: int, temperature: float, top_k: int | None) -> Any:
    """The jitted ``(params, state, prompt, key) -> tokens`` for this model and these options."""

    def run(params: Params, state: State, prompt: Array, key: Key) -> Array:
        total = prompt.shape[1] + steps
        cache = _decode_state(model, state, prompt, total)
        keys = jax.random.split(key, steps)
        # Prefill: the whole prompt in one call, positions 0 .. P-1; its last logits give token P.
        logits, cache = model.apply(params, cache, prompt, context={"decode": jnp.int32(0)})
        _check_logits(logits, prompt, top_k)
        first = sample(logits[:, -1], keys[0], temperature, top_k)

        def step(carry: tuple[Array, State], inputs: tuple[Array, Key]) -> tuple[tuple[Array, State], Array]:
            token, cache = carry
            position, step_key = inputs
            logits, cache = model.apply(params, cache, token[:, None], context={"decode": position})
            following = sample(logits[:, -1], step_key, temperature, top_k)
            return (following, cache), following

        positions = prompt.shape[1] + jnp.arange(steps - 1, dtype=jnp.int32)
        _, rest = jax.lax.scan(step, (first, cache), (positions, keys[1:]))
        return jnp.concatenate([prompt.astype(jnp.int32), first[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)

    return jax.jit(run)


def generate(model: Layer, params: Params, state: State, prompt: Array, steps: int, key: Key | None, *,
             temperature: float = 1.0, top_k: int | None = None) -> Array:
    """Extends ``prompt`` by ``steps`` tokens, each drawn from the model's logits for the next position.

    The model maps int token ids ``(N, T)`` to logits ``(N, T, V)`` and has at least one layer
    that decodes with a cache (``MultiHeadAttention(causal=True)``; see "A layer that decodes
    step by step" in the custom-layer guide). ``generate`` makes the cache with
    ``init(..., context={"decode": ShapeDtypeStruct((N, P + steps), int32)})``, keeps the entries
    of ``state`` that are not cache, prefills the prompt in one call at position 0, then runs one
    step per token in a ``jax.lax.scan``. It compiles once per batch size, prompt length,
    ``steps``, ``temperature`` and ``top_k`` (never per token); calling it again with other params,
    prompts of the same shape or another key reuses the compiled code.

    Args:
        model: the language model.
        params: its trained params.
        state: its training state (as ``init`` without decode mode made it, or ``fit`` returned).
        prompt: int token ids ``(N, P)``, ``P >= 1``.
        steps: how many tokens to add.
        key: a ``jax.random`` key; token ``i`` (0-based among the new ones) is drawn with
            ``jax.random.split(key, steps)[i]``. Unused (may be None) when ``temperature`` is 0.
        temperature: divides the logits before sampling; 0 takes the most likely token (greedy).
        top_k: sample among the ``top_k`` most likely tokens only (None: all).

    Returns:
        int32 ``(N, P + steps)``: the prompt followed by the new tokens.

    Raises:
        ValueError: for a prompt that is not int ``(N, P)``, a negative ``steps`` or
            ``temperature``, a ``top_k`` that is not a positive int, or a model with no layer that
            keeps a cache in decode mode.
    """
    prompt = jnp.asarray(prompt)
    _check_arguments(prompt, steps, temperature, top_k)
    if steps == 0:
        return prompt.astype(jnp.int32)
    if key is None:
        if temperature != 0:
            raise ValueError("generate: sampling with temperature > 0 needs a `key` (jax.random.key(seed)); "
                             "pass temperature=0 for greedy decoding without one.")
        key = jax.random.key(0)
    temperature = float(temperature)
    run = cached(("generate", model.init, model.apply, steps, temperature, top_k),
                 lambda: _build(model, steps, temperature, top_k))
    return run(params, state, prompt, key)
