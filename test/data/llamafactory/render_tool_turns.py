# Oracle for test/tool-format.test.ts: renders tool-use conversations with LLaMA-Factory's own formatters
# (formatter.py, tool_utils.py from a LLaMA-Factory checkout; the qwen3 slots of template.py, whose
# Template._encode and ReasoningTemplate.encode_multiturn are followed here at the text level) and writes each
# turn's (prompt, answer) text for qwen3_nothink and qwen3 with and without thinking.
#   python3 render_tool_turns.py /path/to/LLaMA-Factory > tool_turns_rendered.json
import json, re, sys, types, importlib.util, pathlib

src = pathlib.Path(sys.argv[1]) / 'src/llamafactory/data'
pkg = types.ModuleType('lf'); pkg.__path__ = []; sys.modules['lf'] = pkg
data_utils = types.ModuleType('lf.data_utils'); data_utils.SLOTS = list; sys.modules['lf.data_utils'] = data_utils
for name in ['tool_utils', 'formatter']:
    spec = importlib.util.spec_from_file_location(f'lf.{name}', src / f'{name}.py')
    module = importlib.util.module_from_spec(spec); sys.modules[f'lf.{name}'] = module; spec.loader.exec_module(module)
from lf.formatter import FunctionFormatter, StringFormatter, ToolFormatter

THOUGHT = ('<think>\n', '\n</think>\n\n')
user = StringFormatter(slots=['<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n'])
assistant = StringFormatter(slots=['{{content}}<|im_end|>\n'])
system_f = StringFormatter(slots=['<|im_start|>system\n{{content}}<|im_end|>\n'])
function = FunctionFormatter(slots=['{{content}}<|im_end|>\n'], tool_format='qwen')
observation = StringFormatter(slots=['<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|>\n<|im_start|>assistant\n'])
tools_f = ToolFormatter(tool_format='qwen')

def remove_thought(c):
    return re.sub(re.compile(f'{re.escape(THOUGHT[0])}(.*?){re.escape(THOUGHT[1])}', re.DOTALL), '', c).lstrip('\n')

def encode(messages, system, tools, reasoning, enable_thinking):
    messages = [dict(m) for m in messages]
    if reasoning and enable_thinking is False:
        for i in range(1, len(messages), 2): messages[i]['content'] = remove_thought(messages[i]['content'])
    texts = []
    for i, m in enumerate(messages):
        e = ''
        if i == 0 and (system or tools):
            tool_text = tools_f.apply(content=tools)[0] if tools else ''
            e += system_f.apply(content=system + tool_text)[0]
        role, c = m['role'], m['content']
        if role == 'user': e += user.apply(content=c)[0]
        elif role == 'assistant': e += assistant.apply(content=c)[0]
        elif role == 'observation': e += observation.apply(content=c)[0]
        else: e += function.apply(content=c, thought_words=THOUGHT, tool_call_words=('<tool_call>', '</tool_call>'))[0]
        texts.append(e)
    if reasoning:
        for i in range(0, len(messages), 2):
            if '<think>' not in messages[i + 1]['content'] and '</think>' not in messages[i + 1]['content']:
                if not enable_thinking: texts[i] += THOUGHT[0] + THOUGHT[1]
                else: texts[i + 1] = THOUGHT[0] + THOUGHT[1] + texts[i + 1]
    return [[texts[i], texts[i + 1]] for i in range(0, len(texts), 2)]

ROLES = {'human': 'user', 'gpt': 'assistant', 'observation': 'observation', 'function_call': 'function'}
out = []
for file in [pathlib.Path(__file__).parent / 'glaive_toolcall_en_demo.json', pathlib.Path(__file__).parent.parent / 'tool_calls.json']:
    for record in json.loads(file.read_text()):
        messages = [{'role': ROLES[m['from']], 'content': m['value']} for m in record['conversations']]
        system, tools = record.get('system', ''), record.get('tools', '')
        out.append({
            'file': file.name,
            'qwen3_nothink': encode(messages, system, tools, False, True),
            'qwen3': encode(messages, system, tools, True, True),
            'qwen3_no_thinking': encode(messages, system, tools, True, False),
        })
print(json.dumps(out, ensure_ascii=False, indent=1))
