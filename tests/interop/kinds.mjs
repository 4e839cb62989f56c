// Arrange and inspect BullMQ jobs of every kind for tests/interop/test_job_kinds.py.
// Args: {redisUrl, prefix, queue, action, ...}
//   action "flow":      FlowProducer.add({name:"parent", queueName: queue, data, children:[{name, data, opts}]})
//                       prints {"event":"flow","parent":id,"children":[ids]}
//   action "add":       Queue.add(name, data, opts) -> {"event":"added","id"}
//   action "retry":     Job.retry("failed", {resetAttemptsMade, resetAttemptsStarted}) on each of ids
//                       -> {"event":"retried","results":{id: "ok" | error message}}
//   action "states":    Job.getState() of each of ids -> {"event":"states","states":{id: state}}
//   action "scheduler": Queue.upsertJobScheduler(schedulerId, repeat, {name, data}) -> {"event":"scheduler"}
//   action "schedulers": Queue.getJobSchedulers() -> {"event":"schedulers","ids":[...]}
import { readArgs, loadBullmq, queueOpts, emit, run } from './lib.mjs';

run(async () => {
  const args = await readArgs();
  const { Queue, FlowProducer, Job } = await loadBullmq(args);
  const queue = new Queue(args.queue, queueOpts(args));
  try {
    await queue.waitUntilReady();
    if (args.action === 'flow') {
      const flow = new FlowProducer(queueOpts(args));
      try {
        const tree = await flow.add({
          name: 'parent', queueName: args.queue, data: args.data ?? {},
          children: args.children.map((c) => ({ queueName: args.queue, ...c })),
        });
        emit({ event: 'flow', parent: tree.job.id, children: tree.children.map((c) => c.job.id) });
      } finally {
        await flow.close();
      }
    } else if (args.action === 'add') {
      const job = await queue.add(args.name, args.data ?? {}, args.opts ?? {});
      emit({ event: 'added', id: job.id });
    } else if (args.action === 'retry') {
      const results = {};
      for (const id of args.ids) {
        try {
          const job = await Job.fromId(queue, id);
          if (!job) throw new Error('no such job');
          await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
          results[id] = 'ok';
        } catch (err) {
          results[id] = String(err?.message ?? err);
        }
      }
      emit({ event: 'retried', results });
    } else if (args.action === 'states') {
      const states = {};
      for (const id of args.ids) states[id] = await queue.getJobState(id);
      emit({ event: 'states', states });
    } else if (args.action === 'scheduler') {
      await queue.upsertJobScheduler(args.schedulerId, args.repeat, { name: args.name, data: args.data ?? {} });
      emit({ event: 'scheduler' });
    } else if (args.action === 'schedulers') {
      const list = await queue.getJobSchedulers();
      emit({ event: 'schedulers', ids: list.map((s) => s.key ?? s.id) });
    } else {
      throw new Error(`unknown action ${JSON.stringify(args.action)}`);
    }
  } finally {
    await queue.close();
  }
});
