// One job's page: its facts, loss and accuracy curves, checkpoints, results file, events
// and the actions its status allows, kept current from its event stream without a reload.

import { api, download, follow } from "./api.js";
import { StepChart } from "./chart.js";
import { duration, errorLine, fact, h, statusBadge, when } from "./dom.js";

const EVENTS_PAGE = 20;
const ACTIONS = {
  validating_files: ["cancel"],
  queued: ["pause", "cancel"],
  running: ["pause", "cancel"],
  paused: ["resume", "cancel"],
};
const LABELS = { cancel: "Cancel", pause: "Pause", resume: "Resume" };

function hyperparameters(job) {
  const method = job.method || {};
  const resolved = (method[method.type] || {}).hyperparameters || job.hyperparameters || {};
  return Object.entries(resolved).map(([k, v]) => `${k}: ${v}`).join(", ") || "—";
}

function eventItem(event) {
  return h("li", { class: `level-${event.level}`, "data-event": event.id },
    h("time", { datetime: new Date(event.created_at * 1000).toISOString() }, when(event.created_at)),
    h("span", { class: "muted" }, event.level),
    h("span", {}, event.message));
}

export async function renderJob(view, jobId, signal) {
  let job = await api(`/fine_tuning/jobs/${encodeURIComponent(jobId)}`);
  const loss = new StepChart("Training and validation loss", [
    { key: "train_loss", label: "training loss" },
    { key: "valid_loss", label: "validation loss" },
    { key: "full_valid_loss", label: "full validation loss", point: true },
  ]);
  const accuracy = new StepChart("Token accuracy", [
    { key: "train_mean_token_accuracy", label: "training accuracy" },
    { key: "valid_mean_token_accuracy", label: "validation accuracy" },
    { key: "full_valid_mean_token_accuracy", label: "full validation accuracy", point: true },
  ]);
  const title = h("h1", { class: "mono" });
  const facts = h("dl", { class: "facts card" });
  const actions = h("div", { class: "actions" });
  const actionError = h("div");
  const checkpoints = h("div");
  const results = h("div");
  const events = h("ol", { class: "events", "aria-label": "Events, newest first" });
  const older = h("button", { type: "button", class: "secondary", hidden: true }, "Load older events");
  view.replaceChildren(
    title, actions, actionError, facts,
    h("h2", {}, "Metrics"), h("div", { class: "charts" }, loss.element, accuracy.element),
    h("h2", {}, "Checkpoints"), checkpoints,
    h("h2", {}, "Results"), results,
    h("h2", {}, "Events"), events, h("div", { class: "toolbar" }, older));

  function showJob() {
    title.replaceChildren(job.id, " ", statusBadge(job.status));
    const end = job.finished_at || (["succeeded", "failed", "cancelled"].includes(job.status) ? null : Date.now() / 1000);
    facts.replaceChildren(...[
      fact("Status", job.status),
      fact("Base model", job.model),
      fact("Fine-tuned model", h("span", { class: "mono" }, job.fine_tuned_model || "—")),
      fact("Created", when(job.created_at)),
      fact("Finished", when(job.finished_at)),
      fact("Duration", end ? duration(end - job.created_at) : "—"),
      fact("Estimated finish", job.status === "running" ? when(job.estimated_finish) : "—"),
      fact("Trained tokens", job.trained_tokens ?? "—"),
      fact("Method", (job.method && job.method.type) || "supervised"),
      fact("Hyperparameters", hyperparameters(job)),
      fact("Training file", h("span", { class: "mono" }, job.training_file)),
      fact("Validation file", h("span", { class: "mono" }, job.validation_file || "—")),
      fact("Seed", job.seed ?? "—"),
      job.error && job.error.message ? fact("Error", h("span", { class: "error" }, job.error.message)) : null,
    ].filter(Boolean));
    actions.replaceChildren(...(ACTIONS[job.status] || []).map((action) =>
      h("button", { type: "button", class: action === "cancel" ? "danger" : "secondary",
        onclick: () => act(action) }, LABELS[action])));
  }

  async function act(action) {
    actionError.replaceChildren();
    try {
      job = await api(`/fine_tuning/jobs/${job.id}/${action}`, { method: "POST" });
      showJob();
    } catch (error) {
      actionError.replaceChildren(errorLine(error));
    }
  }

  async function showCheckpoints() {
    const page = await api(`/fine_tuning/jobs/${job.id}/checkpoints?limit=100`);
    if (!page.data.length) {
      checkpoints.replaceChildren(h("p", { class: "muted" }, "No checkpoints yet."));
      return;
    }
    checkpoints.replaceChildren(h("table", { "aria-label": "Checkpoints" },
      h("thead", {}, h("tr", {}, ...["Step", "Model", "Training loss", "Token accuracy", "Created"]
        .map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, ...page.data.map((c) => h("tr", {},
        h("td", {}, c.step_number),
        h("td", { class: "mono" }, c.fine_tuned_model_checkpoint),
        h("td", {}, c.metrics.train_loss ?? "—"),
        h("td", {}, c.metrics.train_mean_token_accuracy ?? "—"),
        h("td", {}, when(c.created_at)))))));
  }

  function showResults() {
    if (!job.result_files || !job.result_files.length) {
      results.replaceChildren(h("p", { class: "muted" }, "No results file yet."));
      return;
    }
    results.replaceChildren(...job.result_files.map((fileId) => h("button", {
      type: "button", class: "secondary",
      onclick: async () => {
        const blob = await download(`/files/${fileId}/content`);
        const link = h("a", { href: URL.createObjectURL(blob), download: "step_metrics.csv" });
        link.click();
        URL.revokeObjectURL(link.href);
      },
    }, `Download results file (${fileId})`)));
  }

  // The events list pages exactly as the endpoint does: 20, then `after` the last one.
  async function loadEvents(after) {
    const query = after ? `limit=${EVENTS_PAGE}&after=${after}` : `limit=${EVENTS_PAGE}`;
    const page = await api(`/fine_tuning/jobs/${job.id}/events?${query}`);
    events.append(...page.data.map(eventItem));
    older.hidden = !page.has_more;
    return page;
  }
  older.addEventListener("click", () => {
    const last = events.lastElementChild;
    loadEvents(last ? last.dataset.event : null).catch((error) => events.after(errorLine(error)));
  });

  showJob();
  showResults();

  // The stream replays the log from the start (the charts' history, fetched once) and
  // then goes on live. Events after the newest one of the first page are new: they go
  // on top of the list. It starts at once; what it brings before the first page is in
  // waits for it.
  let newest;
  let live = false;
  let early = [];
  let refreshing = null;
  function refresh() {
    refreshing ??= setTimeout(async () => {
      refreshing = null;
      job = await api(`/fine_tuning/jobs/${job.id}`);
      showJob();
      showResults();
      await showCheckpoints();
    }, 300);
  }
  const caughtUp = () => { loss.flush(); accuracy.flush(); };
  const listNew = (batch) => {
    for (const event of batch) {
      if (live) {
        events.prepend(eventItem(event));
        if (event.type === "message") refresh();
      } else if (event.id === newest) {
        live = true;
        caughtUp();
      }
    }
  };
  const onEvents = (batch) => {
    const metrics = batch.filter((event) => event.type === "metrics");
    loss.add(metrics);
    accuracy.add(metrics);
    if (newest === undefined) early.push(...batch);
    else listNew(batch);
  };
  const resize = () => { loss.resize(); accuracy.resize(); };
  window.addEventListener("resize", resize);
  signal.addEventListener("abort", () => window.removeEventListener("resize", resize));
  const following = follow(job.id, onEvents, signal).then(() => {
    if (!signal.aborted) { caughtUp(); refresh(); }
  }).catch((error) => { if (!signal.aborted) events.before(errorLine(error)); });
  const [first] = await Promise.all([loadEvents(null), showCheckpoints()]);
  newest = first.data.length ? first.data[0].id : null;
  live = newest === null;
  listNew(early);
  early = null;
  return following;
}
