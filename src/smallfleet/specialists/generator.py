"""The ``generator`` specialist: a causal LM plus a LoRA adapter, fine-tuned on the teacher's answers.

It learns anything, free text included, the way the large model answered it:

* **Training** (supervised fine-tuning): each example is the request rendered with
  the base model's chat template, followed by the teacher's answer and the end of
  turn; the loss is on the answer tokens only. Only a LoRA adapter (PEFT) is
  trained. Per-step losses are kept in :attr:`Generator.losses`.
* **What it writes** is decided from the teacher's answers: ``tool_call`` when they
  all call tools, ``json`` when they are all JSON objects, else ``text``. Answers
  are rendered exactly as constrained decoding writes them (Hermes
  ``<tool_call>`` blocks, compact JSON in schema key order), so the model learns
  the form the grammar will ask of it.
* **Answering** goes through :class:`~smallfleet.models.local_hf.LocalCausalLM`,
  greedily (a specialist is deterministic): JSON answers are constrained by the
  request's ``json_schema`` (any JSON object when it has none), tool calls by the
  request's tools (``tool_choice`` ``auto`` becomes ``required`` for a tool-call
  specialist).
* **Confidence** is ``exp(mean log-prob)`` of the answer's tokens under the
  model's own distribution, and 0 when the answer does not validate (cut by the
  token limit, not JSON, not matching the schema or the tool's parameters).
* **Saved** in the standard PEFT layout (``adapter_config.json`` with
  ``base_model_name_or_path``, ``adapter_model.safetensors``) next to
  ``specialist.json``, so vLLM, SGLang and LoRAX serve the folder as a LoRA
  adapter of the base model (see ``docs/local-models.md``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smallfleet._extras import require
from smallfleet.errors import UserError
from smallfleet.models.local_hf import (
    Generation,
    LocalCausalLM,
    _device,
    _dtype,
    canonical_json,
    tool_call_text,
)
from smallfleet.specialists.base import Example, Prediction, Specialist, SpecialistMeta, data_hash
from smallfleet.types import ChatRequest, ResponseFormat

__all__ = ["DEFAULT_BASE", "Generator"]

#: The base model when none is given: a small instruct model that follows the Hermes tool format.
DEFAULT_BASE = "Qwen/Qwen2.5-0.5B-Instruct"
ADAPTER = "default"  # PEFT's name for the one adapter
OUTPUTS = ("text", "json", "tool_call")


def output_kind(examples: Sequence[Example]) -> str:
    """``tool_call`` if every answer calls tools, ``json`` if every answer is a JSON object, else ``text``."""
    if all(ex.response.message.tool_calls for ex in examples):
        return "tool_call"
    for ex in examples:
        if ex.response.message.tool_calls:
            return "text"
        try:
            if not isinstance(json.loads(ex.response.text), dict):
                return "text"
        except ValueError:
            return "text"
    return "json"


def answer_text(example: Example, output: str) -> str:
    """The teacher's answer as the specialist should write it."""
    msg = example.response.message
    if output == "tool_call" or msg.tool_calls:
        # calls as Hermes blocks; with mixed text and calls (``text`` kind) the text comes first,
        # as a model answering with tool_choice "auto" would write it
        params = {t.function.name: t.function.parameters for t in example.request.tools or []}
        parts = [msg.content] if msg.content and output != "tool_call" else []
        for tc in msg.tool_calls or []:
            args = json.loads(tc.function.arguments or "{}")
            parts.append(tool_call_text(tc.function.name, args, params.get(tc.function.name)))
        return "\n".join(parts)
    if output == "json":
        return canonical_json(json.loads(msg.content or ""), example.request.json_schema)
    return msg.content or ""


