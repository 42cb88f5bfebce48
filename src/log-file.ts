// The log file as a winston transport that can be reopened (logrotate's postrotate sends SIGUSR1).
// Each line is written whole with one synchronous append to the descriptor open at that moment, and
// a reopen swaps descriptors between two lines: a line goes either to the renamed file or to the
// new one, never to both and never to neither. Synchronous writes also keep the last lines before
// process.exit (an uncaught exception) in the file.
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import TransportStream from 'winston-transport';
import type winston from 'winston';

const MESSAGE = Symbol.for('message');

export class ReopenableFileTransport extends TransportStream {
  private fd: number | null;

  constructor(readonly filename: string, format: winston.Logform.Format) {
    super({ format });
    this.fd = ReopenableFileTransport.open(filename);
  }

  /** Opens for appending, making the directory first (log_dir need not exist, as with winston's own). */
  private static open(filename: string): number {
    mkdirSync(dirname(filename), { recursive: true });
    return openSync(filename, 'a', 0o640);
  }

  override log(info: Record<string | symbol, unknown>, callback: () => void): void {
    if (this.fd !== null) {
      const bytes = Buffer.from(`${String(info[MESSAGE])}\n`, 'utf8');
      let offset = 0;
      try {
        while (offset < bytes.length) offset += writeSync(this.fd, bytes, offset);
      } catch (error) {
        // A full disk must not take the daemon down: the line is lost, the transport emits a warning.
        this.emit('warn', error);
      }
    }
    callback();
  }

  /** Opens the file by its name again (a new one if it was renamed) and closes the old descriptor. */
  reopen(): void {
    const next = ReopenableFileTransport.open(this.filename);
    const previous = this.fd;
    this.fd = next;
    if (previous !== null) closeSync(previous);
  }

  override close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}
