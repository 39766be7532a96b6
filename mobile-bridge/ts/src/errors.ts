/**
 * Errors of a bridge session. Every failure of runSession is one of these,
 * so an app can tell "show the server's message" from "retry the
 * connection" with instanceof or the `code` field (stable across bundlers
 * that rename classes).
 */

import type { SessionReport } from "./session.js";

/** Base class of every error runSession rejects with. */
export class BridgeError extends Error {
  /** Stable machine-readable kind of failure. */
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/**
 * The server broke the desfire-relay.v1 contract (bad JSON, wrong field
 * types, bad hex, a frame over 16 KiB, a binary frame ...). The bridge
 * closed the socket with 1008. Not retryable with the same server build.
 */
export class ProtocolError extends BridgeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("protocol", message, options);
  }
}

/**
 * The connection could not be opened (network, HTTP 401 for a used or
 * expired token, 400 ...) or ended before a result arrived. `closeCode` is
 * the WebSocket close code when there was one (4408: the bridge was too
 * slow; 1008: the server saw a protocol violation; 1011: server error).
 */
export class ConnectionError extends BridgeError {
  /** WebSocket close code, when the socket was closed with one. */
  readonly closeCode?: number;
  /** WebSocket close reason, when one was given. */
  readonly closeReason?: string;

  constructor(message: string, closeCode?: number, closeReason?: string, options?: { cause?: unknown }) {
    super("connection", message, options);
    this.closeCode = closeCode;
    this.closeReason = closeReason;
  }
}

/** The whole session took longer than `sessionTimeoutMs`. */
export class SessionTimeoutError extends BridgeError {
  constructor(ms: number) {
    super("session_timeout", `no result within ${ms} ms`);
  }
}

/**
 * The session was cancelled through the AbortSignal and the server's
 * result did not arrive within the grace period (when it does arrive,
 * runSession resolves with it: ok false, error code "cancelled").
 */
export class CancelledError extends BridgeError {
  constructor(reason?: unknown) {
    super("cancelled", "session cancelled", { cause: reason });
  }
}

/**
 * The server's result says ok: false. Only thrown when the session was
 * started with `throwOnFailure: true`; otherwise runSession resolves with
 * the report and the app reads `result.error`.
 */
export class SessionFailedError extends BridgeError {
  /** The server's error code (card_busy, card_unknown, tag_lost ...). */
  readonly errorCode: string;
  /** Everything the session produced, including the result. */
  readonly report: SessionReport;

  constructor(report: SessionReport) {
    const e = report.result.error;
    super("session_failed", e ? `${e.code}: ${e.message}` : "session failed");
    this.errorCode = e?.code ?? "unknown";
    this.report = report;
  }
}

/**
 * Thrown by an app's `transceive` function when the card left the field;
 * the bridge tells the server "tag_lost". Errors named "TagLostError" from
 * other copies of this package are recognised too.
 */
export class TagLostError extends Error {
  constructor(message = "card left the field", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TagLostError";
  }
}

/**
 * Thrown by an app's `transceive` function when the card did not answer in
 * time (the bridge's own per-command timer reports the same); the bridge
 * tells the server "timeout".
 */
export class CardTimeoutError extends Error {
  constructor(message = "card did not answer in time", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CardTimeoutError";
  }
}
