// runSession against scripted servers: a fake socket (the test plays the
// server message by message) and a real `ws` server for what only a real
// socket shows. Malformed server behaviour must end the session with a
// clear error, never an uncaught exception or a hang.

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket, { WebSocketServer } from "ws";

import {
  BridgeError,
  CancelledError,
  ConnectionError,
  MAX_FRAME,
  ProtocolError,
  SessionFailedError,
  SessionTimeoutError,
  TagLostError,
  fromHex,
  runSession,
  toHex,
} from "../dist/index.js";
import { fakeFactory } from "./helpers/fakesocket.mjs";

const UID = fromHex("04A1B2C3D4E5F6");
const READY = { type: "ready", session_id: "s1", kind: "balance", prompt: "Tap your card" };
const RESULT = { type: "result", ok: true, kind: "balance", session_id: "s1", balance: 5, currency: "EUR" };

/** A card that answers 9100 to everything and logs the commands. */
function okCard() {
  const sent = [];
  const fn = async (apdu) => {
    sent.push(toHex(apdu));
    return fromHex("9100");
  };
  return { fn, sent };
}

/**
 * Runs a session whose server plays `script`: on each message from the
 * bridge, script(msg, socket) may answer. Returns {promise, factory}.
 */
function scripted(script, extra = {}) {
  const factory = fakeFactory({ onSend: script, ...(extra.socket ?? {}) });
  const card = extra.card ?? okCard();
  const promise = runSession({
    url: "wss://relay.test/v1/bridge",
    token: "tok en/1",
    webSocket: factory,
    transceive: card.fn,
    card: { uid: UID },
    commandTimeoutMs: 1000,
    sessionTimeoutMs: 5000,
    ...extra.options,
  });
  return { promise, factory, card };
}

/** Script: ready after hello, then send `frames` one by one. */
function afterHello(...frames) {
  return (msg, s) => {
    if (msg.type !== "hello") return;
    s.serverSend(READY);
    for (const f of frames) s.serverSend(f);
  };
}

