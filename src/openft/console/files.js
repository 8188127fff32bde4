// The project's files: list, upload (validated by the server), delete.

import { api } from "./api.js";
import { errorLine, h, when } from "./dom.js";

const PURPOSES = ["fine-tune", "batch", "assistants", "vision", "user_data"];

export async function renderFiles(view) {
  const body = h("tbody");
  const result = h("div", { "aria-live": "polite" });
  const input = h("input", { id: "upload-file", type: "file", accept: ".jsonl,application/jsonl", required: true });
  const purpose = h("select", { id: "upload-purpose" },
    ...PURPOSES.map((p) => h("option", { value: p }, p)));
  const form = h("form", { class: "toolbar card", "aria-label": "Upload a file" },
    h("label", { for: "upload-file" }, "JSONL file"), input,
    h("label", { for: "upload-purpose" }, "Purpose"), purpose,
    h("button", { type: "submit" }, "Upload"));
  view.replaceChildren(h("h1", {}, "Files"), form, result,
    h("table", { "aria-label": "Files" },
      h("thead", {}, h("tr", {}, ...["File", "Name", "Purpose", "Bytes", "Created", ""]
        .map((name) => h("th", { scope: "col" }, name)))),
      body));

  async function list() {
    const page = await api("/files");
    body.replaceChildren(...page.data.map((file) => h("tr", {},
      h("td", { class: "mono" }, file.id),
      h("td", {}, file.filename),
      h("td", {}, file.purpose),
      h("td", {}, file.bytes),
      h("td", {}, when(file.created_at)),
      h("td", {}, h("button", { type: "button", class: "secondary",
        "aria-label": `Delete ${file.filename} (${file.id})`,
        onclick: async () => {
          try {
            await api(`/files/${file.id}`, { method: "DELETE" });
            result.replaceChildren(h("p", {}, `Deleted ${file.id}.`));
            await list();
          } catch (error) {
            result.replaceChildren(errorLine(error));
          }
        } }, "Delete")))));
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData();
    data.append("file", input.files[0]);
    data.append("purpose", purpose.value);
    result.replaceChildren(h("p", { class: "muted" }, "Uploading and validating…"));
    try {
      const file = await api("/files", { method: "POST", form: data });
      result.replaceChildren(h("p", {}, `Uploaded ${file.filename}: ${file.id}, valid.`));
      form.reset();
      await list();
    } catch (error) {
      result.replaceChildren(errorLine(error));
    }
  });
  await list();
}
