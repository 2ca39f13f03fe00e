/**
 * The chat page's controller: conversation state, composer, settings panel and API key.
 *
 *   composer ──send──► turns ──buildChatRequest──► streamChat (fetch + SSE) ──onDelta──► MessageView
 *       ▲                                               │ 401
 *   files / drop / paste                          key dialog ──► retry
 */
import { readAttachment } from "./attachments";
import { ApiError, streamChat } from "./chat-client";
import { BEAM_PRESET, buildChatRequest, DEFAULT_SETTINGS, SAMPLING_PRESET, type Turn } from "./chat-request";
import {
  formatSettings,
  NUMBER_FIELDS,
  type NumberKey,
  parseSettings,
  SettingsError,
  type SettingsForm,
} from "./settings";
import { answerStats } from "./stats";
import { el, MessageView, type ShownAttachment, thumbnail } from "./view";

const KEY_STORAGE = "minicpmv.apiKey";

function byId<T extends HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (node === null) throw new Error(`The page is missing #${id}`);
  return node as T;
}

const ui = {
  modelStatus: byId<HTMLElement>("model-status"),
  conversation: byId<HTMLElement>("conversation"),
  emptyHint: byId<HTMLElement>("empty-hint"),
  composer: byId<HTMLFormElement>("composer"),
  prompt: byId<HTMLTextAreaElement>("prompt"),
  pending: byId<HTMLUListElement>("pending"),
  composerError: byId<HTMLElement>("composer-error"),
  fileInput: byId<HTMLInputElement>("file-input"),
  attach: byId<HTMLButtonElement>("attach"),
  send: byId<HTMLButtonElement>("send"),
  stop: byId<HTMLButtonElement>("stop"),
  regenerate: byId<HTMLButtonElement>("regenerate"),
  clear: byId<HTMLButtonElement>("clear"),
  settings: byId<HTMLDetailsElement>("settings"),
  settingsForm: byId<HTMLFormElement>("settings-form"),
  numberFields: byId<HTMLElement>("number-fields"),
  systemPrompt: byId<HTMLTextAreaElement>("system-prompt"),
  jsonSchema: byId<HTMLTextAreaElement>("json-schema"),
  resetSettings: byId<HTMLButtonElement>("reset-settings"),
  settingsError: byId<HTMLElement>("settings-error"),
  apiKey: byId<HTMLInputElement>("api-key"),
  saveKey: byId<HTMLButtonElement>("save-key"),
  forgetKey: byId<HTMLButtonElement>("forget-key"),
  keyStatus: byId<HTMLElement>("key-status"),
  keyDialog: byId<HTMLDialogElement>("key-dialog"),
  keyDialogMessage: byId<HTMLElement>("key-dialog-message"),
  keyDialogInput: byId<HTMLInputElement>("key-dialog-input"),
  dropOverlay: byId<HTMLElement>("drop-overlay"),
};

interface ShownTurn {
  turn: Turn & { attachments: ShownAttachment[] };
  view: MessageView;
  /** False for failed exchanges: they stay on screen but are not sent with later messages. */
  inHistory: boolean;
}

const state = {
  turns: [] as ShownTurn[],
  pending: [] as ShownAttachment[],
  inFlight: null as AbortController | null,
  model: null as string | null,
};

// ---------------------------------------------------------------- settings panel

const numberInputs = new Map<NumberKey, HTMLInputElement>();
for (const field of NUMBER_FIELDS) {
  const id = `setting-${field.key}`;
  const row = el("div", "field");
  const label = el("label", "", field.label);
  label.htmlFor = id;
  const input = el("input");
  input.id = id;
  input.name = field.key;
  input.type = "number";
  input.inputMode = field.integer ? "numeric" : "decimal";
  input.min = String(field.min);
  input.max = String(field.max);
  input.step = String(field.step);
  if (field.optional) input.placeholder = "default";
  input.title = field.help;
  if (field.sampling) input.dataset.sampling = "true";
  row.append(label, input);
  ui.numberFields.append(row);
  numberInputs.set(field.key, input);
}

function decodingRadios(): HTMLInputElement[] {
  return Array.from(ui.settingsForm.querySelectorAll<HTMLInputElement>('input[name="decoding"]'));
}