describe("happy paths on a fake socket", () => {
  test("hello, batch rules, responses with the same id, result", async () => {
    const prompts = [];
    const seen = [];
    const { promise, factory } = scripted(
      (msg, s) => {
        seen.push(msg);
        if (msg.type === "hello") {
          s.serverSend(READY);
          s.serverSend({ type: "prompt", text: "Hold still", progress: 0.25 });
          s.serverSend({ type: "transceive", id: 1, capdus: [{ apdu: "905A00000301449900" }, { apdu: "90AA000000", expect: ["91AF"] }, { apdu: "90AF000000" }, { apdu: "90C7000000" }] });
        } else if (msg.type === "responses" && msg.id === 1) {
          s.serverSend({ type: "transceive", id: 2, capdus: [{ apdu: "9060000000" }] });
        } else if (msg.type === "responses" && msg.id === 2) {
          s.serverSend(RESULT);
        }
      },
      {
        card: {
          // AA answers 91AF as expected; AF then answers 91AE: stop before C7.
          fn: async (apdu) => fromHex({ AA: "112291AF", AF: "91AE" }[toHex(apdu.subarray(1, 2))] ?? "9100"),
        },
        options: { onPrompt: (t, p) => prompts.push([t, p]) },
      },
    );
    const rep = await promise;
    assert.equal(rep.result.ok, true);
    assert.equal(rep.result.balance, 5);
    assert.equal(rep.exchanges, 2);
    assert.equal(rep.commands, 4);
    assert.equal(factory.url, "wss://relay.test/v1/bridge?token=tok%20en%2F1");
    assert.deepEqual(factory.protocols, ["desfire-relay.v1"]);
    assert.equal(factory.headers, undefined);
    const hello = seen[0];
    assert.equal(hello.type, "hello");
    assert.deepEqual(hello.features, ["batch"]);
    assert.deepEqual(hello.card, { uid: "04A1B2C3D4E5F6" });
    const r1 = seen.find((m) => m.type === "responses" && m.id === 1);
    assert.deepEqual(r1.rapdus, ["9100", "112291AF", "91AE"]);
    assert.equal(r1.error, undefined);
    assert.deepEqual(prompts, [["Tap your card", undefined], ["Hold still", 0.25]]);
    assert.deepEqual(factory.socket.closedWith, { code: 1000, reason: undefined });
  });

  test("token in a header, no batch, card arriving later, unknown type ignored", async () => {
    let resolveCard;
    const seen = [];
    const { promise, factory } = scripted(
      (msg, s) => {
        seen.push(msg);
        if (msg.type === "hello") {
          s.serverSend({ type: "telemetry", data: [1, 2, 3] });
          s.serverSend({ ...READY, future_field: true });
          resolveCard({ uid: fromHex("08A1B2C3"), ats: fromHex("0675778102") });
        } else if (msg.type === "card") {
          s.serverSend(RESULT);
        }
      },
      { options: { tokenIn: "header", batch: false, card: new Promise((r) => (resolveCard = r)) } },
    );
    const rep = await promise;
    assert.equal(rep.result.ok, true);
    assert.equal(factory.url, "wss://relay.test/v1/bridge");
    assert.deepEqual(factory.headers, { Authorization: "Bearer tok en/1" });
    assert.deepEqual(seen[0].features, []);
    assert.equal(seen[0].card, undefined);
    assert.deepEqual(seen[1], { type: "card", uid: "08A1B2C3", ats: "0675778102" });
  });

  test("ok: false resolves, or rejects with throwOnFailure", async () => {
    const failed = { type: "result", ok: false, kind: "topup", session_id: "s1", status: "pending", error: { code: "card_busy", message: "Busy" } };
    const a = await scripted(afterHello(failed)).promise;
    assert.equal(a.result.ok, false);
    assert.equal(a.result.error.code, "card_busy");
    await assert.rejects(scripted(afterHello(failed), { options: { throwOnFailure: true } }).promise, (e) => {
      assert.ok(e instanceof SessionFailedError);
      assert.equal(e.errorCode, "card_busy");
      assert.equal(e.report.result.status, "pending");
      return true;
    });
  });

  test("tag lost: responses carry the error, retap sends card", async () => {
    const seen = [];
    let n = 0;
    const { promise } = scripted(
      (msg, s) => {
        seen.push(msg);
        if (msg.type === "hello") {
          s.serverSend(READY);
          s.serverSend({ type: "transceive", id: 1, capdus: [{ apdu: "90600000" }, { apdu: "90600000" }, { apdu: "90600000" }] });
        } else if (msg.type === "card") {
          s.serverSend(RESULT);
        }
      },
      {
        card: {
          fn: async () => {
            if (++n === 2) throw new TagLostError();
            return fromHex("9100");
          },
        },
        options: { retap: async () => ({ uid: UID }) },
      },
    );
    const rep = await promise;
    assert.equal(rep.result.ok, true);
    const r = seen.find((m) => m.type === "responses");
    assert.deepEqual(r, { type: "responses", id: 1, rapdus: ["9100"], error: "tag_lost" });
    assert.deepEqual(seen.at(-1), { type: "card", uid: "04A1B2C3D4E5F6" });
    assert.deepEqual(seen[0].features, ["batch", "retap"]);
  });

  test("an app callback that throws does not end the session", async () => {
    const rep = await scripted(afterHello({ type: "prompt", text: "x" }, RESULT), {
      options: {
        onPrompt: () => {
          throw new Error("UI broke");
        },
      },
    }).promise;
    assert.equal(rep.result.ok, true);
  });
});

