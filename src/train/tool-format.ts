// Tool use in the qwen3 / qwen3_nothink templates, as LLaMA-Factory renders it (tool_format "qwen"): the tool list
// appended to the system prompt, function calls as <tool_call> blocks, tool results as <tool_response> user turns.
//
// Facts followed (LLaMA-Factory data/tool_utils.py QwenToolUtils, formatter.py FunctionFormatter / ToolFormatter,
// template.py qwen3 and Template._encode):
// - tools: the dataset's tools column is a JSON list; an empty list gives no text; else each tool, wrapped as
//   {"type": "function", "function": tool} unless its "type" is "function", is written on its own line with
//   json.dumps inside <tools></tools> of the prompt below (TOOLS_PROMPT). The result is appended to the system
//   prompt, and the system turn is written when the system prompt or the tools column is non-empty.
// - a function_call message holds a JSON call {"name", "arguments"} or a list of them (parallel calls), possibly
//   wrapped in <tool_call>...</tool_call> (then the text around that block is kept in front) or after a thought
//   block "<think>\n...\n</think>\n\n" (kept in front). Each call becomes
//   "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>", joined by "\n";
//   the turn ends with "<|im_end|>\n" as an assistant turn does, and is trained as one.
// - an observation message is the user turn
//   "<|im_start|>user\n<tool_response>\n{content}\n</tool_response><|im_end|>\n<|im_start|>assistant\n" (masked).
import { parsePyJson, pyJsonDumps, type PyJson } from './python-json.js';

export const TOOLS_PROMPT_HEAD =
  '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' +
  'You are provided with function signatures within <tools></tools> XML tags:\n<tools>';
export const TOOLS_PROMPT_TAIL =
  '\n</tools>\n\nFor each function call, return a json object with function name and arguments within ' +
  '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>';

const THOUGHT = /<think>\n([\s\S]*?)\n<\/think>\n\n/;
const TOOL_CALL = /<tool_call>([\s\S]*?)<\/tool_call>/;

/** A tools column or function call that LLaMA-Factory could not render; the message says what is wrong. */
export class ToolFormatError extends Error {}

function parse(text: string, what: string): PyJson {
  try {
    return parsePyJson(text);
  } catch (e) {
    throw new ToolFormatError(`${what} is not valid JSON (${(e as Error).message})`);
  }
}

const isObject = (v: PyJson): v is Map<string, PyJson> => v instanceof Map;

/** The text the tools column adds to the system prompt ("" for an empty list). */
export function toolsPrompt(tools: string): string {
  const list = parse(tools, 'the tool list');
  if (!Array.isArray(list)) throw new ToolFormatError('the tool list must be a JSON list of tools');
  if (list.length === 0) return '';
  const lines = list.map((tool, i) => {
    if (!isObject(tool)) throw new ToolFormatError(`tool ${i} must be a JSON object`);
    const wrapped = tool.get('type') === 'function' ? tool : new Map<string, PyJson>([['type', 'function'], ['function', tool]]);
    return `\n${pyJsonDumps(wrapped)}`;
  });
  return TOOLS_PROMPT_HEAD + lines.join('') + TOOLS_PROMPT_TAIL;
}

/** <tool_call> blocks of a JSON call or list of calls. */
function toolCallBlocks(json: string): string {
  const parsed = parse(json, 'the function call');
  const calls = Array.isArray(parsed) ? parsed : [parsed];
  return calls.map((call, i) => {
    if (!isObject(call) || !call.has('name') || !call.has('arguments')) {
      throw new ToolFormatError(`function call ${i} must be an object with "name" and "arguments"`);
    }
    const canonical = new Map<string, PyJson>([['name', call.get('name')!], ['arguments', call.get('arguments')!]]);
    return `<tool_call>\n${pyJsonDumps(canonical)}\n</tool_call>`;
  }).join('\n');
}

/** The assistant text of a function_call message, before "<|im_end|>\n". */
export function functionCallText(content: string): string {
  const block = TOOL_CALL.exec(content);
  if (block) return content.replaceAll(block[0], '') + toolCallBlocks(block[1]!);
  const thought = THOUGHT.exec(content);
  if (thought) return thought[0] + toolCallBlocks(content.replaceAll(thought[0], ''));
  return toolCallBlocks(content);
}

/** The user turn of an observation (a tool's result), up to the assistant's header. */
export function observationTurn(content: string): string {
  return `<|im_start|>user\n<tool_response>\n${content}\n</tool_response><|im_end|>\n<|im_start|>assistant\n`;
}
