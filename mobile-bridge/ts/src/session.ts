/**
 * runSession: one bridge session of desfire-relay.v1 over an injected
 * WebSocket, with the card behind an injected transceive function. It
 * connects with the single-use bridge token, says hello (with the card),
 * answers each transceive by the contract's rules, shows prompts, and
 * resolves with the server's result.
 */

import {
  type BridgeErrorCode,
  type BridgeInfo,
  type BridgeMessage,
  type CardInfo,
  type ReadyMessage,
  type SessionResult,
  type TransceiveMessage,
  type WireCard,
  MAX_FRAME,
  SUBPROTOCOL,
  decodeServerMessage,
  utf8Length,
} from "./messages.js";
import { toHex } from "./hex.js";
import { BridgeError, CancelledError, ConnectionError, ProtocolError, SessionFailedError, SessionTimeoutError } from "./errors.js";
import { type AbortSignalLike, type ErrorClassifier, type TransceiveFn, runBatch } from "./transceive.js";

/** Version of this package, sent in hello.bridge.version by default. */
export const VERSION = "1.0.0";

/**
 * The part of the WHATWG WebSocket the bridge uses. Browser, React Native
 * and the Node `ws` package sockets all fit.
 */
export interface WebSocketLike {
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number;
  /** The negotiated subprotocol ("" or undefined where the platform does not tell). */
  readonly protocol?: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  // Handlers are typed loosely so every platform's socket is assignable.
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
}

/**
 * Opens a WebSocket. `headers` is only given with `tokenIn: "header"`;
 * browsers cannot send headers, React Native and Node `ws` can, e.g.
 * `(url, protocols, headers) => new WebSocket(url, protocols, { headers })`.
 */
export type WebSocketFactory = (url: string, protocols: string[], headers?: Record<string, string>) => WebSocketLike;

/** Options of runSession. */
export interface SessionOptions {
  /** Bridge endpoint, e.g. wss://relay.example.com/v1/bridge. */
  url: string;
  /** The single-use bridge token the operator backend obtained. */
  token: string;
  /**
   * How to send the token: "query" (`?token=`, default: works everywhere)
   * or "header" (`Authorization: Bearer`, keeps it out of access logs,
   * needs a factory that passes headers).
   */
  tokenIn?: "query" | "header";
  /** Opens the platform's WebSocket. */
  webSocket: WebSocketFactory;
  /** Sends one command APDU to the card. */
  transceive: TransceiveFn;
  /**
   * The card, as seen at anticollision. A promise lets the app connect
   * while the user is still bringing the card: hello goes without it and
   * `card` follows when it resolves.
   */
  card: CardInfo | Promise<CardInfo>;
  /**
   * Called after the card was lost mid-batch: resolve when it is back (the
   * bridge sends `card`), reject when the user gives up (the bridge
   * cancels). With it the bridge announces the `retap` feature and the
   * server waits (about 20 s, within the session deadline) for the card
   * and finishes the same session: no new token. Without it the server
   * ends the session with tag_lost and the app retries with a new token.
   */
  retap?: () => Promise<CardInfo>;
  /** hello.bridge; defaults: name "@desfire-relay/bridge", this version, platform "js". */
  bridge?: Partial<BridgeInfo>;
  /** Announce the batch feature (default true): fewer wide-area round trips. */
  batch?: boolean;
  /** Bound on each command APDU, ms (default 2000; 0: none). */
  commandTimeoutMs?: number;
  /** Bound on the whole session, ms (default 90000, above the server's 60 s). */
  sessionTimeoutMs?: number;
  /** After a cancel, how long to wait for the server's result, ms (default 3000). */
  cancelGraceMs?: number;
  /** Aborting it cancels the session: `cancel` is sent, then the socket closes. */
  signal?: AbortSignalLike;
  /** Shows the server's prompts (ready.prompt and prompt messages). */
  onPrompt?: (text: string, progress?: number) => void;
  /** Called once the server accepted hello. */
  onReady?: (ready: ReadyMessage) => void;
  /** Maps errors of your NFC library to tag_lost / timeout / io. */
  classifyError?: ErrorClassifier;
  /** Reject with SessionFailedError when the result says ok: false. */
  throwOnFailure?: boolean;
}

