/**
 * The transceive rules of PROTOCOL.md section 1, apart from the socket so
 * they can be tested on their own: send the commands in order, each after
 * the previous answer; stop after the first response whose status word is
 * not expected; report a card failure as tag_lost, timeout or io together
 * with the responses received before it.
 */

import type { BridgeErrorCode, CommandAPDU } from "./messages.js";
import { CardTimeoutError } from "./errors.js";

/** Anything with `aborted` and abort listeners, as AbortSignal has. */
export interface AbortSignalLike {
  readonly aborted: boolean;
  readonly reason?: unknown;
  addEventListener(type: "abort", listener: () => void): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

/** Per-command context handed to the app's transceive function. */
export interface TransceiveContext {
  /**
   * Aborted when the bridge gives up on this command (per-command timeout
   * or session end). Libraries that can cancel an NFC operation should.
   */
  signal: AbortSignalLike;
}

/**
 * Sends one command APDU to the card and resolves with the response APDU
 * (data ‖ SW1 SW2). Throw TagLostError when the card left the field,
 * CardTimeoutError when it did not answer; anything else counts as a
 * reader failure ("io") unless `classifyError` says otherwise.
 */
export type TransceiveFn = (apdu: Uint8Array, ctx: TransceiveContext) => Promise<Uint8Array>;

/** Maps an error thrown by the transceive function to a protocol error code. */
export type ErrorClassifier = (err: unknown) => BridgeErrorCode | undefined;

/** What one batch produced. */
export interface BatchOutcome {
  /** Responses received, in order (0..number of commands). */
  rapdus: Uint8Array[];
  /** Why the batch stopped early because of the card or reader. */
  error?: BridgeErrorCode;
  /** Command APDUs handed to the card, including one that failed. */
  commands: number;
}

/** Options of runBatch. */
export interface BatchOptions {
  /** Bound on each command, in ms (0 or less: none). */
  commandTimeoutMs: number;
  /** App-specific error mapping, consulted before the defaults. */
  classifyError?: ErrorClassifier;
  /** Stops the batch between commands (session cancelled or ended). */
  signal?: AbortSignalLike;
}

/**
 * Reports whether status word sw lets a batch go on: it must be in expect,
 * or with an empty expect list be 9000 or 9100.
 */
export function isExpected(expect: readonly number[], sw: number): boolean {
  if (expect.length === 0) return sw === 0x9000 || sw === 0x9100;
  return expect.includes(sw);
}

/**
 * Default error mapping: TagLostError → tag_lost, CardTimeoutError →
 * timeout (by name, so copies of the classes from another bundle count),
 * everything else → io.
 */
export function classifyTransceiveError(err: unknown, custom?: ErrorClassifier): BridgeErrorCode {
  const c = custom?.(err);
  if (c) return c;
  const name = (err as { name?: unknown } | null)?.name;
  if (name === "TagLostError") return "tag_lost";
  if (name === "CardTimeoutError") return "timeout";
  return "io";
}

/** A minimal AbortController, for engines that lack one. */
class Aborter implements AbortSignalLike {
  aborted = false;
  reason?: unknown;
  private listeners: (() => void)[] = [];
  addEventListener(_type: "abort", l: () => void): void {
    this.listeners.push(l);
  }
  removeEventListener(_type: "abort", l: () => void): void {
    this.listeners = this.listeners.filter((x) => x !== l);
  }
  abort(reason?: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    for (const l of this.listeners) {
      try {
        l();
      } catch {
        // a listener's failure is the app's; it must not break the bridge
      }
    }
  }
}

/**
 * Accepts what NFC libraries return: a Uint8Array (or Node Buffer, or one
 * from another realm) or a plain array of byte values, as
 * react-native-nfc-manager gives. Anything else is undefined.
 */
function asBytes(r: unknown): Uint8Array | undefined {
  if (r instanceof Uint8Array) return r;
  if (ArrayBuffer.isView(r) && (r as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT === 1) {
    return new Uint8Array(r.buffer, r.byteOffset, r.byteLength);
  }
  if (Array.isArray(r) && r.every((b) => Number.isInteger(b) && b >= 0 && b <= 255)) return Uint8Array.from(r);
  return undefined;
}

/** Runs one command with the per-command timeout. */
async function sendOne(send: TransceiveFn, apdu: Uint8Array, o: BatchOptions): Promise<Uint8Array> {
  const ab = new Aborter();
  const onOuter = () => ab.abort(o.signal?.reason);
  o.signal?.addEventListener("abort", onOuter);
  let timer: unknown;
  try {
    const call = Promise.resolve().then(() => send(apdu, { signal: ab }));
    if (o.commandTimeoutMs <= 0) return await call;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const e = new CardTimeoutError(`card did not answer within ${o.commandTimeoutMs} ms`);
        ab.abort(e);
        reject(e);
      }, o.commandTimeoutMs);
    });
    call.catch(() => {}); // a late failure after the timeout is not unhandled
    return await Promise.race([call, timeout]);
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    o.signal?.removeEventListener("abort", onOuter);
  }
}

/**
 * Sends the commands of one transceive by the contract's rules and returns
 * what to put in the `responses` message. It never throws: card and reader
 * failures become `error`.
 */
export async function runBatch(capdus: readonly CommandAPDU[], send: TransceiveFn, o: BatchOptions): Promise<BatchOutcome> {
  const out: BatchOutcome = { rapdus: [], commands: 0 };
  for (const c of capdus) {
    if (o.signal?.aborted) {
      out.error = "io";
      break;
    }
    let r: Uint8Array;
    out.commands++;
    try {
      r = await sendOne(send, c.apdu, o);
    } catch (e) {
      out.error = classifyTransceiveError(e, o.classifyError);
      break;
    }
    const bytes = asBytes(r);
    if (!bytes || bytes.length < 2) {
      // No status word: the reader returned garbage, not a card answer.
      out.error = "io";
      break;
    }
    r = bytes;
    out.rapdus.push(r);
    const sw = (r[r.length - 2] << 8) | r[r.length - 1];
    if (!isExpected(c.expect, sw)) break;
  }
  return out;
}