describe("malformed server behaviour", () => {
  const cases = [
    { name: "bad JSON", frames: ['{"type":"transceive",'], err: ProtocolError, re: /bad JSON/ },
    { name: "JSON array", frames: ["[]"], err: ProtocolError, re: /not a JSON object/ },
    { name: "missing type", frames: ['{"id":1}'], err: ProtocolError, re: /without a type/ },
    { name: "transceive bad hex", frames: [{ type: "transceive", id: 1, capdus: [{ apdu: "90ZZ0000" }] }], err: ProtocolError, re: /bad hex/ },
    { name: "transceive odd hex", frames: [{ type: "transceive", id: 1, capdus: [{ apdu: "906000000" }] }], err: ProtocolError, re: /bad hex/ },
    { name: "transceive wrong types", frames: [{ type: "transceive", id: "1", capdus: "906000" }], err: ProtocolError, re: /id must be/ },
    { name: "bad expect", frames: [{ type: "transceive", id: 1, capdus: [{ apdu: "90600000", expect: [9100] }] }], err: ProtocolError, re: /4 hex digits/ },
    { name: "result wrong type", frames: [{ type: "result", ok: 1, kind: "topup", session_id: "s" }], err: ProtocolError, re: /ok must be/ },
    { name: "oversized frame", frames: [`{"type":"prompt","text":"${"x".repeat(MAX_FRAME)}"}`], err: ProtocolError, re: /exceeds 16384/ },
    { name: "binary frame", frames: [new ArrayBuffer(4)], err: ProtocolError, re: /binary frame/ },
    {
      name: "second transceive before the first is answered",
      frames: [{ type: "transceive", id: 1, capdus: [{ apdu: "90600000" }] }, { type: "transceive", id: 2, capdus: [{ apdu: "90600000" }] }],
      err: ProtocolError,
      re: /unanswered/,
    },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const { promise, factory } = scripted(afterHello(...c.frames));
      await assert.rejects(promise, (e) => {
        assert.ok(e instanceof c.err, `${e.name}: ${e.message}`);
        assert.ok(e instanceof BridgeError);
        assert.match(e.message, c.re);
        return true;
      });
      assert.deepEqual(factory.socket.closedWith, { code: 1008, reason: "bad server message" });
    });
  }

  test("browser sockets refuse close(1008): closed with 1000 instead", async () => {
    const { promise, factory } = scripted(afterHello("{bad"), { socket: { browserClose: true } });
    await assert.rejects(promise, ProtocolError);
    assert.deepEqual(factory.socket.closedWith, { code: 1000, reason: undefined });
  });

  test("server closes before a result", async () => {
    const { promise } = scripted((msg, s) => {
      if (msg.type === "hello") {
        s.serverSend(READY);
        s.serverClose(1006);
      }
    });
    await assert.rejects(promise, (e) => e instanceof ConnectionError && e.closeCode === 1006 && /before a result|dropped/.test(e.message));
  });

  test("server closes with 4408 (too slow)", async () => {
    const { promise } = scripted((msg, s) => msg.type === "hello" && s.serverClose(4408, "too slow"));
    await assert.rejects(promise, (e) => e instanceof ConnectionError && e.closeCode === 4408 && /too slow/.test(e.message));
  });

  test("connection refused", async () => {
    const { promise } = scripted(() => {}, { socket: { openFails: true } });
    await assert.rejects(promise, (e) => e instanceof ConnectionError && /ECONNREFUSED/.test(e.message));
  });

  test("factory throws", async () => {
    const p = runSession({
      url: "ws://x",
      token: "t",
      webSocket: () => {
        throw new Error("no sockets here");
      },
      transceive: okCard().fn,
      card: { uid: UID },
    });
    await assert.rejects(p, (e) => e instanceof ConnectionError && /no sockets here/.test(e.message));
  });

  test("wrong subprotocol selected", async () => {
    const { promise } = scripted(() => {}, { socket: { protocol: "other.v9" } });
    await assert.rejects(promise, (e) => e instanceof ProtocolError && /subprotocol/.test(e.message));
  });

  test("bad options reject, never throw", async () => {
    const base = { url: "ws://x", token: "t", webSocket: fakeFactory(), transceive: okCard().fn, card: { uid: UID } };
    await assert.rejects(runSession({ ...base, token: "" }), TypeError);
    await assert.rejects(runSession({ ...base, card: { uid: new Uint8Array(5) } }), /4, 7 or 10 bytes/);
    await assert.rejects(runSession({ ...base, webSocket: undefined }), TypeError);
  });

  test("session timeout sends cancel and rejects", async () => {
    const { promise, factory } = scripted(afterHello(), { options: { sessionTimeoutMs: 30 } });
    await assert.rejects(promise, SessionTimeoutError);
    assert.deepEqual(factory.socket.sent.at(-1), { type: "cancel", reason: "timeout" });
  });

  test("abort: cancel is sent, the server's result resolves the session", async () => {
    const ac = new AbortController();
    const { promise, factory } = scripted(
      (msg, s) => {
        if (msg.type === "hello") {
          s.serverSend(READY);
          ac.abort();
        }
        if (msg.type === "cancel") s.serverSend({ type: "result", ok: false, kind: "balance", session_id: "s1", error: { code: "cancelled", message: "Cancelled." } });
      },
      { options: { signal: ac.signal } },
    );
    const rep = await promise;
    assert.equal(rep.result.error.code, "cancelled");
    assert.equal(factory.socket.sent.at(-1).type, "cancel");
  });

  test("abort without an answer: CancelledError after the grace period", async () => {
    const ac = new AbortController();
    const { promise } = scripted(
      (msg, s) => {
        if (msg.type === "hello") {
          s.serverSend(READY);
          ac.abort("gave up");
        }
      },
      { options: { signal: ac.signal, cancelGraceMs: 20 } },
    );
    await assert.rejects(promise, CancelledError);
  });

  test("already aborted: no connection at all", async () => {
    const factory = fakeFactory();
    const p = runSession({ url: "ws://x", token: "t", webSocket: factory, transceive: okCard().fn, card: { uid: UID }, signal: AbortSignal.abort() });
    await assert.rejects(p, CancelledError);
    assert.equal(factory.socket, undefined);
  });
});