/** The outcome of a session. */
export interface SessionReport {
  /** The server's result (ok may be false: show result.error.message). */
  result: SessionResult;
  /** transceive messages answered (wide-area round trips). */
  exchanges: number;
  /** Command APDUs sent to the card. */
  commands: number;
}

const OPEN = 1;
const noop = () => {};

/**
 * Runs one session. It resolves with the report whenever the server sent a
 * result (check `result.ok`), and rejects with a BridgeError when there was
 * no result: ConnectionError (could not connect, or closed early),
 * ProtocolError (malformed server message), SessionTimeoutError,
 * CancelledError. It never throws synchronously.
 */
export function runSession(options: SessionOptions): Promise<SessionReport> {
  return new Promise<SessionReport>((resolve, reject) => {
    new Session(options, resolve, reject).start();
  });
}

/** Validates the card the app reports, so mistakes fail here and not as a 1008. */
function wireCard(c: CardInfo): WireCard {
  if (!c || !(c.uid instanceof Uint8Array) || ![4, 7, 10].includes(c.uid.length)) {
    throw new TypeError("card.uid must be a Uint8Array of 4, 7 or 10 bytes");
  }
  const w: WireCard = { uid: toHex(c.uid) };
  if (c.ats !== undefined) {
    if (!(c.ats instanceof Uint8Array) || c.ats.length > 64) throw new TypeError("card.ats must be a Uint8Array of at most 64 bytes");
    w.ats = toHex(c.ats);
  }
  return w;
}

function closeText(code: number | undefined, reason: string | undefined, error: string | undefined): string {
  const why: Record<number, string> = {
    1000: "the server ended the session without a result",
    1001: "the server is going away",
    1006: "the connection failed or dropped",
    1008: "the server saw a protocol violation",
    1011: "the server had an internal error",
    4408: "the server closed the session: the bridge was too slow",
  };
  let s = (code !== undefined && why[code]) || "the connection closed before a result";
  if (code !== undefined) s += ` (close ${code}${reason ? `: ${reason}` : ""})`;
  if (error) s += `: ${error}`;
  return s;
}

function describe(ev: unknown): string | undefined {
  const e = ev as { message?: unknown; error?: { message?: unknown } } | null;
  const m = e?.message ?? e?.error?.message;
  return typeof m === "string" && m !== "" ? m : undefined;
}

/** One running session; every entry point is guarded by `done`. */
class Session {
  private ws?: WebSocketLike;
  private done = false;
  private cancelling = false;
  private busy = false;
  private exchanges = 0;
  private commands = 0;
  private card?: WireCard;
  private opened = false;
  private socketError?: string;
  private sessionTimer: unknown;
  private graceTimer: unknown;
  /** Aborted when the session ends, so a running batch stops. */
  private stopListeners: (() => void)[] = [];
  private stopped = false;
  private readonly stopSignal: AbortSignalLike;

  constructor(
    private readonly o: SessionOptions,
    private readonly resolve: (r: SessionReport) => void,
    private readonly reject: (e: Error) => void,
  ) {
    const self = this;
    this.stopSignal = {
      get aborted() {
        return self.stopped;
      },
      addEventListener: (_t, l) => void this.stopListeners.push(l),
      removeEventListener: (_t, l) => void (this.stopListeners = this.stopListeners.filter((x) => x !== l)),
    };
  }

