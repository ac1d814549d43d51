// The tuning results in the user's cache folder ($XDG_CACHE_HOME/loraforge, else ~/.cache/loraforge;
// LORAFORGE_CACHE_DIR overrides) as kernel-tuning.json, one record per adapter and driver.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { TuningRecord, TuningStore } from '../kernels/tune.js';

export function userCacheDir(): string {
  if (process.env.LORAFORGE_CACHE_DIR) return process.env.LORAFORGE_CACHE_DIR;
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'loraforge');
}

/** The tuning records in `dir`/kernel-tuning.json; an unreadable file counts as empty (it is redone). */
export function fileTuningStore(dir = userCacheDir()): TuningStore {
  const file = path.join(dir, 'kernel-tuning.json');
  return {
    load(): TuningRecord[] {
      try {
        const records = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
        return Array.isArray(records) ? (records as TuningRecord[]) : [];
      } catch {
        return [];
      }
    },
    save(records: TuningRecord[]): void {
      fs.mkdirSync(dir, { recursive: true });
      // Written whole then renamed: a killed run leaves the previous file, never half of one.
      const tmp = `${file}.tmp-${process.pid}`;
      fs.writeFileSync(tmp, JSON.stringify(records, null, 1));
      fs.renameSync(tmp, file);
    },
  };
}
