// Create a fine-tuning job: base model, files, method, hyperparameters, suffix.

import { api } from "./api.js";
import { errorLine, h } from "./dom.js";

function field(id, label, control) {
  control.id = id;
  return [h("label", { for: id }, label), control];
}

// "auto", an empty field, or a number.
function autoOr(value) {
  const text = value.trim();
  if (!text || text === "auto") return "auto";
  return Number(text);
}

export async function renderCreate(view) {
  const [models, files] = await Promise.all([api("/models"), api("/files?purpose=fine-tune")]);
  const options = (items, label) => items.map((item) => h("option", { value: item.id }, label(item)));
  const base = h("select", { required: true },
    ...options(models.data.filter((m) => !m.id.startsWith("ft:")), (m) => m.id));
  const training = h("select", { required: true },
    ...options(files.data, (f) => `${f.filename} (${f.id})`));
  const validation = h("select", {}, h("option", { value: "" }, "none"),
    ...options(files.data, (f) => `${f.filename} (${f.id})`));
  const method = h("select", {}, h("option", { value: "supervised" }, "supervised"),
    h("option", { value: "dpo" }, "DPO (preference pairs)"));
  const epochs = h("input", { placeholder: "auto", inputmode: "numeric" });
  const batch = h("input", { placeholder: "auto", inputmode: "numeric" });
  const rate = h("input", { placeholder: "auto", inputmode: "decimal" });
  const beta = h("input", { placeholder: "auto", inputmode: "decimal" });
  const suffix = h("input", { maxlength: 64, pattern: "[A-Za-z0-9._-]+" });
  const betaRow = field("job-beta", "beta (DPO)", beta);
  const error = h("div");
  const form = h("form", { class: "grid card", "aria-label": "Create a fine-tuning job" },
    ...field("job-model", "Base model", base),
    ...field("job-training-file", "Training file", training),
    ...field("job-validation-file", "Validation file", validation),
    ...field("job-method", "Method", method),
    ...field("job-epochs", "Epochs", epochs),
    ...field("job-batch-size", "Batch size", batch),
    ...field("job-learning-rate", "Learning rate multiplier", rate),
    ...betaRow,
    ...field("job-suffix", "Suffix", suffix),
    h("div", { class: "full" }, h("button", { type: "submit" }, "Create job")),
    h("div", { class: "full" }, error));
  const showBeta = () => betaRow.forEach((element) => { element.hidden = method.value !== "dpo"; });
  method.addEventListener("change", showBeta);
  showBeta();
  view.replaceChildren(h("h1", {}, "New fine-tuning job"),
    files.data.length ? form : h("p", {}, "Upload a training file first: ",
      h("a", { href: "#/files" }, "Files"), "."));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const hyperparameters = {
      n_epochs: autoOr(epochs.value),
      batch_size: autoOr(batch.value),
      learning_rate_multiplier: autoOr(rate.value),
    };
    if (method.value === "dpo") hyperparameters.beta = autoOr(beta.value);
    const body = {
      model: base.value,
      training_file: training.value,
      method: { type: method.value, [method.value]: { hyperparameters } },
    };
    if (validation.value) body.validation_file = validation.value;
    if (suffix.value.trim()) body.suffix = suffix.value.trim();
    try {
      const job = await api("/fine_tuning/jobs", { method: "POST", json: body });
      location.hash = `#/jobs/${job.id}`;
    } catch (failure) {
      error.replaceChildren(errorLine(failure));
    }
  });
}