  start(): void {
    const o = this.o;
    try {
      if (typeof o.url !== "string" || o.url === "") throw new TypeError("url is required");
      if (typeof o.token !== "string" || o.token === "") throw new TypeError("token is required");
      if (typeof o.webSocket !== "function") throw new TypeError("webSocket factory is required");
      if (typeof o.transceive !== "function") throw new TypeError("transceive function is required");
      if (o.card === undefined || o.card === null) throw new TypeError("card is required (CardInfo or a promise of it)");
      if (typeof (o.card as Promise<CardInfo>).then === "function") {
        (o.card as Promise<CardInfo>).then(
          (c) => this.guard(() => this.setCard(c)),
          (e) => this.guard(() => this.giveUp(e)),
        );
      } else {
        this.card = wireCard(o.card as CardInfo);
      }
    } catch (e) {
      this.reject(e as Error);
      this.done = true;
      return;
    }
    if (o.signal?.aborted) {
      this.fail(new CancelledError(o.signal.reason));
      return;
    }
    o.signal?.addEventListener("abort", this.onAbort);
    const ms = o.sessionTimeoutMs ?? 90_000;
    if (ms > 0) this.sessionTimer = setTimeout(() => this.guard(() => this.onSessionTimeout(ms)), ms);

    let url = o.url;
    let headers: Record<string, string> | undefined;
    if ((o.tokenIn ?? "query") === "header") {
      headers = { Authorization: `Bearer ${o.token}` };
    } else {
      url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(o.token);
    }
    let ws: WebSocketLike;
    try {
      ws = o.webSocket(url, [SUBPROTOCOL], headers);
    } catch (e) {
      this.fail(new ConnectionError(`cannot open the WebSocket: ${(e as Error)?.message ?? String(e)}`, undefined, undefined, { cause: e }));
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.guard(() => this.onOpen());
    ws.onmessage = (ev) => this.guard(() => this.onMessage(ev?.data));
    ws.onerror = (ev) => {
      this.socketError = describe(ev) ?? this.socketError;
    };
    ws.onclose = (ev) => this.guard(() => this.onClose(ev?.code, ev?.reason));
  }

  /** Runs an event handler so that nothing it throws escapes to the platform. */
  private guard(f: () => void): void {
    if (this.done) return;
    try {
      f();
    } catch (e) {
      this.fail(e instanceof BridgeError ? e : new BridgeError("internal", `bridge failure: ${(e as Error)?.message ?? String(e)}`, { cause: e }));
    }
  }

  private onOpen(): void {
    const ws = this.ws!;
    this.opened = true;
    if (ws.protocol && ws.protocol !== SUBPROTOCOL) {
      throw new ProtocolError(`the server selected subprotocol "${ws.protocol}", not ${SUBPROTOCOL}`);
    }
    const b = this.o.bridge ?? {};
    this.send({
      type: "hello",
      bridge: { name: b.name ?? "@desfire-relay/bridge", version: b.version ?? VERSION, platform: b.platform ?? "js" },
      features: [...(this.o.batch === false ? [] : ["batch"]), ...(this.o.retap ? ["retap"] : [])],
      ...(this.card ? { card: this.card } : {}),
    });
  }

  /** A card arrived (from the initial promise or a retap). */
  private setCard(c: CardInfo): void {
    this.card = wireCard(c);
    if (this.opened && !this.cancelling) {
      this.send({ type: "card", ...this.card });
    }
  }

  private onMessage(data: unknown): void {
    if (typeof data !== "string") throw new ProtocolError("the server sent a binary frame");
    const d = decodeServerMessage(data);
    if (!d.ok) throw new ProtocolError(`bad server message: ${d.error}`);
    const m = d.message;
    switch (m.type) {
      case "ready":
        this.app(() => this.o.onReady?.(m));
        if (m.prompt) this.prompt(m.prompt);
        break;
      case "prompt":
        this.prompt(m.text, m.progress);
        break;
      case "transceive":
        if (this.cancelling) return; // the server will see our cancel
        if (this.busy) throw new ProtocolError(`transceive ${m.id} while the previous one is unanswered`);
        this.busy = true;
        this.transceive(m).then(
          () => {
            this.busy = false;
          },
          (e) => this.guard(() => this.fail(new BridgeError("internal", `transceive failed: ${String(e)}`, { cause: e }))),
        );
        break;
      case "result": {
        const { type: _type, ...result } = m;
        this.finish(result);
        break;
      }
      default:
        // A message type from a newer server: ignored by contract.
        break;
    }
  }

  private async transceive(m: TransceiveMessage): Promise<void> {
    this.exchanges++;
    const out = await runBatch(m.capdus, this.o.transceive, {
      commandTimeoutMs: this.o.commandTimeoutMs ?? 2000,
      classifyError: this.o.classifyError,
      signal: this.stopSignal,
    });
    this.commands += out.commands;
    if (this.done || this.cancelling) return;
    this.guard(() => {
      const msg: BridgeMessage = { type: "responses", id: m.id, rapdus: out.rapdus.map(toHex) };
      if (out.error) msg.error = out.error;
      this.send(msg);
      if (out.error === "tag_lost") this.lost(out.error);
    });
  }

  /** After tag_lost: wait for the app's retap, if it has one. */
  private lost(_why: BridgeErrorCode): void {
    const retap = this.o.retap;
    if (!retap) return;
    Promise.resolve()
      .then(retap)
      .then(
        (c) => this.guard(() => this.setCard(c)),
        (e) => this.guard(() => this.giveUp(e)),
      );
  }

  private prompt(text: string, progress?: number): void {
    this.app(() => this.o.onPrompt?.(text, progress));
  }

  /** Calls app code; its exceptions are the app's and do not end the session. */
  private app(f: () => void): void {
    try {
      f();
    } catch {
      // ignored by design
    }
  }

  private send(msg: BridgeMessage): void {
    const s = JSON.stringify(msg);
    const n = utf8Length(s);
    if (n > MAX_FRAME) throw new ProtocolError(`${msg.type} frame of ${n} bytes would exceed ${MAX_FRAME}`);
    try {
      this.ws!.send(s);
    } catch (e) {
      throw new ConnectionError(`send ${msg.type}: ${(e as Error)?.message ?? String(e)}`, undefined, undefined, { cause: e });
    }
  }

  private onClose(code?: number, reason?: string): void {
    if (this.cancelling) {
      this.fail(new CancelledError(this.o.signal?.reason));
      return;
    }
    this.fail(new ConnectionError(closeText(code, reason, this.socketError), code, reason));
  }

  private readonly onAbort = (): void => this.guard(() => this.giveUp(this.o.signal?.reason));

  /** Cancels: sends `cancel` and waits a little for the server's result. */
  private giveUp(reason: unknown): void {
    if (this.cancelling) return;
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN || !this.opened) {
      this.fail(new CancelledError(reason));
      return;
    }
    this.cancelling = true;
    this.stop();
    const text = reason instanceof Error ? reason.message : typeof reason === "string" ? reason : "user";
    this.send({ type: "cancel", reason: text.slice(0, 200) });
    const ms = this.o.cancelGraceMs ?? 3000;
    this.graceTimer = setTimeout(() => this.guard(() => this.fail(new CancelledError(reason))), ms);
  }

