// Add jobs with Queue.addBulk.
// Args: {redisUrl, prefix, queue, jobs: [{name, data, opts}], chunk?: 1000,
//        generate?: {count, name, data?, opts?}  (data gets an "i" field),
//        printIds?: true}
// Prints: {"event":"added","count":N,"ids":[...]}  (ids omitted if printIds false)
import { readArgs, loadBullmq, queueOpts, emit, run } from './lib.mjs';

run(async () => {
  const args = await readArgs();
  const { Queue } = await loadBullmq(args);
  const jobs = [...(args.jobs ?? [])];
  if (args.generate) {
    const g = args.generate;
    for (let i = 0; i < g.count; i++) {
      jobs.push({ name: g.name ?? 'job', data: { ...(g.data ?? {}), i }, opts: { ...(g.opts ?? {}) } });
    }
  }
  const queue = new Queue(args.queue, queueOpts(args));
  try {
    const chunk = args.chunk ?? 1000;
    const ids = [];
    for (let i = 0; i < jobs.length; i += chunk) {
      const added = await queue.addBulk(jobs.slice(i, i + chunk));
      for (const job of added) ids.push(job.id);
    }
    emit({ event: 'added', count: ids.length, ...(args.printIds === false ? {} : { ids }) });
  } finally {
    await queue.close();
  }
});
