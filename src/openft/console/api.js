// The console's only way to the server: openft's public API, with the key of this tab.

const KEY = "openft.apiKey";

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  signIn(key) { sessionStorage.setItem(KEY, key); },
  signOut() { sessionStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, body) {
    const error = body && body.error;
    super(error && error.message ? error.message : `The server answered ${status}.`);
    this.status = status;
    this.code = error ? error.code : null;
    this.param = error ? error.param : null;
  }
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${session.key}`, ...extra };
}

// A JSON answer of the public API (path without /v1), or an ApiError.
export async function api(path, { method = "GET", json, form } = {}) {
  const init = { method, headers: headers() };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (form !== undefined) {
    init.body = form;
  }
  const response = await fetch(`/v1${path}`, init);
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    const error = new ApiError(response.status, body);
    if (response.status === 401) window.dispatchEvent(new CustomEvent("openft:unauthorized"));
    throw error;
  }
  return response.json();
}

// The bytes of a file the API serves (a results file), as a Blob.
export async function download(path) {
  const response = await fetch(`/v1${path}`, { headers: headers() });
  if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
  return response.blob();
}

// The data of one server-sent event frame (its `data:` lines joined), or null for a
// frame without data (a comment).
function frameData(frame) {
  const at = frame.startsWith("data: ") ? 0 : frame.indexOf("\ndata: ") + 1;
  if (at === 0 && !frame.startsWith("data: ")) return null;
  const rest = frame.slice(at + 6);
  return rest.includes("\ndata: ") ? rest.split("\ndata: ").join("\n") : rest;
}

// Follow a job's events as server-sent events (the events endpoint with stream=true):
// every event after `from` (an event id; null: since the first), oldest first, then each
// as it is committed, until the job has ended. `onEvents` gets them in batches; a dropped
// connection is resumed with Last-Event-ID. Resolves at `data: [DONE]`, or when `signal`
// aborts.
export async function follow(jobId, onEvents, signal, from = null) {
  let last = from;
  for (let attempt = 0; attempt < 20 && !signal.aborted; attempt++) {
    const extra = { Accept: "text/event-stream" };
    if (last) extra["Last-Event-ID"] = last;
    let response;
    try {
      response = await fetch(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/events?stream=true`,
        { headers: headers(extra), signal });
    } catch (error) {
      if (signal.aborted) return;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      continue;
    }
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const frames = buffer.split("\n\n");
        buffer = frames.pop();
        const datas = [];
        let ended = false;
        for (const frame of frames) {
          const data = frameData(frame);
          if (data === null) continue; // a keep-alive comment
          if (data === "[DONE]") { ended = true; break; }
          datas.push(data);
        }
        if (datas.length) {
          // One parse per read, not one per event: a replay brings thousands at a time.
          const batch = JSON.parse(`[${datas.join(",")}]`);
          last = batch[batch.length - 1].id;
          onEvents(batch);
        }
        if (ended) return;
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000)); // ended early: resume after `last`
  }
}

// Stream a chat completion (POST /v1/chat/completions with stream: true, as the SDKs do):
// `onChunk` gets each chat.completion.chunk object as it comes. Resolves at
// `data: [DONE]` (or when the stream ends); an answer that is not 200 is an ApiError, and
// an error sent inside the stream too.
export async function streamChat(body, onChunk, signal) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!response.ok) {
    const failure = await response.json().catch(() => null);
    if (response.status === 401) window.dispatchEvent(new CustomEvent("openft:unauthorized"));
    throw new ApiError(response.status, failure);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const frames = buffer.split("\n\n");
    buffer = frames.pop();
    for (const frame of frames) {
      const data = frameData(frame);
      if (data === null) continue;
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(500, chunk);
      onChunk(chunk);
    }
  }
}
