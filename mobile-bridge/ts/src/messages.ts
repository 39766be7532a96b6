/**
 * Messages of the desfire-relay.v1 bridge protocol (PROTOCOL.md section 1)
 * and the strict decoder for frames from the server. The decoder never
 * throws: it returns either a typed message or a description of what was
 * wrong, because a frame from the network must never crash the app.
 */

import { fromHex } from "./hex.js";

/** WebSocket subprotocol the bridge offers and the server must select. */
export const SUBPROTOCOL = "desfire-relay.v1";

/**
 * Prefix of the subprotocol that carries the bridge token (the server
 * selects only SUBPROTOCOL, so the token is never echoed).
 */
export const TOKEN_SUBPROTOCOL_PREFIX = "desfire-relay.token.";

/** Largest frame, in bytes, in either direction. */
export const MAX_FRAME = 16 * 1024;

/** Most command APDUs one transceive may carry. */
export const MAX_CAPDUS = 64;

/** Longest command APDU (CLA INS P1 P2 Lc, 255 data bytes, Le). */
export const MAX_CAPDU_BYTES = 261;

/** Most status words in one command's `expect` list. */
export const MAX_EXPECT = 16;

/** Values of `responses.error`: why a batch stopped early. */
export type BridgeErrorCode = "tag_lost" | "timeout" | "io";

/** Describes the bridge software in `hello.bridge`. */
export interface BridgeInfo {
  name: string;
  version: string;
  /** android, ios, pcsc, sim, web ... */
  platform: string;
}

/** What the reader saw at anticollision. */
export interface CardInfo {
  /** UID as seen at anticollision (4, 7 or 10 bytes). */
  uid: Uint8Array;
  /** Answer to select (ISO 14443-4 ATS), when the platform exposes it. */
  ats?: Uint8Array;
}

/** Wire form of a card, inside `hello` or as a `card` message. */
export interface WireCard {
  uid: string;
  ats?: string;
}

/** `hello`: the bridge's first message. */
export interface HelloMessage {
  type: "hello";
  bridge: BridgeInfo;
  features: string[];
  card?: WireCard;
}

/** `card`: a card was presented after `hello`. */
export interface CardMessage extends WireCard {
  type: "card";
}

/** `responses`: the answer to one `transceive`. */
export interface ResponsesMessage {
  type: "responses";
  id: number;
  /** Hex response APDUs (data ‖ SW1 SW2), in order. */
  rapdus: string[];
  error?: BridgeErrorCode;
}

/** `cancel`: the user gave up. */
export interface CancelMessage {
  type: "cancel";
  reason?: string;
}

/** Every message a bridge sends. */
export type BridgeMessage = HelloMessage | CardMessage | ResponsesMessage | CancelMessage;

/** `ready`: the server accepted `hello`. */
export interface ReadyMessage {
  type: "ready";
  /** Wire field `session_id`. */
  sessionId: string;
  /** "topup" or "balance". */
  kind: string;
  prompt?: string;
}

/** One command of a `transceive`. */
export interface CommandAPDU {
  apdu: Uint8Array;
  /**
   * Status words that let the batch go on after this command. Empty means
   * the default: 9000 or 9100.
   */
  expect: number[];
}

/** `transceive`: send these command APDUs to the card, in order. */
export interface TransceiveMessage {
  type: "transceive";
  id: number;
  capdus: CommandAPDU[];
}

/** `prompt`: something to show the user. */
export interface PromptMessage {
  type: "prompt";
  text: string;
  /** 0..1 when the server knows how far the session is. */
  progress?: number;
}

/** A card log entry reported by a balance lookup. */
export interface ResultRecord {
  /** "topup" or "usage". */
  kind: string;
  timestamp: number;
  amount: number;
  raw?: string;
}

/** The error of a failed result. */
export interface ResultError {
  /** card_busy, card_mismatch, card_unknown, card_error, limit_exceeded,
   * integrity, tag_lost, timeout, cancelled, not_payable, card_blocked,
   * internal, or a
   * newer code: show `message` to the user. */
  code: string;
  message: string;
}

