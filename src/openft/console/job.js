// One job's page: its facts, loss and accuracy (or reward) curves, checkpoints, results
// file, events and the actions its status allows, kept current from its event stream
// without a reload.

import { api, download, follow } from "./api.js";
import { StepChart } from "./chart.js";
import { playgroundLink } from "./playground.js";
import { duration, errorLine, fact, h, statusBadge, when } from "./dom.js";

const EVENTS_PAGE = 20;
const ACTIONS = {
  validating_files: ["cancel"],
  queued: ["pause", "cancel"],
  running: ["pause", "cancel"],
  paused: ["resume", "cancel"],
};
const LABELS = { cancel: "Cancel", pause: "Pause", resume: "Resume" };
const METRIC_KEYS = [
  "train_loss", "valid_loss", "full_valid_loss",
  "train_mean_token_accuracy", "valid_mean_token_accuracy", "full_valid_mean_token_accuracy",
  "train_mean_reward", "full_valid_mean_reward",
];

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

// The charts a job's page may show; `expected`: shown for the job's method even before
// its first metrics, the others only once their metrics come.
function charts(job) {
  const reinforcement = job.method && job.method.type === "reinforcement";
  return [
    { expected: true, chart: new StepChart("Training and validation loss", [
      { key: "train_loss", label: "training loss" },
      { key: "valid_loss", label: "validation loss" },
      { key: "full_valid_loss", label: "full validation loss", point: true },
    ]) },
    { expected: !reinforcement, chart: new StepChart("Token accuracy", [
      { key: "train_mean_token_accuracy", label: "training accuracy" },
      { key: "valid_mean_token_accuracy", label: "validation accuracy" },
      { key: "full_valid_mean_token_accuracy", label: "full validation accuracy", point: true },
    ]) },
    { expected: reinforcement, chart: new StepChart("Reward", [
      { key: "train_mean_reward", label: "training mean reward" },
      { key: "full_valid_mean_reward", label: "full validation mean reward", point: true },
    ]) },
  ];
}

export async function renderJob(view, jobId, signal) {
  const id = encodeURIComponent(jobId);
  // The curves come from openft's metrics endpoint, at once however long the job; the
  // events stream then goes on from the last event they include.
  const [found, series] = await Promise.all([
    api(`/fine_tuning/jobs/${id}`),
    api(`/fine_tuning/jobs/${id}/metrics?metrics=${METRIC_KEYS.join(",")}`),
  ]);
  let job = found;
  const shown = charts(job);
  const showCharts = () => shown.forEach(({ expected, chart }) => {
    chart.element.hidden = !expected && !chart.hasData();
  });
  for (const { chart } of shown) chart.load(series.metrics);
  showCharts();
  const title = h("h1", { class: "mono" });
  const playground = h("p");
  const facts = h("dl", { class: "facts card" });
  const actions = h("div", { class: "actions" });
  const actionError = h("div");
  const checkpoints = h("div");
  const results = h("div");
  const events = h("ol", { class: "events", "aria-label": "Events, newest first" });
  const older = h("button", { type: "button", class: "secondary", hidden: true }, "Load older events");
  view.replaceChildren(
    title, actions, actionError, playground, facts,
    h("h2", {}, "Metrics"), h("div", { class: "charts" }, ...shown.map(({ chart }) => chart.element)),
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
    // A succeeded job's model beside its base, one click away.
    playground.replaceChildren(...(job.status === "succeeded" && job.fine_tuned_model
      ? [h("a", { href: playgroundLink([job.fine_tuned_model, job.model]) }, "Try in playground")]
      : []));
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

  // The stream goes on from the last event the series were read to (their history came
  // with them). Events after the newest one of the first page are new: they go on top of
  // the list. The page is read after the series, so its newest event is that last one or
  // a later one, which the stream brings: until then, what the stream brings is listed.
  // It starts at once; what it brings before the first page is in waits for it.
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
  const caughtUp = () => shown.forEach(({ chart }) => chart.flush());
  const listNew = (batch) => {
    for (const event of batch) {
      if (live) {
        events.prepend(eventItem(event));
        if (event.type === "message") refresh();
      } else if (event.id === newest) {
        live = true;
      }
    }
  };
  const onEvents = (batch) => {
    const metrics = batch.filter((event) => event.type === "metrics");
    if (metrics.length) {
      for (const { chart } of shown) chart.add(metrics);
      showCharts();
    }
    if (newest === undefined) early.push(...batch);
    else listNew(batch);
  };
  const resize = () => shown.forEach(({ chart }) => chart.resize());
  window.addEventListener("resize", resize);
  signal.addEventListener("abort", () => window.removeEventListener("resize", resize));
  caughtUp();
  const following = follow(job.id, onEvents, signal, series.last_event_id).then(() => {
    if (!signal.aborted) { caughtUp(); refresh(); }
  }).catch((error) => { if (!signal.aborted) events.before(errorLine(error)); });
  const [first] = await Promise.all([loadEvents(null), showCheckpoints()]);
  newest = first.data.length ? first.data[0].id : null;
  live = newest === null || newest === series.last_event_id;
  listNew(early);
  early = null;
  return following;
}
