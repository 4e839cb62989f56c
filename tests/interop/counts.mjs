// Queue.getJobCounts plus isPaused and the library version stored in meta.
// Args: {redisUrl, prefix, queue, types?: [...]}
// Prints: {"event":"counts","counts":{...},"isPaused":bool}
import { readArgs, loadBullmq, queueOpts, emit, run, COUNT_TYPES } from './lib.mjs';

run(async () => {
  const args = await readArgs();
  const { Queue } = await loadBullmq(args);
  const queue = new Queue(args.queue, queueOpts(args));
  try {
    const counts = await queue.getJobCounts(...(args.types ?? COUNT_TYPES));
    emit({ event: 'counts', counts, isPaused: await queue.isPaused() });
  } finally {
    await queue.close();
  }
});
