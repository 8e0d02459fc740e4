"""The ``extractor`` specialist: a JSON object whose values come from the request's text.

The schema is inferred from the teacher's objects (``catalog.infer_schema``: types,
enums, dates, optional fields), refined by the request's ``json_schema`` response
format when there is one (its descriptions, enums and required fields). Each field
is then one decision on the shared encoder (:mod:`smallfleet.specialists._spans`),
conditioned on the field's name, type and description:

* strings: a span of the conversation's text (:mod:`~smallfleet.specialists._conversation`),
  casing and punctuation kept; quoted text whole; a value said twice read where it stands now;
* integers and numbers: a span read as a number (``"1,200"``, ``"$3.50"``, ``"five"``);
* dates (the teacher wrote ISO 8601): a span read as a date (``"March 5th, 2024"``);
* enums (values the text does not spell out) and booleans: a choice among the values;
* arrays of strings or numbers: several spans;
* optional fields: "no answer" leaves the field out (or null, as the teacher did).

The output is JSON text formatted as the teacher formats it (same key order, same
separators and indentation). The confidence is the weakest field's probability,
and 0 when a ``json_schema`` was asked for and the output does not validate.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smallfleet.encoders import inference_dtype
from smallfleet.errors import UserError
from smallfleet.specialists._conversation import conversation_text, prefer_latest
from smallfleet.specialists._fill import (
    CHOICE_KINDS,
    SPAN_KINDS,
    candidates,
    choice_decision,
    param_item,
    span_decision,
)
from smallfleet.specialists._params import Param, humanise
from smallfleet.specialists._spans import ChoiceItem, EncoderEngine, SpanItem
from smallfleet.specialists._values import find_value_spans, is_iso_date, learn_today
from smallfleet.specialists.base import Example, Prediction, Specialist, SpecialistMeta, data_hash
from smallfleet.types import ChatRequest, ChatResponse

__all__ = ["Extractor"]


#: What the presence decision calls an object with none of its optional fields.
NOTHING = "none of these"
#: Optional values not readable from the text that make the presence decision worth learning.
PRESENCE_MIN = 3


def _object(text: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _style(texts: Sequence[str]) -> dict[str, Any]:
    """How the teacher writes JSON: indentation, separators, ASCII escapes (the majority's)."""
    votes: Counter[str] = Counter()
    for t in texts:
        t = t.strip()
        if "\n" in t:
            line = t.split("\n")[1]
            indent = len(line) - len(line.lstrip(" "))
            key = f"indent={indent or 2}"
        else:
            key = "compact" if '":' in t and '": ' not in t else "default"
        votes[key] += 1
    kind = votes.most_common(1)[0][0] if votes else "default"
    ascii_ = any("\\u" in t for t in texts)
    if kind.startswith("indent="):
        return {"indent": int(kind.split("=")[1]), "separators": [",", ": "], "ensure_ascii": ascii_}
    if kind == "compact":
        return {"indent": None, "separators": [",", ":"], "ensure_ascii": ascii_}
    return {"indent": None, "separators": [", ", ": "], "ensure_ascii": ascii_}


class Extractor(Specialist):
    """Fills a JSON object from the user's text, one encoder decision per field.

    >>> ex = Extractor(epochs=4).fit(train_examples)        # doctest: +SKIP
    >>> ex.predict([request])[0].response.text              # doctest: +SKIP
    '{"order_id": "ORD-1234", "email": "Ana@Example.com"}'
    """

    kind = "extractor"
    learns_from_validation = False  # validation is only scored (meta.metrics)

    def __init__(
        self,
        base: str | None = None,
        *,
        epochs: int = 4,
        lr: float = 3e-4,
        head_lr: float = 3e-3,
        batch_size: int = 16,
        max_steps: int | None = 400,
        max_length: int = 256,
        train_layers: int | None = 3,
        separate_layers: int | None = None,
        query_slots: bool | None = None,
        pack: int | None = 1,
        enum_max: int = 12,
        threads: int | None = None,
        seed: int = 0,
        dtype: str = "auto",
        progress: bool = False,
    ) -> None:
        self.base = base
        self.params: dict[str, Any] = {
            "epochs": epochs,
            "lr": lr,
            "head_lr": head_lr,
            "batch_size": batch_size,
            "max_steps": max_steps,
            "max_length": max_length,
            "train_layers": train_layers,
            "separate_layers": separate_layers,
            "query_slots": query_slots,
            "pack": pack,
            "enum_max": enum_max,
            "seed": seed,
            "dtype": dtype,
        }
        inference_dtype(dtype)  # an unknown dtype is an error now, not at the first fit
        self.threads = threads
        self.progress = progress
        # the fields, in the teacher's key order: name → schema / required / how an absent one is written
        self.fields: list[dict[str, Any]] = []
        self.style: dict[str, Any] = _style([])
        self._engine: EncoderEngine | None = None
        self.meta = SpecialistMeta(kind=self.kind, base_model=base or "")

    @property
    def engine(self) -> EncoderEngine:
        if self._engine is None:
            self._engine = EncoderEngine.from_params(self.base, self.params, self.threads)
            self.meta.base_model = self._engine.base
        return self._engine

    def _param(self, f: dict[str, Any]) -> Param:
        # a required field the teacher may write as null is, for deciding it, optional: "no answer" is null
        required = f["required"] and not f.get("nullable", False)
        return Param(
            f["name"], f["schema"], required, default_year=f.get("default_year"), today=f.get("today")
        )

    # ------------------------------------------------------------ training

    def fit(self, examples: Sequence[Example], validation: Sequence[Example] | None = None) -> Extractor:
        """Train on (request, teacher's JSON object) examples; others (not a JSON object) are skipped."""
        pairs = [(ex, _object(ex.response.text)) for ex in examples]
        usable = [(ex, obj) for ex, obj in pairs if obj is not None]
        if not usable:
            raise UserError("No examples whose response is a JSON object to train the extractor on.")
        self.fields = self._infer_fields(usable)
        self.style = _style([ex.response.text for ex, _ in usable])
        spans: list[SpanItem] = []
        choices: list[ChoiceItem] = []
        unreadable = 0  # optional values the answer gives that no span or choice of the text teaches
        for ex, obj in usable:
            text = conversation_text(ex.request)
            for f in self.fields:
                prm = self._param(f)
                value = obj.get(f["name"])
                values = [] if value is None else value if prm.kind == "array" else [value]
                item = param_item(prm, values, text)
                if isinstance(item, SpanItem):
                    spans.append(item)
                elif isinstance(item, ChoiceItem):
                    choices.append(item)
                elif values and not prm.required:
                    unreadable += 1
        # where the fields' own heads cannot learn whether a value was given (it is not in the
        # text as the teacher writes it), which optional fields the answer gives is one more choice
        presence = self._presence_fields(learn=unreadable >= PRESENCE_MIN)
        for ex, obj in usable if presence else []:
            given = [j for j, f in enumerate(presence) if obj.get(f["name"]) is not None]
            choices.append(
                ChoiceItem(
                    _presence_queries(presence), conversation_text(ex.request), given or [len(presence)]
                )
            )
        p = self.params
        losses = self.engine.fit(
            spans,
            choices,
            epochs=p["epochs"],
            lr=p["lr"],
            head_lr=p["head_lr"],
            batch_size=p["batch_size"],
            seed=p["seed"],
            progress=self.progress,
            description="extractor",
            max_steps=p["max_steps"],
        )
        examples_used = [ex for ex, _ in usable]
        self.meta = SpecialistMeta(
            kind=self.kind,
            base_model=self.engine.base,
            data_hash=data_hash(examples_used),
            n_train=len(examples_used),
            schema=self.schema(),
            metrics={"train_loss": [round(x, 4) for x in losses]},
            params={**p, "fields": self.fields, "style": self.style},
        )
        if validation:
            self.meta.metrics["validation_field_accuracy"] = self.field_accuracy(validation)
        return self

    def _infer_fields(self, usable: list[tuple[Example, dict[str, Any]]]) -> list[dict[str, Any]]:
        from smallfleet.specialists.catalog import infer_schema

        objs = [obj for _, obj in usable]
        inferred = infer_schema(objs, enum_max=self.params["enum_max"])
        props = inferred.get("properties") or {}
        asked = next((ex.request.json_schema for ex, _ in usable if ex.request.json_schema), None) or {}
        asked_props = asked.get("properties") or {}
        required = set(asked.get("required") or inferred.get("required") or [])
        order = list(dict.fromkeys(k for obj in objs for k in obj))
        fields = []
        for name in order:
            schema = {**props.get(name, {}), **(asked_props.get(name) or {})}
            present = [(ex, obj[name]) for ex, obj in usable if obj.get(name) is not None]
            if "enum" in schema and name not in asked_props:
                # a value the text spells out is better copied (new values work too) than classified
                found = sum(bool(find_value_spans(conversation_text(ex.request), v)) for ex, v in present)
                if present and found >= 0.5 * len(present):
                    schema = {k: v for k, v in schema.items() if k != "enum"}
            nulls = sum(1 for obj in objs if name in obj and obj[name] is None)
            missing = sum(1 for obj in objs if name not in obj)
            values = Counter(json.dumps(v, sort_keys=True) for _, v in present)
            # a date said without a year ("Jan 30") is in the year the teacher's dates mostly are
            years = Counter(v[:4] for _, v in present if is_iso_date(v))
            fields.append(
                {
                    "name": name,
                    "schema": schema,
                    "required": name in required,
                    "absent": "null" if nulls >= missing else "omit",
                    "nullable": bool(nulls) or _allows_null(schema),
                    "default_year": int(years.most_common(1)[0][0]) if years else None,
                    # what "today" was for the teacher: "tomorrow" in a message, the 16th in its answer
                    "today": learn_today(
                        [(conversation_text(ex.request), v) for ex, v in present if is_iso_date(v)]
                    ),
                    "constant": json.loads(values.most_common(1)[0][0]) if values else None,
                    "constant_share": values.most_common(1)[0][1] / len(objs) if values else 0.0,
                }
            )
        return fields

    def _presence_fields(self, learn: bool | None = None) -> list[dict[str, Any]]:
        """The optional fields whose presence is a learned decision (``learn``: mark them, or not, now)."""
        if learn is not None:
            for f in self.fields:
                f["presence"] = learn and (not f["required"] or f.get("nullable", False))
        return [f for f in self.fields if f.get("presence")]

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the objects this extractor writes."""
        return {
            "type": "object",
            "properties": {f["name"]: f["schema"] for f in self.fields},
            "required": [f["name"] for f in self.fields if f["required"]],
        }

    # ------------------------------------------------------------ prediction

    def predict(self, requests: Sequence[ChatRequest]) -> list[Prediction]:
        if not self.fields:
            raise UserError("This extractor is not trained: call fit() or load() first.")
        eng = self.engine
        texts = [conversation_text(r) for r in requests]
        params = [self._param(f) for f in self.fields]
        span_jobs = [
            (i, k) for i in range(len(requests)) for k, p in enumerate(params) if p.kind in SPAN_KINDS
        ]
        choice_jobs = [
            (i, k) for i in range(len(requests)) for k, p in enumerate(params) if p.kind in CHOICE_KINDS
        ]
        presence = self._presence_fields()
        asked = [([params[k].choice_query(v) for v in params[k].choices], texts[i]) for i, k in choice_jobs]
        if presence:
            asked += [(_presence_queries(presence), text) for text in texts]
        span_res, choice_res = eng.answer(  # every field together (one pass per request when packed)
            [(params[k].query(), texts[i]) for i, k in span_jobs],
            asked,
            candidates=[candidates(params[k], texts[i]) for i, k in span_jobs],
        )
        given_probs = choice_res[len(choice_jobs) :]
        choice_res = choice_res[: len(choice_jobs)]
        decided = {}
        for (i, k), res in zip(span_jobs, span_res, strict=True):
            if params[k].kind != "array":
                prefer_latest(res, texts[i])  # a value said, then changed: the latest mention
                res.spans = res.spans[:1]  # one value per field: the best span
            decided[(i, k)] = span_decision(params[k], res, texts[i])
        for (i, k), pr in zip(choice_jobs, choice_res, strict=True):
            decided[(i, k)] = choice_decision(params[k], pr, texts[i])
        out = []
        for i, req in enumerate(requests):
            obj: dict[str, Any] = {}
            conf = 1.0
            for k, f in enumerate(self.fields):
                d = decided.get((i, k))
                if d is None and f["required"]:  # a field we cannot read from text: the teacher's usual value
                    obj[f["name"]] = f["constant"]
                    conf = min(conf, f["constant_share"])
                    continue
                if d is None:  # optional and unreadable: left out, and the presence decision says how
                    if f["absent"] == "null":  # likely it is that the message gave it
                        obj[f["name"]] = None
                    continue
                conf = min(conf, d.confidence)
                if d.values:
                    obj[f["name"]] = d.values[0]
                elif f.get("nullable") and (f["required"] or f["absent"] == "null"):
                    obj[f["name"]] = None
                elif f["required"]:
                    obj[f["name"]] = None
                    conf = 0.0
                elif f["absent"] == "null":
                    obj[f["name"]] = None
            if presence:
                conf = min(conf, _presence_confidence(presence, given_probs[i], obj))
            if req.json_schema is not None and not _valid(obj, req.json_schema):
                conf = 0.0
            text = json.dumps(
                obj,
                indent=self.style["indent"],
                separators=tuple(self.style["separators"]),
                ensure_ascii=self.style["ensure_ascii"],
            )
            out.append(Prediction(ChatResponse.of_text(f"specialist:{self.kind}", text), float(conf)))
        return out

    def field_accuracy(self, examples: Sequence[Example]) -> float:
        """Share of (example, field) pairs where the value equals the teacher's (absent = absent)."""
        preds = self.predict([ex.request for ex in examples])
        ok = total = 0
        for p, ex in zip(preds, examples, strict=True):
            want, got = _object(ex.response.text) or {}, _object(p.response.text) or {}
            for f in self.fields:
                total += 1
                ok += want.get(f["name"]) == got.get(f["name"])
        return ok / max(1, total)

    # ------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.engine.save(directory)
        self.meta.schema = self.schema()
        self.meta.params = {**self.params, "fields": self.fields, "style": self.style}
        self.meta.write(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path, threads: int | None = None) -> Extractor:
        directory = Path(directory)
        meta = SpecialistMeta.read(directory)
        if meta.kind != cls.kind:
            raise UserError(f"{directory} holds a {meta.kind!r} specialist, not an extractor.")
        params = dict(meta.params)
        fields = params.pop("fields", [])
        style = params.pop("style", None)
        self = cls(meta.base_model, threads=threads, **params)
        self._engine = EncoderEngine.load(directory, threads=threads, dtype=self.params["dtype"])
        self.fields = fields
        self.style = style or _style([])
        self.meta = meta
        return self


def _presence_queries(fields: list[dict[str, Any]]) -> list[str]:
    return [f"mentioned: {humanise(f['name'])}" for f in fields] + [f"mentioned: {NOTHING}"]


def _presence_confidence(fields: list[dict[str, Any]], probs: list[float], obj: dict[str, Any]) -> float:
    """How sure the presence decision is of the object's set of optional fields.

    Trained with the given fields sharing the target equally (or "nothing"), a field left
    out whose share is ``p`` beside ``k`` given ones is present with probability about
    ``p * (k + 1)``; an object with none given is as sure as "nothing".
    """
    given = [j for j, f in enumerate(fields) if obj.get(f["name"]) is not None]
    if not given:
        return probs[-1]
    missing = max((probs[j] for j in range(len(fields)) if j not in given), default=0.0)
    return max(0.0, min(1.0 - probs[-1], 1.0 - missing * (len(given) + 1)))


def _allows_null(schema: dict[str, Any]) -> bool:
    t = schema.get("type")
    return t == "null" or (isinstance(t, list) and "null" in t) or None in (schema.get("enum") or [])


def _valid(obj: dict[str, Any], schema: dict[str, Any]) -> bool:
    import jsonschema

    try:
        jsonschema.validate(obj, schema)
    except jsonschema.ValidationError:
        return False
    except (jsonschema.SchemaError, jsonschema.exceptions.UnknownType):
        return True
    return True
