// Cutting an HTTP server's connections on which nothing moves: a peer that stops reading its
// answer (or never sends its request) is let go instead of holding a socket and the unsent answer.
//
// node:http uses the socket's one timer for its own keep-alive: it sets it when an answer is out
// and clears it when the next request arrives, so a timer armed once per connection is gone from
// the second request on; and it destroys a connection whose timer fires unless the server listens
// for 'timeout'. So the cut is armed when a connection opens and again after an answer the kernel
// did not take at once (rearmAfterAnswer), and this module's 'timeout' listener decides.
import type { Server } from 'node:http';
import { Server as TlsServer } from 'node:https';
import type { Socket } from 'node:net';

/**
 * Cuts the server's connections idle for `idleMs`, except those `spare` names (a call still being
 * answered: the cut is for stalled peers, not for our own slow work). A keep-alive timeout ends
 * here too. Over TLS the timer is the TLS socket's, the one requests see.
 */
export function cutIdleConnections(server: Server | TlsServer, idleMs: number, spare: (socket: Socket) => boolean = () => false): void {
  server.on(server instanceof TlsServer ? 'secureConnection' : 'connection', (socket: Socket) => socket.setTimeout(idleMs));
  server.on('timeout', (socket: Socket) => {
    if (!spare(socket)) socket.destroy();
  });
}

/** After an answer is ended: one the kernel did not take at once arms the cut again (one property read otherwise). */
export function rearmAfterAnswer(socket: Socket | null, idleMs: number): void {
  if (socket !== null && socket.writableLength > 0) socket.setTimeout(idleMs);
}
