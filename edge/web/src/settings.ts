import { DEFAULT_SETTINGS, type Decoding, type Settings } from "./chat-request";

/** The numeric settings, in panel order, with the limits the page checks before sending. */
export const NUMBER_FIELDS = [
  f("temperature", "Temperature", 0, 2, 0.05, { sampling: true, help: "Sampling temperature (reference 0.7)" }),
  f("topP", "Top p", 0.01, 1, 0.01, { sampling: true, help: "Nucleus sampling mass (reference 0.8)" }),
  f("topK", "Top k", -1, 151666, 1, {
    sampling: true,
    integer: true,
    help: "Candidates kept, -1 = all (reference 100)",
  }),
  f("repetitionPenalty", "Repetition penalty", 0.01, 2, 0.01, { help: "1.05 when sampling, 1.2 in beam search" }),
  f("maxTokens", "Max tokens", 1, 32768, 1, { integer: true, optional: true, help: "Longest answer, in tokens" }),
  f("maxSliceNums", "Max slices", 1, 9, 1, {
    integer: true,
    optional: true,
    help: "mm_processor_kwargs.max_slice_nums: image slices besides the overview (reference 9)",
  }),
  f("videoFps", "Video fps", 0.1, 10, 0.1, {
    optional: true,
    help: "mm_processor_kwargs.fps: frames sampled per second",
  }),
  f("videoMaxFrames", "Video max frames", 1, 64, 1, {
    integer: true,
    optional: true,
    help: "mm_processor_kwargs.max_frames (reference 64)",
  }),
] as const satisfies readonly NumberField[];

/** Describes one numeric input of the settings panel. */
export interface NumberField {
  key: keyof Settings;
  label: string;
  min: number;
  max: number;
  step: number;
  integer: boolean;
  /** Blank is allowed and means "server default". */
  optional: boolean;
  /** Only used by the sampling preset (disabled in beam search). */
  sampling: boolean;
  /** Tooltip: what the value does and the reference default. */
  help: string;
}

function f<K extends keyof Settings>(
  key: K,
  label: string,
  min: number,
  max: number,
  step: number,
  options: { help: string; integer?: boolean; optional?: boolean; sampling?: boolean },
): NumberField & { key: K } {
  return {
    key,
    label,
    min,
    max,
    step,
    integer: options.integer ?? false,
    optional: options.optional ?? false,
    sampling: options.sampling ?? false,
    help: options.help,
  };
}

export type NumberKey = (typeof NUMBER_FIELDS)[number]["key"];

/** Raw text of the settings form, as the inputs hold it. */
export type SettingsForm = { decoding: string; systemPrompt: string; jsonSchema: string } & Record<NumberKey, string>;

/** Bad value in the settings panel; `field` is the settings key, the message names label and limit. */
export class SettingsError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
    this.name = "SettingsError";
  }
}

/** Parses and checks the form; throws {@link SettingsError} naming the field and its limit. */
export function parseSettings(form: SettingsForm): Settings {
  if (form.decoding !== "sampling" && form.decoding !== "beam") {
    throw new SettingsError("decoding", `Decoding must be "sampling" or "beam", got "${form.decoding}"`);
  }
  const settings: Settings = {
    ...DEFAULT_SETTINGS,
    decoding: form.decoding as Decoding,
    systemPrompt: form.systemPrompt,
    jsonSchema: form.jsonSchema.trim(),
  };
  if (settings.jsonSchema !== "") {
    let schema: unknown;
    try {
      schema = JSON.parse(settings.jsonSchema);
    } catch (err) {
      throw new SettingsError("jsonSchema", `JSON Schema is not valid JSON: ${(err as Error).message}`);
    }
    if (schema === null || typeof schema !== "object" || Array.isArray(schema)) {
      throw new SettingsError("jsonSchema", 'JSON Schema must be a JSON object, e.g. {"type": "object"}');
    }
    if (settings.decoding === "beam") {
      throw new SettingsError("jsonSchema", "JSON Schema works with sampling only (beam search has no grammar)");
    }
  }
  for (const field of NUMBER_FIELDS) {
    const raw = form[field.key].trim();
    let value: number | null;
    if (raw === "") {
      if (!field.optional) throw new SettingsError(field.key, `${field.label} is required`);
      value = null;
    } else {
      value = Number(raw);
      if (!Number.isFinite(value)) throw new SettingsError(field.key, `${field.label} must be a number, got "${raw}"`);
      if (field.integer && !Number.isInteger(value)) {
        throw new SettingsError(field.key, `${field.label} must be a whole number, got ${raw}`);
      }
      if (value < field.min || value > field.max) {
        throw new SettingsError(field.key, `${field.label} must be between ${field.min} and ${field.max}, got ${raw}`);
      }
    }
    (settings as unknown as Record<string, number | null>)[field.key] = value;
  }
  return settings;
}

/** The text each input shows for `settings` (the inverse of {@link parseSettings}). */
export function formatSettings(settings: Settings): SettingsForm {
  const form = {
    decoding: settings.decoding,
    systemPrompt: settings.systemPrompt,
    jsonSchema: settings.jsonSchema,
  } as SettingsForm;
  for (const field of NUMBER_FIELDS) {
    const value = settings[field.key];
    form[field.key] = value === null ? "" : String(value);
  }
  return form;
}
