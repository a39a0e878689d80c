/**
 * PaliGemma's task prompts, as the model was trained on them, with the default answer lengths
 * the task methods use.
 */
import { invalidArgument } from '../errors';

export interface TaskPrompt {
  /** What PaliGemma.generate receives as `prompt` ("\n" is added there). */
  prompt: string;
  maxTokens: number;
}

function checkLang(what: string, lang: unknown): string {
  if (typeof lang !== 'string' || !/^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)?$/.test(lang))
    throw invalidArgument(`${what} options.lang`, "a language code such as 'en'", lang);
  return lang;
}

/** Labels for detect/segment: no ';' (the separator), no '<' '>' (token syntax), no newline. */
export function checkLabels(what: string, labels: unknown): string[] {
  const list = typeof labels === 'string' ? labels.split(';') : labels;
  if (!Array.isArray(list) || list.length === 0 || !list.every((l) => typeof l === 'string' && l.trim() && !/[;<>\n]/.test(l))) {
    throw invalidArgument(what, "a label, or labels, without '<', '>' or newlines (several: an array, or one string with ' ; ')", labels);
  }
  return list.map((l: string) => l.trim());
}

export function captionPrompt(lang: unknown = 'en', detail: unknown = 'short'): TaskPrompt {
  const l = checkLang('caption', lang);
  if (detail !== 'short' && detail !== 'long') throw invalidArgument('caption options.detail', "'short' or 'long'", detail);
  return detail === 'long' ? { prompt: `describe ${l}`, maxTokens: 64 } : { prompt: `caption ${l}`, maxTokens: 32 };
}

export function answerPrompt(question: unknown, lang: unknown = 'en'): TaskPrompt {
  if (typeof question !== 'string' || !question.trim()) throw invalidArgument('answer(image, question)', 'a non-empty question', question);
  return { prompt: `answer ${checkLang('answer', lang)} ${question.trim()}`, maxTokens: 32 };
}

export const OCR_PROMPT: TaskPrompt = { prompt: 'ocr', maxTokens: 128 };

export function detectPrompt(labels: string[]): TaskPrompt {
  return { prompt: `detect ${labels.join(' ; ')}`, maxTokens: 100 };
}

export function segmentPrompt(label: string): TaskPrompt {
  return { prompt: `segment ${label}`, maxTokens: 100 };
}
