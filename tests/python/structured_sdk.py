"""The official OpenAI Python SDK against structured outputs and tool calling.

Run by tests/tests/structured_e2e.rs with: the gateway's base URL, an API key,
the chat model and the RAG profile. Greedy throughout, 8 requests at a time.

- `client.chat.completions.parse(response_format=<pydantic model>)`: 50
  varied prompts over 5 models (nested objects, enums, arrays with min/max
  items, bounded numbers, required and optional fields): 50 of 50 parse.
- `response_format={"type": "json_object"}`: 50 of 50 answers are JSON objects.
- vLLM's `structured_outputs` / `guided_*` fields (choice, regex, json).
- `tool_choice="required"` over 3 tools: 50 of 50 calls name a tool and their
  arguments validate against its schema, non-streamed; the same 50 streamed
  reassemble to exactly the non-streamed calls, every chunk valid against
  OpenAI's CreateChatCompletionStreamResponse schema.
- A named function is called; `auto` may answer in text; a full round trip
  (call -> tool result -> answer) ends in text.
- A RAG profile with a schema: retrieval first, then the constrained answer,
  with citations. `client.responses.parse(text_format=...)` on /v1/responses.
- Bad input: invalid schema, unsupported keyword, unknown tool_choice
  function, orphan tool message, a schema past the size bound: each a 400
  naming the field; a normal request is served after them.
Prints "structured_sdk: ok" at the end; exits non-zero on any mismatch.
"""
import enum
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import List, Literal, Optional

import jsonschema
import openai
from pydantic import BaseModel, Field

from openai_schemas import validate
from sdk_checks import check, raises

base, key, model, profile = sys.argv[1:5]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=600)
pool = ThreadPoolExecutor(8)


class Colour(str, enum.Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    city: str
    country: str


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=120)
    favourite_colour: Colour
    address: Address
    nickname: Optional[str]


class Recipe(BaseModel):
    title: str
    ingredients: List[str] = Field(min_length=1, max_length=4)
    minutes: int = Field(ge=1, le=600)
    vegetarian: bool


class Item(BaseModel):
    name: str
    quantity: int = Field(ge=0, le=1000)
    price: float = Field(ge=0, le=10000)


class Inventory(BaseModel):
    shop: str
    items: List[Item] = Field(min_length=1, max_length=3)


class Meeting(BaseModel):
    title: str
    day: Literal["monday", "tuesday", "wednesday", "thursday", "friday"]
    priority: int = Field(ge=1, le=5)
    attendees: List[str] = Field(max_length=3)


class Review(BaseModel):
    product: str
    stars: int = Field(ge=1, le=5)
    pros: List[str] = Field(min_length=1, max_length=2)
    cons: Optional[List[str]]
    recommended: bool


SUBJECTS = ["a baker in Paris", "a pilot from Oslo", "a teacher in Lima", "a nurse in Cairo",
            "a farmer in Kenya", "a coder in Seoul", "a singer in Rome", "a chef in Tokyo",
            "a painter in Madrid", "a doctor in Berlin"]
CASES = []
for i, s in enumerate(SUBJECTS):
    CASES += [
        (Person, f"Describe {s} as a person record."),
        (Recipe, f"Give a simple recipe that {s} might cook."),
        (Inventory, f"List what is in stock in the shop of {s}."),
        (Meeting, f"Plan a short meeting with {s}."),
        (Review, f"Write a product review by {s} of a bicycle."),
    ]
assert len(CASES) == 50


def parse_one(case):
    cls, prompt = case
    c = client.chat.completions.parse(
        model=model, temperature=0, max_tokens=400, response_format=cls,
        messages=[{"role": "system", "content": "Answer with JSON only."},
                  {"role": "user", "content": prompt}])
    msg = c.choices[0].message
    assert c.choices[0].finish_reason == "stop", (prompt, c.choices[0].finish_reason, msg.content)
    assert isinstance(msg.parsed, cls), (prompt, msg.content)
    # the text itself validates against the schema the SDK sent
    cls.model_validate_json(msg.content)
    return msg.content


parsed = list(pool.map(parse_one, CASES))
print(f"parse: {len(parsed)} of {len(CASES)} valid; e.g. {parsed[0]}")