class Generator(Specialist):
    """A causal LM (Hugging Face id or path) with a LoRA adapter learned from the teacher.

    >>> gen = Generator("Qwen/Qwen2.5-0.5B-Instruct", epochs=2).fit(train)  # doctest: +SKIP
    >>> gen.predict([request])[0].confidence                               # doctest: +SKIP
    """

    kind = "generator"

    def __init__(
        self,
        base: str | None = None,
        *,
        epochs: int = 3,
        lr: float = 2e-4,
        rank: int = 16,
        alpha: int | None = None,
        dropout: float = 0.05,
        batch_size: int = 8,
        max_length: int = 1024,
        target_modules: str | list[str] = "all-linear",
        max_new_tokens: int = 256,
        device: str = "auto",
        dtype: str = "auto",
        threads: int | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        if epochs < 1 or batch_size < 1 or rank < 1 or max_length < 8 or lr <= 0:
            raise UserError("Generator: epochs, batch_size and rank must be >= 1, max_length >= 8, lr > 0.")
        self.base = str(base or DEFAULT_BASE)
        self.params: dict[str, Any] = {
            "epochs": epochs,
            "lr": lr,
            "rank": rank,
            "alpha": alpha or 2 * rank,
            "dropout": dropout,
            "batch_size": batch_size,
            "max_length": max_length,
            "target_modules": target_modules,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
        }
        self.device = device
        self.dtype = dtype
        self.threads = threads
        self.progress = progress
        self.output = "text"
        self.losses: list[float] = []
        self.lm: LocalCausalLM | None = None
        self.meta = SpecialistMeta(kind=self.kind, base_model=self.base)

    # ------------------------------------------------------------ training

    def fit(self, examples: Sequence[Example], validation: Sequence[Example] | None = None) -> Generator:
        """Fine-tune a LoRA adapter on the teacher's answers (loss on the answer tokens only)."""
        if not examples:
            raise UserError("No examples to train the generator on.")
        torch = require("torch", "local")
        transformers = require("transformers", "local")
        peft = require("peft", "local")
        if self.threads:
            torch.set_num_threads(self.threads)
        p = self.params
        torch.manual_seed(p["seed"])
        device = _device(torch, self.device)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(self.base)
            base = transformers.AutoModelForCausalLM.from_pretrained(
                self.base, dtype=_dtype(torch, self.dtype, device)
            )
        except (OSError, ValueError) as e:
            raise UserError(f"Could not load the base model {self.base!r}: {e}") from None
        lora = peft.LoraConfig(
            r=p["rank"],
            lora_alpha=p["alpha"],
            lora_dropout=p["dropout"],
            target_modules=p["target_modules"],
            task_type="CAUSAL_LM",
        )
        model = peft.get_peft_model(base, lora).to(device)
        self.lm = LocalCausalLM.from_loaded(
            model, tokenizer, name=f"generator:{self.base}", max_new_tokens=p["max_new_tokens"]
        )
        self.output = output_kind(examples)
        rows = [self._row(ex) for ex in examples]
        self.losses = self._train(torch, model, rows)
        model.eval()
        metrics: dict[str, Any] = {"train_loss_first": self.losses[0], "train_loss_last": self.losses[-1]}
        val_rows = [row for row in map(self._try_row, validation or []) if row is not None]
        if val_rows:
            metrics["val_loss"] = self._mean_loss(torch, model, val_rows)
        self.meta = SpecialistMeta(
            kind=self.kind,
            base_model=self.base,
            data_hash=data_hash(examples),
            n_train=len(examples),
            metrics=metrics,
            params={**p, "output": self.output},
        )
        return self

    def _row(self, ex: Example) -> tuple[list[int], list[int]]:
        """(input ids, labels): the templated prompt (labels -100), then the answer and end of turn."""
        assert self.lm is not None
        tok = self.lm.tokenizer
        prompt = self.lm.prompt_ids(ex.request)
        try:
            answer = answer_text(ex, self.output)
        except ValueError as e:
            raise UserError(f"An example's answer is not valid JSON: {e}") from None
        target = [*tok(answer, add_special_tokens=False)["input_ids"], tok.eos_token_id]
        limit = self.params["max_length"]
        target = target[:limit]
        prompt = prompt[-(limit - len(target)) :] if len(target) < limit else []
        return prompt + target, [-100] * len(prompt) + target

    def _try_row(self, ex: Example) -> tuple[list[int], list[int]] | None:
        """A validation row, or None for an example whose answer is not of the learned kind."""
        try:
            return self._row(ex)
        except (UserError, ValueError, TypeError):
            return None

    def _batches(self, torch: Any, rows: list[tuple[list[int], list[int]]], shuffle: bool, gen: Any) -> Any:
        order = torch.randperm(len(rows), generator=gen).tolist() if shuffle else range(len(rows))
        order = list(order)
        bs = self.params["batch_size"]
        pad = self.lm.tokenizer.pad_token_id if self.lm else 0
        pad = pad if pad is not None else 0
        for i in range(0, len(order), bs):
            batch = [rows[j] for j in order[i : i + bs]]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for k, (x, y) in enumerate(batch):
                ids[k, : len(x)] = torch.tensor(x)
                labels[k, : len(y)] = torch.tensor(y)
                mask[k, : len(x)] = 1
            yield ids, mask, labels

    def _train(self, torch: Any, model: Any, rows: list[tuple[list[int], list[int]]]) -> list[float]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        p = self.params
        device = next(model.parameters()).device
        gen = torch.Generator().manual_seed(p["seed"])
        trainable = [w for w in model.parameters() if w.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=p["lr"], weight_decay=0.0)
        per_epoch = math.ceil(len(rows) / p["batch_size"])
        total = per_epoch * p["epochs"]
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - 0.9 * step / max(1, total))
        losses: list[float] = []
        model.train()
        columns = (
            TextColumn("[bold]generator[/] epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, disable=not self.progress, transient=False) as bar:
            task = bar.add_task("train", total=total, epoch=1, loss=float("nan"))
            for epoch in range(p["epochs"]):
                for ids, mask, labels in self._batches(torch, rows, True, gen):
                    out = model(
                        input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
                    )
                    out.loss.backward()
                    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    losses.append(float(out.loss.detach()))
                    bar.update(task, advance=1, epoch=epoch + 1, loss=losses[-1])
        return losses

    def _mean_loss(self, torch: Any, model: Any, rows: list[tuple[list[int], list[int]]]) -> float:
        device = next(model.parameters()).device
        total, n = 0.0, 0
        with torch.inference_mode():
            for ids, mask, labels in self._batches(torch, rows, False, None):
                out = model(
                    input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
                )
                k = int((labels[:, 1:] != -100).sum())
                total, n = total + float(out.loss) * k, n + k
        return total / max(1, n)

    # ------------------------------------------------------------ answering

    def constrained(self, request: ChatRequest) -> ChatRequest:
        """The request as the specialist answers it: greedy, and constrained to its output kind."""
        update: dict[str, Any] = {"temperature": 0.0, "top_p": None}
        if self.output == "tool_call" and request.tools and request.tool_choice in (None, "auto"):
            update["tool_choice"] = "required"
        if self.output == "json" and (
            request.response_format is None or request.response_format.type == "text"
        ):
            update["response_format"] = ResponseFormat(type="json_object")
        if request.output_token_limit is None:
            update["max_completion_tokens"] = self.params["max_new_tokens"]
        return request.model_copy(update=update)

    def predict(self, requests: Sequence[ChatRequest]) -> list[Prediction]:
        if self.lm is None:
            raise UserError("The generator is not trained: call fit() or load a saved one.")
        if self.threads:
            require("torch", "local").set_num_threads(self.threads)
        out = []
        for request in requests:
            req = self.constrained(request)
            g = self.lm.generate(req, adapter=ADAPTER)
            response = self.lm.to_response(req, g)
            response.model = request.model
            ok = _valid(req, g, response)
            confidence = math.exp(g.mean_logprob) if ok and g.logprobs else 0.0
            out.append(Prediction(response=response, confidence=confidence))
        return out

    # ------------------------------------------------------------ saving

    def save(self, directory: str | Path) -> Path:
        """``specialist.json`` + the adapter in the PEFT layout vLLM, SGLang and LoRAX load."""
        if self.lm is None:
            raise UserError("The generator is not trained: nothing to save.")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model = self.lm.model
        if not hasattr(model, "peft_config"):
            raise UserError("This generator has no adapter of its own to save.")
        model.peft_config[ADAPTER].base_model_name_or_path = self.base
        model.save_pretrained(str(directory), selected_adapters=[ADAPTER])
        self.meta.write(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path, threads: int | None = None) -> Generator:
        """A saved generator; the base model and adapter are loaded on the first prediction."""
        directory = Path(directory)
        meta = SpecialistMeta.read(directory)
        if meta.kind != cls.kind:
            raise UserError(f"{directory} holds a {meta.kind!r} specialist, not a generator.")
        if not (directory / "adapter_config.json").exists():
            raise UserError(f"{directory} has no adapter_config.json: not a saved generator.")
        params = dict(meta.params)
        output = params.pop("output", "text")
        known = {k: v for k, v in params.items() if k in _PARAMS}
        self = cls(meta.base_model, threads=threads, progress=False, **known)
        self.output = output if output in OUTPUTS else "text"
        self.meta = meta
        self.lm = LocalCausalLM(
            meta.base_model,
            name=f"generator:{meta.base_model}",
            adapters={ADAPTER: str(directory)},
            max_new_tokens=self.params["max_new_tokens"],
        )
        return self


_PARAMS = (
    "epochs",
    "lr",
    "rank",
    "alpha",
    "dropout",
    "batch_size",
    "max_length",
    "target_modules",
    "max_new_tokens",
    "seed",
)


def _valid(request: ChatRequest, g: Generation, response: Any) -> bool:
    """Did the answer come out whole and, where there is a schema, match it?"""
    if g.finish_reason == "length" or not g.token_ids:
        return False
    jsonschema = require("jsonschema", "local")
    if g.constrained == "json":
        try:
            value = json.loads(g.text)
        except ValueError:
            return False
        schema = request.json_schema or {"type": "object"}
        return _matches(jsonschema, value, schema)
    if g.constrained == "tools":
        calls = response.message.tool_calls or []
        params = {t.function.name: t.function.parameters or {"type": "object"} for t in request.tools or []}
        return bool(calls) and all(
            c.function.name in params
            and _matches(jsonschema, json.loads(c.function.arguments), params[c.function.name])
            for c in calls
        )
    return True


def _matches(jsonschema: Any, value: Any, schema: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    except jsonschema.SchemaError:
        return True  # the grammar enforced it; a schema jsonschema cannot read is not the answer's fault
    return True
