// What an ssh login into a libvirt sliver runs on the host (as root, through virsh): the serial
// console of a virtual machine, or a shell inside a container's namespaces.
import type { SessionLaunch } from '../../ssh/sessions.js';
import type { GuestKind } from './guest-definition.js';

export function guestSessionLaunch(
  driver: GuestKind,
  uri: string,
  name: string,
  command: string | null,
  terminal: boolean,
): SessionLaunch | { refused: string } {
  if (driver === 'lxc') {
    const shell = command === null ? ['/bin/sh', '-l'] : ['/bin/sh', '-c', command];
    return { file: 'virsh', args: ['-q', '-c', uri, 'lxc-enter-namespace', name, '--noseclabel', ...shell], cwd: '/' };
  }
  if (command !== null) {
    return { refused: `${name} is a virtual machine: the gateway reaches its serial console only; log in without a command (and with a terminal) to use it` };
  }
  if (!terminal) return { refused: `${name} is a virtual machine: its serial console needs a terminal (ssh -t)` };
  // --force takes the console over from an earlier session that was left open.
  return { file: 'virsh', args: ['-q', '-c', uri, 'console', '--force', name], cwd: '/' };
}
