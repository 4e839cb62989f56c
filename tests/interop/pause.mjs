// Queue.pause() / Queue.resume() with the selected BullMQ major.
// Args: {redisUrl, prefix, queue, action: "pause" | "resume"}
// Prints: {"event":"paused"|"resumed","isPaused":bool}
import { readArgs, loadBullmq, queueOpts, emit, run } from './lib.mjs';

run(async () => {
  const args = await readArgs();
  const { Queue } = await loadBullmq(args);
  const queue = new Queue(args.queue, queueOpts(args));
  try {
    if (args.action === 'pause') await queue.pause();
    else if (args.action === 'resume') await queue.resume();
    else throw new Error(`action must be "pause" or "resume", got ${JSON.stringify(args.action)}`);
    emit({ event: args.action === 'pause' ? 'paused' : 'resumed', isPaused: await queue.isPaused() });
  } finally {
    await queue.close();
  }
});
