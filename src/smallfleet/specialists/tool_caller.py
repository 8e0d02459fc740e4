"""The ``tool_caller`` specialist: which of the request's tools to call, and with what.

Built on :mod:`smallfleet.specialists._spans` (one encoder, a span head and a
choice head), every decision is conditioned on a *description*, never on a
memorised name, so it calls tools it never saw in training:

1. **function**: a softmax over the request's tools plus a learned "no tool"
   score. Each tool's score is a learned weighting of the cosine similarities,
   under the frozen pretrained sentence encoder, between the user text and the
   tool's description, name and parameter descriptions (cached per tool), so it
   carries over to new tools. Where the teacher both called and replied in text with
   these tools, a learned call-or-reply decision on the conversation's last turns
   scales the tools' share down (:data:`DECISION_QUERIES`): a call needs both. When the
   training data had calls to several functions at once, tools scoring at least
   ``parallel_ratio`` of the best (and above "no tool") are called together.
2. **arguments**, per parameter, from the pair
   ``"<tool> - <param> (<type>): <description>" [SEP] <conversation>``
   (:mod:`smallfleet.specialists._conversation`: the turns, newest kept, a value said
   twice read at its latest mention): strings are spans of the text (casing kept); integers, numbers and dates
   are spans read by type (``"1,200"`` → 1200, ``"March 5th, 2024"`` → ``"2024-03-05"``);
   enums and booleans are choices among their values; arrays are several spans.
   An optional parameter the text does not mention is left out (or given its
   schema ``default`` with ``fill_defaults``); a required one is always filled.
3. **parallel calls of one function** (when the training data had them): when a
   parameter finds several confident, separate spans ("weather in Paris and
   London"), one call per span; other parameters are shared.

The confidence is the weakest decision's probability. The output is exactly the
OpenAI ``tool_calls`` shape and is checked against each tool's JSON schema
(confidence 0 when it does not validate).
"""

from __future__ import annotations

import copy
import inspect
import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smallfleet.encoders import inference_dtype
from smallfleet.errors import UserError
from smallfleet.specialists._conversation import DECISION_CHARS, conversation_text, prefer_latest
from smallfleet.specialists._fill import (
    CHOICE_KINDS,
    SPAN_KINDS,
    Decision,
    candidates,
    choice_decision,
    disjoint,
    param_item,
    span_decision,
)
from smallfleet.specialists._params import Param, coerce, humanise
from smallfleet.specialists._selector import SimilaritySelector
from smallfleet.specialists._spans import ChoiceItem, EncoderEngine, Span, SpanItem, SpanResult
from smallfleet.specialists._values import (
    extend_name,
    is_iso_date,
    is_iso_time,
    learn_today,
    trim_run_on,
)
from smallfleet.specialists.base import Example, Prediction, Specialist, SpecialistMeta, data_hash
from smallfleet.types import ChatRequest, ChatResponse, FunctionDefinition, Tool

__all__ = ["ToolCaller"]

#: The call-or-reply decision, taught where the teacher both called and replied with one tool set.
DECISION_QUERIES = ("the assistant calls a tool now", "the assistant replies in text, without a tool call")
#: Each kind of answer must be at least this many training examples for the decision to be learned.
DECISION_MIN = 4


def tool_query(fn: FunctionDefinition) -> str:
    """What the selection head reads for a tool: its name, description and parameter names."""
    props = (fn.parameters or {}).get("properties") or {}
    params = ", ".join(humanise(p) for p in props)
    desc = (fn.description or "").strip()
    return f"{humanise(fn.name)}: {desc} (parameters: {params})" if params else f"{humanise(fn.name)}: {desc}"


def tool_views(fn: FunctionDefinition) -> list[str]:
    """The texts a request is compared with to select a tool: all of it, its name, its parameters."""
    props = (fn.parameters or {}).get("properties") or {}
    params = "; ".join(
        f"{humanise(p)}: {v.get('description', '')}" if isinstance(v, dict) else humanise(p)
        for p, v in props.items()
    )
    return [tool_query(fn), humanise(fn.name), params or humanise(fn.name)]


