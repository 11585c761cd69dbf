"""resume.shared_prompt: each GRPO group's prompt run once computes what TRL's own path computes.

    .venv/bin/pytest tests/test_shared_prompt.py -q

Against TRL 1.16's `GRPOTrainer._get_per_token_logps_and_entropies` (the fused LM head TRL puts on the
model) on the tiny causal LM: log-probabilities, entropies and every parameter's gradient, with a
left-padded prompt group and completions cut at different lengths; sampled rollouts token for token at
the same seed; and two whole GRPO runs (TRL's trainer and ours) ending with the same rewards and weights.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch

from resume.config import load_config
from resume.models.kv_cache import reserve_cache_room
from resume.shared_prompt import (
    prompt_groups,
    shared_prefix_generate,
    shared_prompt_logps,
    shared_prompt_supported,
)

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURE = 0.8


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from resume.models import resolve_model

    m = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-causal-lm"), dtype=torch.float32)
    add_fused_lm_head(m, temperature=TEMPERATURE, outputs=("log_probs", "entropy"))
    return m


def _batch(vocab: int, group: int = 4, n_prompt: int = 12, n_completion: int = 7):
    """Two prompt groups (the second left-padded by 3), completions of which two end early."""
    g = torch.Generator().manual_seed(0)
    prompt = torch.zeros(2 * group, n_prompt, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt)
    prompt[:group] = torch.randint(5, vocab, (n_prompt,), generator=g)
    prompt_mask[:group] = 1
    prompt[group:, 3:] = torch.randint(5, vocab, (n_prompt - 3,), generator=g)
    prompt_mask[group:, 3:] = 1
    completion = torch.randint(5, vocab, (2 * group, n_completion), generator=g)
    completion_mask = torch.ones_like(completion)
    completion_mask[1, 4:] = 0
    completion_mask[group + 2, 2:] = 0
    return prompt, prompt_mask, completion, completion_mask


def test_prompt_groups():
    ids = torch.tensor([[1, 2], [1, 2], [3, 4], [3, 4], [3, 4], [1, 2]])
    mask = torch.ones_like(ids)
    first, inverse = prompt_groups(ids, mask)
    assert first.tolist() == [0, 2, 5] and inverse.tolist() == [0, 0, 1, 1, 1, 2]
    assert torch.equal(ids[first][inverse], ids)
    mask[1, 0] = 0  # same ids, other mask: another prompt
    assert prompt_groups(ids, mask)[0].tolist() == [0, 1, 2, 5]
    assert prompt_groups(ids[:1], mask[:1])[1].tolist() == [0]


def test_logps_entropies_and_gradients_match_trl(model):
    from accelerate import Accelerator
    from trl import GRPOTrainer

    prompt, prompt_mask, completion, completion_mask = _batch(model.config.vocab_size)
    ids = torch.cat([prompt, completion], 1)
    mask = torch.cat([prompt_mask, completion_mask], 1)
    n = completion.size(1)
    weights = torch.linspace(0.5, 1.5, n)  # a loss that weighs positions differently

    def run(fn):
        model.zero_grad()
        logps, entropies = fn()
        ((logps * completion_mask * weights).sum() + 0.1 * (entropies * completion_mask).sum()).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        return logps.detach(), entropies.detach(), grads

    trl_self = types.SimpleNamespace(accelerator=Accelerator(cpu=True))  # the one attribute the method uses
    ref = run(lambda: GRPOTrainer._get_per_token_logps_and_entropies(
        trl_self, model, ids, mask, n, compute_entropy=True)[:2])
    ours = run(lambda: shared_prompt_logps(model, ids, mask, n, TEMPERATURE, compute_entropy=True))
    valid = completion_mask.bool()
    assert ref[0].shape == ours[0].shape == completion.shape
    torch.testing.assert_close(ours[0][valid], ref[0][valid], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours[1][valid], ref[1][valid], atol=1e-5, rtol=1e-5)
    assert (ours[0][~valid] == 0).all()
    assert set(ours[2]) == set(ref[2]) and len(ref[2]) == len(list(model.parameters()))
    for k in ref[2]:
        torch.testing.assert_close(ours[2][k], ref[2][k], atol=1e-6, rtol=1e-4, msg=k)
    # the comparison can fail: rows attending to another group's prompt cache give other values
    import resume.shared_prompt as sp

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sp, "_gather_cache", lambda cache, rows: (cache.batch_select_indices(rows.flip(0)), cache)[1])
        wrong = shared_prompt_logps(model, ids, mask, n, TEMPERATURE)[0].detach()
    assert not torch.allclose(wrong[valid], ref[0][valid], atol=1e-3)


def test_sampled_rollouts_match(model):
    from transformers import GenerationConfig

    prompt, prompt_mask, _, _ = _batch(model.config.vocab_size)
    gc = GenerationConfig(max_new_tokens=10, do_sample=True, temperature=TEMPERATURE, pad_token_id=0)
    calls = []

    def plain_generate(**kw):
        cache = kw.get("cache")
        calls.append(None if cache is None else (cache.get_seq_length(), cache.layers[0].keys.size(0)))
        return model.generate(**kw)

    torch.manual_seed(1)
    ref = model.generate(input_ids=prompt, attention_mask=prompt_mask, generation_config=gc)
    torch.manual_seed(1)
    ours = shared_prefix_generate(model, plain_generate)(input_ids=prompt, attention_mask=prompt_mask,
                                                        generation_config=gc)
    assert torch.equal(ours, ref)
    # it started from the shared prefill: all but the last prompt token, one row per completion
    assert calls[0] == (prompt.size(1) - 1, prompt.size(0))
    # nothing repeated: the plain call
    shared_prefix_generate(model, plain_generate)(input_ids=prompt[::4], attention_mask=prompt_mask[::4],
                                                  generation_config=gc)
    assert calls[1] is None


def test_reserved_cache_room_appends_in_place_and_matches_cat():
    """The rollouts' cache layers append into reserved room: the values transformers' torch.cat would give,
    the same storage from token to token, and re-reserved when a base-class method replaces the tensors."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    g = torch.Generator().manual_seed(0)
    ref, cache = DynamicLayer(), DynamicCache()
    prefill = torch.randn(3, 2, 5, 4, generator=g), torch.randn(3, 2, 5, 4, generator=g)
    ref.update(*prefill)
    cache.update(*prefill, layer_idx=0)
    layer = reserve_cache_room(cache).layers[0]
    assert type(layer) is not DynamicLayer and isinstance(layer, DynamicLayer)
    storage = []
    for step in range(6):
        if step == 3:  # generate's batch selection / a crop replace the tensors: the room follows them
            for lay in (ref, layer):
                lay.batch_select_indices(torch.tensor([2, 0]))
                lay.crop(-1)
        kv = torch.randn(ref.keys.size(0), 2, 1, 4, generator=g), torch.randn(ref.keys.size(0), 2, 1, 4, generator=g)
        want = ref.update(*kv)
        got = layer.update(*kv)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        assert layer.get_seq_length() == ref.get_seq_length()
        storage.append(layer.keys.data_ptr())
    assert len(set(storage[:3])) == 1 and len(set(storage[3:])) == 1  # one reservation before, one after
    assert storage[0] != storage[3]


