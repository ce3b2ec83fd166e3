"""Embedded models and the tiny random model the unit tests use."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from empathy_recipes.chat_templates import has_generation_markers
from empathy_recipes.errors import EmpathyRecipesError
from empathy_recipes.models import resolve_model_ref

ED_CONTEXT = [
    {"role": "user", "content": "i just found out my best friend is moving across the country . i am so sad ."}
]


def test_tiny_model_loads_and_has_training_template(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert has_generation_markers(tok.chat_template)
    out = tok.apply_chat_template(
        ED_CONTEXT + [{"role": "assistant", "content": "oh no"}], return_dict=True, return_assistant_tokens_mask=True
    )
    assert 0 < sum(out["assistant_masks"]) < len(out["input_ids"])


def test_resolve_model_ref(tiny_model_dir, tmp_path):
    assert resolve_model_ref(tiny_model_dir) == str(tiny_model_dir)
    assert resolve_model_ref("meta-llama/Meta-Llama-3-8B-Instruct") == "meta-llama/Meta-Llama-3-8B-Instruct"
    with pytest.raises(EmpathyRecipesError, match="holds no model"):
        resolve_model_ref(tmp_path)
    with pytest.raises(EmpathyRecipesError, match="neither an existing local folder"):
        resolve_model_ref("./no/such/model")


@pytest.mark.integration
def test_embedded_smollm2_generates_a_reply(smollm2_dir):
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert type(model).__name__ == "LlamaForCausalLM" and model.num_parameters() > 100e6
    assert has_generation_markers(tok.chat_template)
    inputs = tok.apply_chat_template(ED_CONTEXT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    reply = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert len(reply.split()) >= 3 and reply.isascii()


@pytest.mark.integration
def test_embedded_minilm_embeds(minilm_dir):
    from sentence_transformers import SentenceTransformer

    emb = SentenceTransformer(str(minilm_dir), device="cpu").encode(["i am sad", "i feel down", "the sky is blue"])
    assert emb.shape == (3, 384)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2]
