"""A generated support-desk intent task, for tests, benchmarks and demos.

Six intents, each with two disjoint families of phrasings: ``split="train"`` uses
one family and ``split="test"`` the other, so a classifier is measured on
wording it never saw. Slots (products, order numbers, places) vary per example.

    examples = support_desk_examples(600, split="train", seed=0)
"""

from __future__ import annotations

import json
import random
from typing import Literal

from smallfleet.specialists.base import Example
from smallfleet.types import ChatRequest, ChatResponse, Usage

__all__ = ["INTENTS", "SYSTEM_PROMPT", "support_desk_examples"]

SYSTEM_PROMPT = (
    "You are the triage step of Acme's support desk. Read the customer's message and answer with "
    "exactly one intent: refund, order_status, cancel_subscription, change_address, reset_password "
    "or technical_issue."
)

_PRODUCTS = ["blender", "desk lamp", "headphones", "coffee grinder", "backpack", "monitor", "kettle"]
_PLACES = ["12 Elm Street", "Flat 4, 9 High Road", "77 Harbour Lane", "3 Rue Victor Hugo", "Oak Avenue 5"]

# intent → (family A phrasings, family B phrasings); {p} product, {o} order number, {a} address.
_TEMPLATES: dict[str, tuple[list[str], list[str]]] = {
    "refund": (
        [
            "I want my money back for the {p} I bought",
            "Please refund order {o}, the {p} arrived broken",
            "Can I get a refund? The {p} is not what I expected",
            "I returned the {p} last week and still have not been reimbursed",
            "How do I get reimbursed for order {o}?",
        ],
        [
            "The {p} was faulty so I'd like the payment reversed",
            "Give me back what I paid for the {p}, it stopped working",
            "You charged me for order {o} but I sent the {p} back, where is my money?",
            "I would like a full refund of my purchase of the {p}",
            "requesting reimbursement for the damaged {p} from order {o}",
        ],
    ),
    "order_status": (
        [
            "Where is my order {o}?",
            "When will the {p} I ordered arrive?",
            "Has order {o} shipped yet?",
            "Can you track my {p} delivery for me",
            "My package with the {p} has not arrived, what is its status?",
        ],
        [
            "Any update on the delivery of order {o}?",
            "I'm still waiting for the {p}, is it on its way?",
            "what's the tracking info for order {o}",
            "How long until the {p} gets to me?",
            "Is my {p} out for delivery today?",
        ],
    ),
    "cancel_subscription": (
        [
            "Cancel my subscription please",
            "I want to stop my monthly plan",
            "How do I end my membership?",
            "Please don't renew my subscription next month",
            "Unsubscribe me from the premium plan",
        ],
        [
            "I no longer want the recurring plan, terminate it",
            "Stop charging me every month, I'm quitting the service",
            "Close my premium membership effective today",
            "I'd like to opt out of automatic renewal and end the plan",
            "please discontinue my subscription",
        ],
    ),
    "change_address": (
        [
            "I moved, please update my address to {a}",
            "Change the shipping address on order {o} to {a}",
            "Can you send the {p} to {a} instead?",
            "My new delivery address is {a}",
            "Update my account address please, it is now {a}",
        ],
        [
            "Ship order {o} to a different place: {a}",
            "I relocated to {a}, deliver there from now on",
            "wrong address on my profile, correct it to {a}",
            "Please redirect the {p} to {a}",
            "Could you modify where my parcel goes? Use {a}",
        ],
    ),
    "reset_password": (
        [
            "I forgot my password",
            "I can't log in, please reset my password",
            "How do I change my password?",
            "The password reset email never arrived",
            "Locked out of my account, need a new password",
        ],
        [
            "My login credentials don't work anymore, help me get back in",
            "Send me a link to set a new password",
            "I keep getting 'wrong password' when signing in",
            "need to recover access to my account, forgot the passcode",
            "Reset my login please, I can't remember it",
        ],
    ),
    "technical_issue": (
        [
            "The {p} won't turn on",
            "The app crashes whenever I open it",
            "My {p} keeps disconnecting from wifi",
            "There is an error message when I try to pair the {p}",
            "The website shows a blank page when I check out",
        ],
        [
            "The {p} makes a strange noise and then shuts down",
            "Your mobile app freezes on the loading screen",
            "the firmware update bricked my {p}",
            "I get error code 503 every time I try to pay",
            "The {p} display flickers and goes black",
        ],
    ),
}

INTENTS: list[str] = list(_TEMPLATES)


def support_desk_examples(
    n: int,
    split: Literal["train", "test"] = "train",
    seed: int = 0,
    json_labels: bool = False,
    model: str = "teacher",
) -> list[Example]:
    """``n`` examples cycling through the intents; the teacher answers the intent (or ``{"intent": …}``)."""
    rng = random.Random(f"{seed}-{split}")
    family = 0 if split == "train" else 1
    out = []
    for i in range(n):
        intent = INTENTS[i % len(INTENTS)]
        template = rng.choice(_TEMPLATES[intent][family])
        text = template.format(
            p=rng.choice(_PRODUCTS), o=f"#{rng.randint(10000, 99999)}", a=rng.choice(_PLACES)
        )
        if rng.random() < 0.3:
            text = text.lower()
        if rng.random() < 0.3:
            text = rng.choice(["Hi, ", "Hello. ", "Hey there! ", ""]) + text
        request = ChatRequest(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}],
        )
        answer = json.dumps({"intent": intent}) if json_labels else intent
        response = ChatResponse.of_text(model, answer, Usage.of(60 + len(text) // 4, 3))
        out.append(Example(request=request, response=response))
    return out
