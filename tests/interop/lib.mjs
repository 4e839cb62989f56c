// Shared helpers for the interop scripts: argument parsing, BullMQ major
// selection, Redis connection options and JSON-lines output.
//
// Every script reads one JSON object of arguments from argv[2] (or from stdin
// when argv[2] is absent or "-") and prints JSON lines on stdout; diagnostics go
// to stderr. The BullMQ major comes from BULLMQ_MAJOR (5 or 6), overridable by
// the "major" argument.

import { readFileSync } from 'node:fs';
import IORedis from 'ioredis';

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
// be null for BullMQ workers (blocking connections). A redis+cluster:// URL
// (seed nodes comma-separated) gives an ioredis Cluster, as BullMQ apps on a
// Redis Cluster use (their prefix then carries a hash tag, e.g. {bull}).
export function connection(url) {
  if (/^rediss?\+cluster:\/\//i.test(url)) return clusterConnection(url);
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

const clusters = [];

// The userinfo ends at the last "@" (a password may hold any character,
// percent-encoded or not); the seeds are host:port[,host:port...].
function clusterConnection(url) {
  const m = /^(rediss?)\+cluster:\/\/(?:(.*)@)?([^@/?#]*)/i.exec(url);
  if (!m) throw new Error('not a redis+cluster:// URL');
  const [, scheme, userinfo, hosts] = m;
  const redisOptions = { maxRetriesPerRequest: null };
  if (userinfo !== undefined) {
    const colon = userinfo.indexOf(':');
    const user = colon < 0 ? '' : userinfo.slice(0, colon);
    const password = colon < 0 ? userinfo : userinfo.slice(colon + 1);
    if (user) redisOptions.username = safeDecode(user);
    if (password) redisOptions.password = safeDecode(password);
  }
  if (scheme.toLowerCase() === 'rediss') redisOptions.tls = {};
  const nodes = hosts.split(',').map((hp) => {
    const at = hp.lastIndexOf(':');
    return { host: hp.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(hp.slice(at + 1)) };
  });
  const cluster = new IORedis.Cluster(nodes, { redisOptions, maxRedirections: 64, retryDelayOnFailover: 200 });
  clusters.push(cluster); // BullMQ does not close a connection it was given: run() does
  return cluster;
}

function safeDecode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
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
  main().then(() => Promise.all(clusters.map((c) => c.quit().catch(() => c.disconnect())))).catch((err) => {
    emit({ event: 'error', message: String(err?.message ?? err) });
    process.stderr.write(`${err?.stack ?? err}\n`);
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 2000).unref();
  });
}
