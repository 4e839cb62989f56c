// Shared helpers for the interop scripts: argument parsing, BullMQ major
// selection, Redis connection options and JSON-lines output.
//
// Every script reads one JSON object of arguments from argv[2] (or from stdin
// when argv[2] is absent or "-") and prints JSON lines on stdout; diagnostics go
// to stderr. The BullMQ major comes from BULLMQ_MAJOR (5 or 6), overridable by
// the "major" argument.

import { readFileSync } from 'node:fs';

export async function readArgs() {
  const raw = process.argv[2] && process.argv[2] !== '-' ? process.argv[2] : readFileSync(0, 'utf8');
  const args = raw.trim() ? JSON.parse(raw) : {};
  if (!args.redisUrl) throw new Error('missing argument: redisUrl');
  if (!args.queue) throw new Error('missing argument: queue');
  args.prefix ??= 'bull';
  return args;
}

export async function loadBullmq(args) {
  const major = String(args.major ?? process.env.BULLMQ_MAJOR ?? '');
  if (major !== '5' && major !== '6') {
    throw new Error(`BULLMQ_MAJOR must be 5 or 6, got ${JSON.stringify(major)}`);
  }
  const mod = await import(major === '5' ? 'bullmq5' : 'bullmq6');
  return { major: Number(major), ...(mod.default ?? {}), ...mod };
}

// ioredis options from a redis:// or rediss:// URL. maxRetriesPerRequest must
// be null for BullMQ workers (blocking connections).
export function connection(url) {
  const u = new URL(url);
  const opts = {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: Number(u.port || 6379),
    maxRetriesPerRequest: null,
  };
  if (u.username) opts.username = decodeURIComponent(u.username);
  if (u.password) opts.password = decodeURIComponent(u.password);
  const db = u.pathname.replace(/^\//, '');
  if (db) opts.db = Number(db);
  if (u.protocol === 'rediss:') opts.tls = {};
  return opts;
}

export function queueOpts(args) {
  return { connection: connection(args.redisUrl), prefix: args.prefix };
}

export function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

export const COUNT_TYPES = [
  'active', 'completed', 'delayed', 'failed', 'paused', 'prioritized',
  'waiting', 'waiting-children',
];

// Run main(), print {"event":"error"} and exit 1 on failure. Never calls
// process.exit on success so that stdout is flushed.
export function run(main) {
  main().catch((err) => {
    emit({ event: 'error', message: String(err?.message ?? err) });
    process.stderr.write(`${err?.stack ?? err}\n`);
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 2000).unref();
  });
}
