// The playground: one prompt to up to three models (base models, fine-tuned models,
// checkpoints), their answers streamed side by side through the public chat completions
// endpoint (stream: true, as the SDKs call it), with time to first token and token counts.

import { api, streamChat } from "./api.js";
import { errorLine, h } from "./dom.js";

const SLOTS = 3;
const JOBS = 20; // the newest jobs whose checkpoints are offered

// The playground's address with `models` preselected, in order.
export function playgroundLink(models) {
  const query = new URLSearchParams();
  for (const model of models) query.append("model", model);
  return `#/playground?${query}`;
}

// What can be picked: [group label, [model names]].
async function choices() {
  const [models, jobs] = await Promise.all([api("/models"), api(`/fine_tuning/jobs?limit=${JOBS}`)]);
  const base = models.data.filter((m) => !m.id.startsWith("ft:")).map((m) => m.id);
  const tuned = models.data.filter((m) => m.id.startsWith("ft:")).map((m) => m.id);
  const finished = jobs.data.filter((job) => job.status === "succeeded" && job.fine_tuned_model);
  const pages = await Promise.all(finished.map((job) =>
    api(`/fine_tuning/jobs/${job.id}/checkpoints?limit=10`).catch(() => ({ data: [] }))));
  const checkpoints = pages.flatMap((page) => page.data.map((c) => c.fine_tuned_model_checkpoint));
  return [["Base models", base], ["Fine-tuned models", tuned], ["Checkpoints", checkpoints]];
}

function modelSelect(id, groups, chosen) {
  const known = new Set(groups.flatMap(([, names]) => names));
  const select = h("select", { id },
    h("option", { value: "" }, "none"),
    // A model named in the address that no list offers (another project's, shared) still shows.
    chosen && !known.has(chosen) ? h("option", { value: chosen }, chosen) : null,
    ...groups.filter(([, names]) => names.length).map(([label, names]) =>
      h("optgroup", { label }, ...names.map((name) => h("option", { value: name }, name)))));
  select.value = chosen || "";
  return select;
}

// One model's answer as it streams: text, time to first token, tokens, how it ended.
function answer(model) {
  const text = h("div", { class: "answer-text" });
  const stats = h("p", { class: "muted answer-stats" }, "Waiting for the first token…");
  const problem = h("div");
  const element = h("section", { class: "answer card", role: "region", "aria-label": model,
    "aria-busy": "true" }, h("h3", { class: "mono" }, model), text, stats, problem);
  return { element, text, stats, problem };
}

async function run(model, request, view, signal) {
  const started = performance.now();
  let first = null;
  let chunks = 0;
  let usage = null;
  let finish = null;
  const show = (state) => {
    const parts = [
      first === null ? "no token yet" : `time to first token ${Math.round(first)} ms`,
      usage ? `${usage.completion_tokens} tokens` : `${chunks} chunks`,
    ];
    if (usage) parts.push(`${usage.prompt_tokens} prompt tokens`);
    if (state) parts.push(state);
    view.stats.textContent = parts.join(" · ");
  };
  try {
    await streamChat({ ...request, model, stream_options: { include_usage: true } }, (chunk) => {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const content = choice.delta && choice.delta.content;
        if (content) {
          if (first === null) first = performance.now() - started;
          chunks += 1;
          view.text.append(content);
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      show("streaming");
    }, signal);
    show(finish ? `finished: ${finish}` : "finished");
  } catch (error) {
    if (signal.aborted) show("stopped");
    else {
      show("failed");
      view.problem.replaceChildren(errorLine(error));
    }
  } finally {
    view.element.setAttribute("aria-busy", "false");
  }
}

export async function renderPlayground(view, params, signal) {
  const groups = await choices();
  const wanted = params.getAll("model").slice(0, SLOTS);
  if (!wanted.length && groups[0][1].length) wanted.push(groups[0][1][0]);
  const selects = Array.from({ length: SLOTS }, (_, i) => modelSelect(`playground-model-${i + 1}`, groups, wanted[i]));
  const system = h("textarea", { id: "playground-system", rows: 2 });
  const prompt = h("textarea", { id: "playground-prompt", rows: 4, required: true });
  const temperature = h("input", { id: "playground-temperature", type: "number", min: 0, max: 2,
    step: 0.1, value: 1 });
  const maxTokens = h("input", { id: "playground-max-tokens", type: "number", min: 1, step: 1,
    value: 128 });
  const send = h("button", { type: "submit" }, "Send");
  const stop = h("button", { type: "button", class: "secondary", disabled: true }, "Stop");
  const problem = h("div");
  const answers = h("div", { class: "answers" });
  const label = (control, text) => h("label", { for: control.id }, text);
  const form = h("form", { class: "grid card", "aria-label": "Playground" },
    ...selects.flatMap((select, i) => [label(select, `Model ${i + 1}`), select]),
    label(system, "System message (optional)"), system,
    label(prompt, "Prompt"), prompt,
    label(temperature, "Temperature"), temperature,
    label(maxTokens, "Max tokens"), maxTokens,
    h("div", { class: "full toolbar" }, send, stop,
      h("span", { class: "muted" }, "Ctrl+Enter in the prompt sends it.")),
    h("div", { class: "full" }, problem));
  view.replaceChildren(h("h1", {}, "Playground"), form, answers);

  let running = null;
  const stopAll = () => { if (running) running.abort(); };
  signal.addEventListener("abort", stopAll);
  stop.addEventListener("click", stopAll);
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    const models = [...new Set(selects.map((select) => select.value).filter(Boolean))];
    if (!models.length) {
      problem.replaceChildren(errorLine(new Error("Pick a model.")));
      return;
    }
    const messages = [];
    if (system.value.trim()) messages.push({ role: "system", content: system.value });
    messages.push({ role: "user", content: prompt.value });
    const request = { messages };
    if (temperature.value !== "") request.temperature = Number(temperature.value);
    if (maxTokens.value !== "") request.max_tokens = Number(maxTokens.value);
    stopAll();
    const controller = new AbortController();
    running = controller;
    const views = models.map(answer);
    answers.replaceChildren(...views.map((v) => v.element));
    stop.disabled = false;
    // All at once: each answer streams into its own region as its tokens come.
    await Promise.all(models.map((model, i) => run(model, request, views[i], controller.signal)));
    if (running === controller) {
      running = null;
      stop.disabled = true;
    }
  });
}
