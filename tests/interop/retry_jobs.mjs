// BullMQ's own bulk retry, Queue.retryJobs({state, count, timestamp}), as the
// reference for the replay benchmark. retryJobs loops over moveJobsToWait in
// steps of `count` jobs until the state is drained.
// Args: {redisUrl, prefix, queue, state?: "failed", count?: 1000, timestamp?}
// Prints: {"event":"retried","elapsedMs":float,"before":{counts},"after":{counts}}
import { readArgs, loadBullmq, queueOpts, emit, run, COUNT_TYPES } from './lib.mjs';

run(async () => {
  const args = await readArgs();
  const { Queue } = await loadBullmq(args);
  const queue = new Queue(args.queue, queueOpts(args));
  try {
    await queue.waitUntilReady();
    const before = await queue.getJobCounts(...COUNT_TYPES);
    const opts = { state: args.state ?? 'failed', count: args.count ?? 1000 };
    if (args.timestamp !== undefined) opts.timestamp = args.timestamp;
    const t0 = process.hrtime.bigint();
    await queue.retryJobs(opts);
    const elapsedMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const after = await queue.getJobCounts(...COUNT_TYPES);
    emit({ event: 'retried', elapsedMs, state: opts.state, count: opts.count, before, after });
  } finally {
    await queue.close();
  }
});
