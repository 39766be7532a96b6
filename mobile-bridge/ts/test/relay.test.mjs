// End-to-end tests against the real relay server (relayd, dev mode) and a
// simulated DESFire card served by simserve. They build both with
// `go build` unless RELAYD_BIN / SIMSERVE_BIN point at binaries.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";

import { ConnectionError, runSession } from "../dist/index.js";
import { Relay, SimCard, buildBinaries, tempDir } from "./helpers/sim.mjs";

/** Node's `ws` socket; headers only in header mode. */
const nodeSocket = (url, protocols, headers) => new WebSocket(url, protocols, headers ? { headers } : {});

let tmp, bins, relay;
const cards = [];
let nextUID = 0x10;

/** A fresh simulated card with its own UID (cards never share a lock). */
async function newCard(initial) {
  const uid = "04AB" + (nextUID++).toString(16).toUpperCase().padStart(2, "0") + "C3D4E5F6";
  const c = await SimCard.start(bins.simserve, { keys: relay.keys, uid, initial });
  cards.push(c);
  return c;
}

function session(token, card, extra = {}) {
  const prompts = [];
  const p = runSession({
    url: relay.bridgeURL,
    token,
    webSocket: nodeSocket,
    transceive: card.transceive,
    card: { uid: card.uid },
    bridge: { name: "ts-test", platform: "sim" },
    onPrompt: (text) => prompts.push(text),
    ...extra,
  });
  return { p, prompts };
}

before(async () => {
  tmp = await tempDir();
  bins = await buildBinaries(tmp.dir);
  relay = await Relay.start(bins.relayd, tmp.dir + "/data");
});

after(async () => {
  for (const c of cards) c.close();
  await relay?.stop();
  await tmp?.remove();
});

describe("top-up against relayd", () => {
  test("EV2 with batching: applied in 3 exchanges, balance right", async () => {
    const card = await newCard(1000);
    const t = await relay.createTopUp(500, card.uidHex);
    assert.equal(t.status, "pending");
    const { p, prompts } = session(t.bridge_token, card, { batch: true });
    const rep = await p;
    assert.equal(rep.result.ok, true, JSON.stringify(rep.result));
    assert.equal(rep.result.kind, "topup");
    assert.equal(rep.result.status, "applied");
    assert.equal(rep.result.topupId, t.id);
    assert.equal(rep.result.amount, 500);
    assert.equal(rep.result.balance, 1500);
    assert.equal(rep.exchanges, 3);
    assert.equal(rep.commands, card.apdus);
    assert.ok(rep.commands > rep.exchanges, "batches carry several APDUs");
    assert.ok(prompts.length > 0, "ready carries a prompt");
    assert.equal(await card.value(), 1500);
    const g = await relay.api("GET", `/v1/topups/${t.id}`);
    assert.equal(g.status, 200);
    assert.equal(g.body.status, "applied");
    assert.equal(g.body.balance_after, 1500);

    // The token was single-use: a second session is refused before the upgrade.
    await assert.rejects(session(t.bridge_token, card).p, (e) => e instanceof ConnectionError && /401/.test(e.message));
  });

  test("without batching: one APDU per exchange, token in a header", async () => {
    const card = await newCard(0);
    const t = await relay.createTopUp(250, card.uidHex);
    const rep = await session(t.bridge_token, card, { batch: false, tokenIn: "header" }).p;
    assert.equal(rep.result.ok, true, JSON.stringify(rep.result));
    assert.equal(rep.result.status, "applied");
    assert.equal(rep.result.balance, 250);
    assert.equal(rep.exchanges, rep.commands, "one command per transceive");
    assert.ok(rep.exchanges > 3, `${rep.exchanges} exchanges`);
    assert.equal(await card.value(), 250);
    const g = await relay.api("GET", `/v1/topups/${t.id}`);
    assert.equal(g.body.status, "applied");
  });

  test("balance lookup", async () => {
    const card = await newCard(4321);
    const s = await relay.api("POST", "/v1/sessions", { kind: "balance" });
    assert.equal(s.status, 201);
    const rep = await session(s.body.bridge_token, card).p;
    assert.equal(rep.result.ok, true, JSON.stringify(rep.result));
    assert.equal(rep.result.kind, "balance");
    assert.equal(rep.result.balance, 4321);
    assert.equal(rep.result.cardUid, card.uidHex);
    assert.equal(rep.result.sessionId, s.body.session_id);
    const g = await relay.api("GET", `/v1/sessions/${s.body.session_id}`);
    assert.equal(g.status, 200);
    assert.equal(g.body.balance, 4321);
  });
});