def json_object_one(i):
    s = SUBJECTS[i % len(SUBJECTS)]
    prompt = ["Describe {} in JSON.", "Give facts about {} as a JSON object.",
              "Return a JSON object with a name and a city for {}.",
              "Summarise {} as JSON.", "Output JSON about {}."][i % 5].format(s)
    c = client.chat.completions.create(
        model=model, temperature=0, max_tokens=400, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": prompt}])
    check("CreateChatCompletionResponse", c)
    text = c.choices[0].message.content
    assert c.choices[0].finish_reason == "stop", (prompt, c.choices[0].finish_reason, text)
    assert isinstance(json.loads(text), dict), text
    return text


objects = list(pool.map(json_object_one, range(50)))
print(f"json_object: {len(objects)} of 50 parse; e.g. {objects[0]}")


# vLLM's guided-decoding fields, as vLLM's users send them (extra_body)
ask = [{"role": "user", "content": "Is the sea salty? Answer yes or no."}]
c = client.chat.completions.create(model=model, temperature=0, max_tokens=10, messages=ask,
                                   extra_body={"structured_outputs": {"choice": ["yes", "no"]}})
assert c.choices[0].message.content in ("yes", "no"), c
c = client.chat.completions.create(model=model, temperature=0, max_tokens=20,
                                   messages=[{"role": "user", "content": "Give me a phone number."}],
                                   extra_body={"guided_regex": "[0-9]{3}-[0-9]{4}"})
assert re.fullmatch("[0-9]{3}-[0-9]{4}", c.choices[0].message.content), c
c = client.chat.completions.create(model=model, temperature=0, max_tokens=100, messages=ask,
                                   extra_body={"guided_json": {"type": "object", "properties": {
                                       "salty": {"type": "boolean"}}, "required": ["salty"]}})
assert isinstance(json.loads(c.choices[0].message.content)["salty"], bool), c
t = client.completions.create(model=model, temperature=0, max_tokens=10, prompt="The sea is",
                              extra_body={"guided_choice": ["salty", "sweet"]})
assert t.choices[0].text in ("salty", "sweet"), t
print("vLLM guided fields: choice, regex, json (chat), choice (completions)")


class GetWeather(BaseModel):
    """Current weather in a city."""
    city: str
    unit: Literal["celsius", "fahrenheit"]


class BookFlight(BaseModel):
    """Books a flight."""
    origin: str
    destination: str
    passengers: int = Field(ge=1, le=9)


class Priority(str, enum.Enum):
    low = "low"
    high = "high"


class SendEmail(BaseModel):
    """Sends an email (its enum is a `$defs` entry the schema refers to)."""
    to: str
    subject: str
    priority: Priority


TOOL_MODELS = {"GetWeather": GetWeather, "BookFlight": BookFlight, "SendEmail": SendEmail}
TOOLS = [openai.pydantic_function_tool(m) for m in TOOL_MODELS.values()]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASKS = [
    "What is the weather in {} today?", "Book a flight to {} for two people.",
    "Email my boss that I am late, I am near {}.", "Is it raining in {}?",
    "I need to fly from London to {}.",
]
TOOL_PROMPTS = [ASKS[i % 5].format(SUBJECTS[i % 10].split(" in ")[-1].split(" from ")[-1])
                for i in range(50)]


def tool_request(prompt, **kw):
    return dict(model=model, temperature=0, max_tokens=300, tools=TOOLS,
                messages=[{"role": "user", "content": prompt}], **kw)


def calls_valid(calls):
    assert calls, "no tool call"
    for c in calls:
        assert c["name"] in SCHEMAS, c
        jsonschema.validate(json.loads(c["arguments"]), SCHEMAS[c["name"]])


def required_one(prompt):
    c = client.chat.completions.create(**tool_request(prompt, tool_choice="required"))
    check("CreateChatCompletionResponse", c)
    ch = c.choices[0]
    assert ch.finish_reason == "tool_calls", (prompt, ch.finish_reason, ch.message)
    assert ch.message.content is None, ch.message
    calls = [{"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
             for t in ch.message.tool_calls]
    calls_valid(calls)
    assert all(t.type == "function" and t.id.startswith("call_") for t in ch.message.tool_calls)
    return calls


def streamed_one(prompt):
    calls, finish, content = {}, None, ""
    for chunk in client.chat.completions.create(**tool_request(prompt, tool_choice="required"),
                                                stream=True):
        check("CreateChatCompletionStreamResponse", chunk)
        if not chunk.choices:
            continue
        ch = chunk.choices[0]
        finish = ch.finish_reason or finish
        content += ch.delta.content or ""
        for d in ch.delta.tool_calls or []:
            if d.index not in calls:
                assert d.id and d.function.name, d  # the id and name come first, once
                calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": ""}
            else:
                assert d.id is None and not d.function.name, d
            calls[d.index]["arguments"] += d.function.arguments or ""
    assert finish == "tool_calls", (prompt, finish)
    assert content == "", content
    out = [calls[i] for i in sorted(calls)]
    calls_valid(out)
    return out


def strip_ids(calls):
    return [(c["name"], c["arguments"]) for c in calls]


plain = list(pool.map(required_one, TOOL_PROMPTS))
streamed = list(pool.map(streamed_one, TOOL_PROMPTS))
for p, a, b in zip(TOOL_PROMPTS, plain, streamed):
    assert strip_ids(a) == strip_ids(b), (p, a, b)
print(f"tools required: 50 of 50 valid, streamed == non-streamed; e.g. {plain[0]}")

# a named function is the one called
c = client.chat.completions.create(**tool_request(
    "Tell me a joke.", tool_choice={"type": "function", "function": {"name": "SendEmail"}}))
assert [t.function.name for t in c.choices[0].message.tool_calls] == ["SendEmail"], c
# parallel_tool_calls=false: exactly one call
c = client.chat.completions.create(**tool_request(
    "Weather in Paris and in Rome?", tool_choice="required", parallel_tool_calls=False))
assert len(c.choices[0].message.tool_calls) == 1, c
# auto: a greeting is answered in text, or a valid call
c = client.chat.completions.create(**tool_request("Hello! Who are you?", tool_choice="auto"))
m = c.choices[0].message
if m.tool_calls:
    calls_valid([{"name": t.function.name, "arguments": t.function.arguments} for t in m.tool_calls])
    assert c.choices[0].finish_reason == "tool_calls"
else:
    assert m.content and c.choices[0].finish_reason in ("stop", "length"), c

# the round trip: call, result, final answer in text
first = client.chat.completions.create(**tool_request("What is the weather in Paris?",
                                                      tool_choice="required"))
call = first.choices[0].message.tool_calls[0]
history = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
    {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21, "sky": "sunny"})},
]
final = client.chat.completions.create(model=model, temperature=0, max_tokens=60, tools=TOOLS,
                                       tool_choice="none", messages=history)
