// gcl from Node.js with the standard NATS client (npm `nats`): acquire, wait, renew, release.
//
//     cd examples/node && npm ci
//     node acquire_release.mjs gpu:gpu-1 --hold 2          # GCL_NATS_URL, GCL_PREFIX as for gcl
//
// Everything here is docs/protocol.md (v3), nothing else: JSON requests on `{prefix}.{op}` by
// NATS request/reply, a `Reply` envelope back, and notices pushed to our own inbox. It prints
// one JSON object per step on stdout. Exit 0 done, 1 refused, 2 no coordinator, 3 lease lost.
//
// Credentials: GCL_NATS_USER / GCL_NATS_PASSWORD / GCL_NATS_INBOX_PREFIX, or
// GCL_NATS_CREDENTIALS=path/to/worker.env (a file from `gcl auth init`, or .gcl/auth/worker.env
// of `gcl up`), or none for a NATS without users.

import { connect, createInbox } from "nats";
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";

const PROTOCOL_VERSION = 3;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function say(step, fields = {}) {
  process.stdout.write(JSON.stringify({ step, ...fields }) + "\n");
}

class Refused extends Error {
  constructor(body) {
    super(`${body.code}: ${body.message}`);
    this.code = body.code; // stable: switch on it (invalid_request, forbidden, timeout, ...)
    this.field = body.field;
  }
}

function settings() {
  const env = { ...process.env };
  if (env.GCL_NATS_CREDENTIALS) {
    for (const line of readFileSync(env.GCL_NATS_CREDENTIALS, "utf8").split("\n")) {
      const match = /^\s*(GCL_[A-Z_]+)=(.*)$/.exec(line);
      if (match && env[match[1]] === undefined) env[match[1]] = match[2].trim();
    }
  }
  return {
    servers: (env.GCL_NATS_URL || "nats://127.0.0.1:4222").split(","),
    prefix: env.GCL_PREFIX || "gcl",
    user: env.GCL_NATS_USER,
    pass: env.GCL_NATS_PASSWORD,
    inboxPrefix: env.GCL_NATS_INBOX_PREFIX || "_INBOX",
  };
}

function parseArgs(argv) {
  const args = { names: [], occupy: 1, ttl: 30, hold: 1 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (["--occupy", "--ttl", "--hold"].includes(flag)) args[flag.slice(2)] = Number(argv[++i]);
    else args.names.push(flag);
  }
  if (args.names.length === 0) throw new Error("give at least one limit name");
  return args;
}

// One request/reply: the payload is JSON with `v`; the answer a Reply {v, ok, result, error}.
async function call(nc, prefix, operation, request, timeout = 5000) {
  const message = await nc.request(
    `${prefix}.${operation}`,
    encoder.encode(JSON.stringify({ v: PROTOCOL_VERSION, ...request })),
    { timeout },
  );
  const reply = JSON.parse(decoder.decode(message.data));
  if (!reply.ok) throw new Refused(reply.error);
  return reply.result;
}

// Notices on our own inbox: WaitNotice (status granted / failed) or LostNotice (status lost).
function listen(nc, notify) {
  const waiting = new Map(); // request_id -> resolve
  const lost = new Map(); // lease_id -> notice
  let wake = () => {};
  const anyLoss = new Promise((resolve) => (wake = resolve));
  const subscription = nc.subscribe(notify, {
    callback: (error, message) => {
      if (error) return;
      const notice = JSON.parse(decoder.decode(message.data));
      if (notice.status === "lost") {
        lost.set(notice.lease_id, notice);
        say("lost", { lease_id: notice.lease_id, reason: notice.reason, actor: notice.actor });
        wake(); // stop using the slots now, not at the next renewal
      } else {
        waiting.get(notice.request_id)?.(notice);
      }
    },
  });
  return { waiting, lost, anyLoss, subscription };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function acquire(nc, prefix, notices, request) {
  const noticed = new Promise((resolve) => notices.waiting.set(request.request_id, resolve));
  let result = await call(nc, prefix, "acquire", request);
  if (result.status === "granted") return result;
  say("queued", { positions: result.positions });
  const every = (result.keepalive_seconds || 2) * 1000;
  const ref = { request_id: request.request_id, secret: request.secret };
  for (let round = 0; ; round++) {
    const notice = await Promise.race([noticed, sleep(every).then(() => null)]);
    if (notice?.status === "granted") return notice;
    if (notice?.status === "failed") throw new Refused({ code: notice.error_code, message: notice.error_message });
    const status = await call(nc, prefix, "wait.keepalive", ref); // "I am still here"
    if (status.status === "granted") return status;
    if (status.status === "unknown") {
      result = await call(nc, prefix, "acquire", request); // it restarted: ask again, same id
      if (result.status === "granted") return result;
    }
    if (round === 0) {
      const why = await call(nc, prefix, "wait.inspect", ref); // who holds what we wait for
      say("waiting", { standings: why.standings ?? [] });
    }
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const config = settings();
  const nc = await connect({
    servers: config.servers,
    user: config.user,
    pass: config.pass,
    inboxPrefix: config.inboxPrefix,
    name: "gcl-node-example",
  });
  try {
    // `notify` must lie under our own inbox prefix: the coordinator checks that its parent is
    // a prefix of the request's reply subject (nc.request replies under `${inboxPrefix}.`).
    const notify = createInbox(config.inboxPrefix);
    const notices = listen(nc, notify);
    await nc.flush(); // the subscription is in place before anyone could notify it
    const request = {
      request_id: randomUUID().replaceAll("-", ""),
      secret: randomBytes(24).toString("base64url"), // ours alone: renew/release need it
      names: args.names,
      occupy: args.occupy,
      lease_ttl: args.ttl,
      holder: { worker_id: process.env.WORKER_ID || hostname(), host: hostname(), pid: process.pid, label: "node example" },
      notify,
    };
    const granted = await acquire(nc, config.prefix, notices, request);
    const lease = granted.lease;
    if (!lease) {
      say("granted", { lease_id: null, missing: granted.missing }); // no such limits: nothing held
      return 0;
    }
    say("granted", { lease_id: lease.lease_id, fencing_tokens: lease.fencing_tokens, missing: granted.missing });

    const held = { lease_id: lease.lease_id, secret: request.secret };
    const deadline = Date.now() + args.hold * 1000;
    while (Date.now() < deadline && !notices.lost.has(lease.lease_id)) {
      await Promise.race([sleep(Math.min(deadline - Date.now(), (lease.ttl * 1000) / 3)), notices.anyLoss]);
      if (notices.lost.has(lease.lease_id)) break;
      const renewed = await call(nc, config.prefix, "renew", held); // every ttl / 3
      say("renewed", { expires_in: renewed.expires_in });
    }
    if (notices.lost.has(lease.lease_id)) return 3;
    const released = await call(nc, config.prefix, "release", held);
    say("released", { lease_id: released.lease_id, released: released.released });
    notices.subscription.unsubscribe();
    return 0;
  } finally {
    await nc.drain();
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    const unreachable = error?.code === "503" || error?.code === "TIMEOUT" || error?.code === "CONNECTION_REFUSED";
    say("error", { code: error?.code ?? null, message: String(error?.message ?? error) });
    process.exit(error instanceof Refused ? (error.code === "lease_lost" ? 3 : 1) : unreachable ? 2 : 1);
  },
);