def test_unsupported_models_fall_back():
    torch_module = torch.nn.Linear(2, 2)
    assert "wrapped" in shared_prompt_supported(torch_module)
    assert "cast_lm_head_to_fp32" in shared_prompt_supported(_tiny_lm(), types.SimpleNamespace(
        cast_lm_head_to_fp32=True))
    assert shared_prompt_supported(_tiny_lm()) is None
    checkpointed = _tiny_lm()
    checkpointed.activation_checkpointing_enable()
    assert "checkpointing" in shared_prompt_supported(checkpointed)


def _tiny_lm():
    from transformers import AutoModelForCausalLM

    from resume.models import resolve_model

    return AutoModelForCausalLM.from_pretrained(resolve_model("tiny-causal-lm"))


def test_grpo_round_same_with_and_without(tmp_path, cranfield_dir):
    """Two GRPO rounds from one seed, TRL's trainer and ours: the same rewards and the same weights."""
    from safetensors.torch import load_file

    from resume.grpo import REWARD_LOG, grpo_train
    from resume.models import load_tokenizer, resolve_model

    tok = load_tokenizer("tiny-causal-lm")
    bias = {"generation_kwargs": {"sequence_bias": [[[tok.convert_tokens_to_ids("</think>")], 4.0]]}}
    import resume.shared_prompt as sp

    gathered = []  # one entry per shared prefill: in the rollouts and in the loss
    gather = sp._gather_cache
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sp, "_gather_cache", lambda cache, rows: (gathered.append(rows.numel()), gather(cache, rows))[1])
        for share in (False, True):
            cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"grpo.share_prompt={str(share).lower()}",
                                                              "grpo.max_steps=3"])
            out[share] = tmp_path / str(share)
            grpo_train(cfg, data_dir=cranfield_dir, summarizer="tiny-causal-lm", retriever="tiny-encoder",
                       out_dir=out[share], trl_args=bias)
            # 3 steps x (one rollout batch + one loss micro-batch) of 4 completions of one prompt
            assert gathered == ([4] * 6 if share else []), gathered
            gathered.clear()
    logs = {s: [json.loads(x) for x in (out[s] / REWARD_LOG).read_text().splitlines()] for s in out}
    assert len(logs[True]) == len(logs[False]) == 3
    for a, b in zip(logs[False], logs[True], strict=True):
        assert a["reward_mean"] == pytest.approx(b["reward_mean"], abs=1e-4)
        assert a["length_mean"] == b["length_mean"]
    w = {s: load_file(str(out[s] / "model.safetensors")) for s in out}
    init = load_file(str(Path(resolve_model("tiny-causal-lm")) / "model.safetensors"))
    assert any(not init[k].equal(w[True][k]) for k in init if k in w[True]), "training changed nothing"
    for k in w[False]:
        torch.testing.assert_close(w[True][k], w[False][k], atol=1e-5, rtol=1e-4, msg=k)


