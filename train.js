#!/usr/bin/env node
// `node train.js [config.yaml] [--key value ...]` is `loraforge train ...`.
import { main } from './dist/cli.js';

process.exitCode = await main(['train', ...process.argv.slice(2)]);