/** The outcome of a session, from the server's `result` message. */
export interface SessionResult {
  ok: boolean;
  /** "topup" or "balance". */
  kind: string;
  /** Wire field `session_id`. */
  sessionId: string;
  /** Top-up only (wire `topup_id`). */
  topupId?: string;
  /** Top-up status after this session: applied, in_doubt, pending, failed ... */
  status?: string;
  /** Amount of the top-up, minor units. */
  amount?: number;
  currency?: string;
  /** Card balance after the session, minor units, when known. */
  balance?: number;
  /** Balance lookup only (wire `card_uid`). */
  cardUid?: string;
  records?: ResultRecord[];
  /** Set when ok is false. */
  error?: ResultError;
}

/** `result`: the final outcome; the server closes after it. */
export interface ResultMessage extends SessionResult {
  type: "result";
}

/** A message type this version does not know: ignored by contract. */
export interface UnknownMessage {
  type: "unknown";
  /** The type the server sent. */
  wireType: string;
}

/** Every decoded server message. */
export type ServerMessage = ReadyMessage | TransceiveMessage | PromptMessage | ResultMessage | UnknownMessage;

/** Outcome of decoding one frame: a message, or why it was refused. */
export type Decoded = { ok: true; message: ServerMessage } | { ok: false; error: string };

/**
 * Number of UTF-8 bytes of s, counted without allocating (TextEncoder is
 * missing on some React Native engines).
 */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

/** Thrown inside the decoder only; decodeServerMessage turns it into a result. */
class Invalid extends Error {}

type Obj = Record<string, unknown>;

function fail(msg: string): never {
  throw new Invalid(msg);
}

function isObject(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function clip(s: string): string {
  return s.length > 32 ? s.slice(0, 32) + "…" : s;
}

function reqString(o: Obj, k: string): string {
  const v = o[k];
  if (typeof v !== "string") fail(`${k} must be a string`);
  return v;
}

/** An optional field: absent and null both mean "not given". */
function optString(o: Obj, k: string): string | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") fail(`${k} must be a string`);
  return v;
}

function optNumber(o: Obj, k: string, integer: boolean): number | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || (integer && !Number.isSafeInteger(v))) {
    fail(`${k} must be ${integer ? "an integer" : "a number"}`);
  }
  return v;
}

function decodeReady(o: Obj): ReadyMessage {
  const m: ReadyMessage = { type: "ready", sessionId: reqString(o, "session_id"), kind: reqString(o, "kind") };
  const p = optString(o, "prompt");
  if (p !== undefined) m.prompt = p;
  return m;
}

function decodeTransceive(o: Obj): TransceiveMessage {
  const id = o.id;
  if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 1) fail("id must be a positive integer");
  const list = o.capdus;
  if (!Array.isArray(list)) fail("capdus must be a list");
  if (list.length === 0 || list.length > MAX_CAPDUS) fail(`${list.length} command APDUs (want 1..${MAX_CAPDUS})`);
  const capdus = list.map((c, i): CommandAPDU => {
    if (!isObject(c)) fail(`command APDU ${i} is not an object`);
    const hex = c.apdu;
    if (typeof hex !== "string") fail(`command APDU ${i}: apdu must be a hex string`);
    const apdu = fromHex(hex);
    if (!apdu) fail(`command APDU ${i}: bad hex`);
    if (apdu.length < 4 || apdu.length > MAX_CAPDU_BYTES) fail(`command APDU ${i} has ${apdu.length} bytes`);
    const ex = c.expect;
    const expect: number[] = [];
    if (ex !== undefined && ex !== null) {
      if (!Array.isArray(ex)) fail(`command APDU ${i}: expect must be a list`);
      if (ex.length > MAX_EXPECT) fail(`command APDU ${i}: ${ex.length} expected status words`);
      for (const sw of ex) {
        const b = typeof sw === "string" && sw.length === 4 ? fromHex(sw) : undefined;
        if (!b) fail(`command APDU ${i}: status word ${clip(JSON.stringify(sw) ?? "")} is not 4 hex digits`);
        expect.push((b[0] << 8) | b[1]);
      }
    }
    return { apdu, expect };
  });
  return { type: "transceive", id, capdus };
}

