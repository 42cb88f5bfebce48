// The faults the API answers with. The method-level codes are the original node manager's; the
// request-level ones are the codes XML-RPC servers commonly use for requests that never got as
// far as a method.
export const FaultCode = {
  /** No such method. */
  unknownMethod: 100,
  /** The method was called with too few or too many arguments. */
  argumentCount: 101,
  /** An argument is of the wrong type or names nothing usable; the message says which. */
  invalidArgument: 102,
  /** The caller may not do this. */
  permissionDenied: 108,
  /** The request is not well-formed XML, or is larger than the limit. */
  notWellFormed: -32700,
  /** The request declares an encoding other than UTF-8. */
  unsupportedEncoding: -32701,
  /** Well-formed XML that is not an XML-RPC method call. */
  invalidRequest: -32600,
  /** The node failed to do what was asked; the message says why. */
  internal: -32603,
} as const;

export class ApiFault extends Error {
  constructor(
    readonly code: number,
    message: string,
    /**
     * Already logged where it was raised (with its own limit on repeats): the transport's line
     * for every fault is then a debug one, so a client in a loop cannot flood the log through it.
     */
    readonly logged = false,
  ) {
    super(message);
    this.name = 'ApiFault';
  }
}

export function invalidArgument(position: number, what: string, problem: string): ApiFault {
  return new ApiFault(FaultCode.invalidArgument, `Invalid argument ${position} (${what}): ${problem}`);
}
