// Starts one program in a container through its agent and exits at once, as a daemon that stops
// right after an exec would; prints the program's pid. The test then asks another agent (another
// process's) for the program's exit.
//
//   node --import tsx agent-exec.ts <container> <root> <records dir> <path> [args...]
import { createLxcAgent } from '../../../src/runtimes/libvirt/lxc-agent.js';

const [name, root, recordsDir, path, ...args] = process.argv.slice(2);
const agent = createLxcAgent(name!, { root: root!, recordsDir: recordsDir! });
process.stdout.write(`${await agent.exec({ path: path!, args, env: [] })}\n`);