check("CreateChatCompletionResponse", final)
assert final.choices[0].finish_reason in ("stop", "length"), final
assert final.choices[0].message.content and not final.choices[0].message.tool_calls, final
print(f"round trip: {call.function.name}({call.function.arguments}) -> "
      f"{final.choices[0].message.content[:80]!r}")

# a RAG profile with a schema: retrieval first, then the constrained answer


class Answer(BaseModel):
    answer: str
    confident: bool


r = client.chat.completions.parse(model=profile, temperature=0, max_tokens=200,
                                  response_format=Answer,
                                  messages=[{"role": "user", "content": "At what temperature does the Zorblax reactor run?"}])
assert isinstance(r.choices[0].message.parsed, Answer), r
assert r.model_extra.get("rag", {}).get("used", 0) >= 1, r.model_extra
assert r.choices[0].message.model_extra.get("citations"), r.choices[0].message
print(f"rag + schema: {r.choices[0].message.content}")

# the Responses API's text.format


class City(BaseModel):
    name: str
    country: str


r = client.responses.parse(model=model, input="Name a city in Japan.", text_format=City,
                           temperature=0, max_output_tokens=120)
check("Response", r)
assert isinstance(r.output_parsed, City), r.output_text
assert r.text.format.type == "json_schema" and r.text.format.name == "City", r.text
print(f"responses text.format: {r.output_text}")

# bad input: 400s that name the field
bad = openai.BadRequestError
base_req = dict(model=model, max_tokens=5, messages=[{"role": "user", "content": "hi"}])


def schema_format(schema):
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}


raises(bad, client.chat.completions.create, **base_req,
       response_format=schema_format({"type": "object", "properties": {"a": {"type": 5}}}),
       says="response_format.json_schema.schema")
raises(bad, client.chat.completions.create, **base_req,
       response_format=schema_format({"type": "object", "not": {"required": ["a"]}}),
       says='"not"')
e = raises(bad, client.chat.completions.create, **base_req, tools=TOOLS,
           tool_choice={"type": "function", "function": {"name": "Teleport"}}, says="Teleport")
assert e.body.get("param") == "tool_choice", e.body
raises(bad, client.chat.completions.create, model=model, max_tokens=5,
       messages=[{"role": "user", "content": "hi"},
                 {"role": "tool", "tool_call_id": "call_nope", "content": "42"}],
       says="call_nope")
# a pattern whose lexer may outgrow its limits once the string starts
# (how far it gets depends on the text): a 400 naming the field, or an
# answer; never a 500
try:
    client.chat.completions.create(**dict(base_req, max_tokens=40), response_format=schema_format(
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "[a-z]{1,100}{1,100}{1,100}"}}}))
except bad as e:
    assert e.body.get("param") == "response_format", e.body
    assert "response_format.json_schema.schema" in str(e), e
huge = {"type": "object", "properties": {f"field_{i}": {"type": "string", "description": "x" * 40}
                                         for i in range(6000)}}
raises(bad, client.chat.completions.create, **base_req, response_format=schema_format(huge),
       says="at most")
raises(bad, client.chat.completions.create, **base_req, tools=[{"type": "function", "function": {
    "name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string", "format": "zodiac"}}}}}],
       says="tools[0].function.parameters")
ok = client.chat.completions.create(**base_req)
assert ok.choices[0].message.content is not None
print("bad input: 400s naming the field; served after")
print("structured_sdk: ok")
