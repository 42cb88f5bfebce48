// The states of a task (tasks/states.ts) and the capacity budget (tasks/budget.ts): pure.
import test from 'ava';
import { budgetView, describeNeed, shortfall } from '../../src/tasks/budget.js';
import { advance, isDone, jobEnded, TASK_STATES, TransitionError, type Staged } from '../../src/tasks/states.js';

const at = (second: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, second));
const reserved: Staged = { state: 'Pending:Reserved', times: { submit: at(0).toISOString() } };

test('a task that goes the whole way has every time of its way, each once', (t) => {
  const path = ['Pending:Confirmed', 'Running:Stage-In', 'Running:Instance-Starting', 'Running:Executing',
    'Running:Instance-Stopping', 'Running:Stage-Out', 'Finished'] as const;
  let task = reserved;
  path.forEach((state, i) => {
    task = advance(task, state, at(i + 1));
    if (state === 'Running:Executing') task = jobEnded(task, at(30));
  });
  t.is(task.state, 'Finished');
  t.deepEqual(Object.keys(task.times), [
    'submit', 'confirm', 'stage-in-start', 'instance-start', 'execution-start', 'execution-done', 'instance-stop', 'stage-out-start', 'finished',
  ]);
  t.is(task.times['execution-done'], at(30).toISOString());
  t.is(jobEnded(task, at(50)).times['execution-done'], at(30).toISOString(), 'stamped once');
});

test('no state is skipped, and nothing leaves a done state', (t) => {
  t.throws(() => advance(reserved, 'Running:Executing', at(1)), { instanceOf: TransitionError, message: 'a task cannot go from Pending:Reserved to Running:Executing' });
  const finished = { state: 'Finished', times: {} } as const;
  t.throws(() => advance(finished, 'Terminated', at(1)), { message: 'the task is already Finished' });
  t.throws(() => advance({ state: 'Failed', times: {} }, 'Failed', at(1)), { message: 'the task is already Failed' });
});

test('every state that is not done may fail or be terminated', (t) => {
  for (const state of TASK_STATES.filter((s) => !isDone(s))) {
    const task: Staged = { state, times: {} };
    t.is(advance(task, 'Terminated', at(9)).times.terminated, at(9).toISOString(), state);
    t.is(advance(task, 'Failed', at(9)).state, 'Failed', state);
  }
});

test('the budget is the host times the factors, and a refusal gives the numbers', (t) => {
  const GiB = 1024 ** 3;
  const view = budgetView({ vcpus: 2, memoryBytes: 4 * GiB }, { cpu: 4, memory: 1 }, [
    { holder: 'sliver alice', vcpus: 4, memoryBytes: 2 * GiB },
    { holder: 'task 1a2b', vcpus: 3, memoryBytes: 1.5 * GiB },
  ]);
  t.deepEqual(view.total, { vcpus: 8, memoryBytes: 4 * GiB });
  t.deepEqual(view.free, { vcpus: 1, memoryBytes: 0.5 * GiB });
  t.is(shortfall(view, { vcpus: 1, memoryBytes: 0.5 * GiB }), null);
  t.is(shortfall(view, { vcpus: 2, memoryBytes: GiB }), 'needs 2 vCPU / 1 GiB, free 1 vCPU / 512 MiB (of 8 vCPU / 4 GiB with cpu_overcommit and mem_overcommit)');
  t.is(describeNeed({ vcpus: 1, memoryBytes: 512 * 1024 * 1024 }), '1 vCPU / 512 MiB');
});

test('slivers holding more than the budget leave nothing free, not less than nothing', (t) => {
  const view = budgetView({ vcpus: 1, memoryBytes: 1024 }, { cpu: 1, memory: 1 }, [{ holder: 'sliver big', vcpus: 4, memoryBytes: 4096 }]);
  t.deepEqual(view.free, { vcpus: 0, memoryBytes: 0 });
  t.deepEqual(view.used, { vcpus: 4, memoryBytes: 4096 });
});