  private onSessionTimeout(ms: number): void {
    const ws = this.ws;
    if (ws && ws.readyState === OPEN && this.opened) {
      try {
        ws.send(JSON.stringify({ type: "cancel", reason: "timeout" }));
      } catch {
        // closing anyway
      }
    }
    this.fail(new SessionTimeoutError(ms));
  }

  private stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const l of this.stopListeners) l();
  }

  /** Ends the session: timers, listeners and socket are released once. */
  private end(closeCode: number, closeReason?: string): void {
    this.done = true;
    this.stop();
    if (this.sessionTimer !== undefined) clearTimeout(this.sessionTimer);
    if (this.graceTimer !== undefined) clearTimeout(this.graceTimer);
    this.o.signal?.removeEventListener("abort", this.onAbort);
    const ws = this.ws;
    if (ws) {
      // Keep no-op handlers: some implementations throw on an error event
      // that nobody listens to.
      ws.onopen = noop;
      ws.onmessage = noop;
      ws.onerror = noop;
      ws.onclose = noop;
      if (ws.readyState < 2) {
        try {
          ws.close(closeCode, closeReason);
        } catch {
          // Browsers let scripts close only with 1000 or 3000-4999.
          try {
            ws.close(1000);
          } catch {
            // already closing
          }
        }
      }
    }
  }

  private finish(result: SessionResult): void {
    this.end(1000);
    const report: SessionReport = { result, exchanges: this.exchanges, commands: this.commands };
    if (this.o.throwOnFailure && !result.ok) this.reject(new SessionFailedError(report));
    else this.resolve(report);
  }

  private fail(e: Error): void {
    if (this.done) return;
    if (e instanceof ProtocolError) this.end(1008, "bad server message");
    else this.end(1000);
    this.reject(e);
  }
}
