// openft's web console: sign-in and a router over the views. It uses the public API only
// (the same endpoints as the SDKs), with the key the person entered, kept in this tab.

import { ApiError, api, session } from "./api.js";
import { renderCreate } from "./create.js";
import { errorLine, h } from "./dom.js";
import { renderFiles } from "./files.js";
import { renderJob } from "./job.js";
import { renderJobs } from "./jobs.js";
import { renderPlayground } from "./playground.js";

const signIn = document.getElementById("sign-in");
const keyInput = document.getElementById("api-key");
const signInError = document.getElementById("sign-in-error");
const nav = document.querySelector("nav");
const view = document.getElementById("view");
let current = new AbortController();

function showSignIn(message) {
  current.abort();
  session.signOut();
  nav.hidden = true;
  view.replaceChildren();
  signIn.hidden = false;
  signInError.textContent = message || "";
  keyInput.focus();
}

async function route() {
  current.abort();
  current = new AbortController();
  if (!session.key) {
    showSignIn();
    return;
  }
  signIn.hidden = true;
  nav.hidden = false;
  const [path, query] = (location.hash || "#/jobs").split("?");
  const [, page, id] = path.split("/");
  const signal = current.signal;
  try {
    if (page === "jobs" && id) await renderJob(view, decodeURIComponent(id), signal);
    else if (page === "files") await renderFiles(view, signal);
    else if (page === "playground") await renderPlayground(view, new URLSearchParams(query), signal);
    else if (page === "new") await renderCreate(view, signal);
    else await renderJobs(view, signal);
  } catch (error) {
    if (signal.aborted) return;
    const notFound = error instanceof ApiError && error.status === 404;
    view.replaceChildren(
      h("h1", {}, notFound ? "Not found" : "Something went wrong"),
      errorLine(error),
      h("p", {}, h("a", { href: "#/jobs" }, "Back to the jobs")));
  }
}

signIn.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  session.signIn(key);
  try {
    await api("/fine_tuning/jobs?limit=1"); // is the key good?
  } catch (error) {
    const message = error instanceof ApiError && error.status === 401
      ? "Invalid API key: the server refused it." : `Could not sign in: ${error.message}`;
    showSignIn(message);
    return;
  }
  keyInput.value = "";
  if (!location.hash || location.hash === "#/") location.hash = "#/jobs";
  else route();
});

document.getElementById("sign-out").addEventListener("click", () => {
  showSignIn("Signed out.");
});
window.addEventListener("openft:unauthorized", () => showSignIn("Invalid API key: the server refused it."));
window.addEventListener("hashchange", route);
route();
