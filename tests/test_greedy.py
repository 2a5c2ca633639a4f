"""``engine.model.greedy.greedy_decode`` against ``transformers``' own greedy generation, on a
tiny random Llama (no download): same tokens, also when rows finish early and leave the batch."""

import functools

import pytest


def _tiny_llama(torch, transformers, seed: int):
    """A 2-layer random Llama (vocabulary 40, hidden 32, grouped KV heads), seeded."""
    config = transformers.LlamaConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config).eval()


def _generate(torch, lm, embeds, max_new_tokens: int, **options) -> list[list[int]]:
    """``transformers``' own greedy generation from ``embeds`` (no padding)."""
    mask = torch.ones(embeds.shape[:2], dtype=torch.long)
    out = lm.generate(
        inputs_embeds=embeds,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        **options,
    )
    return out.tolist()


@pytest.mark.filterwarnings("ignore:Passing `no_repeat_ngram_size`")
@pytest.mark.parametrize("no_repeat", [0, 3])
def test_greedy_decode_matches_transformers_generate(no_repeat):
    """The same tokens as ``transformers.generate``, also with its ``no_repeat_ngram_size``
    (a row's own words repeat no run of ``no_repeat`` tokens; without it they do)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from engine.model.greedy import greedy_decode, repeating

    lm = _tiny_llama(torch, transformers, seed=0)
    embeds = torch.randn(12, 7, 32)
    with torch.inference_mode():
        free = greedy_decode(lm, embeds, 20, eos_token_id=-1)
        # an end token that some rows write early and others late or never
        counts = torch.bincount(torch.tensor([row[5] for row in free]), minlength=40)
        eos = int(counts.argmax())
        ours = greedy_decode(lm, embeds, 20, eos_token_id=eos, no_repeat=no_repeat)
        theirs = _generate(
            torch,
            lm,
            embeds,
            20,
            eos_token_id=eos,
            pad_token_id=eos,
            no_repeat_ngram_size=no_repeat,
        )
    expected = [row[: row.index(eos)] if eos in row else row for row in theirs]
    assert all(len(row) == 20 for row in free)
    assert ours == expected
    assert any(len(row) < 20 for row in ours) and any(len(row) > 5 for row in ours)
    if no_repeat:
        assert any(row[i] in repeating(row[:i], no_repeat) for row in free for i in range(len(row)))
        assert not any(
            row[i] in repeating(row[:i], no_repeat) for row in ours for i in range(len(row))
        )


def test_repeating_names_the_tokens_that_would_repeat_a_run():
    from engine.model.greedy import repeating

    assert repeating([5, 6, 7, 5, 6], 3) == [7]
    assert repeating([5, 6, 7, 5, 6, 9, 5, 6], 3) == [7, 9]
    assert repeating([5, 6, 7, 5], 1) == [5, 6, 7]
    assert repeating([5, 6], 3) == [] and repeating([5, 6, 5], 0) == []


@pytest.mark.parametrize(("shared", "no_repeat"), [(0, 0), (3, 0), (0, 2)])
def test_prefixes_of_different_lengths_decode_as_if_each_row_were_alone(shared, no_repeat):
    """Rows that begin their answers with given tokens (shorter ones padded, masked and skipped
    by the positions) write what each would write alone, its prompt + prefix unpadded; a
    prompt beginning that all rows share (``shared`` positions) is read once for all. With
    ``no_repeat``, runs of the prefix's tokens may be repeated (as a prompt's may)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from engine.model.greedy import greedy_decode

    lm = _tiny_llama(torch, transformers, seed=1)
    embeds = torch.randn(9, 6, 32)
    embeds[:, :shared] = embeds[:1, :shared]
    prefixes = [[int(t) for t in torch.randint(0, 40, (length,))] for length in range(9)]
    with torch.inference_mode():
        batched = greedy_decode(lm, embeds, 12, 7, prefixes=prefixes, no_repeat=no_repeat)
        alone = []
        for row, prefix in enumerate(prefixes):
            tokens = lm.get_input_embeddings()(torch.tensor([prefix], dtype=torch.long))
            joined = torch.cat([embeds[row : row + 1], tokens], dim=1)
            alone.append(prefix + greedy_decode(lm, joined, 12, 7, no_repeat=no_repeat)[0])
    assert batched == alone
    if no_repeat:  # some row's own words repeat a pair of its prefix
        own = [
            (set(zip(p, p[1:], strict=False)), row[len(p) :])
            for p, row in zip(prefixes, batched, strict=True)
        ]
        assert any(set(zip(o, o[1:], strict=False)) & pairs for pairs, o in own)
    assert any(len(row) < len(prefix) + 12 for row, prefix in zip(batched, prefixes, strict=True))