def tool_params(fn: FunctionDefinition) -> list[Param]:
    schema = fn.parameters or {}
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    return [
        Param(name, p if isinstance(p, dict) else {}, name in required, owner=fn.name)
        for name, p in props.items()
    ]


def _calls_of(response: ChatResponse) -> list[tuple[str, dict[str, Any]]] | None:
    """The teacher's calls as (name, arguments); None when an argument string is not a JSON object."""
    out = []
    for tc in response.message.tool_calls or []:
        try:
            args = json.loads(tc.function.arguments or "{}")
        except ValueError:
            return None
        if not isinstance(args, dict):
            return None
        out.append((tc.function.name, args))
    return out


class ToolCaller(Specialist):
    """Calls the request's tools: function selection + argument filling on a sentence encoder.

    >>> tc = ToolCaller(epochs=3).fit(train_examples, validation)   # doctest: +SKIP
    >>> tc.predict([request])[0].response.message.tool_calls        # doctest: +SKIP
    """

    kind = "tool_caller"
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
        distractors: int = 1,
        multi_threshold: float = 0.25,
        parallel_ratio: float = 0.5,
        fill_defaults: bool = False,
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
            "distractors": distractors,
            "multi_threshold": multi_threshold,
            "parallel_ratio": parallel_ratio,
            "fill_defaults": fill_defaults,
            "seed": seed,
            "dtype": dtype,
        }
        inference_dtype(dtype)  # an unknown dtype is an error now, not at the first fit
        self.threads = threads
        self.progress = progress
        # what the training data showed: the usual text answer when no tool is called, and
        # whether the teacher ever called several functions / one function several times at once
        self.learned: dict[str, Any] = {
            "none_text": None, "none_text_share": 0.0, "multi_function": False, "multi_call": False,
            "decides": False,
        }  # fmt: skip
        self._engine: EncoderEngine | None = None
        self._answers: dict[str, Any] | None = None  # the engine's answers kept while learning widening
        self.selector = SimilaritySelector(base)
        self.meta = SpecialistMeta(kind=self.kind, base_model=base or "")

    @property
    def engine(self) -> EncoderEngine:
        if self._engine is None:
            self._engine = EncoderEngine.from_params(self.base, self.params, self.threads)
            self.meta.base_model = self._engine.base
        return self._engine

    # ------------------------------------------------------------ training

    def fit(self, examples: Sequence[Example], validation: Sequence[Example] | None = None) -> ToolCaller:
        """Train on (request with tools, teacher's tool calls) examples; other examples are ignored."""
        usable = [ex for ex in examples if ex.request.tools and _calls_of(ex.response) is not None]
        if not usable:
            raise UserError("No tool-calling examples to train on (requests need `tools`).")
        n_reply = sum(not ex.response.message.tool_calls for ex in usable)
        self.learned["decides"] = min(n_reply, len(usable) - n_reply) >= DECISION_MIN
        self.learned["forms"] = _learn_forms(usable)
        spans, choices, groups = self._items(usable)
        feats = self.selector.features([(views, text) for views, text, _ in groups])
        self.selector.fit(feats, [t for _, _, t in groups])
        self.learned["selector"] = self.selector.state()
        texts = [ex.response.text for ex in usable if not ex.response.message.tool_calls]
        if texts:
            text, n = Counter(texts).most_common(1)[0]
            self.learned.update(none_text=text, none_text_share=n / len(texts))
        names = [Counter(n for n, _ in _calls_of(ex.response) or []) for ex in usable]
        self.learned["multi_function"] = any(len(c) > 1 for c in names)
        self.learned["multi_call"] = any(c and max(c.values()) > 1 for c in names)
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
            description="tool_caller",
            max_steps=p["max_steps"],
        )
        self._learn_widening(usable)
        self.meta = SpecialistMeta(
            kind=self.kind,
            base_model=self.engine.base,
            data_hash=data_hash(usable),
            n_train=len(usable),
            metrics={"train_loss": [round(x, 4) for x in losses]},
            params={**p, "learned": self.learned},
        )
        if validation:
            self.meta.metrics["validation_exact"] = self.exact_match(validation)
        return self

    def _items(
        self, examples: Sequence[Example]
    ) -> tuple[list[SpanItem], list[ChoiceItem], list[tuple[list[list[str]], str, list[int]]]]:
        rng = random.Random(self.params["seed"])
        pool: dict[str, Tool] = {}
        for ex in examples:
            for t in ex.request.tools or []:
                pool.setdefault(t.function.name, t)
        spans: list[SpanItem] = []
        choices: list[ChoiceItem] = []
        groups: list[tuple[list[list[str]], str, list[int]]] = []
        for ex in examples:
            text = conversation_text(ex.request)
            tail = conversation_text(ex.request, DECISION_CHARS)
            calls = _calls_of(ex.response) or []
            if self.learned["decides"]:
                choices.append(ChoiceItem(list(DECISION_QUERIES), tail, [0 if calls else 1]))
            tools = list(ex.request.tools or [])
            names = {t.function.name for t in tools}
            others = [t for n, t in pool.items() if n not in names]
            tools += rng.sample(others, min(self.params["distractors"], len(others)))
            rng.shuffle(tools)
            called = {name for name, _ in calls}
            targets = [i for i, t in enumerate(tools) if t.function.name in called] or [len(tools)]
            groups.append(([tool_views(t.function) for t in tools], tail, targets))
            by_name = {t.function.name: t.function for t in tools}
            for name in dict.fromkeys(n for n, _ in calls):
                if name not in by_name:
                    continue
                args = [a for n, a in calls if n == name]
                for param in self._params(by_name[name]):
                    item = param_item(param, [a.get(param.name) for a in args if param.name in a], text)
                    if isinstance(item, SpanItem):
                        spans.append(item)
                    elif isinstance(item, ChoiceItem):
                        choices.append(item)
        return spans, choices, groups

    # ------------------------------------------------------------ prediction

    def predict(self, requests: Sequence[ChatRequest]) -> list[Prediction]:
        p = self.params
        texts = [conversation_text(r) for r in requests]
        tails = [conversation_text(r, DECISION_CHARS) for r in requests]
        # 1. which tools: similarity features (tool embeddings cached), one softmax per request
        options = [self._options(r) for r in requests]
        scored = [i for i, o in enumerate(options) if o is not None and len(o[0]) + o[1] > 1]
        feats = self.selector.features(
            [([tool_views(t.function) for t in options[i][0]], tails[i]) for i in scored]
        )
        probs = self.selector.probs(feats, [options[i][1] for i in scored])
        prob_of = dict(zip(scored, probs, strict=True))
        if self.learned.get("decides"):  # call or reply: a call needs both the decision and the selector
            asked = [i for i, o in enumerate(options) if o is not None and o[1]]
            _, said = self._answer([], [(list(DECISION_QUERIES), tails[i]) for i in asked])
            for i, pr in zip(asked, said, strict=True):
                n = len(options[i][0])  # type: ignore[index]
                tool_probs = [pr[0] * t for t in prob_of.get(i, [1.0])[:n]]
                prob_of[i] = [*tool_probs, 1.0 - sum(tool_probs)]
        chosen: list[tuple[list[Tool], float]] = []
        for i, req in enumerate(requests):
            opt = options[i]
            if opt is None:
                chosen.append(([], 1.0))
                continue
            tools, with_none = opt
            pr = prob_of.get(i, [1.0] if tools else [0.0, 1.0])
            parallel = req.parallel_tool_calls is not False and self.learned["multi_function"]
            chosen.append(self._select(tools, pr, with_none, parallel))
        # 2. arguments: one batched pass for every span, one for every choice
        jobs = [
            (i, t.function, prm)
            for i, (ts, _) in enumerate(chosen)
            for t in ts
            for prm in self._params(t.function)
        ]
        span_jobs = [j for j in jobs if j[2].kind in SPAN_KINDS]
        choice_jobs = [j for j in jobs if j[2].kind in CHOICE_KINDS]
        span_res, choice_res = self._answer(  # every argument together (one pass when packed)
            [(prm.query(), texts[i]) for i, _, prm in span_jobs],
            [([prm.choice_query(v) for v in prm.choices], texts[i]) for i, _, prm in choice_jobs],
            multi_threshold=p["multi_threshold"],
            candidates=[candidates(prm, texts[i]) for i, _, prm in span_jobs],
        )
        decided: dict[tuple[int, str, str], Decision] = {}
        by_call: dict[tuple[int, str], list[SpanResult]] = {}
        for (i, fn, prm), res in zip(span_jobs, span_res, strict=True):
            if prm.kind in ("span", "integer", "number", "date", "time"):
                prefer_latest(res, texts[i])  # a value said, then changed: the latest mention
                by_call.setdefault((i, fn.name), []).append(res)
        for results in by_call.values():
            disjoint(results)
        for (i, fn, prm), res in zip(span_jobs, span_res, strict=True):
            parallel = requests[i].parallel_tool_calls is not False and self.learned["multi_call"]
            taken = [sp for r in by_call.get((i, fn.name), []) if r is not res for sp in r.spans[:1]]
            widen = self.learned.get("widen", True)
            if isinstance(widen, dict):
                widen = widen.get(f"{fn.name}.{prm.name}", True)
            decided[(i, fn.name, prm.name)] = _span_value(prm, res, texts[i], parallel, taken, widen)
        for (i, fn, prm), pr in zip(choice_jobs, choice_res, strict=True):
            d = choice_decision(prm, pr, texts[i])
            optional_enum = prm.kind == "enum" and not prm.required
            if optional_enum and d.values and d.confidence < 0.9 and not _says_value(texts[i], d.values[0]):
                d = Decision([], 1.0 - d.confidence)  # an optional value the text does not give: left out
            decided[(i, fn.name, prm.name)] = d
        out = []
        for i, req in enumerate(requests):
            tools, conf = chosen[i]
            if len(tools) > 1:
                tools = [t for k, t in enumerate(tools) if k == 0 or _evidenced(i, t.function, decided)]
            if not tools:
                out.append(self._no_call(req, conf))
                continue
            calls: list[tuple[str, dict[str, Any]]] = []
            for t in tools:
                parallel = req.parallel_tool_calls is not False and self.learned["multi_call"]
                fn_calls, c = self._build_calls(i, t.function, decided, parallel)
                calls += fn_calls
                conf = min(conf, c)
            if not all(_valid(args, _tool(tools, name)) for name, args in calls):
                conf = 0.0
            out.append(Prediction(ChatResponse.of_tool_calls(f"specialist:{self.kind}", calls), float(conf)))
        return out

    def _params(self, fn: FunctionDefinition) -> list[Param]:
        """The tool's parameters, with the forms the teacher's values showed (``learned["forms"]``)."""
        forms = self.learned.get("forms") or {}
        out = []
        for prm in tool_params(fn):
            form = forms.get(f"{fn.name}.{prm.name}")
            if form:
                prm = Param(
                    prm.name,
                    {**prm.schema, **form.get("schema", {})},
                    prm.required,
                    owner=prm.owner,
                    default_year=form.get("default_year"),
                    today=form.get("today"),
                )
            out.append(prm)
        return out

    def _options(self, req: ChatRequest) -> tuple[list[Tool], bool] | None:
        """The tools to choose among and whether "no tool" is allowed; None: no call at all."""
        tools = list(req.tools or [])
        choice = req.tool_choice
        if not tools or choice == "none":
            return None
        if choice == "required":
            return tools, False
        if choice is not None and not isinstance(choice, str):
            named = [t for t in tools if t.function.name == choice.function.name]
            if not named:
                raise UserError(f"tool_choice names {choice.function.name!r}, which is not among the tools.")
            return named, False
        return tools, True

    def _select(
        self, tools: list[Tool], probs: list[float], with_none: bool, parallel: bool
    ) -> tuple[list[Tool], float]:
        p_none = probs[-1] if with_none else 0.0
        tool_probs = probs[: len(tools)]
        best = max(range(len(tools)), key=lambda k: tool_probs[k])
        if with_none and p_none >= tool_probs[best]:
            return [], p_none
        picked = [best]
        if parallel:
            ratio = self.params["parallel_ratio"]
            floor = max(ratio * tool_probs[best], p_none)
            picked += [k for k in range(len(tools)) if k != best and tool_probs[k] >= floor]
        return [tools[k] for k in picked], min(1.0, sum(tool_probs[k] for k in picked))

    def _build_calls(
        self, i: int, fn: FunctionDefinition, decided: dict[tuple[int, str, str], Decision], parallel: bool
    ) -> tuple[list[tuple[str, dict[str, Any]]], float]:
        conf = 1.0
        per_param: dict[str, list[Any]] = {}
        for prm in self._params(fn):
            d = decided.get((i, fn.name, prm.name))
            if d is None:  # a kind we cannot fill
                if prm.required:
                    per_param[prm.name] = [prm.schema["default"]] if "default" in prm.schema else []
                    conf = 0.0 if not per_param[prm.name] else conf
                continue
            conf = min(conf, d.confidence)
            values = d.values
            if not values and self.params["fill_defaults"] and "default" in prm.schema:
                values = [prm.schema["default"]]
            if not values and prm.required:
                conf = 0.0
            if values:
                per_param[prm.name] = values
        n = max((len(v) for v in per_param.values()), default=1) if parallel else 1
        n = max(1, n)
        calls = []
        for k in range(n):
            args = {}
            for name, values in per_param.items():
                if values:
                    args[name] = values[k] if len(values) == n else values[0]
            calls.append((fn.name, args))
        return calls, conf

    def _no_call(self, req: ChatRequest, conf: float) -> Prediction:
        """No tool: the teacher's usual text answer, as sure as that text was usual."""
        text = self.learned["none_text"] or ""
        if req.tool_choice == "none" or not req.tools:
            conf = 1.0
        share = self.learned["none_text_share"]
        return Prediction(ChatResponse.of_text(f"specialist:{self.kind}", text), float(conf * share))

    def _answer(self, *args: Any, **kwargs: Any) -> tuple[list[SpanResult], list[list[float]]]:
        """:meth:`EncoderEngine.answer`; while ``_answers`` is set, each distinct question is
        put to the encoder once (the results are copied out: post-processing edits them)."""
        if self._answers is None:
            return self.engine.answer(*args, **kwargs)
        key = repr((args, sorted(kwargs.items())))
        if key not in self._answers:
            self._answers[key] = self.engine.answer(*args, **kwargs)
        return copy.deepcopy(self._answers[key])

    def _learn_widening(self, examples: Sequence[Example], n: int = 96) -> None:
        """Per argument (``tool.param``): whether widening its string spans to a whole name or
        address agrees with the teacher more often than the model's own span boundaries do,
        judged on (up to ``n``) training examples. Arguments not seen here are widened."""
        sample = random.Random(self.params["seed"]).sample(list(examples), min(n, len(examples)))
        agree: dict[bool, Counter[str]] = {}
        self._answers = {}  # both settings ask the encoder the same questions: once
        try:
            for widen in (True, False):
                self.learned["widen"] = widen
                agree[widen] = Counter()
                preds = self.predict([ex.request for ex in sample])
                for p, ex in zip(preds, sample, strict=True):
                    want = {name: args for name, args in _calls_of(ex.response) or []}
                    for name, args in _calls_of(p.response) or []:
                        for key, value in args.items():
                            if isinstance(value, str) and key in want.get(name, {}):
                                agree[widen][f"{name}.{key}"] += value == want[name][key]
        finally:
            self._answers = None
        keys = set(agree[True]) | set(agree[False])
        self.learned["widen"] = {k: agree[True][k] >= agree[False][k] for k in sorted(keys)}

    def exact_match(self, examples: Sequence[Example]) -> float:
        """Share of examples whose calls equal the teacher's (names and arguments, order-free)."""
        if not examples:
            return 0.0
        preds = self.predict([ex.request for ex in examples])
        return sum(_same_calls(p.response, ex.response) for p, ex in zip(preds, examples, strict=True)) / len(
            examples
        )

    # ------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self.engine.save(directory)
        self.meta.params = {**self.params, "learned": self.learned}
        self.meta.write(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path, threads: int | None = None) -> ToolCaller:
        directory = Path(directory)
        meta = SpecialistMeta.read(directory)
        if meta.kind != cls.kind:
            raise UserError(f"{directory} holds a {meta.kind!r} specialist, not a tool_caller.")
        params = dict(meta.params)
        legacy = "learned" not in params
        learned = dict(params.pop("learned", None) or {})
        if legacy:  # versions before the learned flags always allowed parallel calls
            learned.update(multi_function=True, multi_call=True)
        # older saves kept what fit learned among the constructor's params
        for key in ("none_text", "none_text_share", "multi_function", "multi_call"):
            if key in params:
                learned.setdefault(key, params.pop(key))
        known = set(inspect.signature(cls.__init__).parameters) - {"self", "base", "threads"}
        self = cls(meta.base_model, threads=threads, **{k: v for k, v in params.items() if k in known})
        self._engine = EncoderEngine.load(directory, threads=threads, dtype=self.params["dtype"])
        self.learned.update(learned)
        if "selector" in learned:
            self.selector = SimilaritySelector(meta.base_model, **learned["selector"])
        self.meta = meta
        return self


