"""kiln serve driven by the official `openai` Python client: completions and chat, streamed and
not, with the same seed giving the same text either way; n, logprobs, stop, echo, usage, the API
key, and errors surfacing as the client's exception types.

Usage: openai_client_test.py KILN_BINARY
"""
import sys

import openai

from kiln_server import Failures, KilnServer

KEY = "test-key-123"


def stream_text(chunks, chat):
    text, finish, usage = "", None, None
    for c in chunks:
        if c.usage is not None:
            usage = c.usage
        for ch in c.choices:
            piece = (ch.delta.content or "") if chat else ch.text
            text += piece
            if ch.finish_reason:
                finish = ch.finish_reason
    return text, finish, usage


def main():
    kiln = sys.argv[1]
    t = Failures("openai_client")
    with KilnServer(kiln, ["--api-key", KEY, "--served-model-name", "smol", "--kv-cache-bytes", str(128 << 20)]) as srv:
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key=KEY, max_retries=0, timeout=120)

        models = client.models.list()
        t.check([m.id for m in models.data] == ["smol"], f"models: {models}")

        # Completions: the same seed gives the same text streamed and not.
        args = dict(model="smol", prompt="Once upon a time", max_tokens=24, temperature=0.9, top_p=0.95, seed=1234)
        whole = client.completions.create(**args)
        c0 = whole.choices[0]
        t.check(len(c0.text) > 0 and whole.usage.completion_tokens > 0, f"completion: {whole}")
        t.check(c0.finish_reason in ("length", "stop"), f"finish_reason {c0.finish_reason}")
        t.check(whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens, "usage sums")
        text, finish, usage = stream_text(
            client.completions.create(**args, stream=True, stream_options={"include_usage": True}), chat=False)
        t.check(text == c0.text, f"streamed completion {text!r} != {c0.text!r}")
        t.check(finish == c0.finish_reason, f"streamed finish {finish} != {c0.finish_reason}")
        t.check(usage is not None and usage.completion_tokens == whole.usage.completion_tokens,
                f"stream usage {usage} vs {whole.usage}")
        again = client.completions.create(**args)
        t.check(again.choices[0].text == c0.text, "same seed, same completion")
        others = {client.completions.create(**{**args, "seed": s}).choices[0].text for s in (99, 100, 101)}
        t.check(others != {c0.text}, "other seeds, other completions")

        # Chat with the model's own template.
        msgs = [{"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": "Name three colors."}]
        cargs = dict(model="smol", messages=msgs, max_tokens=32, temperature=0.7, seed=7)
        chat = client.chat.completions.create(**cargs)
        m0 = chat.choices[0]
        t.check(m0.message.role == "assistant" and len(m0.message.content) > 0, f"chat: {chat}")
        t.check(chat.usage.prompt_tokens > 10, f"chat prompt tokens {chat.usage.prompt_tokens}")
        text, finish, usage = stream_text(
            client.chat.completions.create(**cargs, stream=True, stream_options={"include_usage": True}), chat=True)
        t.check(text == m0.message.content, f"streamed chat {text!r} != {m0.message.content!r}")
        t.check(finish == m0.finish_reason, f"streamed chat finish {finish} != {m0.finish_reason}")
        t.check(usage is not None and usage.prompt_tokens == chat.usage.prompt_tokens, "streamed chat usage")

        # Greedy is deterministic; a multi-turn conversation renders and runs.
        g1 = client.chat.completions.create(model="smol", messages=msgs, max_tokens=16, temperature=0)
        g2 = client.chat.completions.create(model="smol", messages=msgs, max_tokens=16, temperature=0)
        t.check(g1.choices[0].message.content == g2.choices[0].message.content, "greedy chat repeats")
        turns = msgs + [{"role": "assistant", "content": g1.choices[0].message.content},
                        {"role": "user", "content": "And three animals?"}]
        t.check(len(client.chat.completions.create(model="smol", messages=turns, max_tokens=8).choices) == 1,
                "multi-turn chat")

        # n, logprobs, max_completion_tokens.
        n2 = client.chat.completions.create(model="smol", messages=msgs, max_completion_tokens=8, n=2, seed=5,
                                            logprobs=True, top_logprobs=3)
        t.check([c.index for c in n2.choices] == [0, 1], f"n=2 indices {[c.index for c in n2.choices]}")
        lp = n2.choices[0].logprobs.content
        t.check(len(lp) >= 1, "chat logprobs present")
        t.check(all(len(e.top_logprobs) == 3 for e in lp), "top_logprobs=3 per token")
        t.check(all(e.logprob <= 0 for e in lp), "logprobs are <= 0")
        t.check(n2.usage.completion_tokens == sum(len(c.logprobs.content) for c in n2.choices),
                "one logprobs entry per generated token")
        clp = client.completions.create(model="smol", prompt="The sky is", max_tokens=4, logprobs=2, temperature=0)
        lps = clp.choices[0].logprobs
        t.check(len(lps.tokens) == len(lps.token_logprobs) == len(lps.top_logprobs) == len(lps.text_offset),
                f"completion logprobs shape {lps}")
        t.check(all(len(d) <= 2 for d in lps.top_logprobs), "completion top_logprobs <= 2")
        t.check("".join(lps.tokens) == clp.choices[0].text, "logprob tokens spell the text")

        # Stop strings end the text before them; echo puts the prompt first.
        st = client.completions.create(model="smol", prompt="1, 2, 3, 4,", max_tokens=24, temperature=0, stop=[" 7"])
        t.check(" 7" not in st.choices[0].text and st.choices[0].finish_reason == "stop",
                f"stop: {st.choices[0].text!r} {st.choices[0].finish_reason}")
        ec = client.completions.create(model="smol", prompt="Hello there", max_tokens=3, echo=True, temperature=0)
        t.check(ec.choices[0].text.startswith("Hello there"), f"echo: {ec.choices[0].text!r}")

        # Without a seed every request samples afresh (as OpenAI and vLLM do): the same prompt at temperature 1
        # gives different texts, for completions and chat alike.
        unseeded = {client.completions.create(model="smol", prompt="Once upon a time", max_tokens=24,
                                              temperature=1.0).choices[0].text for _ in range(3)}
        t.check(len(unseeded) > 1, f"unseeded completions all equal: {unseeded}")
        unseeded_chat = {client.chat.completions.create(model="smol", messages=msgs, max_tokens=24,
                                                        temperature=1.0).choices[0].message.content for _ in range(3)}
        t.check(len(unseeded_chat) > 1, f"unseeded chat replies all equal: {unseeded_chat}")

        # Fields kiln does not know are ignored, as OpenAI ignores them (extra_body sends them as they are) ...
        ex = client.completions.create(model="smol", prompt="Hi", max_tokens=2, temperature=0, user="u1",
                                       extra_body={"frobnicate": {"x": 1}})
        t.check(ex.choices[0].text is not None, "unknown fields ignored")
        # ... but tools, which kiln cannot honour yet (no tool-call parsing), are refused by name.
        try:
            client.chat.completions.create(model="smol", messages=msgs, max_tokens=4, tools=[
                {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])
            t.check(False, "tools accepted")
        except openai.BadRequestError as e:
            t.check(e.status_code == 400 and e.body.get("param") == "tools" and "tools" in e.body.get("message", ""),
                    f"tools refusal: {e.body}")

        # Errors come back as the client's exception types.
        try:
            client.completions.create(model="smol", prompt="x", temperature=5)
            t.check(False, "temperature 5 accepted")
        except openai.BadRequestError as e:
            t.check(e.status_code == 400 and e.body.get("param") == "temperature", f"bad temperature: {e.body}")
        try:
            client.chat.completions.create(model="gpt-4o", messages=msgs)
            t.check(False, "unknown model accepted")
        except openai.BadRequestError as e:
            t.check(e.body.get("code") == "model_not_found", f"unknown model: {e.body}")
        try:
            openai.OpenAI(base_url=srv.base_url + "/v1", api_key="wrong", max_retries=0).models.list()
            t.check(False, "wrong key accepted")
        except openai.AuthenticationError as e:
            t.check(e.status_code == 401, f"wrong key: {e}")

        m = srv.wait_idle()
        t.check(m.get("kiln_kv_cache_blocks_free") == m.get("kiln_kv_cache_blocks_total"), "KV pool all free at the end")
        t.check(srv.stop() == 0, "SIGTERM exits 0")
    t.finish()


if __name__ == "__main__":
    main()
