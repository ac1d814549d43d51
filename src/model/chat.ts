// A chat turn on a Generator: the tokenizer's chat template, generation until a stop token, and the text as it
// grows (streamed to a callback). The chat command, the library API and the browser worker share it.
import { DEFAULT_SAMPLING, type Generator, type SamplingOptions } from './generate.js';
import type { ChatMessage, JsonTokenizer } from './tokenizer-json.js';

/** The ids that end an answer: end-of-sequence, the chat template's end-of-turn, end-of-text (those the vocabulary has). */
export function chatStopIds(tok: JsonTokenizer): number[] {
  const ids = [tok.eosTokenId, tok.tokenId('<|im_end|>'), tok.tokenId('<|endoftext|>')].filter((id): id is number => id !== undefined);
  return [...new Set(ids)];
}

/**
 * Generate from `prompt` ids and return the decoded text; `onText` receives each new piece as it is decoded (a
 * partial UTF-8 character, decoded as U+FFFD, is held back until its next byte arrives).
 */
export async function generateText(gen: Generator, tok: JsonTokenizer, prompt: number[], sampling: SamplingOptions, onText?: (piece: string) => void): Promise<string> {
  const ids: number[] = [];
  let shown = '';
  for await (const id of gen.generate(prompt, sampling)) {
    ids.push(id);
    const text = tok.decode(ids, true);
    if (!text.endsWith('\uFFFD')) {
      onText?.(text.slice(shown.length));
      shown = text;
    }
  }
  const text = tok.decode(ids, true);
  if (text.length > shown.length) onText?.(text.slice(shown.length));
  return text;
}

export interface ChatTurnOptions extends Partial<SamplingOptions> {
  /** Qwen3's thinking switch in the chat template (the template's default when absent). */
  enableThinking?: boolean;
  onText?: (piece: string) => void;
}

/** The assistant's answer to `messages` (which end with the user's turn); stops at the template's end of turn. */
export async function chatReply(gen: Generator, tok: JsonTokenizer, messages: ChatMessage[], o: ChatTurnOptions = {}): Promise<string> {
  const prompt = tok.encode(tok.applyChatTemplate(messages, { addGenerationPrompt: true, enableThinking: o.enableThinking }));
  const { onText, enableThinking: _, ...sampling } = o;
  return generateText(gen, tok, prompt, { ...DEFAULT_SAMPLING, stopIds: chatStopIds(tok), ...sampling }, onText);
}