function readForm(): SettingsForm {
  const form = {
    decoding: decodingRadios().find((r) => r.checked)?.value ?? "",
    systemPrompt: ui.systemPrompt.value,
    jsonSchema: ui.jsonSchema.value,
  } as SettingsForm;
  for (const [key, input] of numberInputs) form[key] = input.value;
  return form;
}

function writeForm(form: SettingsForm): void {
  for (const radio of decodingRadios()) radio.checked = radio.value === form.decoding;
  ui.systemPrompt.value = form.systemPrompt;
  ui.jsonSchema.value = form.jsonSchema;
  for (const [key, input] of numberInputs) input.value = form[key];
  syncDecoding();
}

/** Beam search ignores temperature, top p and top k: disable them so the panel says so. */
function syncDecoding(): void {
  const beam = readForm().decoding === "beam";
  for (const input of numberInputs.values()) {
    if (input.dataset.sampling === "true") input.disabled = beam;
  }
}

function applyPreset(decoding: string): void {
  const rep = numberInputs.get("repetitionPenalty");
  if (decoding === "beam") {
    if (rep) rep.value = String(BEAM_PRESET.repetitionPenalty);
  } else {
    const values: Partial<Record<NumberKey, number>> = {
      temperature: SAMPLING_PRESET.temperature,
      topP: SAMPLING_PRESET.topP,
      topK: SAMPLING_PRESET.topK,
      repetitionPenalty: SAMPLING_PRESET.repetitionPenalty,
    };
    for (const [key, value] of Object.entries(values)) {
      const input = numberInputs.get(key as NumberKey);
      if (input) input.value = String(value);
    }
  }
  syncDecoding();
}

for (const radio of decodingRadios()) radio.addEventListener("change", () => applyPreset(radio.value));
ui.resetSettings.addEventListener("click", () => {
  writeForm(formatSettings(DEFAULT_SETTINGS));
  showSettingsError(null);
});
ui.settingsForm.addEventListener("submit", (event) => event.preventDefault());
writeForm(formatSettings(DEFAULT_SETTINGS));
ui.settings.open = window.matchMedia("(min-width: 900px)").matches;

function showSettingsError(error: SettingsError | null): void {
  ui.settingsError.hidden = error === null;
  ui.settingsError.textContent = error?.message ?? "";
  for (const input of numberInputs.values()) input.removeAttribute("aria-invalid");
  ui.jsonSchema.removeAttribute("aria-invalid");
  if (error !== null) {
    const input = error.field === "jsonSchema" ? ui.jsonSchema : numberInputs.get(error.field as NumberKey);
    ui.settings.open = true;
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  }
}

// ---------------------------------------------------------------- API key

function storedKey(): string | null {
  return sessionStorage.getItem(KEY_STORAGE);
}

function setKey(key: string | null): void {
  if (key === null || key === "") sessionStorage.removeItem(KEY_STORAGE);
  else sessionStorage.setItem(KEY_STORAGE, key);
  ui.apiKey.value = "";
  ui.keyStatus.textContent = storedKey() === null ? "No key set." : "A key is set for this tab.";
}

ui.saveKey.addEventListener("click", () => {
  setKey(ui.apiKey.value.trim());
  void loadModel();
});
ui.forgetKey.addEventListener("click", () => setKey(null));
setKey(storedKey());

/** Asks for a key after a 401; resolves to the key, or null when the person cancels. */
function askForKey(message: string): Promise<string | null> {
  ui.keyDialogMessage.textContent = message;
  ui.keyDialogInput.value = "";
  ui.keyDialog.returnValue = "";
  ui.keyDialog.showModal();
  return new Promise((resolve) => {
    ui.keyDialog.addEventListener(
      "close",
      () => {
        const key = ui.keyDialogInput.value.trim();
        if (ui.keyDialog.returnValue === "ok" && key !== "") {
          setKey(key);
          resolve(key);
        } else {
          resolve(null);
        }
      },
      { once: true },
    );
  });
}

