// Why something the authority signed was refused: the fault message's reason and the log's.

/** A refusal whose `reason` is meant for the caller's fault message and the log. */
abstract class RefusalError extends Error {
  constructor(
    what: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${what}: ${reason}`, options);
    this.name = new.target.name;
  }
}

/** Why a ticket was refused. */
export class TicketError extends RefusalError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super('ticket refused', reason, options);
  }
}

/** Why a pushed document's detached signature was refused. */
export class SignatureError extends RefusalError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super('signed document refused', reason, options);
  }
}

/** The configured authority certificate cannot serve to check signatures. */
export class CertificateError extends RefusalError {
  constructor(reason: string, options?: { cause?: unknown }) {
    super('authority certificate unusable', reason, options);
  }
}

