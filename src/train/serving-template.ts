// The training template (template.ts) as the chat templates a server applies, so that a model is prompted as it was
// trained: a Jinja template for the GGUF's tokenizer.chat_template (llama.cpp, LM Studio, transformers) and a Go
// text/template for Ollama's Modelfile TEMPLATE. A conversation [system, user, assistant, ..., user] renders to the
// text whose tokens are the training ids of its prompt (test/serving-template.test.ts renders both with the
// engines themselves and compares).
//
// What each training template puts around a turn (template.ts):
//   system      "<|im_start|>system\n{c}<|im_end|>\n"  (only when non-empty)
//   user        "<|im_start|>user\n{c}<|im_end|>\n"
//   assistant   "<|im_start|>assistant\n" [E] "{c}<|im_end|>\n", E = the empty thought "<think>\n\n</think>\n\n":
//     qwen3_nothink                 never;
//     qwen3, enable_thinking true   when the answer holds no "<think>" / "</think>" (Jinja: anywhere in it; Go
//                                   templates have no substring test, so: when it does not start with "<think>");
//     qwen3, enable_thinking false  always, the answer's thought dropped (Jinja: the text after the last "</think>",
//                                   leading newlines removed; what Ollama sends back has none to drop).
//   generation prompt "<|im_start|>assistant\n", with E for qwen3 without thinking (it is part of every prompt).
//   tools (Jinja only; OpenAI form): the `tools` list after the system prompt, assistant `tool_calls` as <tool_call>
//     blocks after the answer's text, `tool` messages as <tool_response> user turns: tool-format.ts's text, with
//     the tools and arguments written by the engine's tojson (Python's json.dumps spacing); arguments given as
//     text are written as they are.
// Ollama: a last assistant message is a prefill, continued without "<|im_end|>" (as Ollama's own templates do).
// Both templates have no block tag followed by a newline or preceded by indentation, so Jinja's trim_blocks and
// lstrip_blocks (transformers sets them) change nothing.
import type { TemplateName } from './template.js';
import { TOOLS_PROMPT_HEAD, TOOLS_PROMPT_TAIL } from './tool-format.js';

/** The training template recorded in an adapter folder (training_template.json). */
export interface TrainingTemplate {
  template: TemplateName;
  /** LLaMA-Factory's enable_thinking; only the qwen3 template uses it. */
  enable_thinking: boolean;
}

const EMPTY_THOUGHT = '<think>\n\n</think>\n\n';

type ThoughtRule = 'never' | 'unless-thought' | 'always';

function thoughtRule(t: TrainingTemplate): ThoughtRule {
  if (t.template === 'qwen3_nothink') return 'never';
  return t.enable_thinking ? 'unless-thought' : 'always';
}

/** A Jinja expression printing a string literal (text after a block tag must not start with a newline). */
const literal = (text: string): string => `{{ '${text.replaceAll('\\', '\\\\').replaceAll("'", "\\'").replaceAll('\n', '\\n')}' }}`;

/**
 * The Jinja chat template (tokenizer.chat_template) of a training template. Tools (OpenAI form: `tools`, assistant
 * `tool_calls`, `tool` messages) render as training renders tool turns (tool-format.ts): the tool list after the
 * system prompt, calls as <tool_call> blocks after the answer's text, tool results as <tool_response> user turns.
 */
export function jinjaChatTemplate(t: TrainingTemplate): string {
  const rule = thoughtRule(t);
  const assistant = rule === 'never' ? '{{ content }}'
    : rule === 'unless-thought' ? `{% if '<think>' not in content and '</think>' not in content %}${EMPTY_THOUGHT}{% endif %}{{ content }}`
    : `${EMPTY_THOUGHT}{{ content.split('</think>')[-1].lstrip('\\n') }}`;
  const tools = '{% if tools %}' + literal('<|im_start|>system\n')
    + "{% if messages[0].role == 'system' %}{{ messages[0].content }}{% endif %}" + literal(TOOLS_PROMPT_HEAD)
    + '{% for tool in tools %}' + literal('\n')
    + `{% if tool.type == 'function' %}{{ tool | tojson }}{% else %}${literal('{"type": "function", "function": ')}{{ tool | tojson }}${literal('}')}{% endif %}`
    + '{% endfor %}' + literal(`${TOOLS_PROMPT_TAIL}<|im_end|>\n`) + '{% endif %}';
  const toolCalls = '{% for call in message.tool_calls %}{% if not loop.first %}' + literal('\n') + '{% endif %}'
    + '{% if call.function %}{% set call = call.function %}{% endif %}'
    + `${literal('<tool_call>\n{"name": ')}{{ call.name | tojson }}${literal(', "arguments": ')}`
    + '{% if call.arguments is string %}{{ call.arguments }}{% else %}{{ call.arguments | tojson }}{% endif %}'
    + `${literal('}\n</tool_call>')}{% endfor %}`;
  return tools + '{% for message in messages %}'
    + "{% if message.role == 'system' %}{% if message.content and not (tools and loop.first) %}<|im_start|>system\n{{ message.content }}<|im_end|>\n{% endif %}"
    + "{% elif message.role == 'user' %}<|im_start|>user\n{{ message.content }}<|im_end|>\n"
    + "{% elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response><|im_end|>\n"
    + `{% elif message.role == 'assistant' %}{% set content = message.content or '' %}<|im_start|>assistant\n${assistant}`
    + `{% if message.tool_calls %}${toolCalls}{% endif %}<|im_end|>\n`
    + '{% endif %}{% endfor %}'
    + `{% if add_generation_prompt %}<|im_start|>assistant\n${rule === 'always' ? EMPTY_THOUGHT : ''}{% endif %}`;
}

/** The Go text/template of a training template, for Ollama's Modelfile TEMPLATE (.Messages with .Role and .Content). */
export function ollamaChatTemplate(t: TrainingTemplate): string {
  const rule = thoughtRule(t);
  const thought = rule === 'never' ? ''
    : rule === 'unless-thought' ? `{{ if not (and (ge (len .Content) 7) (eq (slice .Content 0 7) "<think>")) }}${EMPTY_THOUGHT}{{ end }}`
    : EMPTY_THOUGHT;
  return '{{ $lastRole := "" }}{{ range $i, $m := .Messages }}{{ $lastRole = .Role }}'
    + '{{ if eq .Role "system" }}{{ if .Content }}<|im_start|>system\n{{ .Content }}<|im_end|>\n{{ end }}'
    + '{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
    + `{{ else if eq .Role "assistant" }}<|im_start|>assistant\n${thought}{{ .Content }}{{ if gt (len (slice $.Messages $i)) 1 }}<|im_end|>\n{{ end }}`
    + '{{ end }}{{ end }}'
    + `{{ if ne $lastRole "assistant" }}<|im_start|>assistant\n${rule === 'always' ? EMPTY_THOUGHT : ''}{{ end }}`;
}