/** Fetches the served model name for the header and the `model` field; asks for a key on 401. */
async function loadModel(): Promise<void> {
  try {
    let response = await fetchModels();
    if (response.status === 401) {
      ui.modelStatus.textContent = "This server needs an API key.";
      if ((await askForKey("This server needs an API key to list its models and answer.")) === null) return;
      response = await fetchModels();
    }
    if (!response.ok) {
      ui.modelStatus.textContent = `Model list unavailable (HTTP ${response.status}).`;
      return;
    }
    const body = (await response.json()) as { data?: { id?: unknown }[] };
    const id = body.data?.[0]?.id;
    state.model = typeof id === "string" ? id : null;
    ui.modelStatus.textContent = state.model === null ? "Connected." : `Model: ${state.model}`;
  } catch (err) {
    ui.modelStatus.textContent = `Server not reachable: ${err instanceof Error ? err.message : String(err)}`;
  }
}

function fetchModels(): Promise<Response> {
  const key = storedKey();
  return fetch("/v1/models", key === null ? {} : { headers: { authorization: `Bearer ${key}` } });
}

// ---------------------------------------------------------------- attachments

function showComposerError(message: string | null): void {
  ui.composerError.hidden = message === null;
  ui.composerError.textContent = message ?? "";
}

async function addFiles(files: Iterable<File>): Promise<void> {
  const errors: string[] = [];
  for (const file of files) {
    try {
      const attachment = await readAttachment(file);
      state.pending.push({ ...attachment, previewUrl: URL.createObjectURL(file) });
    } catch (err) {
      errors.push(err instanceof Error ? err.message : String(err));
    }
  }
  showComposerError(errors.length > 0 ? errors.join("\n") : null);
  renderPending();
}

function renderPending(): void {
  ui.pending.replaceChildren();
  ui.pending.hidden = state.pending.length === 0;
  for (const attachment of state.pending) {
    const item = el("li");
    const remove = el("button", "remove", "×");
    remove.type = "button";
    remove.setAttribute("aria-label", `Remove ${attachment.name}`);
    remove.addEventListener("click", () => {
      state.pending = state.pending.filter((a) => a !== attachment);
      URL.revokeObjectURL(attachment.previewUrl);
      renderPending();
      ui.prompt.focus();
    });
    item.append(thumbnail(attachment), remove);
    ui.pending.append(item);
  }
}

ui.attach.addEventListener("click", () => ui.fileInput.click());
ui.fileInput.addEventListener("change", () => {
  const files = Array.from(ui.fileInput.files ?? []);
  ui.fileInput.value = "";
  void addFiles(files);
});
ui.prompt.addEventListener("paste", (event) => {
  const files = Array.from(event.clipboardData?.files ?? []);
  if (files.length === 0) return;
  // Pasting a screenshot: attach it instead of inserting its file name as text.
  if (event.clipboardData?.getData("text/plain") === "") event.preventDefault();
  void addFiles(files);
});

let dragDepth = 0;
const hasFiles = (event: DragEvent): boolean => event.dataTransfer?.types.includes("Files") ?? false;
document.addEventListener("dragenter", (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  dragDepth++;
  ui.dropOverlay.hidden = false;
});
document.addEventListener("dragover", (event) => {
  if (hasFiles(event)) event.preventDefault();
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) ui.dropOverlay.hidden = true;
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  dragDepth = 0;
  ui.dropOverlay.hidden = true;
  void addFiles(Array.from(event.dataTransfer?.files ?? []));
  ui.prompt.focus();
});

// ---------------------------------------------------------------- conversation

function setStreaming(streaming: boolean): void {
  ui.stop.hidden = !streaming;
  ui.send.disabled = streaming;
  ui.regenerate.disabled = streaming || !state.turns.some((t) => t.turn.role === "user");
  ui.clear.disabled = state.turns.length === 0;
  ui.conversation.setAttribute("aria-busy", String(streaming));
}

function scrollToEnd(): void {
  ui.conversation.lastElementChild?.scrollIntoView({ block: "end" });
}

function addTurn(turn: ShownTurn["turn"]): ShownTurn {
  ui.emptyHint.hidden = true;
  const shown: ShownTurn = { turn, view: new MessageView(turn.role, turn.text, turn.attachments), inHistory: true };
  state.turns.push(shown);
  ui.conversation.append(shown.view.root);
  scrollToEnd();
  return shown;
}

