// The model's names in a GGUF and its file name, as llama.cpp's converter derives them from a model id or a folder
// name (gguf-py metadata.py Metadata.get_model_id_components and id_to_title, utility.py size_label and
// naming_convention): "Qwen3-0.6B" gives general.name "Qwen3 0.6B", general.basename "Qwen3", general.size_label
// "0.6B" and the file "Qwen3-0.6B-Q4_K_M.gguf". No Node API (the browser demo names its downloads with it).

export interface GgufNaming {
  /** general.name: the model id's name part in title form. */
  name: string;
  /** general.basename: the name's leading words, when the id is specific enough to tell them apart. */
  basename?: string;
  /** general.size_label: from the id ("0.6B") when it fits the parameter count, else from the count. */
  sizeLabel: string;
  /** general.finetune ("Instruct", ...). */
  finetune?: string;
  /** general.version ("2507", "v0.2", ...). */
  version?: string;
  /** general.organization: the id's owner ("Qwen"), when the id has one. */
  organization?: string;
}

type Part = 'basename' | 'size_label' | 'finetune' | 'version' | 'type';

/** Python's str.islower(): some cased character and no uppercase one. */
const isLower = (w: string): boolean => w !== w.toUpperCase() && w === w.toLowerCase();

/** Python's str.title(): a letter after a letter is lowered, any other letter raised. */
function title(w: string): string {
  let out = '';
  let prevCased = false;
  for (const ch of w) {
    const cased = ch.toLowerCase() !== ch.toUpperCase();
    out += cased ? (prevCased ? ch.toLowerCase() : ch.toUpperCase()) : ch;
    prevCased = cased;
  }
  return out;
}

/** The converter's id_to_title: '-' to spaces; all-lowercase words title-cased unless they are versions or start with a digit. */
export function idToTitle(id: string): string {
  return id.trim().replaceAll('-', ' ').split(/\s+/).filter((w) => w)
    .map((w) => (isLower(w) && !/^(v\d+(?:\.\d+)*|\d.*)$/.test(w) ? title(w) : w)).join(' ');
}

/** Python's round() on a float: halves to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The converter's size label from a parameter count (model_weight_count_rounded_notation, two significant digits at least). */
export function sizeLabelOf(params: number): string {
  const [scaled, suffix] = params > 1e12 ? [params * 1e-12, 'T'] : params > 1e9 ? [params * 1e-9, 'B'] : params > 1e6 ? [params * 1e-6, 'M'] : [params * 1e-3, 'K'];
  const fix = Math.max(2 - String(roundHalfEven(scaled)).replace(/^0+/, '').length, 0);
  return `${scaled.toFixed(fix)}${suffix}`;
}

/**
 * The names of a model from its id ("owner/name" or a folder name) and its parameter count, as the converter's
 * get_model_id_components annotates the '-'-separated parts: versions, quantization types, sizes (a size far from
 * the parameter count is taken for a context length, a finetune), finetune words; the leading untyped words are the
 * basename. An id with no size, finetune or version is too ambiguous for a basename.
 */
export function ggufNaming(modelId: string, totalParams: number): GgufNaming {
  const slash = modelId.indexOf('/');
  const org = slash >= 0 && !modelId.startsWith('.') ? modelId.slice(0, slash) : undefined;
  const full = slash >= 0 ? modelId.slice(slash + 1) : modelId;
  const name = idToTitle(full) || 'ggml-model';
  if (/\s/.test(modelId)) return { name: idToTitle(modelId), sizeLabel: sizeLabelOf(totalParams) };
  const parts = full.split('-').filter((p) => p);
  const types = parts.map(() => new Set<Part>());
  parts.forEach((part, i) => {
    const t = types[i]!;
    if (/^(v|iter)?\d+([.]\d+)*$/i.test(part)) t.add('version');
    else if (/^(i?q\d(_\w)*|b?fp?(16|32))$/i.test(part)) {
      t.add('type');
      parts[i] = part.toUpperCase();
    } else if (i > 0 && /^(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)$/i.test(part)) {
      let p = part.replaceAll('_', '.');
      // bloom-7b1 -> 7.1b
      if (/\d$/.test(p)) p = `${p.slice(0, -2)}.${p.at(-1)}${p.at(-2)}`;
      if (p.length > 1 && /\d/.test(p.at(-2)!) && 'kmbt'.includes(p.at(-1)!)) p = p.slice(0, -1) + p.at(-1)!.toUpperCase();
      const scale = ' KMBT'.indexOf(p.at(-1)!);
      const labelParams = Number(p.slice(0, -1)) * 1000 ** scale;
      if (totalParams !== 0 && scale > 0 && Number.isFinite(labelParams) && Math.abs(labelParams - totalParams) > Math.floor((7 * totalParams) / 8)) {
        // a context length
        t.add('finetune');
        p = p.slice(0, -1) + p.at(-1)!.toLowerCase();
      }
      if (t.size === 0) t.add('size_label');
      parts[i] = p;
    } else if (i > 0 && /^(chat|instruct|vision|lora)$/i.test(part)) t.add('finetune');
  });
  // Word sizes ("small") give way to a numeric one.
  if (parts.some((p, i) => types[i]!.has('size_label') && /\d/.test(p))) {
    parts.forEach((p, i) => { if (types[i]!.has('size_label') && /^\p{L}+$/u.test(p)) types[i]!.delete('size_label'); });
  }
  let atStart = true;
  parts.forEach((p, i) => {
    const t = types[i]!;
    if (atStart && ((t.size === 0 && /^\p{L}/u.test(p)) || t.has('version'))) t.add('basename');
    else {
      atStart = false;
      if (t.size === 0) t.add('finetune');
    }
  });
  // A trailing version is not part of the basename.
  for (let i = parts.length - 1; i >= 0 && types[i]!.has('basename') && types[i]!.size > 1; i--) types[i]!.delete('basename');
  const joined = (kind: Part, exclude?: Part) => parts.filter((_, i) => types[i]!.has(kind) && !(exclude && types[i]!.has(exclude))).join('-') || undefined;
  const sizeFromId = [...new Set(parts.filter((_, i) => types[i]!.has('size_label')))].join('-') || undefined;
  const finetune = joined('finetune');
  const version = joined('version', 'basename');
  const ambiguous = sizeFromId === undefined && finetune === undefined && version === undefined;
  return {
    name,
    basename: ambiguous ? undefined : joined('basename'),
    sizeLabel: sizeFromId ?? sizeLabelOf(totalParams),
    finetune,
    version,
    organization: org ? idToTitle(org) : undefined,
  };
}

/** The converter's naming_convention: `<basename or name>-<size>[-<finetune>][-<version>]-<TYPE>.gguf`. */
export function ggufFileName(n: GgufNaming, outputType: string): string {
  const dashed = (s: string) => s.trim().replaceAll(' ', '-');
  const parts = [dashed(n.basename ?? n.name).replaceAll('/', '-'), n.sizeLabel, n.finetune, n.version, outputType.toUpperCase()];
  return `${parts.filter((p) => p !== undefined).map((p) => dashed(p!)).join('-')}.gguf`;
}
