#!/usr/bin/env node
// Writes the default job's dataset: "is this number even or odd?" in English and Italian, answered with one
// word (even/odd, pari/dispari). The answer depends only on the last digit, so a model that learns the rule
// answers numbers it never saw: parity_heldout.json holds numbers absent from parity.json, for scoring.
// Deterministic (seeded): `node data/make_parity.mjs` rewrites the same two files.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const TRAIN_SAMPLES = 400;
const HELDOUT_SAMPLES = 40;
const MAX_NUMBER = 1000;

const QUESTIONS = {
  en: [(n) => `Is ${n} even or odd?`, (n) => `Is the number ${n} even or odd?`, (n) => `${n}: even or odd?`],
  it: [(n) => `Il numero ${n} è pari o dispari?`, (n) => `${n} è pari o dispari?`, (n) => `Pari o dispari: ${n}?`],
};
const ANSWERS = { en: ['even', 'odd'], it: ['pari', 'dispari'] };

/** mulberry32: a small seeded generator of uniform numbers in [0, 1). */
function uniform(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const random = uniform(20250401);
const pick = (n) => Math.floor(random() * n);

// Shuffle 0..MAX_NUMBER-1 and cut it: held-out numbers never occur in training.
const numbers = Array.from({ length: MAX_NUMBER }, (_, i) => i);
for (let i = numbers.length - 1; i > 0; i--) {
  const j = pick(i + 1);
  [numbers[i], numbers[j]] = [numbers[j], numbers[i]];
}
const heldoutNumbers = numbers.slice(0, HELDOUT_SAMPLES);
const trainNumbers = numbers.slice(HELDOUT_SAMPLES);

/** Sample i alternates languages, so both halves are balanced; the phrasing is drawn at random. */
function sample(n, i) {
  const lang = i % 2 === 0 ? 'en' : 'it';
  const questions = QUESTIONS[lang];
  return { instruction: questions[pick(questions.length)](n), input: '', output: ANSWERS[lang][n % 2] };
}

const dir = dirname(fileURLToPath(import.meta.url));
const write = (file, records) => writeFileSync(join(dir, file), `${JSON.stringify(records, null, 1)}\n`);
write('parity.json', Array.from({ length: TRAIN_SAMPLES }, (_, i) => sample(trainNumbers[pick(trainNumbers.length)], i)));
write('parity_heldout.json', heldoutNumbers.map(sample));
