// LLaMA-Factory's qwen3 / qwen3_nothink chat templates for supervised fine-tuning: a Conversation becomes
// token ids and labels (-100 = not trained), the way LLaMA-Factory's SupervisedDatasetProcessor builds them.
//
// Facts followed (LLaMA-Factory data/template.py, processor/supervised.py, processor_utils.py):
// - system "<|im_start|>system\n{c}<|im_end|>\n" (only when non-empty, before the first user turn),
//   user "<|im_start|>user\n{c}<|im_end|>\n<|im_start|>assistant\n", assistant "{c}<|im_end|>\n": the "\n" after
//   <|im_end|> belongs to the assistant part and is trained.
// - Each formatted piece is tokenized on its own, so piece boundaries are token boundaries.
// - qwen3 is a ReasoningTemplate: an assistant answer containing neither "<think>" nor "</think>" gets the empty
//   thought "<think>\n\n</think>\n\n" (tokenized separately) in front. With enable_thinking (the default) it is part of
//   the answer and trained; with enable_thinking: false every thought block is first removed from the answers and
//   the empty thought is appended to the prompt instead (masked). Every assistant turn gets this treatment.
// - qwen3_nothink is a plain template: answers are used as they are.
// - Tool use (tool-format.ts): the tools column's text is appended to the system prompt (the system turn is then
//   written even when the system prompt is empty); a function call is an assistant turn holding <tool_call>
//   blocks (trained, with the same thought rules: its JSON holds no thought, so qwen3 gives it the empty one); an
//   observation is a user turn holding <tool_response> (masked).
// - Truncation: turn by turn, each turn gets the budget left by the previous ones, split by infer_seqlen; turns
//   after the budget runs out are dropped.
import type { Conversation } from './dataset.js';
import { functionCallText, observationTurn, toolsPrompt } from './tool-format.js';

export type TemplateName = 'qwen3' | 'qwen3_nothink';

/** Text to token ids; special tokens written in the text (<|im_start|>, <|im_end|>) must map to their ids. */
export interface TokenEncoder {
  encode(text: string): number[];
}

export interface EncodeOptions {
  template: TemplateName;
  cutoffLen: number;
  trainOnPrompt: boolean;
  /** LLaMA-Factory's enable_thinking (default true); only affects the qwen3 template. */
  enableThinking?: boolean;
}

export interface EncodedSample {
  inputIds: number[];
  labels: number[];
}

export const IGNORE_INDEX = -100;

const THOUGHT_OPEN = '<think>\n';
const THOUGHT_CLOSE = '\n</think>\n\n';
const EMPTY_THOUGHT = THOUGHT_OPEN + THOUGHT_CLOSE;
const THOUGHT_BLOCK = /<think>\n[\s\S]*?\n<\/think>\n\n/g;

const formatSystem = (content: string): string => `<|im_start|>system\n${content}<|im_end|>\n`;
const formatUser = (content: string): string => `<|im_start|>user\n${content}<|im_end|>\n<|im_start|>assistant\n`;
const formatAssistant = (content: string): string => `${content}<|im_end|>\n`;

/** LLaMA-Factory's remove_thought: drop every thought block, then leading newlines. */
function removeThought(content: string): string {
  return content.replace(THOUGHT_BLOCK, '').replace(/^\n+/, '');
}

/**
 * LLaMA-Factory's infer_seqlen: how many source (prompt) and target (answer) tokens of one turn fit in `budget`.
 * A short target keeps all of it; else a short source keeps all of it; else both shrink in proportion.
 */
export function inferSeqlen(sourceLen: number, targetLen: number, budget: number): [number, number] {
  let maxTargetLen: number;
  if (targetLen * 2 < budget) maxTargetLen = budget;
  else if (sourceLen * 2 < budget) maxTargetLen = budget - sourceLen;
  else maxTargetLen = Math.floor(budget * (targetLen / (sourceLen + targetLen)));
  const newTargetLen = Math.min(maxTargetLen, targetLen);
  const newSourceLen = Math.min(Math.max(budget - newTargetLen, 0), sourceLen);
  return [newSourceLen, newTargetLen];
}

/**
 * The (prompt ids, answer ids) of each turn, before truncation. `oneTurn` (LLaMA-Factory's encode_oneturn, for
 * the preference stages): earlier answers lose their thoughts and get no empty thought; only the last is handled
 * as a reasoning answer.
 */
function encodeTurns(conv: Conversation, tok: TokenEncoder, o: EncodeOptions, oneTurn = false): { source: number[]; target: number[] }[] {
  const reasoning = o.template === 'qwen3';
  const enableThinking = o.enableThinking ?? true;
  const emptyThought = reasoning ? tok.encode(EMPTY_THOUGHT) : [];
  const last = conv.turns.length - 1;
  return conv.turns.map((turn, i) => {
    const history = oneTurn && i < last;
    const answer = reasoning && (!enableThinking || history) ? removeThought(turn.assistant) : turn.assistant;
    const source: number[] = [];
    if (i === 0 && (conv.system || conv.tools)) source.push(...tok.encode(formatSystem((conv.system ?? '') + (conv.tools ? toolsPrompt(conv.tools) : ''))));
    source.push(...tok.encode(turn.observation ? observationTurn(turn.user) : formatUser(turn.user)));
    let target = tok.encode(formatAssistant(turn.toolCall ? functionCallText(answer) : answer));
    if (reasoning && !history && !answer.includes('<think>') && !answer.includes('</think>')) {
      if (enableThinking) target = [...emptyThought, ...target];
      else source.push(...emptyThought);
    }
    return { source, target };
  });
}

/**
 * Token ids and labels of one conversation: prompts are labelled -100 unless trainOnPrompt, every assistant turn
 * is trained, and the whole is at most cutoffLen tokens.
 */
export function encodeConversation(conv: Conversation, tok: TokenEncoder, o: EncodeOptions): EncodedSample {
  if (!(Number.isInteger(o.cutoffLen) && o.cutoffLen > 0)) throw new Error(`cutoffLen must be a positive integer, got ${o.cutoffLen}`);
  const inputIds: number[] = [];
  const labels: number[] = [];
  for (const { source, target } of encodeTurns(conv, tok, o)) {
    const budget = o.cutoffLen - inputIds.length;
    if (budget <= 0) break;
    const [sourceLen, targetLen] = inferSeqlen(source.length, target.length, budget);
    const keptSource = source.slice(0, sourceLen);
    const keptTarget = target.slice(0, targetLen);
    inputIds.push(...keptSource, ...keptTarget);
    if (o.trainOnPrompt) labels.push(...keptSource);
    else for (let i = 0; i < sourceLen; i++) labels.push(IGNORE_INDEX);
    labels.push(...keptTarget);
  }
  return { inputIds, labels };
}

/**
 * LLaMA-Factory's encode_oneturn (stages dpo and kto): everything before the last answer is the prompt (earlier
 * answers included, untrained), the last answer is the response. Not truncated.
 */
export function encodePromptResponse(conv: Conversation, tok: TokenEncoder, o: EncodeOptions): { prompt: number[]; response: number[] } {
  const turns = encodeTurns(conv, tok, o, true);
  const prompt = turns.flatMap((t, i) => (i < turns.length - 1 ? [...t.source, ...t.target] : t.source));
  return { prompt, response: turns.at(-1)?.target ?? [] };
}
