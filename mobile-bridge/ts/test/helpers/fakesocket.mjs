// A scripted stand-in for a WebSocket: the test plays the server. It
// implements the WebSocketLike surface (readyState, protocol, send, close,
// on* handlers) and records what the bridge sent.

export class FakeSocket {
  constructor({ protocol = "desfire-relay.v1", onSend, openFails = false, browserClose = false } = {}) {
    this.browserClose = browserClose;
    this.readyState = 0;
    this.protocol = protocol;
    this.sent = [];
    this.closedWith = undefined;
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this.onclose = null;
    this.onSend = onSend;
    setTimeout(() => {
      if (openFails) {
        this.readyState = 3;
        this.onerror?.({ message: "connect ECONNREFUSED" });
        this.onclose?.({ code: 1006, reason: "" });
        return;
      }
      this.readyState = 1;
      this.onopen?.({});
    }, 0);
  }

  send(data) {
    if (this.readyState !== 1) throw new Error("not open");
    const msg = JSON.parse(data);
    this.sent.push(msg);
    // Answer asynchronously, as a network peer would.
    if (this.onSend) setTimeout(() => this.onSend(msg, this), 0);
  }

  close(code, reason) {
    if (this.readyState >= 2) return;
    if (this.browserClose && code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) {
      throw new Error(`InvalidAccessError: close code ${code}`);
    }
    this.readyState = 3;
    this.closedWith = { code, reason };
  }

  /** The server sends a text frame (or anything else, for binary frames). */
  serverSend(data) {
    if (this.readyState !== 1) return;
    this.onmessage?.({ data: typeof data === "string" || typeof data !== "object" || data instanceof ArrayBuffer ? data : JSON.stringify(data) });
  }

  /** The server closes the connection. */
  serverClose(code = 1006, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

/** A factory for runSession that hands out one FakeSocket and remembers the URL. */
export function fakeFactory(opts) {
  const f = (url, protocols, headers) => {
    f.url = url;
    f.protocols = protocols;
    f.headers = headers;
    f.socket = new FakeSocket(opts);
    return f.socket;
  };
  return f;
}