_CONJ = r"(?:and|or|&|plus|as well as|versus|vs\.?)"
_GAP_LAST = re.compile(
    rf"^\s*,?\s*{_CONJ}(?:\s+(?:also|then|in|at|for|of|to|on|the|from|with)){{0,3}}\s*$", re.I
)
_GAP_LIST = re.compile(r"^\s*,\s*$")


#: A parameter's values must be at least this many for their form to be learned.
FORM_MIN = 3


def _learn_forms(examples: Sequence[Example]) -> dict[str, dict[str, Any]]:
    """Per ``tool.param`` whose schema says only "string": the form every one of the teacher's
    values has, when it is one the specialists read into (24-hour ``HH:MM`` times; ISO dates,
    with the year and the "today" the teacher's relative dates point back to)."""
    from collections import defaultdict

    seen: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for ex in examples:
        text = conversation_text(ex.request)
        for name, args in _calls_of(ex.response) or []:
            for key, value in args.items():
                seen[f"{name}.{key}"].append((text, value))
    forms: dict[str, dict[str, Any]] = {}
    for key, pairs in seen.items():
        values = [v for _, v in pairs]
        if len(values) < FORM_MIN or not all(isinstance(v, str) for v in values):
            continue
        if all(is_iso_time(v) for v in values):
            forms[key] = {"schema": {"pattern": r"^\d{2}:\d{2}$"}}
        elif all(is_iso_date(v) for v in values):
            years = Counter(v[:4] for v in values)
            forms[key] = {
                "schema": {"format": "date"},
                "default_year": int(years.most_common(1)[0][0]),
                "today": learn_today(pairs),
            }
    return forms