/** Streams the answer to the conversation so far (its last turn is the person's). */
async function answer(): Promise<void> {
  let settings: ReturnType<typeof parseSettings>;
  try {
    settings = parseSettings(readForm());
    showSettingsError(null);
  } catch (err) {
    if (err instanceof SettingsError) {
      showSettingsError(err);
      return;
    }
    throw err;
  }
  const question = state.turns.at(-1);
  if (question === undefined) return;
  const history = state.turns.filter((t) => t.inHistory).map((t) => t.turn);
  const reply = addTurn({ role: "assistant", text: "", attachments: [] });
  reply.inHistory = false;
  reply.view.setBusy(true);
  const controller = new AbortController();
  state.inFlight = controller;
  setStreaming(true);

  const body = buildChatRequest(history, settings, state.model);
  // Figures for an answer that is stopped before the server's usage chunk arrives.
  const started = performance.now();
  let firstTokenMs: number | null = null;
  let chunks = 0;
  try {
    for (;;) {
      try {
        const result = await streamChat({
          body,
          apiKey: storedKey(),
          signal: controller.signal,
          onDelta: (text) => {
            firstTokenMs ??= performance.now() - started;
            chunks++;
            reply.turn.text += text;
            reply.view.append(text);
            scrollToEnd();
          },
        });
        reply.inHistory = true;
        reply.view.setStats(answerStats(result), result.finishReason === "length" ? "Reached max tokens" : null);
        break;
      } catch (err) {
        if (err instanceof ApiError && err.status === 401 && reply.turn.text === "") {
          if ((await askForKey(err.message)) !== null) continue;
        }
        throw err;
      }
    }
  } catch (err) {
    if (controller.signal.aborted) {
      // Stopped: a partial answer stays in the conversation; an empty one drops the question.
      reply.inHistory = reply.turn.text !== "";
      question.inHistory = reply.inHistory;
      const totalMs = performance.now() - started;
      reply.view.setStats(answerStats({ finishReason: null, usage: null, chunks, firstTokenMs, totalMs }), "Stopped");
    } else {
      question.inHistory = false;
      reply.view.setError(err instanceof Error ? err.message : String(err));
    }
  } finally {
    reply.view.setBusy(false);
    if (state.inFlight === controller) state.inFlight = null;
    setStreaming(state.inFlight !== null);
    scrollToEnd();
  }
}

function send(): void {
  if (state.inFlight !== null) return;
  const text = ui.prompt.value.trim();
  if (text === "" && state.pending.length === 0) {
    showComposerError("Type a message or attach an image or a video.");
    ui.prompt.focus();
    return;
  }
  showComposerError(null);
  addTurn({ role: "user", text, attachments: state.pending });
  state.pending = [];
  renderPending();
  ui.prompt.value = "";
  ui.prompt.focus();
  void answer();
}

function stop(): void {
  state.inFlight?.abort();
}

/** Drops the last answer and asks again (also retries a failed or stopped question). */
function regenerate(): void {
  if (state.inFlight !== null) return;
  let last = state.turns.length - 1;
  while (last >= 0 && state.turns[last]?.turn.role !== "user") last--;
  const question = state.turns[last];
  if (question === undefined) return;
  for (const removed of state.turns.splice(last + 1)) removed.view.root.remove();
  question.inHistory = true;
  void answer();
}

function clear(): void {
  stop();
  for (const shown of state.turns) {
    for (const attachment of shown.turn.attachments) URL.revokeObjectURL(attachment.previewUrl);
    shown.view.root.remove();
  }
  state.turns = [];
  ui.emptyHint.hidden = false;
  setStreaming(false);
  ui.prompt.focus();
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  } else if (event.key === "Escape" && state.inFlight !== null) {
    event.preventDefault();
    stop();
  }
});
ui.stop.addEventListener("click", () => {
  stop();
  ui.prompt.focus();
});
ui.regenerate.addEventListener("click", regenerate);
ui.clear.addEventListener("click", clear);

setStreaming(false);
renderPending();
void loadModel();