describe("malformed server behaviour on a real socket (ws)", () => {
  const servers = [];
  after(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));

  /** A ws server that runs onHello(socket) after the bridge's hello. */
  async function serve(onHello) {
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: (p) => (p.has("desfire-relay.v1") ? "desfire-relay.v1" : false) });
    servers.push(wss);
    wss.on("connection", (ws) => {
      ws.once("message", () => onHello(ws));
      ws.on("error", () => {});
    });
    await new Promise((r) => wss.once("listening", r));
    return `ws://127.0.0.1:${wss.address().port}/v1/bridge`;
  }
  const node = (url, protocols, headers) => new WebSocket(url, protocols, headers ? { headers } : {});
  const start = (url) => runSession({ url, token: "t", webSocket: node, transceive: okCard().fn, card: { uid: UID }, sessionTimeoutMs: 5000 });

  test("oversized frame", async () => {
    const url = await serve((ws) => ws.send(JSON.stringify({ type: "prompt", text: "y".repeat(20000) })));
    await assert.rejects(start(url), (e) => e instanceof ProtocolError && /exceeds/.test(e.message));
  });

  test("bad JSON", async () => {
    const url = await serve((ws) => ws.send("not json"));
    await assert.rejects(start(url), ProtocolError);
  });

  test("binary frame", async () => {
    const url = await serve((ws) => ws.send(Buffer.from('{"type":"ready"}')));
    await assert.rejects(start(url), (e) => e instanceof ProtocolError && /binary/.test(e.message));
  });

  test("socket terminated early", async () => {
    const url = await serve((ws) => {
      ws.send(JSON.stringify(READY));
      setTimeout(() => ws.terminate(), 5);
    });
    await assert.rejects(start(url), (e) => e instanceof ConnectionError && e.closeCode === 1006);
  });

  test("nobody listening", async () => {
    const url = await serve(() => {});
    servers.at(-1).close();
    await new Promise((r) => setTimeout(r, 10));
    await assert.rejects(start(url), ConnectionError);
  });

  test("a full session over a real socket", async () => {
    const url = await serve((ws) => {
      ws.send(JSON.stringify(READY));
      ws.send(JSON.stringify({ type: "transceive", id: 1, capdus: [{ apdu: "90600000" }] }));
      ws.once("message", (m) => {
        const r = JSON.parse(m.toString());
        assert.deepEqual(r, { type: "responses", id: 1, rapdus: ["9100"] });
        ws.send(JSON.stringify(RESULT));
        ws.close(1000);
      });
    });
    const rep = await start(url);
    assert.equal(rep.result.ok, true);
    assert.equal(rep.exchanges, 1);
  });
});