describe("tag lost and retry", () => {
  test("card removed before the commit batch: failed, a retry applies exactly once", async () => {
    const card = await newCard(200);
    const t = await relay.createTopUp(100, card.uidHex);
    await card.ok("remove-after 2");
    const first = await session(t.bridge_token, card).p;
    assert.equal(first.result.ok, false);
    assert.equal(first.result.error.code, "tag_lost");
    assert.equal(first.result.status, "failed", "lost before any credit was sent: proven not applied");
    await card.ok("tap");
    const tk = await relay.api("POST", `/v1/topups/${t.id}/bridge-tokens`);
    assert.equal(tk.status, 201, JSON.stringify(tk.body));
    const second = await session(tk.body.bridge_token, card).p;
    assert.equal(second.result.status, "applied", JSON.stringify(second.result));
    assert.equal(await card.value(), 300);
  });

  test("card removed mid-session, second tap applies exactly once", async () => {
    const card = await newCard(1000);
    const t = await relay.createTopUp(700, card.uidHex);
    await card.ok("remove-after 4");
    const first = await session(t.bridge_token, card).p;
    assert.equal(first.result.ok, false);
    assert.equal(first.result.error.code, "tag_lost", JSON.stringify(first.result));
    assert.ok(["failed", "in_doubt"].includes(first.result.status), first.result.status);
    assert.equal(card.apdus, 5, "4 answered, the 5th found the card gone");
    const mid = await relay.api("GET", `/v1/topups/${t.id}`);
    assert.notEqual(mid.body.status, "applied");
    assert.equal(await card.value(), 1000, "nothing credited yet");

    await card.ok("tap");
    const tk = await relay.api("POST", `/v1/topups/${t.id}/bridge-tokens`);
    assert.equal(tk.status, 201, JSON.stringify(tk.body));
    const second = await session(tk.body.bridge_token, card).p;
    assert.equal(second.result.ok, true, JSON.stringify(second.result));
    assert.equal(second.result.status, "applied");
    assert.equal(second.result.balance, 1700);
    assert.equal(await card.value(), 1700, "credited once");
    const g = await relay.api("GET", `/v1/topups/${t.id}`);
    assert.equal(g.body.status, "applied");
  });

  test("torn after commit: in doubt, resolved on the next tap without a second credit", async () => {
    const card = await newCard(1000);
    const t = await relay.createTopUp(300, card.uidHex);
    await card.ok("tear-after-commit");
    const first = await session(t.bridge_token, card).p;
    assert.equal(first.result.ok, false);
    assert.equal(first.result.error.code, "tag_lost", JSON.stringify(first.result));
    assert.equal(first.result.status, "in_doubt");
    assert.equal(await card.value(), 1300, "the commit was durable");

    await card.ok("tap");
    const tk = await relay.api("POST", `/v1/topups/${t.id}/bridge-tokens`);
    assert.equal(tk.status, 201, JSON.stringify(tk.body));
    const second = await session(tk.body.bridge_token, card).p;
    assert.equal(second.result.ok, true, JSON.stringify(second.result));
    assert.equal(second.result.status, "applied");
    assert.ok(second.result.balance === undefined || second.result.balance === 1300, JSON.stringify(second.result));
    assert.equal(await card.value(), 1300, "not credited a second time");
    const g = await relay.api("GET", `/v1/topups/${t.id}`);
    assert.equal(g.body.status, "applied");
    assert.equal(g.body.attempts, 2);
  });
});

describe("re-tap within a session", () => {
  test("torn after commit, card presented again: the same session ends applied, one credit", async () => {
    const card = await newCard(1000);
    const t = await relay.createTopUp(400, card.uidHex);
    await card.ok("tear-after-commit");
    let retaps = 0;
    const { p, prompts } = session(t.bridge_token, card, {
      retap: async () => {
        retaps++;
        await card.ok("tap");
        return { uid: card.uid };
      },
    });
    const rep = await p;
    assert.equal(rep.result.ok, true, JSON.stringify(rep.result));
    assert.equal(rep.result.status, "applied");
    assert.equal(retaps, 1);
    assert.ok(prompts.some((x) => /again/i.test(x)), JSON.stringify(prompts));
    assert.equal(await card.value(), 1400, "exactly one credit");
    const g = await relay.api("GET", `/v1/topups/${t.id}`);
    assert.equal(g.body.status, "applied");
    assert.equal(g.body.attempts, 1, "one session");
  });
});

describe("cancel", () => {
  test("AbortSignal during the card work: result cancelled, nothing credited", async () => {
    const card = await newCard(100);
    const t = await relay.createTopUp(50, card.uidHex);
    const ac = new AbortController();
    let n = 0;
    const rep = await session(t.bridge_token, card, {
      transceive: async (apdu, ctx) => {
        if (++n === 2) ac.abort("user pressed cancel");
        return card.transceive(apdu, ctx);
      },
      signal: ac.signal,
    }).p;
    assert.equal(rep.result.ok, false);
    assert.equal(rep.result.error.code, "cancelled", JSON.stringify(rep.result));
    assert.equal(await card.value(), 100);
    const g = await relay.api("GET", `/v1/topups/${t.id}`);
    assert.notEqual(g.body.status, "applied");
  });

  test("AbortSignal while waiting for the card", async () => {
    const card = await newCard(100);
    const t = await relay.createTopUp(50, card.uidHex);
    const ac = new AbortController();
    const rep = await session(t.bridge_token, card, {
      card: new Promise(() => {}), // the user never taps
      onReady: () => ac.abort(),
      signal: ac.signal,
    }).p;
    assert.equal(rep.result.ok, false);
    assert.equal(rep.result.error.code, "cancelled");
    assert.equal(rep.exchanges, 0);
  });
});
