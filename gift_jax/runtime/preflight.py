"""Checks a stage makes before it claims its workdir, so a bad launch fails in seconds, names its culprit,
and leaves nothing that blocks the corrected one (config ranges are checked when the config loads).

Model folders: config.json (types, settings the model does not implement) and the tensor files, with
no weight read; the tokenizer against the model (every id it can emit is a row of the embedding); a
separate base against the policy (the same vocabulary, as GIFT's target and the KL need); a warning when
the policy folder was trained with another prompt format than the run's (`model.prompt`).
"""

from __future__ import annotations

from gift_jax.data import ChatTokenizer, load_tokenizer
from gift_jax.data.prompt_format import warn_if_trained_otherwise
from gift_jax.errors import ModelFolderError
from gift_jax.models import ModelConfig, check_hf_folder
from gift_jax.runtime.config import ModelSection


def check_models(model: ModelSection) -> tuple[ModelConfig, ChatTokenizer]:
    """`(policy config, tokenizer)` of `model.path`, with `model.base_path` checked against it."""
    policy = check_hf_folder(model.path)
    if model.base_path:
        base = check_hf_folder(model.base_path)
        if base.vocab_size != policy.vocab_size:
            raise ModelFolderError(
                f"model.base_path {model.base_path} has vocab_size {base.vocab_size} but model.path "
                f"{model.path} has {policy.vocab_size}; the base must share the policy's vocabulary"
            )
    tokenizer = load_tokenizer(model.path, model.chat_template, system_prompt=model.prompt.system_prompt)
    warn_if_trained_otherwise(model.path, model.prompt, "model.path")
    if tokenizer.vocab_size > policy.vocab_size:
        raise ModelFolderError(
            f"{model.path}: the tokenizer can emit ids up to {tokenizer.vocab_size - 1} (tokenizer.json, added "
            f"tokens included) but config.json's vocab_size is {policy.vocab_size}; the tokenizer does not "
            f"belong to this model"
        )
    return policy, tokenizer
