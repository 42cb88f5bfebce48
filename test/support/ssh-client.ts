// An ssh2 client of the gateway for the unit tests: a public-key login on loopback, and one
// request written to an exec channel with what came back (stdout and stderr) and its exit code.
import ssh2, { type ClientChannel } from 'ssh2';

export function sshLogin(port: number, username: string, privateKey: string | Buffer): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    client.on('ready', () => resolve(client));
    client.on('error', reject);
    client.connect({ host: '127.0.0.1', port, username, privateKey });
  });
}

export function sshRequest(client: ssh2.Client, body: string): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    client.exec('', (error, channel: ClientChannel) => {
      if (error) return reject(error);
      let out = '';
      let code: number | null = null;
      channel.on('data', (d: Buffer) => (out += d.toString()));
      channel.stderr.on('data', (d: Buffer) => (out += d.toString()));
      channel.on('exit', (c: number | null) => (code = c));
      channel.on('close', () => resolve({ out, code }));
      channel.end(body);
    });
  });
}