@pytest.mark.parametrize("share", [True, False])
def test_low_precision_rollouts_follow_the_policy(tmp_path, cranfield_dir, share):
    """grpo.rollout_dtype=bfloat16: every rollout comes from a bf16 copy holding the policy's CURRENT weights
    (refreshed after each optimiser step), while the policy itself stays fp32 and trains."""
    import resume.shared_prompt as sp
    from resume.grpo import REWARD_LOG, grpo_train

    calls = []
    original = sp.low_precision_rollouts

    def spy(trainer, dtype):
        rollout = original(trainer, dtype)
        policy, generate = trainer.model, trainer.model.generate

        heads = []  # which LM head scored the rollouts' tokens, in which dtype
        for m in (rollout, policy):
            m.get_output_embeddings().register_forward_hook(lambda mod, a, o: heads.append(o.dtype))

        def recorded(*args, **kwargs):
            heads.clear()
            out = generate(*args, **kwargs)
            assert heads and set(heads) == {dtype}, heads  # every decode step ran on the copy, none on the policy
            theirs = dict(policy.named_parameters())
            calls.append({
                "step": trainer.state.global_step,
                "dtypes": {p.dtype for p in rollout.parameters()} | {theirs[n].dtype for n, _ in rollout.named_parameters()},
                "diff": max((p.float() - theirs[n].detach().to(dtype).float()).abs().max().item()
                            for n, p in rollout.named_parameters()),
                "policy_bf16": {n: theirs[n].detach().to(dtype).clone() for n, _ in rollout.named_parameters()},
                "shared": "generate" in vars(policy) and share})
            return out

        policy.generate = recorded
        return rollout

    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"grpo.share_prompt={str(share).lower()}", "grpo.max_steps=3",
                                                      "grpo.rollout_dtype=bfloat16"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sp, "low_precision_rollouts", spy)
        grpo_train(cfg, data_dir=cranfield_dir, summarizer="tiny-causal-lm", retriever="tiny-encoder",
                   out_dir=tmp_path / "out")
    assert [c["step"] for c in calls] == [0, 1, 2]  # one rollout batch per optimiser step
    assert all(c["dtypes"] == {torch.bfloat16, torch.float32} for c in calls)  # copy bf16, policy fp32
    assert all(c["diff"] == 0.0 for c in calls), [c["diff"] for c in calls]  # the copy IS the current policy
    first, last = calls[0]["policy_bf16"], calls[-1]["policy_bf16"]
    assert any(not first[n].equal(last[n]) for n in first), "the policy did not move: the refresh is untested"
    assert len((tmp_path / "out" / REWARD_LOG).read_text().splitlines()) == 3
