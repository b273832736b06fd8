// The chat page served at /: one self-contained HTML document (inline CSS and JS, nothing fetched
// from elsewhere) that keeps the conversation in the browser and streams each reply from
// /v1/chat/completions, parsing the SSE stream from fetch() itself.
#include "server/server.h"

namespace kiln::server {

const char* chat_page_html() {
  return R"KILNHTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kiln chat</title>
<style>
  :root { --bg: #f6f5f2; --fg: #1d1d1b; --muted: #77756f; --user: #e3ecfa; --bot: #ffffff; --line: #dddad2; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--fg);
         display: flex; flex-direction: column; height: 100vh; }
  header { padding: 10px 16px; border-bottom: 1px solid var(--line); display: flex; gap: 12px; align-items: center; flex-wrap: wrap; }
  header h1 { font-size: 16px; margin: 0; }
  header .model { color: var(--muted); font-size: 13px; }
  header label { font-size: 13px; color: var(--muted); }
  header input { width: 70px; }
  #messages { flex: 1; overflow-y: auto; padding: 16px; display: flex; flex-direction: column; gap: 10px; }
  .msg { max-width: 80%; padding: 8px 12px; border-radius: 10px; white-space: pre-wrap; word-wrap: break-word; border: 1px solid var(--line); }
  .msg.user { align-self: flex-end; background: var(--user); }
  .msg.assistant { align-self: flex-start; background: var(--bot); }
  .msg.error { align-self: center; background: #fde8e8; color: #8a1c1c; }
  form { display: flex; gap: 8px; padding: 12px 16px; border-top: 1px solid var(--line); }
  textarea { flex: 1; resize: none; height: 52px; font: inherit; padding: 8px; border-radius: 8px; border: 1px solid var(--line); }
  button { font: inherit; padding: 0 18px; border-radius: 8px; border: 1px solid #2f5fb3; background: #3a6fd0; color: #fff; cursor: pointer; }
  button:disabled { opacity: .5; cursor: default; }
  #status { color: var(--muted); font-size: 12px; padding: 0 16px 8px; min-height: 1em; }
</style>
</head>
<body>
<header>
  <h1>kiln chat</h1><span class="model" id="model">connecting…</span>
  <label>temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.7"></label>
  <label>max tokens <input id="max_tokens" type="number" min="1" value="256"></label>
  <label>API key <input id="api_key" type="password" style="width:120px" placeholder="(none)"></label>
  <button type="button" id="reset">New chat</button>
</header>
<div id="messages"></div>
<div id="status"></div>
<form id="form">
  <textarea id="input" placeholder="Type a message; Enter sends, Shift+Enter starts a new line"></textarea>
  <button id="send" type="submit">Send</button>
</form>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const history = [];
let modelName = null;
let busy = false;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api_key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("messages").appendChild(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return div;
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const j = await r.json();
    if (!r.ok) throw new Error((j.error && j.error.message) || r.statusText);
    modelName = j.data[0].id;
    $("model").textContent = modelName + " (context " + j.data[0].max_model_len + ")";
  } catch (e) {
    $("model").textContent = "model unavailable: " + e.message;
    setTimeout(loadModel, 2000);
  }
}

// Reads an SSE stream from a fetch() body: events are separated by a blank line, data lines start
// with "data:", and lines starting with ":" are comments.
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let sep;
    while ((sep = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, sep);
      buf = buf.slice(sep + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data) yield data;
    }
  }
}

async function send(text) {
  busy = true;
  $("send").disabled = true;
  $("status").textContent = "generating…";
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const out = addMessage("assistant", "");
  let reply = "";
  const started = performance.now();
  let tokens = 0;
  try {
    const body = { messages: history, stream: true, stream_options: { include_usage: true },
                   temperature: Number($("temperature").value), max_tokens: Number($("max_tokens").value) };
    if (modelName) body.model = modelName;
    const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!r.ok) {
      const j = await r.json().catch(() => ({}));
      throw new Error((j.error && j.error.message) || ("HTTP " + r.status));
    }
    for await (const data of sseEvents(r.body)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      for (const c of chunk.choices || []) {
        if (c.delta && c.delta.content) {
          reply += c.delta.content;
          out.textContent = reply;
          $("messages").scrollTop = $("messages").scrollHeight;
        }
      }
    }
    history.push({ role: "assistant", content: reply });
    const secs = (performance.now() - started) / 1000;
    $("status").textContent = "done: " + tokens + " tokens in " + secs.toFixed(1) + " s";
    out.dataset.done = "1";
  } catch (e) {
    history.pop();
    out.remove();
    addMessage("error", e.message);
    $("status").textContent = "error";
  } finally {
    busy = false;
    $("send").disabled = false;
    $("input").focus();
  }
}

$("form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("input").value.trim();
  if (!text || busy) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("form").requestSubmit(); }
});
$("reset").addEventListener("click", () => { history.length = 0; $("messages").innerHTML = ""; $("status").textContent = ""; });
$("api_key").addEventListener("change", loadModel);
loadModel();
$("input").focus();
</script>
</body>
</html>
)KILNHTML";
}

}  // namespace kiln::server
