// The project's jobs, newest first, paged with the API's cursor, statuses kept current.

import { api } from "./api.js";
import { errorLine, h, statusBadge, when } from "./dom.js";

const PAGE = 20;
const REFRESH_MS = 5000;
const TERMINAL = ["succeeded", "failed", "cancelled"];

// step/total of a job's newest metrics event among its newest events, or "—".
async function progress(job) {
  const page = await api(`/fine_tuning/jobs/${job.id}/events?limit=${PAGE}`);
  const metrics = page.data.find((event) => event.type === "metrics");
  return metrics ? `${metrics.data.step}/${metrics.data.total_steps}` : "—";
}

function row(job) {
  const cell = h("td", {}, "…");
  progress(job).then((text) => { cell.textContent = text; }, () => { cell.textContent = "—"; });
  return h("tr", { "data-job": job.id },
    h("td", { class: "mono" }, h("a", { href: `#/jobs/${job.id}` }, job.id)),
    h("td", {}, job.model),
    h("td", {}, statusBadge(job.status)),
    cell,
    h("td", {}, when(job.created_at)),
    h("td", { class: "mono" }, job.fine_tuned_model || "—"));
}

export async function renderJobs(view, signal) {
  const body = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  const message = h("div");
  view.replaceChildren(
    h("div", { class: "toolbar" }, h("h1", {}, "Fine-tuning jobs"),
      h("a", { href: "#/new" }, "Create a job")),
    h("table", { "aria-label": "Fine-tuning jobs" },
      h("thead", {}, h("tr", {}, ...["Job", "Base model", "Status", "Progress", "Created",
        "Fine-tuned model"].map((name) => h("th", { scope: "col" }, name)))),
      body),
    message,
    h("div", { class: "toolbar" }, more));
  let jobs = [];

  async function load(after) {
    const query = after ? `?limit=${PAGE}&after=${after}` : `?limit=${PAGE}`;
    const page = await api(`/fine_tuning/jobs${query}`);
    jobs = jobs.concat(page.data);
    body.append(...page.data.map(row));
    more.hidden = !page.has_more;
    if (!jobs.length) message.replaceChildren(h("p", { class: "muted" }, "No jobs yet."));
  }

  // Live status: the loaded jobs again, every few seconds, while any has not ended.
  async function refresh() {
    if (signal.aborted || jobs.every((job) => TERMINAL.includes(job.status))) return;
    const page = await api(`/fine_tuning/jobs?limit=${Math.min(jobs.length, 1000)}`);
    for (const job of page.data) {
      const index = jobs.findIndex((known) => known.id === job.id);
      const current = body.querySelector(`tr[data-job="${job.id}"]`);
      if (index < 0 || !current) continue;
      if (jobs[index].status !== job.status || !TERMINAL.includes(job.status)) {
        current.replaceWith(row(job));
      }
      jobs[index] = job;
    }
  }

  more.addEventListener("click", () => load(jobs[jobs.length - 1].id).catch((error) => {
    message.replaceChildren(errorLine(error));
  }));
  await load(null);
  const timer = setInterval(() => refresh().catch(() => {}), REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
}
