// Reading a JSON file the engine was given, with one-line errors naming it.
import { readFileSync } from 'node:fs';
import { fileError } from './errors.js';

export function readJsonFile(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw fileError(file, `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw fileError(file, `not valid JSON (${(e as Error).message})`);
  }
}

/** A JSON file that must hold an object. */
export function readJsonObject(file: string): Record<string, unknown> {
  const json = readJsonFile(file);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw fileError(file, 'is not a JSON object');
  return json as Record<string, unknown>;
}
