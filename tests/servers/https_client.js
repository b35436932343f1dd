// HTTPS client fixture (Node `https`, Node's own statically linked OpenSSL) for the beyla-rs
// integration tests (tests/tests/https.rs). Same interface as servers/https_client.py:
//
//   node https_client.js --base https://127.0.0.1:P --ca CA [--listen L] [--wait]
//                        [--new GET:/a,POST:/b] [--keepalive GET:/c,...]
//
// --new: one new connection per call (`agent: false`); --keepalive: all calls through one
// keep-alive agent with a single socket. POST/PUT send the 12-byte body "twelve bytes".
// Prints one JSON line: {"new": [[status, body_len], ...], "keepalive": [...],
// "keepalive_connections": K}.
'use strict';
const fs = require('fs');
const https = require('https');
const net = require('net');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const flag = (name) => process.argv.includes(name);

const base = arg('--base');
const ca = fs.readFileSync(arg('--ca'));
const listen = parseInt(arg('--listen', '0'), 10);
const wait = flag('--wait');
const calls = (spec) =>
  (spec || '')
    .split(',')
    .filter((s) => s)
    .map((item) => {
      const i = item.indexOf(':');
      if (i < 0) throw new Error(`bad call ${item} (want METHOD:PATH)`);
      return [item.slice(0, i), item.slice(i + 1)];
    });

function call(agent, method, path, sockets) {
  return new Promise((resolve, reject) => {
    const body = method === 'POST' || method === 'PUT' ? Buffer.from('twelve bytes') : null;
    const headers = body ? { 'Content-Length': body.length } : {};
    const req = https.request(new URL(base + path), { method, agent, ca, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve([res.statusCode, Buffer.concat(chunks).length]));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (sockets) req.on('socket', (s) => sockets.add(s));
    req.end(body || undefined);
  });
}

function readLine() {
  return new Promise((resolve) => {
    const onData = (d) => {
      if (d.toString().includes('\n')) {
        process.stdin.off('data', onData);
        process.stdin.pause();
        resolve();
      }
    };
    process.stdin.on('data', onData);
    process.stdin.on('end', resolve);
  });
}

async function main() {
  let listener = null;
  if (listen) {
    listener = net.createServer();
    await new Promise((resolve, reject) => {
      listener.once('error', reject);
      listener.listen(listen, '127.0.0.1', resolve);
    });
  }
  if (wait) await readLine();
  const res = { new: [], keepalive: [], keepalive_connections: 0 };
  for (const [m, p] of calls(arg('--new'))) res.new.push(await call(false, m, p));
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca });
  const sockets = new Set();
  for (const [m, p] of calls(arg('--keepalive'))) {
    res.keepalive.push(await call(agent, m, p, sockets));
  }
  res.keepalive_connections = sockets.size;
  agent.destroy();
  process.stdout.write(JSON.stringify(res) + '\n');
  if (wait) {
    process.stdin.resume();
    await new Promise((resolve) => process.stdin.on('end', resolve));
  }
  if (listener) listener.close();
}

main().catch((e) => {
  process.stderr.write(`https_client.js: ${e.stack || e}\n`);
  process.exit(1);
});