def _separate_values(spans: list[Span], res: SpanResult, text: str) -> bool:
    """Whether several spans found for one parameter are really several values ("Paris and London").

    Each gap between them must be a list separator (", " between items, a conjunction before the
    last), each span must be a value of its own, and the model's best span must not be the whole
    run read as one value.
    """
    if len(spans) < 2:
        return False
    gaps = [text[a.end : b.start] for a, b in itertools.pairwise(spans)]
    if any(b.start < a.end for a, b in itertools.pairwise(spans)):
        return False
    if not _GAP_LAST.match(gaps[-1]) or not all(_GAP_LIST.match(g) or _GAP_LAST.match(g) for g in gaps[:-1]):
        return False
    if any(len(sp.text.strip(" .,;:'\"")) < 2 for sp in spans):
        return False
    # the model's own best reading took the whole run as one value ("Pride and Prejudice")
    best = res.top[0] if res.top else None
    return not (best is not None and best.start <= spans[0].start and best.end >= spans[-1].end)


def _span_value(
    prm: Param, res: SpanResult, text: str, parallel: bool, taken: list[Span], widen: bool = True
) -> Decision:
    """One parameter's value(s) from its spans: several only when they are clearly separate values.

    A single value is read from the most probable span (string spans cut where a new clause
    starts and widened to a whole name or address); several spans that are not separate
    values are joined when only punctuation parts them ("Riga" + "Latvia"), else the best is
    kept. A required number the model did not find falls back to a number in the text.
    """
    spans = list(res.spans)
    if len(spans) > 1 and prm.kind != "array":
        ordered = sorted(spans, key=lambda sp: sp.start)
        if not (parallel and _separate_values(ordered, res, text)):
            gaps_ok = all(
                re.fullmatch(r"[\s,;/-]{0,3}", text[a.end : b.start]) for a, b in itertools.pairwise(ordered)
            )
            if gaps_ok and ordered[0].end <= ordered[1].start:
                first, last = ordered[0], ordered[-1]
                spans = [
                    Span(first.start, last.end, text[first.start : last.end], min(x.prob for x in spans))
                ]
            else:
                spans = spans[:1]
    if widen and prm.kind == "span" and not isinstance(prm.schema.get("pattern"), str):
        # (a value with a pattern was chosen among the runs of words that match it: kept as is)
        spans = [_whole_value(sp, text, taken if len(spans) == 1 else spans) for sp in spans]
    found = SpanResult(spans, res.null_prob, res.best, res.top)
    d = span_decision(prm, found, text)
    if not d.values and prm.required and prm.kind in ("integer", "number"):
        d = _number_fallback(prm, text, taken) or d
    return d


