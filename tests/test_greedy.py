"""``engine.model.greedy.greedy_decode`` against ``transformers``' own greedy generation, on a
tiny random Llama (no download): same tokens, also when rows finish early and leave the batch."""

import pytest


def test_greedy_decode_matches_transformers_generate():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from engine.model.greedy import greedy_decode

    config = transformers.LlamaConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    lm = transformers.LlamaForCausalLM(config).eval()
    embeds = torch.randn(12, 7, 32)
    with torch.inference_mode():
        free = greedy_decode(lm, embeds, 20, eos_token_id=-1)
        # an end token that some rows write early and others late or never
        counts = torch.bincount(torch.tensor([row[5] for row in free]), minlength=40)
        eos = int(counts.argmax())
        ours = greedy_decode(lm, embeds, 20, eos_token_id=eos)
        theirs = lm.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
            max_new_tokens=20,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos,
        ).tolist()
    expected = [row[: row.index(eos)] if eos in row else row for row in theirs]
    assert all(len(row) == 20 for row in free)
    assert ours == expected
    assert any(len(row) < 20 for row in ours) and any(len(row) > 5 for row in ours)
