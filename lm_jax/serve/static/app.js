// The playground: streams a completion from /v1/completions and shows each
// token's probability, its alternatives (hover) and what the model attended
// to at a position (click: /v1/internals). What the run can do (info.can)
// picks the view: a run that replies (an echo bot) gets a chat view; one
// that fills blanks fills a prompt's blanks (/v1/fill).
"use strict";

const $ = (id) => document.getElementById(id);
let info = null;         // /v1/playground
let tokens = [];         // {id, text, prompt, p, top: [[text, p], ...]}
let controller = null;   // aborts the running request

function headers() {
  const h = {"Content-Type": "application/json"};
  const key = sessionStorage.getItem("lm_jax_key");
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function call(path, body) {
  const response = await fetch(path, {
    method: body ? "POST" : "GET", headers: headers(),
    body: body ? JSON.stringify(body) : undefined,
    signal: controller ? controller.signal : undefined});
  if (response.status === 401) {
    $("key-box").hidden = false;
    throw new Error("this server needs an API key: enter it above");
  }
  if (!response.ok) {
    const error = await response.json().catch(() => ({}));
    throw new Error((error.error && error.error.message) || response.status);
  }
  return response;
}

// Probability -> background: red (unlikely) through yellow to green.
const shade = (p) => `hsl(${Math.round(120 * p)}, 75%, 82%)`;
const visible = (t) => t.replace(/\n/g, "\u23ce\n").replace(/ /g, "\u2423");

function addToken(t) {
  t.index = tokens.length;
  tokens.push(t);
  const span = document.createElement("span");
  span.textContent = t.text;
  span.dataset.index = t.index;
  if (t.prompt) span.className = "prompt";
  else span.style.background = shade(t.p);
  $("output").appendChild(span);
}

function showTip(event) {
  const t = tokens[event.target.dataset.index];
  if (!t || t.prompt) return;
  const rows = t.top.map(([text, p]) =>
      `<tr><td>${escape(visible(text))}</td><td>${(100 * p).toFixed(1)}%` +
      `</td><td><span class="bar" style="width:${Math.round(80 * p)}px">` +
      `</span></td></tr>`).join("");
  const tip = $("tip");
  tip.innerHTML = `<div>chosen <b>${escape(visible(t.text))}</b> ` +
      `${(100 * t.p).toFixed(1)}%</div><table>${rows}</table>`;
  tip.style.left = event.pageX + 12 + "px";
  tip.style.top = event.pageY + 14 + "px";
  tip.hidden = false;
}

function escape(text) {
  const div = document.createElement("div");
  div.textContent = text;
  return div.innerHTML;
}

function number(id) {
  const value = $(id).value;
  return value === "" ? undefined : Number(value);
}

// A prompt's blanks filled: each filled token shaded like a generated one.
async function fillBlanks() {
  const response = await call("/v1/fill", {
      model: info.model, prompt: $("prompt").value});
  const filled = await response.json();
  filled.tokens.forEach((t) => addToken({id: t.id, text: t.text,
      prompt: !t.blank, p: t.p, top: t.top}));
  return filled.tokens.filter((t) => t.blank).length;
}

async function generate() {
  $("output").textContent = "";
  $("inside").textContent = "";
  tokens = [];
  controller = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  $("status").textContent = "generating...";
  const started = performance.now();
  let first = null, made = 0;
  try {
    if (info.can.includes("fill") && $("prompt").value.includes(info.blank)) {
      const blanks = await fillBlanks();
      $("status").textContent = `${blanks} blanks filled`;
      return;
    }
    const response = await call("/v1/completions?token_ids=1", {
      model: info.model, prompt: $("prompt").value, stream: true,
      logprobs: 5, temperature: number("temperature"), top_k: number("top_k"),
      top_p: number("top_p"), max_tokens: number("max_tokens"),
      seed: number("seed")});
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, end).replace(/^data: /, "");
        buffer = buffer.slice(end + 2);
        if (line === "[DONE]") continue;
        const choice = JSON.parse(line).choices[0];
        if (choice.prompt_token_ids) {
          choice.prompt_token_ids.forEach((id, i) => addToken(
              {id, text: choice.prompt_tokens[i], prompt: true}));
        }
        const lp = choice.logprobs;
        (choice.token_ids || []).forEach((id, i) => {
          first = first || performance.now();
          made += 1;
          addToken({id, text: lp.tokens[i], prompt: false,
                    p: Math.exp(lp.token_logprobs[i]),
                    top: Object.entries(lp.top_logprobs[i]).map(
                        ([text, l]) => [text, Math.exp(l)])});
        });
      }
    }
    const seconds = (performance.now() - started) / 1000;
    $("status").textContent = `${made} tokens in ${seconds.toFixed(2)} s` +
        (first ? `, first after ${(first - started).toFixed(0)} ms` : "");
  } catch (e) {
    $("status").textContent = e.name === "AbortError" ? "stopped" :
        "error: " + e.message;
  } finally {
    controller = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

// What the model computed at token `index`: one table per layer, one row
// per panel (a head's attention over the tokens before, or a gate's units).
async function inspect(index) {
  document.querySelectorAll("#output span.chosen").forEach(
      (s) => s.classList.remove("chosen"));
  document.querySelector(`#output span[data-index="${index}"]`)
      .classList.add("chosen");
  $("inside").textContent = "computing...";
  try {
    const response = await call("/v1/internals", {
      tokens: tokens.map((t) => t.id), position: index});
    const data = await response.json();
    const byToken = data.columns === "tokens";
    let html = `<h3>${byToken ? "Attention" : "Gates"} at position ` +
        `${index} (${escape(visible(tokens[index].text))})</h3>`;
    data.values.forEach((layer, l) => {
      html += `<div>layer ${l}</div><table>`;
      if (byToken) {
        html += "<tr><th></th>" + data.labels.map(
            (t) => `<td>${escape(visible(t))}</td>`).join("") + "</tr>";
      }
      layer.forEach((row, p) => {
        const signed = data.signed[p];
        // The row's largest value gets the full colour.
        const bound = Math.max(...row.map(Math.abs), 1e-6);
        html += `<tr><th>${escape(data.panels[p])}</th>` + row.map((v) => {
          const a = Math.min(1, Math.abs(v) / bound);
          const color = signed && v < 0 ? `rgba(198,40,40,${a})` :
              `rgba(21,101,192,${a})`;
          return `<td title="${v}" style="background:${color}"></td>`;
        }).join("") + "</tr>";
      });
      html += "</table>";
    });
    $("inside").innerHTML = html;
  } catch (e) {
    $("inside").textContent = "error: " + e.message;
  }
}

async function chat(event) {
  event.preventDefault();
  const text = $("chat-input").value;
  if (!text.trim()) return;
  $("chat-input").value = "";
  const say = (role, content) => {
    const div = document.createElement("div");
    div.className = "msg " + role;
    div.textContent = content;
    $("messages").appendChild(div);
    return div;
  };
  say("user", text);
  const answer = say("assistant", "...");
  try {
    const response = await call("/v1/chat/completions", {
      model: info.model, messages: [{role: "user", content: text}],
      temperature: 0});
    answer.textContent = (await response.json()).choices[0].message.content;
  } catch (e) {
    answer.textContent = "error: " + e.message;
  }
}

$("key").addEventListener("change", () => {
  sessionStorage.setItem("lm_jax_key", $("key").value);
  start();
});

async function start() {
  try {
    info = await (await call("/v1/playground")).json();
  } catch (e) {
    $("model").textContent = e.message;
    return;
  }
  $("model").textContent = `${info.model}: ${info.kind}, step ${info.step}` +
      (info.context_length ? `, context ${info.context_length} tokens` : "");
  if (info.can.includes("reply")) {
    $("chat-view").hidden = false;
    $("chat-form").addEventListener("submit", chat);
    return;
  }
  $("text-view").hidden = false;
  if (!$("prompt").value) $("prompt").value = info.example_prompt;
  $("max_tokens").max = info.max_tokens;
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", () => controller && controller.abort());
  const output = $("output");
  output.addEventListener("mouseover", showTip);
  output.addEventListener("mouseout", () => { $("tip").hidden = true; });
  output.addEventListener("click", (event) => {
    if (event.target.dataset.index !== undefined) {
      inspect(Number(event.target.dataset.index));
    }
  });
}

start();
