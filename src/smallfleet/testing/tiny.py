"""A tiny, randomly initialised causal LM with a real tokenizer and chat template.

Tests and benchmarks that need a generative model build one here and load it back
through the normal ``from_pretrained`` path, exactly as a downloaded model would be::

    path = build_tiny_causal_lm(tmp_path / "tiny")
    model = LocalCausalLM(path)

The tokenizer is a byte-level BPE trained on a small built-in corpus of chat,
JSON and tool-call text (so JSON punctuation and digits have tokens of their own),
with a ChatML chat template that renders tools the Qwen/Hermes way: the tools in
the system prompt, calls as ``<tool_call>{"name": …, "arguments": …}</tool_call>``.
It takes a second or two on a CPU.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

from smallfleet._extras import require

__all__ = ["CHAT_TEMPLATE", "build_tiny_causal_lm", "default_corpus"]

#: ChatML with Qwen2.5/Hermes-style tools.
CHAT_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n' }}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
    'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n'
    '{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant' }}
{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}
{%- for tool_call in message.tool_calls or [] %}
{%- set call = tool_call.function if tool_call.function is defined else tool_call %}
{{- '\\n<tool_call>\\n{\"name\": \"' + call.name + '\", \"arguments\": ' }}
{%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}
{{- '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
#: Added as ordinary (non-special) tokens, as Qwen2.5 does, so they survive decoding.
TOOL_TOKENS = ["<tool_call>", "</tool_call>"]

_WORDS_TEXT = """
the a an of to in for on with is are was be this that it you we they please can could would
order ticket refund invoice account weather city book flight hotel search email send call
cancel status price total amount date time name city country message note reply urgent low
high medium positive negative neutral yes no true false null sales support billing technical
paris london berlin tokyo madrid rome new york delivery shipping address phone number id
customer user assistant system tool function arguments result query location unit celsius
"""
_WORDS = _WORDS_TEXT.split()
_KEYS = ["name", "city", "amount", "date", "label", "priority", "id", "unit", "items", "email", "count"]
_TOOLS = ["get_weather", "search", "book_flight", "send_email", "create_ticket", "lookup_order"]


def _value(rng: random.Random) -> object:
    pick = rng.randrange(6)
    if pick == 0:
        return rng.randrange(-50, 100000)
    if pick == 1:
        return round(rng.uniform(-100, 1000), rng.randrange(1, 3))
    if pick == 2:
        return rng.choice([True, False, None])
    if pick == 3:
        return [rng.choice(_WORDS) for _ in range(rng.randrange(0, 4))]
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(1, 4)))


def default_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """A few hundred short chat, JSON and tool-call strings (deterministic)."""
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(n):
        obj = {k: _value(rng) for k in rng.sample(_KEYS, rng.randrange(1, 5))}
        sentence = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(3, 12))).capitalize() + "."
        kind = i % 4
        if kind == 0:
            out.append(sentence)
        elif kind == 1:
            out.append(json.dumps(obj))
        elif kind == 2:
            call = {"name": rng.choice(_TOOLS), "arguments": obj}
            out.append(f"<tool_call>\n{json.dumps(call)}\n</tool_call>")
        else:
            out.append(f"<|im_start|>user\n{sentence}<|im_end|>\n<|im_start|>assistant\n{json.dumps(obj)}")
    out.append("0123456789 {}[]:,\"'-+.eE\\/ \n\t!?()")
    return out


def build_tiny_causal_lm(
    directory: str | Path,
    arch: Literal["qwen2", "llama"] = "qwen2",
    seed: int = 0,
    corpus: list[str] | None = None,
    *,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
) -> Path:
    """Train a tokenizer, build a tiny random ``arch`` model, ``save_pretrained`` both to ``directory``."""
    torch = require("torch", "local")
    transformers = require("transformers", "local")
    tk = require("tokenizers", "local")

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    # Byte-level BPE: every byte is a token, so any text (and any JSON) can be written.
    bpe = tk.Tokenizer(tk.models.BPE())
    bpe.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus if corpus is not None else default_corpus(seed=seed), trainer=trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    tokenizer.add_tokens(TOOL_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 1024

    n_vocab = len(tokenizer)
    common = dict(
        vocab_size=n_vocab,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    if arch == "qwen2":
        config = transformers.Qwen2Config(**common)
    elif arch == "llama":
        config = transformers.LlamaConfig(**common)
    else:
        raise ValueError(f"arch must be 'qwen2' or 'llama', not {arch!r}")

    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
