// JSON as Python's json module writes it: LLaMA-Factory renders tool lists and tool calls with
// json.dumps(json.loads(text), ensure_ascii=False), and the trained tokens are those characters.
//
// Facts followed (CPython's json and float repr):
// - separators ", " and ": ", no newlines; object keys keep their first position, the last value wins;
// - strings: only '"', '\' and control characters below 0x20 are escaped (\n \r \t \b \f, else \u00xx), so
//   non-ASCII text stays as it is (ensure_ascii=False): the same escapes as JSON.stringify;
// - numbers: an integer literal is an exact int (any size) and keeps its digits ("-0" is 0); a literal with a
//   fraction or exponent is a float, written as repr(): the shortest digits that round-trip (as JavaScript's),
//   fixed notation with at least one decimal for exponents -4..15 ("100.0", "0.0001"), else d.ddde±XX
//   ("1e-05", "1.5e+16"); inf and nan as Infinity / NaN.
// JavaScript objects would put integer-like keys first and lose "1.0" vs "1", so values are parsed into an order-
// keeping tree of our own.

/** A parsed JSON value: objects keep their key order; numbers are kept as the text Python writes for them. */
export type PyJson = null | boolean | string | PyNumber | PyJson[] | Map<string, PyJson>;

export class PyNumber {
  constructor(readonly text: string) {}
}

/** A JSON text that Python's json.loads would refuse. */
export class JsonSyntaxError extends Error {}

const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
const WHITESPACE = /[ \t\n\r]*/y;

/** Python's repr of a float. */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  const [mantissa, exponent] = Math.abs(x).toExponential().split('e') as [string, string];
  const digits = mantissa.replace('.', '');
  const exp = Number(exponent);
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const whole = digits.slice(0, exp + 1).padEnd(exp + 1, '0');
  return `${sign}${whole}.${digits.slice(exp + 1) || '0'}`;
}

/** Parses a JSON text (one value, surrounding whitespace allowed). Throws JsonSyntaxError. */
export function parsePyJson(text: string): PyJson {
  let pos = 0;
  const fail = (what: string): never => {
    throw new JsonSyntaxError(`${what} at character ${pos}`);
  };
  const skip = () => {
    WHITESPACE.lastIndex = pos;
    WHITESPACE.exec(text);
    pos = WHITESPACE.lastIndex;
  };
  const string = (): string => {
    const start = pos;
    for (pos++; pos < text.length && text[pos] !== '"'; pos++) if (text[pos] === '\\') pos++;
    if (pos >= text.length) fail('unterminated string');
    pos++;
    try {
      return JSON.parse(text.slice(start, pos)) as string;
    } catch (e) {
      pos = start;
      return fail(`invalid string (${(e as Error).message})`);
    }
  };
  const value = (): PyJson => {
    skip();
    const c = text[pos];
    if (c === '{') {
      const obj = new Map<string, PyJson>();
      pos++;
      skip();
      if (text[pos] === '}') {
        pos++;
        return obj;
      }
      for (;;) {
        skip();
        if (text[pos] !== '"') fail('expected a string key');
        const key = string();
        skip();
        if (text[pos] !== ':') fail("expected ':'");
        pos++;
        obj.set(key, value());
        skip();
        if (text[pos] === ',') pos++;
        else if (text[pos] === '}') {
          pos++;
          return obj;
        }
        else fail("expected ',' or '}'");
      }
    }
    if (c === '[') {
      const list: PyJson[] = [];
      pos++;
      skip();
      if (text[pos] === ']') {
        pos++;
        return list;
      }
      for (;;) {
        list.push(value());
        skip();
        if (text[pos] === ',') pos++;
        else if (text[pos] === ']') {
          pos++;
          return list;
        }
        else fail("expected ',' or ']'");
      }
    }
    if (c === '"') return string();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (text.startsWith(word, pos)) {
        pos += word.length;
        return v;
      }
    }
    NUMBER.lastIndex = pos;
    const m = NUMBER.exec(text);
    if (!m) return fail('unexpected character');
    pos = NUMBER.lastIndex;
    const isFloat = m[1] !== undefined || m[2] !== undefined;
    return new PyNumber(isFloat ? pythonFloatRepr(Number(m[0])) : BigInt(m[0]).toString());
  };
  const v = value();
  skip();
  if (pos !== text.length) fail('extra data');
  return v;
}

/** Python's json.dumps(value, ensure_ascii=False). */
export function pyJsonDumps(v: PyJson): string {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'string') return JSON.stringify(v);
  if (v instanceof PyNumber) return v.text;
  if (Array.isArray(v)) return `[${v.map(pyJsonDumps).join(', ')}]`;
  return `{${[...v].map(([k, x]) => `${JSON.stringify(k)}: ${pyJsonDumps(x)}`).join(', ')}}`;
}
