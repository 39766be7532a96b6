/**
 * @desfire-relay/bridge: a phone or web bridge for the desfire-relay.v1
 * protocol. The bridge is an untrusted pipe: it moves APDUs between the
 * relay server and a MIFARE DESFire card and never holds keys; the server
 * checks every byte it relays.
 *
 * Start with runSession; the rest is exported for apps and tests that
 * need the pieces.
 */

export { runSession, VERSION } from "./session.js";
export type { SessionOptions, SessionReport, WebSocketFactory, WebSocketLike } from "./session.js";
export { runBatch, isExpected, classifyTransceiveError } from "./transceive.js";
export type { AbortSignalLike, BatchOptions, BatchOutcome, ErrorClassifier, TransceiveContext, TransceiveFn } from "./transceive.js";
export {
  decodeServerMessage,
  utf8Length,
  SUBPROTOCOL,
  TOKEN_SUBPROTOCOL_PREFIX,
  MAX_FRAME,
  MAX_CAPDUS,
  MAX_CAPDU_BYTES,
  MAX_EXPECT,
} from "./messages.js";
export type {
  BridgeErrorCode,
  BridgeInfo,
  BridgeMessage,
  CancelMessage,
  CardInfo,
  CardMessage,
  CommandAPDU,
  Decoded,
  HelloMessage,
  PromptMessage,
  ReadyMessage,
  ResponsesMessage,
  ResultError,
  ResultMessage,
  ResultRecord,
  ServerMessage,
  SessionResult,
  TransceiveMessage,
  UnknownMessage,
  WireCard,
} from "./messages.js";
export { toHex, fromHex, swHex } from "./hex.js";
export {
  BridgeError,
  CancelledError,
  CardTimeoutError,
  ConnectionError,
  ProtocolError,
  SessionFailedError,
  SessionTimeoutError,
  TagLostError,
} from "./errors.js";
