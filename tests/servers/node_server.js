// Test HTTP/1.1 server (Node `http`) used by the beyla-rs integration tests.
// Same routes as servers/http_server.py. Usage: node node_server.js --port N [--tls CERT KEY]
// [--cluster WORKERS]
// `--cluster WORKERS` runs a `cluster` primary that forks WORKERS workers (Node's default
// round-robin scheduling on Linux: the primary accepts and passes each connection to a worker);
// every answer names the process that served it in `X-Served-By`.
// `--tls CERT KEY` serves HTTPS (`https.createServer`, Node's own OpenSSL). An https://
// $UPSTREAM_URL is verified against Node's CAs plus $NODE_EXTRA_CA_CERTS.
'use strict';
const cluster = require('cluster');
const fs = require('fs');
const http = require('http');
const https = require('https');

const portArg = process.argv.indexOf('--port');
const port = parseInt(process.argv[portArg + 1], 10);
const tlsArg = process.argv.indexOf('--tls');
const upstream = (process.env.UPSTREAM_URL || '').replace(/\/+$/, '');
const upstreamTls = upstream.startsWith('https:');
const agent = upstreamTls ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
const noBody = (code) => (code >= 100 && code < 200) || code === 204 || code === 304;

function reply(res, code, body, ctype) {
  if (noBody(code)) {
    res.writeHead(code);
    res.end();
    return;
  }
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(body);
  res.writeHead(code, { 'Content-Type': ctype || 'text/plain', 'Content-Length': buf.length });
  res.end(buf);
}

const handler = (req, res) => {
  res.setHeader('X-Served-By', String(process.pid));
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const u = new URL(req.url, 'http://localhost');
    let p = u.pathname;
    if (p === '/status' && u.searchParams.get('respond')) p = '/status/' + u.searchParams.get('respond');
    if (p === '/sleep' && u.searchParams.get('ms')) p = '/sleep/' + u.searchParams.get('ms');
    if (p === '/hello') return reply(res, 200, 'hello\n');
    if (p.startsWith('/status/')) {
      const code = parseInt(p.slice('/status/'.length), 10);
      if (!(code >= 100 && code <= 999)) return reply(res, 400, 'bad status\n');
      return reply(res, code, `status ${code}\n`);
    }
    if (p.startsWith('/sleep/')) {
      const ms = parseInt(p.slice('/sleep/'.length), 10) || 0;
      return setTimeout(() => reply(res, 200, 'slept\n'), ms);
    }
    if (p === '/echo') return reply(res, 200, body, 'application/octet-stream');
    if (p.startsWith('/proxy/')) {
      if (!upstream) return reply(res, 502, 'no UPSTREAM_URL\n');
      const target = new URL(upstream + p.slice('/proxy'.length) + u.search);
      const headers = body.length ? { 'Content-Length': body.length } : {};
      const preq = (upstreamTls ? https : http).request(target, { method: req.method, agent, headers }, (pres) => {
        const pc = [];
        pres.on('data', (c) => pc.push(c));
        pres.on('end', () => reply(res, pres.statusCode, Buffer.concat(pc)));
      });
      preq.on('error', (e) => reply(res, 502, `upstream error: ${e.message}\n`));
      preq.end(body);
      return;
    }
    return reply(res, 404, 'not found\n');
  });
};
const server =
  tlsArg > 0
    ? https.createServer(
        { cert: fs.readFileSync(process.argv[tlsArg + 1]), key: fs.readFileSync(process.argv[tlsArg + 2]) },
        handler,
      )
    : http.createServer(handler);
server.keepAliveTimeout = 60000;
const clusterArg = process.argv.indexOf('--cluster');
if (clusterArg > 0 && cluster.isPrimary) {
  const workers = parseInt(process.argv[clusterArg + 1], 10);
  let listening = 0;
  cluster.on('listening', (w) => {
    process.stderr.write(`worker ${w.process.pid} listening\n`);
    // The port accepts once the primary listens for the first worker; report ready when all do.
    if (++listening === workers) process.stderr.write(`listening on 127.0.0.1:${port}\n`);
  });
  for (let i = 0; i < workers; i++) cluster.fork();
} else {
  server.listen(port, '127.0.0.1', () => process.stderr.write(`listening on 127.0.0.1:${port}\n`));
}
