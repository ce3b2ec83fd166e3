"""Chat templates used for training and generation."""

from __future__ import annotations

# ChatML, as SmolLM2 and Qwen use it, with ``{% generation %}`` markers around every assistant reply so that
# TRL's ``assistant_only_loss=True`` can mask everything else. No default system prompt is injected.
CHATML_TRAINING_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def has_generation_markers(chat_template: str | None) -> bool:
    """True when a chat template marks assistant turns with ``{% generation %}`` (needed for assistant-only loss)."""
    return bool(chat_template) and "{% generation %}" in chat_template.replace("{%-", "{%").replace("-%}", "%}")
