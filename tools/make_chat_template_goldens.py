#!/usr/bin/env python3
"""Renders chat templates with Python's jinja2, configured as Hugging Face's apply_chat_template
configures it, and writes the expected strings kiln's Jinja engine must reproduce exactly
(tests/chat_template_test.cpp).

Templates: tests/fixtures/chat-templates/*.jinja (Llama 2, Mistral 7B v0.1, Gemma 1, SmolLM2 and a
feature-coverage template) and tests/fixtures/chat-templates/llama.cpp/*.jinja (llama.cpp's copies of
Llama 3.x, Qwen2.5, Gemma 2, Phi-3.5, Mistral Nemo, tool-use templates, ...; tests/fixtures/SOURCES.md).

    python3 tools/make_chat_template_goldens.py   # needs jinja2 3.1.x

Output: tests/fixtures/chat-templates/goldens.json, a list of
    {"template": "fixtures:NAME.jinja" | "fixtures:llama.cpp/NAME.jinja",
     "case": str, "variables": {...}, "expected": str}            # rendered
  | {..., "error": str, "raised": bool}                             # the template refused
raised is true when the template's own raise_exception() fired; its message must match exactly.
"""
import datetime
import json
import pathlib
import sys

import jinja2
import jinja2.ext
import jinja2.sandbox

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "chat-templates"
# strftime_now() is pinned so goldens do not depend on the day they were made; the C++ test pins
# the same date.
NOW = datetime.datetime(2024, 7, 26, 12, 0, 0)


class Raised(Exception):
    pass


def make_env():
    # What transformers' _compile_jinja_template sets up (written here from its documented behaviour).
    def raise_exception(message):
        raise Raised(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return NOW.strftime(fmt)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


# Special tokens per template family, as their tokenizer_config.json gives them.
SPECIAL = {
    "Llama-2": ("<s>", "</s>"),
    "Mistral": ("<s>", "</s>"),
    "gemma": ("<bos>", "<eos>"),
    "SmolLM2": ("<|im_start|>", "<|im_end|>"),
    "Llama-3": ("<|begin_of_text|>", "<|eot_id|>"),
    "Qwen": ("", "<|im_end|>"),
    "Phi-3": ("<s>", "<|endoftext|>"),
    "DeepSeek": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "deepseek": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
}


def special_tokens(name):
    for key, (bos, eos) in SPECIAL.items():
        if key in name:
            return bos, eos
    return "<s>", "</s>"


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}

CASES = [
    ("user", [{"role": "user", "content": "Hello!"}], True, None),
    ("user_no_gen", [{"role": "user", "content": "Hello!"}], False, None),
    ("system_user", [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "What is the capital of France?"}], True, None),
    ("multi_turn", [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "user", "content": "Tell me a joke."}], True, None),
    ("multi_turn_no_system", [{"role": "user", "content": "1+1?"},
                              {"role": "assistant", "content": "2"},
                              {"role": "user", "content": "And 2+2?"},
                              {"role": "assistant", "content": "4"}], False, None),
    ("whitespace_unicode", [{"role": "user", "content": "  Ünïcödé, 日本語 and emoji 🙂\n\nwith lines  "},
                            {"role": "assistant", "content": "\tSure: «quotes» \"double\" 'single' \\ back\n"},
                            {"role": "user", "content": "Hello, World! ñ?"}], True, None),
    ("not_alternating", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], True, None),
    ("tools", [{"role": "system", "content": "You can call tools."},
               {"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": "",
                "tool_calls": [{"id": "call12345", "type": "function",
                                "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
               {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "22 C, sunny"},
               {"role": "user", "content": "Thanks"}], True, [WEATHER_TOOL]),
]


def templates():
    for p in sorted(FIXTURES.glob("*.jinja")):
        yield "fixtures:" + p.name, p
    for p in sorted((FIXTURES / "llama.cpp").glob("*.jinja")):
        yield "fixtures:llama.cpp/" + p.name, p


def main():
    if not jinja2.__version__.startswith("3.1"):
        sys.exit(f"jinja2 3.1.x expected, found {jinja2.__version__}")
    env = make_env()
    out = []
    for ref, path in templates():
        tmpl = env.from_string(path.read_text(encoding="utf-8"))
        bos, eos = special_tokens(path.name)
        for case, messages, gen, tools in CASES:
            variables = {"messages": messages, "tools": tools, "add_generation_prompt": gen,
                         "bos_token": bos, "eos_token": eos}
            rec = {"template": ref, "case": case, "variables": variables}
            try:
                rec["expected"] = tmpl.render(**variables)
            except Raised as e:
                rec["error"], rec["raised"] = str(e), True
            except Exception as e:  # an error of the template itself (undefined attribute, type error)
                rec["error"], rec["raised"] = f"{type(e).__name__}: {e}", False
            out.append(rec)
    dest = FIXTURES / "goldens.json"
    dest.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    n_err = sum("error" in r for r in out)
    print(f"wrote {dest}: {len(out)} renders ({n_err} refusals)")


if __name__ == "__main__":
    main()
