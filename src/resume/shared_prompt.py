"""The GRPO step with each group's prompt run once (issue #12: the step on CPU).

GRPO samples G completions of one prompt. TRL's `GRPOTrainer` (1.16) runs the policy over every
(prompt + completion) row, so a group's prompt, a whole document here (up to ~600 tokens against 160
completion tokens), is computed G times: in the rollouts' prefill, in the loss forward and again in its
backward. And on a device without Triton (CPU) its fused LM head scores every position, the prompt's
included, although only the completion's are used.

`SharedPromptGRPOTrainer` runs each distinct prompt once and lets the rows of its group attend to that
one key/value cache:

- rollouts: `generate` starts from a cache of the distinct prompts' prefill (all but the last prompt
  token), gathered to the batch's rows; the prompt's last token, the sampling and everything after are
  transformers' own `generate`;
- log-probabilities (the loss forward, and the no-grad old/reference ones when TRL asks for them): the
  backbone runs over the distinct prompts with a cache, the cache is gathered to the rows (autograd sums
  the rows' gradients back into the one prompt pass), the backbone continues over the completions, and the
  LM head scores the completion positions only (TRL's `selective_log_softmax_and_entropy`).

It computes the same function as TRL's path, with the same positions and masks (TRL's quirk included:
its training forward numbers a left-padded prompt's positions from the padding, generation from the
first real token), so the learning does not change; `tests/test_shared_prompt.py` compares
log-probabilities, entropies and gradients with TRL's own path, and `bench/bench_grpo_step.py` the
step time and the reward curve on the real model.

Rollouts in lower precision (`low_precision_rollouts`, `grpo.rollout_dtype`): the rollouts come from a
bf16 (or fp16) copy of the policy whose weights are refreshed from the fp32 policy after every optimiser
step; the loss, the gradients and the optimiser stay fp32. This is the split TRL makes with vLLM rollouts
(a bf16 sampler beside the trained weights): the sampled tokens come from a slightly different
distribution than the one the loss scores, which GRPO with one iteration per generation does not correct
(TRL's `vllm_importance_sampling_correction` needs the sampler's log-probabilities, which only its vLLM
path has). It changes the rollouts, so it is measured, not assumed (bench/README.md "The GRPO step").

Written here because neither TRL nor transformers shares a prompt across a group in the training forward.
Anything this does not cover (vision inputs, MoE auxiliary losses, PEFT or DDP/FSDP-wrapped models,
gradient checkpointing, scaled or soft-capped logits, vLLM or continuous-batching rollouts) falls back to
TRL's path unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from trl import GRPOTrainer
from trl.trainer.utils import selective_log_softmax_and_entropy

from resume.models.kv_cache import reserve_cache_room

__all__ = ["SharedPromptGRPOTrainer", "low_precision_rollouts", "prompt_groups", "shared_prompt_supported"]

_MULTIMODAL = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
               "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")


def prompt_groups(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs of identical consecutive rows (ids and mask): (first row of each run, run index of each row).

    GRPO's sampler puts a prompt's G copies next to each other; a row equal to the one before it joins its
    run. `ids[first][inverse]` is `ids`.
    """
    if ids.size(0) == 0:
        raise ValueError("prompt_groups: empty batch")
    same = torch.ones(ids.size(0), dtype=torch.bool, device=ids.device)
    same[0] = False
    if ids.size(0) > 1:
        same[1:] = (ids[1:] == ids[:-1]).all(dim=1) & (mask[1:] == mask[:-1]).all(dim=1)
    inverse = torch.cumsum((~same).long(), dim=0) - 1
    first = torch.nonzero(~same, as_tuple=False).squeeze(1)
    return first, inverse


def shared_prompt_supported(model: Any, args: Any = None) -> str | None:
    """None when the shared-prompt path applies to `model`, else why it does not (TRL's path is used)."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return f"the model is wrapped ({type(model).__name__}), e.g. DDP/FSDP/PEFT"
    checkpointing = getattr(model, "is_activation_checkpointing", None)  # transformers >= 5.2x's name
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    if checkpointing:
        return "gradient checkpointing is on (it turns the key/value cache off)"
    if model.get_output_embeddings() is None or not hasattr(model, "base_model") or model.base_model is model:
        return "the model has no separate backbone and LM head"
    text = model.config.get_text_config()
    for attr in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                 "logits_scaling"):
        if getattr(text, attr, None) not in (None, 1, 1.0):
            return f"the model scales its logits ({attr})"
    if text is not model.config:
        return "a multimodal model"
    if args is not None and getattr(args, "cast_lm_head_to_fp32", False):
        return "cast_lm_head_to_fp32 is set"
    return None


def _gather_cache(cache: Any, rows: torch.Tensor) -> Any:
    cache.batch_select_indices(rows)
    return cache


def shared_prompt_logps(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                        temperature: float, compute_entropy: bool = False,
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probabilities (and entropies) of the last `logits_to_keep` tokens of each row,
    each distinct prompt run once. Same values as TRL's `_get_per_token_logps_and_entropies` (positions
    0..L-1 over the padded rows, as its forward numbers them), zero at masked completion positions."""
    n_completion = logits_to_keep
    n_prompt = input_ids.size(1) - n_completion
    if n_prompt < 1 or n_completion < 1:
        raise ValueError(f"shared_prompt_logps: {n_prompt} prompt and {n_completion} completion tokens")
    prompt, prompt_mask = input_ids[:, :n_prompt], attention_mask[:, :n_prompt]
    completion, completion_mask = input_ids[:, n_prompt:], attention_mask[:, n_prompt:]
    first, inverse = prompt_groups(prompt, prompt_mask)
    backbone = model.base_model
    out = backbone(input_ids=prompt[first], attention_mask=prompt_mask[first], use_cache=True)
    # The prompt's last position predicts the first completion token; the completion's positions 0..C-2
    # predict the rest (the last completion token predicts nothing that is scored).
    hidden = [out.last_hidden_state[:, -1:][inverse]]
    if n_completion > 1:
        cache = _gather_cache(out.cache, inverse)
        cont = backbone(input_ids=completion[:, :-1], attention_mask=attention_mask[:, :-1], cache=cache,
                        use_cache=True)
        hidden.append(cont.last_hidden_state)
    hidden_states = torch.cat(hidden, dim=1)
    valid = completion_mask.bool()
    logits = model.get_output_embeddings()(hidden_states[valid])
    logps_valid, entropy_valid = selective_log_softmax_and_entropy(
        logits, completion[valid], entropy_requires_grad=True, temperature=temperature)
    # `masked_scatter` keeps the output in the graph when no position is valid (as TRL's fused head does).
    logps = logps_valid.new_zeros(valid.shape).masked_scatter(valid, logps_valid)
    entropies = entropy_valid.new_zeros(valid.shape).masked_scatter(valid, entropy_valid) if compute_entropy else None
    return logps, entropies


