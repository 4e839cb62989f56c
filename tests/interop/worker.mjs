// A real BullMQ Worker that fails the jobs matching a rule and completes the rest.
// Args: {redisUrl, prefix, queue,
//        fail?: [{name?: string, data?: {field: value, ...}, message: string,
//                 logs?: [string, ...], logLines?: N}],
//        concurrency?: 1, processMs?: 0,
//        lockDurationMs?: BullMQ's lockDuration (30000): how soon a killed worker's locks expire,
//        maxJobs?: N       stop after N processed attempts,
//        idleMs?: X        stop after X ms without a processed attempt,
//        timeoutMs?: 120000  hard stop}
// A rule matches when every given criterion matches (name equality, and
// every `data` field equal to the job's data field); the first matching rule's
// message is thrown, after the rule's `logs` (then `logLines` lines "line <k> of <id>")
// are written with job.log(). SIGTERM/SIGINT stop the worker gracefully (active jobs
// finish). A globally paused queue is simply not consumed until resumed.
// Prints: {"event":"ready"} once connected, then one line per processed attempt:
//   {"event":"processed","id","name","data","opts","attemptsMade",
//    "attemptsMadeBefore","attemptsStarted","outcome":"completed"|"failed",
//    "failedReason","final"}
// and on exit {"event":"summary","processed","completed","failed","reason"}.
import { readArgs, loadBullmq, queueOpts, emit, run } from './lib.mjs';

function matches(rule, job) {
  if (rule.name !== undefined && rule.name !== job.name) return false;
  if (rule.data !== undefined) {
    for (const [k, v] of Object.entries(rule.data)) {
      if (JSON.stringify(job.data?.[k]) !== JSON.stringify(v)) return false;
    }
  }
  return rule.name !== undefined || rule.data !== undefined;
}

run(async () => {
  const args = await readArgs();
  const { Worker, major } = await loadBullmq(args);
  const rules = args.fail ?? [];
  const before = new Map();
  const totals = { processed: 0, completed: 0, failed: 0 };
  let stopReason = null;
  let stop;
  const stopped = new Promise((resolve) => { stop = resolve; });
  const requestStop = (reason) => {
    if (stopReason === null) {
      stopReason = reason;
      stop();
    }
  };

  const processor = async (job) => {
    before.set(job.id, job.attemptsMade);
    if (args.processMs) await new Promise((r) => setTimeout(r, args.processMs));
    const rule = rules.find((r) => matches(r, job));
    if (rule) {
      for (const line of rule.logs ?? []) await job.log(line);
      for (let k = 0; k < (rule.logLines ?? 0); k += 1) await job.log(`line ${k} of ${job.id}`);
      throw new Error(rule.message ?? 'failed by rule');
    }
    return { ok: true };
  };

  const worker = new Worker(args.queue, processor, {
    ...queueOpts(args),
    concurrency: args.concurrency ?? 1,
    ...(args.lockDurationMs ? { lockDuration: args.lockDurationMs } : {}),
    autorun: false,
  });

  let idleTimer = null;
  const armIdle = () => {
    if (!args.idleMs) return;
    if (idleTimer) clearTimeout(idleTimer);
    idleTimer = setTimeout(() => requestStop('idle'), args.idleMs);
  };

  const report = (job, outcome, err) => {
    totals.processed += 1;
    totals[outcome] += 1;
    const attempts = job.opts?.attempts ?? 1;
    emit({
      event: 'processed',
      id: job.id,
      name: job.name,
      data: job.data,
      opts: job.opts,
      attemptsMade: job.attemptsMade,
      attemptsMadeBefore: before.get(job.id) ?? null,
      attemptsStarted: job.attemptsStarted ?? null,
      outcome,
      failedReason: err ? String(err.message ?? err) : null,
      final: outcome === 'completed' || job.attemptsMade >= attempts || err?.name === 'UnrecoverableError',
    });
    before.delete(job.id);
    armIdle();
    if (args.maxJobs && totals.processed >= args.maxJobs) requestStop('maxJobs');
  };
  worker.on('completed', (job) => report(job, 'completed', null));
  worker.on('failed', (job, err) => {
    if (job) report(job, 'failed', err);
    else process.stderr.write(`worker failed event without job: ${err}\n`);
  });
  worker.on('error', (err) => process.stderr.write(`worker error: ${err?.stack ?? err}\n`));

  process.once('SIGTERM', () => requestStop('signal'));
  process.once('SIGINT', () => requestStop('signal'));
  const hardStop = setTimeout(() => requestStop('timeout'), args.timeoutMs ?? 120000);

  await worker.waitUntilReady();
  const running = worker.run();
  emit({ event: 'ready', major, pid: process.pid });
  armIdle();

  await stopped;
  clearTimeout(hardStop);
  if (idleTimer) clearTimeout(idleTimer);
  await worker.close();
  await running;
  emit({ event: 'summary', ...totals, reason: stopReason });
});