def _whole_value(sp: Span, text: str, others: list[Span]) -> Span:
    s, e = extend_name(text, sp.start, trim_run_on(text, sp.start, sp.end))
    if any(
        o is not sp and o.start < e and s < o.end and not (o.start < sp.end and sp.start < o.end)
        for o in others
    ):
        s, e = sp.start, trim_run_on(text, sp.start, sp.end)  # widening would take another value's words
    return Span(s, e, text[s:e], sp.prob)


def _number_fallback(prm: Param, text: str, taken: list[Span]) -> Decision | None:
    """A required number the model missed: the first number in the text no other parameter took."""
    spans = candidates(prm, text) or []
    free = [(s, e) for s, e in spans if not any(t.start < e and s < t.end for t in taken)]
    for s, e in free or spans:
        v = coerce(text[s:e], prm)
        if v is not None:
            return Decision([v], 0.3)
    return None


def _says_value(text: str, value: Any) -> bool:
    words = {str(value), humanise(str(value))}
    return any(re.search(rf"(?<!\w){re.escape(w)}", text, re.IGNORECASE) for w in words if len(w.strip()) > 1)


def _evidenced(i: int, fn: FunctionDefinition, decided: dict[tuple[int, str, str], Decision]) -> bool:
    """An extra tool (beside the best) is called only when the text fills its arguments."""
    ds = [(prm, decided.get((i, fn.name, prm.name))) for prm in tool_params(fn)]
    if any(prm.required and (d is None or not d.values or d.confidence < 0.5) for prm, d in ds):
        return False
    return any(d is not None and d.values and d.confidence >= 0.5 for _, d in ds)


def _tool(tools: list[Tool], name: str) -> FunctionDefinition:
    return next(t.function for t in tools if t.function.name == name)


def _valid(args: dict[str, Any], fn: FunctionDefinition) -> bool:
    import jsonschema

    schema = fn.parameters or {"type": "object"}
    try:
        jsonschema.validate(args, schema)
    except jsonschema.ValidationError:
        return False
    except (jsonschema.SchemaError, jsonschema.exceptions.UnknownType):
        return True  # not a schema jsonschema can check (e.g. BFCL's "dict"/"float" types)
    return True


def _same_calls(a: ChatResponse, b: ChatResponse) -> bool:
    def key(r: ChatResponse) -> list[str]:
        calls = _calls_of(r) or []
        return sorted(json.dumps([n, args], sort_keys=True) for n, args in calls)

    return key(a) == key(b) and bool(a.message.tool_calls) == bool(b.message.tool_calls)