def shared_prefix_generate(model: Any, generate: Any) -> Any:
    """`generate` that prefills each distinct prompt of the batch once (all but its last token) and hands
    transformers the cache gathered to the batch's rows; the rest is `generate` itself. Falls back to the
    plain call when the caller brings its own cache or inputs other than token ids and a mask."""

    @functools.wraps(generate)
    def wrapped(input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        plain = (input_ids is None or attention_mask is None or input_ids.size(1) < 2
                 or any(k in kwargs for k in ("cache", "past_key_values", "inputs_embeds", "position_ids",
                                               *_MULTIMODAL)))
        if not plain:
            first, inverse = prompt_groups(input_ids, attention_mask)
            plain = first.numel() == input_ids.size(0)  # nothing repeats: nothing to share
        if plain:
            return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        head_ids, head_mask = input_ids[first, :-1], attention_mask[first, :-1]
        # generate's own position ids: counted from the first real token of each row
        positions = (head_mask.long().cumsum(-1) - 1).masked_fill(head_mask == 0, 0)
        with torch.no_grad():
            out = model.base_model(input_ids=head_ids, attention_mask=head_mask, position_ids=positions,
                                   use_cache=True)
        return generate(input_ids=input_ids, attention_mask=attention_mask,
                        cache=reserve_cache_room(_gather_cache(out.cache, inverse)), **kwargs)

    return wrapped


def low_precision_rollouts(trainer: Any, dtype: torch.dtype) -> Any:
    """Make `trainer` (a `GRPOTrainer` on one process, TRL's regular generation path) sample its rollouts
    from a `dtype` copy of the policy, refreshed from the policy's weights whenever the optimiser has
    stepped since the last rollout (and before the first, so a resumed run starts from its checkpoint's
    weights). Floating buffers (e.g. rotary frequencies) stay in their dtype, as `from_pretrained` with
    a bf16 `torch_dtype` keeps them. Returns the copy. See the module docstring for what this changes."""
    import copy as _copy

    from transformers import PreTrainedModel

    policy = trainer.model
    if not isinstance(policy, PreTrainedModel) or trainer.use_vllm or trainer.use_transformers_continuous_batching:
        raise ValueError("grpo.rollout_dtype: needs an unwrapped transformers model and TRL's regular generation "
                         f"path (got {type(policy).__name__}, vLLM {trainer.use_vllm})")
    shared = "generate" in vars(policy)  # SharedPromptGRPOTrainer wrapped the policy's generate
    if shared:
        wrapped = vars(policy).pop("generate")
    rollout = _copy.deepcopy(policy)
    if shared:
        policy.generate = wrapped
    # TRL's fused LM head replaces the policy's `forward` with a closure over the policy's own bound forward,
    # which a deep copy keeps: the copy's decode would run on the fp32 policy. Rollouts need the plain forward.
    vars(rollout).pop("forward", None)
    rollout.requires_grad_(False).eval()
    for p in rollout.parameters():
        p.data = p.data.to(dtype)
    params = dict(policy.named_parameters())
    generate = shared_prefix_generate(rollout, rollout.generate) if shared else rollout.generate
    synced: dict[str, Any] = {"step": None}

    def rollout_generate(*args: Any, **kwargs: Any) -> Any:
        if synced["step"] != trainer.state.global_step:
            with torch.no_grad():
                for name, p in rollout.named_parameters():
                    p.copy_(params[name])
            synced["step"] = trainer.state.global_step
        return generate(*args, **kwargs)

    policy.generate = rollout_generate
    return rollout


class SharedPromptGRPOTrainer(GRPOTrainer):
    """TRL's `GRPOTrainer` with each group's prompt run once in the rollouts and the loss (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shared_prompt_off = shared_prompt_supported(self.model, self.args)
        if self.shared_prompt_off is None and not self.use_vllm and not self.use_transformers_continuous_batching:
            # An instance attribute: `unwrap_model_for_generation` hands back this same model on one process.
            self.model.generate = shared_prefix_generate(self.model, self.model.generate)

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        if (compute_aux_loss or any(v is not None for v in multimodal.values())
                or shared_prompt_supported(model, self.args) is not None):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **multimodal)
        batch_size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):  # TRL's chunking, to bound memory the same way
            end = start + batch_size
            with self.accelerator.autocast():
                lp, ent = shared_prompt_logps(model, input_ids[start:end], attention_mask[start:end],
                                              logits_to_keep, self.temperature, compute_entropy)
            logps.append(lp)
            entropies.append(ent)
        return (torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None)