function decodePrompt(o: Obj): PromptMessage {
  const m: PromptMessage = { type: "prompt", text: reqString(o, "text") };
  const p = optNumber(o, "progress", false);
  if (p !== undefined) m.progress = Math.min(1, Math.max(0, p));
  return m;
}

function decodeResult(o: Obj): ResultMessage {
  const ok = o.ok;
  if (typeof ok !== "boolean") fail("ok must be true or false");
  const m: ResultMessage = { type: "result", ok, kind: reqString(o, "kind"), sessionId: reqString(o, "session_id") };
  const strs: [keyof SessionResult, string][] = [
    ["topupId", "topup_id"],
    ["status", "status"],
    ["currency", "currency"],
    ["cardUid", "card_uid"],
  ];
  for (const [key, wire] of strs) {
    const v = optString(o, wire);
    if (v !== undefined) (m as unknown as Obj)[key] = v;
  }
  const amount = optNumber(o, "amount", true);
  if (amount !== undefined) m.amount = amount;
  const balance = optNumber(o, "balance", true);
  if (balance !== undefined) m.balance = balance;
  if (o.records !== undefined && o.records !== null) {
    if (!Array.isArray(o.records)) fail("records must be a list");
    m.records = o.records.map((r, i): ResultRecord => {
      if (!isObject(r)) fail(`record ${i} is not an object`);
      const rec: ResultRecord = {
        kind: reqString(r, "kind"),
        timestamp: optNumber(r, "timestamp", true) ?? 0,
        amount: optNumber(r, "amount", true) ?? 0,
      };
      const raw = optString(r, "raw");
      if (raw !== undefined) rec.raw = raw;
      return rec;
    });
  }
  if (o.error !== undefined && o.error !== null) {
    if (!isObject(o.error)) fail("error must be an object");
    m.error = { code: reqString(o.error, "code"), message: optString(o.error, "message") ?? "" };
  }
  if (!m.ok && !m.error) m.error = { code: "unknown", message: "The session failed." };
  return m;
}

/**
 * Decodes one frame from the server. A frame over 16 KiB, bad JSON, a
 * non-object, a missing type or a known type with wrong field types is
 * refused; unknown fields are ignored and unknown types come back as
 * `{type: "unknown"}` for the caller to ignore.
 */
export function decodeServerMessage(frame: string): Decoded {
  if (frame.length > MAX_FRAME || utf8Length(frame) > MAX_FRAME) {
    return { ok: false, error: `frame of ${utf8Length(frame)} bytes exceeds ${MAX_FRAME}` };
  }
  let v: unknown;
  try {
    v = JSON.parse(frame);
  } catch (e) {
    return { ok: false, error: `bad JSON: ${(e as Error).message}` };
  }
  if (!isObject(v)) return { ok: false, error: "frame is not a JSON object" };
  const type = v.type;
  if (typeof type !== "string" || type === "") return { ok: false, error: "message without a type" };
  try {
    switch (type) {
      case "ready":
        return { ok: true, message: decodeReady(v) };
      case "transceive":
        return { ok: true, message: decodeTransceive(v) };
      case "prompt":
        return { ok: true, message: decodePrompt(v) };
      case "result":
        return { ok: true, message: decodeResult(v) };
      default:
        return { ok: true, message: { type: "unknown", wireType: type } };
    }
  } catch (e) {
    if (e instanceof Invalid) return { ok: false, error: `${type}: ${e.message}` };
    return { ok: false, error: `${type}: ${String(e)}` };
  }
}