def test_a_row_with_one_ending_left_is_finished_without_decoding_it():
    """Where ``ending`` names the tokens that must end a row, they are appended at once: the
    row writes what it wrote before, then the ending, and costs no further steps."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from engine.model.greedy import greedy_decode

    lm = _tiny_llama(torch, transformers, seed=2)
    embeds = torch.randn(4, 5, 32)
    forward = lm.forward
    calls = []

    @functools.wraps(forward)
    def counted(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    lm.forward = counted
    with torch.inference_mode():
        free = greedy_decode(lm, embeds, 10, eos_token_id=-1)
        free_calls = len(calls)
        calls.clear()
        ended = greedy_decode(
            lm, embeds, 10, eos_token_id=-1, ending=lambda row, ids: [1, 2] if len(ids) == 3 else []
        )
    assert ended == [row[:3] + [1, 2] for row in free]
    assert len(calls) == 3 < free_calls


@pytest.mark.parametrize("with_prefixes", [False, True])
def test_a_beginning_read_already_is_not_read_again(with_prefixes):
    """Rows whose prompt beginnings were read already (for another question about the same
    input) write what they write when the whole prompt is read."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from engine.model.greedy import Beginning, cache_keyword, greedy_decode

    lm = _tiny_llama(torch, transformers, seed=3)
    embeds = torch.randn(5, 7, 32)
    prefixes = [[int(t) for t in torch.randint(0, 40, (n,))] for n in (0, 3, 1, 4, 2)]
    prefixes = prefixes if with_prefixes else None
    with torch.inference_mode():
        whole = greedy_decode(lm, embeds, 10, eos_token_id=7, prefixes=prefixes)
        cache = transformers.DynamicCache()
        lm(inputs_embeds=embeds[:, :4], use_cache=True, **{cache_keyword(lm): cache})
        calls, forward = [], lm.forward

        @functools.wraps(forward)
        def recorded(*args, **kwargs):
            calls.append(kwargs)
            return forward(*args, **kwargs)

        lm.forward = recorded
        again = greedy_decode(
            lm, embeds, 10, eos_token_id=7, prefixes=prefixes, read=Beginning(cache, 4)
        )
    assert again == whole
    assert calls[0]["inputs_embeds"].shape[1] == 3 + (4 if with_prefixes else 0)
    with pytest.raises(ValueError, match="read beginning"):
        greedy_decode(lm, embeds, 10, eos_token_id=7, read=Beginning(cache, 7))


def test_a_beginning_read_in_groups_holds_the_keys_of_one_pass():
    """``read_beginning`` reads the positions all rows share once and the rest in groups of
    ``PREFILL_GROUP`` rows, and keeps the keys and values one pass over every row gives."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from engine.model.greedy import PREFILL_GROUP, cache_keyword, read_beginning

    lm = _tiny_llama(torch, transformers, seed=4)
    rows = PREFILL_GROUP * 2 + 3
    embeds = torch.randn(rows, 9, 32)
    embeds[:, :3] = embeds[:1, :3]  # a beginning every row shares
    with torch.inference_mode():
        whole = transformers.DynamicCache()
        lm(inputs_embeds=embeds[:, :6], use_cache=True, **{cache_keyword(lm): whole})
        calls, forward = [], lm.forward

        @functools.wraps(forward)
        def recorded(*args, **kwargs):
            calls.append(kwargs["inputs_embeds"].shape[:2])
            return forward(*args, **kwargs)

        lm.forward = recorded
        read = read_beginning(lm, embeds, 6)
    assert read.length == 6
    assert calls == [(1, 3), (PREFILL_GROUP, 3), (PREFILL_GROUP, 3), (3, 3)]
    for mine, theirs in zip(read.cache.layers, whole.layers, strict=True):
        torch.testing.assert_close(mine.keys, theirs.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mine.values, theirs.values, rtol=1e-5, atol=1e-5)


def test_the_bfloat16_copy_reads_as_the_lm_with_bfloat16_keys_and_grouped_heads():
    """``bfloat16_copy``: bfloat16 weights and KV cache, grouped key/value heads passed to the
    attention kernel unrepeated (the same logits as repeating them), logits close to the
    float32 LM's under autocast, also read in two passes; the LM itself unchanged."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from engine.model.bfloat16 import GROUPED_ATTENTION, bfloat16_copy
    from engine.model.greedy import cache_keyword

    lm = _tiny_llama(torch, transformers, seed=5)
    half = bfloat16_copy(lm)
    assert half.config._attn_implementation == GROUPED_ATTENTION
    assert lm.config._attn_implementation == "sdpa"
    assert lm.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
    assert half.model.layers[0].mlp.down_proj.weight.dtype == torch.bfloat16
    embeds = torch.randn(3, 9, 32)
    name = cache_keyword(lm)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        theirs = lm(inputs_embeds=embeds).logits.float()
        ours = half(inputs_embeds=embeds).logits.float()
        cache = transformers.DynamicCache()
        half(inputs_embeds=embeds[:, :4], use_cache=True, **{name: cache})
        rest = half(inputs_embeds=embeds[:, 4:], use_cache=True, **{name: cache}).logits.float()
        half.set_attn_implementation("sdpa")  # transformers' own: keys repeated per head
        repeated = half(inputs_embeds=embeds).logits.float()
    assert cache.layers[0].keys.dtype == cache.layers[0].values.dtype == torch.bfloat16
    torch.testing.assert_close(ours, repeated, rtol=0, atol=1e-6)
    torch.testing.assert_close(rest, ours[:, 4:], rtol=0, atol=0.05)
    scale = theirs.abs().max()
    assert (ours - theirs).abs().max() < 0.05 * scale
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() > 0.9
