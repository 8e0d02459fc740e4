"""The BFCL loader on a small sample shaped like the files inside the bfcl-eval wheel."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from smallfleet.errors import UserError
from smallfleet.evals.bfcl import BFCLSource, convert_function, list_categories, load_category, score
from smallfleet.evals.tool_match import calls_from_response
from smallfleet.testing.upstream import Reply, ScriptedUpstream
from smallfleet.types import ChatResponse

RUN_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "bfcl" / "run.py"

SIMPLE = [
    {
        "id": "simple_python_0",
        "question": [[{"role": "user", "content": "Area of a circle of radius 2.5 in cm?"}]],
        "function": [
            {
                "name": "geometry.circle_area",
                "description": "Area of a circle.",
                "parameters": {
                    "type": "dict",
                    "properties": {
                        "radius": {"type": "float", "description": "The radius."},
                        "unit": {"type": "string", "description": "The unit.", "default": "m"},
                        "center": {"type": "tuple", "items": {"type": "integer"}, "description": "x, y"},
                        "tag": {"type": "any", "description": "Anything."},
                    },
                    "required": ["radius"],
                },
            }
        ],
    },
]
SIMPLE_ANSWERS = [
    {
        "id": "simple_python_0",
        "ground_truth": [{"geometry.circle_area": {"radius": [2.5], "unit": ["cm", ""]}}],
    }
]
PARALLEL = [
    {
        "id": "parallel_0",
        "question": [[{"role": "user", "content": "Play Taylor Swift for 20 minutes and Maroon 5 for 15."}]],
        "function": [
            {
                "name": "spotify.play",
                "description": "Play songs.",
                "parameters": {
                    "type": "dict",
                    "properties": {"artist": {"type": "string"}, "duration": {"type": "integer"}},
                    "required": ["artist", "duration"],
                },
            }
        ],
    }
]
PARALLEL_ANSWERS = [
    {
        "id": "parallel_0",
        "ground_truth": [
            {"spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}},
            {"spotify.play": {"artist": ["Maroon 5"], "duration": [15]}},
        ],
    }
]
LIVE = [
    {
        "id": "live_multiple_0-0-0",
        "question": [
            [
                {"role": "system", "content": "You are a barista bot."},
                {"role": "user", "content": "Make my latte large with coconut milk."},
            ]
        ],
        "function": [
            {
                "name": "ChaDri.change_drink",
                "description": "Change a drink order.",
                "parameters": {
                    "type": "dict",
                    "required": ["new_preferences"],
                    "properties": {
                        "drink_id": {"type": "string", "default": "0000"},
                        "new_preferences": {
                            "type": "dict",
                            "properties": {
                                "size": {"type": "string", "enum": ["small", "large"]},
                                "milk_type": {"type": "string", "optional": True},
                                "shots": {"type": "integer", "required": False},
                            },
                        },
                        "toppings": {
                            "type": "array",
                            "items": {"type": "dict", "properties": {"n": {"type": "float"}}},
                        },
                    },
                },
            },
            {
                "name": "ChaFod",
                "description": "Change food.",
                "parameters": {"type": "dict", "properties": {}},
            },
        ],
    }
]
LIVE_ANSWERS = [
    {
        "id": "live_multiple_0-0-0",
        "ground_truth": [
            {
                "ChaDri.change_drink": {
                    "drink_id": ["latte"],
                    "new_preferences": [{"size": ["large"], "milk_type": ["coconut", "coconut milk"]}],
                }
            }
        ],
    }
]

LIVE_SIMPLE = [
    {
        "id": "live_simple_0-0-0",
        "question": [[{"role": "user", "content": "Details for user 7890, special request black."}]],
        "function": [
            {
                "name": "get_user_info",
                "description": "Details of a user.",
                "parameters": {
                    "type": "dict",
                    "required": ["user_id"],
                    "properties": {
                        "user_id": {"type": "integer"},
                        "special": {"type": "string", "default": "none"},
                    },
                },
            }
        ],
    }
]
LIVE_SIMPLE_ANSWERS = [
    {
        "id": "live_simple_0-0-0",
        "ground_truth": [{"get_user_info": {"user_id": [7890], "special": ["black"]}}],
    }
]

FILES: dict[str, list[dict[str, Any]]] = {
    "BFCL_v4_live_simple.json": LIVE_SIMPLE,
    "possible_answer/BFCL_v4_live_simple.json": LIVE_SIMPLE_ANSWERS,
    "BFCL_v4_simple_python.json": SIMPLE,
    "possible_answer/BFCL_v4_simple_python.json": SIMPLE_ANSWERS,
    "BFCL_v4_parallel.json": PARALLEL,
    "possible_answer/BFCL_v4_parallel.json": PARALLEL_ANSWERS,
    "BFCL_v4_live_multiple.json": LIVE,
    "possible_answer/BFCL_v4_live_multiple.json": LIVE_ANSWERS,
    # An older version of a category, and a file BFCL keeps aside: both must be ignored.
    "BFCL_v3_parallel.json": [],
    "possible_answer/BFCL_v3_parallel.json": [],
    "unused_datasets/question/BFCL_v4_sql.json": [],
}


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(r) for r in rows)  # BFCL's files have no final newline


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bfcl") / "bfcl_eval-0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for rel, rows in FILES.items():
            z.writestr(f"bfcl_eval/data/{rel}", _jsonl(rows))
        z.writestr("bfcl_eval/__init__.py", "")
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bfcl_dir")
    for rel, rows in FILES.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_jsonl(rows))
    return root


def test_categories_from_the_wheel_and_a_folder(wheel: Path, folder: Path) -> None:
    assert list_categories(wheel) == ["live_multiple", "live_simple", "parallel", "simple_python"]
    assert list_categories(folder) == ["live_multiple", "live_simple", "parallel", "simple_python"]


def test_entries_become_openai_requests(wheel: Path) -> None:
    (entry,) = load_category(wheel, "simple")  # the older name of simple_python works too
    assert entry.id == "simple_python_0"
    assert entry.request.last_user_text() == "Area of a circle of radius 2.5 in cm?"
    (tool,) = entry.tools
    fn = tool["function"]
    assert fn["name"] == "geometry_circle_area" and entry.name_map == {
        "geometry_circle_area": "geometry.circle_area"
    }
    props = fn["parameters"]["properties"]
    assert fn["parameters"]["type"] == "object"
    assert props["radius"]["type"] == "number" and props["radius"]["format"] == "float"
    assert props["radius"]["description"].endswith("This is a float type value.")
    assert props["center"] == {"type": "array", "items": {"type": "integer"}, "description": "x, y"}
    assert props["tag"]["type"] == "string"
    assert entry.expected == [{"geometry_circle_area": {"radius": [2.5], "unit": ["cm", ""]}}]


def test_system_messages_nested_objects_and_bfcl_only_keywords(folder: Path) -> None:
    (entry,) = load_category(folder, "live_multiple")
    assert [m.role for m in entry.request.messages] == ["system", "user"]
    assert entry.request.tool_names() == ["ChaDri_change_drink", "ChaFod"]
    params = entry.tools[0]["function"]["parameters"]
    prefs = params["properties"]["new_preferences"]
    assert prefs["type"] == "object" and prefs["properties"]["size"]["enum"] == ["small", "large"]
    assert (
        "optional" not in prefs["properties"]["milk_type"] and "required" not in prefs["properties"]["shots"]
    )
    assert params["properties"]["toppings"]["items"]["properties"]["n"]["type"] == "number"


def test_every_converted_tool_is_valid_json_schema(wheel: Path) -> None:
    src = BFCLSource(wheel)
    for category in src.categories():
        for entry in load_category(src, category):
            for tool in entry.tools:
                jsonschema.Draft202012Validator.check_schema(tool["function"]["parameters"])
    # And an instance validates against a converted schema the way BFCL's types mean.
    tool, _ = convert_function(SIMPLE[0]["function"][0])
    validator = jsonschema.Draft202012Validator(tool["function"]["parameters"])
    assert validator.is_valid({"radius": 2, "center": [1, 2]})
    assert not validator.is_valid({"radius": "2"})
    assert not validator.is_valid({"unit": "cm"})  # radius is required


def test_perfect_predictions_score_100_percent(wheel: Path) -> None:
    src = BFCLSource(wheel)
    entries = [e for c in ("simple_python", "parallel", "live_multiple") for e in load_category(src, c)]
    # A perfect model's answer, through the OpenAI response shape, parallel calls reversed.
    responses = [e.reference_response() for e in entries]
    predicted = [
        list(reversed(calls_from_response(ChatResponse.model_validate(r.to_dict())))) for r in responses
    ]
    assert [r.ok for r in score(entries, predicted)] == [True, True, True]
    assert predicted[2] == [
        {
            "name": "ChaDri_change_drink",
            "arguments": {"drink_id": "latte", "new_preferences": {"size": "large", "milk_type": "coconut"}},
        }
    ]


def test_wrong_predictions_score_0(wheel: Path) -> None:
    src = BFCLSource(wheel)
    simple = load_category(src, "simple_python")[0]
    parallel = load_category(src, "parallel")[0]
    wrong_unit = [{"name": "geometry_circle_area", "arguments": {"radius": 2.5, "unit": "mm"}}]
    one_of_two = [{"name": "spotify_play", "arguments": {"artist": "Taylor Swift", "duration": 20}}]
    float_for_int = [
        {"name": "spotify_play", "arguments": {"artist": "Taylor Swift", "duration": 20.0}},
        {"name": "spotify_play", "arguments": {"artist": "Maroon 5", "duration": 15}},
    ]
    results = score([simple, parallel, parallel], [wrong_unit, one_of_two, float_for_int])
    assert [r.ok for r in results] == [False, False, False]
    assert "wrong type for 'spotify_play.duration'" in (results[2].reason or "")


def test_limit_and_clear_errors(wheel: Path, tmp_path: Path) -> None:
    assert len(load_category(wheel, "parallel", limit=0)) == 0
    with pytest.raises(UserError, match="available: live_multiple, live_simple, parallel, simple_python"):
        load_category(wheel, "irrelevance")
    with pytest.raises(UserError, match="pip download bfcl-eval=="):
        BFCLSource(tmp_path / "missing.whl")
    bad = tmp_path / "bad"
    (bad / "possible_answer").mkdir(parents=True)
    (bad / "BFCL_v4_x.json").write_text('{"id": "x_0"}\nnot json')
    (bad / "possible_answer" / "BFCL_v4_x.json").write_text("")
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        load_category(bad, "x")


def test_the_endpoint_benchmark_against_a_scripted_upstream(wheel: Path, tmp_path: Path) -> None:
    """benchmarks/bfcl/run.py --endpoint: real HTTP to a scripted server; one right answer, one failure."""
    spec = importlib.util.spec_from_file_location("bfcl_run", RUN_PY)
    assert spec is not None and spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)

    def answer(body: dict[str, Any]) -> Reply:
        user = body["messages"][-1]["content"]
        if user.startswith("Details for user"):
            return Reply.tool_call("get_user_info", {"user_id": 7890, "special": "Black"})
        return Reply.error(400, "this model cannot do that")

    out = tmp_path / "endpoint.json"
    with ScriptedUpstream(answer) as up:
        argv = ["--wheel", str(wheel), "--endpoint", up.url, "--model", "slm-test", "--out", str(out)]
        assert run.main(argv) == 0
        sent = up.requests
    result = json.loads(out.read_text())
    assert result["mode"] == "endpoint" and result["eval"]["n"] == 2
    assert result["accuracy"] == 0.5
    assert result["per_category"] == {
        "live_simple": {"n": 1, "accuracy": 1.0},
        "live_multiple": {"n": 1, "accuracy": 0.0},
    }
    assert result["failures"] == {"request failed": 1}
    assert result["copyable_share"] == 1.0  # "7890", "black", "latte" all occur in the queries
    assert result["latency_ms"]["n"] == 2
    assert {b["model"] for b in sent} == {"slm-test"}
    tool_names = {t["function"]["name"] for b in sent for t in b["tools"]}
    assert tool_names == {"get_user_info", "ChaDri_change_drink", "ChaFod"}
