// How a virtual cluster's CPUs and memory become a frontend and computes on this node, and the
// refusals a user sees when the node cannot hold the cluster.
import test from 'ava';
import { chooseNodeMemory, packCluster, parseMemoryOption, splitCpus, type PackingRequest } from '../../src/clusters/packing.js';

const GIB = 1024 * 1024; // in KiB
const PLENTY = { vcpus: 64, memoryKiB: 256 * GIB };

function request(overrides: Partial<PackingRequest> = {}): PackingRequest {
  return {
    clusterName: 'vc7',
    computeCpus: 5,
    maxComputeCpus: 2,
    frontendVcpus: 1,
    memory: { frontendKiB: 4 * GIB, computeKiB: 2 * GIB },
    ...overrides,
  };
}

test('5 CPUs with at most 2 each: computes of 2, 2, 1, named as pragma named them and unique on the node', (t) => {
  const plan = packCluster(request(), PLENTY);
  t.deepEqual(plan, {
    frontend: { domainName: 'vc7', vcpus: 1, memoryKiB: 4 * GIB },
    computes: [
      { name: 'compute-0', domainName: 'vc7-compute-0', vcpus: 2, memoryKiB: 2 * GIB },
      { name: 'compute-1', domainName: 'vc7-compute-1', vcpus: 2, memoryKiB: 2 * GIB },
      { name: 'compute-2', domainName: 'vc7-compute-2', vcpus: 1, memoryKiB: 2 * GIB },
    ],
  });
});

test("pragma's example adapted: 20 CPUs over computes of at most 14 give 14 and 6", (t) => {
  t.deepEqual(splitCpus(20, 14), [14, 6]);
  t.deepEqual(splitCpus(8, 4), [4, 4]);
  t.deepEqual(splitCpus(3, 16), [3]);
  t.deepEqual(splitCpus(0, 2), []);
});

test('NUM_CPUS = 0: the frontend alone', (t) => {
  const plan = packCluster(request({ computeCpus: 0 }), { vcpus: 1, memoryKiB: 4 * GIB });
  t.deepEqual(plan.computes, []);
  t.is(plan.frontend.vcpus, 1);
});

test("the frontend's vCPUs count: a shortfall is refused with the exact words, the frontend included", (t) => {
  // 5 for computes + 1 for the frontend = 6 > 5 free
  t.throws(() => packCluster(request(), { vcpus: 5, memoryKiB: 256 * GIB }), { message: 'not enough capacity for 6 CPUs (free: 5)' });
  t.throws(() => packCluster(request({ computeCpus: 0, frontendVcpus: 2 }), { vcpus: 1, memoryKiB: 256 * GIB }), {
    message: 'not enough capacity for 2 CPUs (free: 1)',
  });
  // Exactly enough is enough.
  t.is(packCluster(request(), { vcpus: 6, memoryKiB: 256 * GIB }).computes.length, 3);
});

test('memory of every node counts against free memory', (t) => {
  // 4 GiB + 3 x 2 GiB = 10 GiB needed
  t.notThrows(() => packCluster(request(), { vcpus: 64, memoryKiB: 10 * GIB }));
  t.throws(() => packCluster(request(), { vcpus: 64, memoryKiB: 10 * GIB - 1 }), {
    message: 'not enough memory for 10240 MiB (free: 10239 MiB): a frontend and 3 computes',
  });
});

test('--mem N or FE:COMPUTE in MiB; else the description; else 2048 MiB', (t) => {
  t.deepEqual(parseMemoryOption('4096:1024'), { frontendKiB: 4 * GIB, computeKiB: GIB });
  t.deepEqual(parseMemoryOption('3072'), { frontendKiB: 3 * GIB, computeKiB: 3 * GIB });
  t.deepEqual(chooseNodeMemory('1024:512', { frontendKiB: 8 * GIB, computeKiB: 8 * GIB }), { frontendKiB: GIB, computeKiB: 512 * 1024 });
  t.deepEqual(chooseNodeMemory(null, { frontendKiB: 1048576, computeKiB: 524288 }), { frontendKiB: 1048576, computeKiB: 524288 });
  // No compute image: the computes boot the frontend's, with its memory.
  t.deepEqual(chooseNodeMemory(null, { frontendKiB: 1048576, computeKiB: null }), { frontendKiB: 1048576, computeKiB: 1048576 });
  t.deepEqual(chooseNodeMemory(null, { frontendKiB: null, computeKiB: null }), { frontendKiB: 2 * GIB, computeKiB: 2 * GIB });
  for (const bad of ['', '0', '2048:', ':2048', '2G', '-1', '1:2:3']) {
    t.throws(() => parseMemoryOption(bad), { message: /is not a memory size in MiB/ }, bad);
  }
});

test('bad requests are refused naming the field', (t) => {
  t.throws(() => packCluster(request({ computeCpus: -1 }), PLENTY), { message: 'NUM_CPUS must be a whole number of at least 0, got -1' });
  t.throws(() => packCluster(request({ computeCpus: 2.5 }), PLENTY), { message: /NUM_CPUS must be a whole number/ });
  t.throws(() => packCluster(request({ maxComputeCpus: 0 }), PLENTY), { message: /the most vCPUs of one compute must be a whole number of at least 1/ });
  t.throws(() => packCluster(request({ frontendVcpus: 0 }), PLENTY), { message: /the frontend's vCPUs/ });
  t.throws(() => packCluster(request({ clusterName: 'VC_7' }), PLENTY), { message: /cluster name "VC_7" must be a DNS label/ });
  t.throws(() => packCluster(request({ clusterName: 'vc-' }), PLENTY), { message: /must be a DNS label/ });
  t.throws(() => packCluster(request({ clusterName: 'v'.repeat(54) }), PLENTY), { message: /would exceed 63 characters/ });
});
