'use strict';
// Node cluster hello for bench_all.py. env: PORT, HOST (127.0.0.1), WORKERS (2),
// NODE_CLUSTER_SCHED_POLICY rr|none (read by Node itself when 'node:cluster' loads).
// The primary forks WORKERS workers, replaces any that dies, prints "LISTENING <pid>"
// per listening worker; SIGTERM/SIGINT stop the workers, then the primary.
// Every response: 200 "hello\n" with an X-Pid header naming the worker.
const cluster = require('node:cluster');
const http = require('node:http');

const PORT = Number(process.env.PORT || 8000);
const HOST = process.env.HOST || '127.0.0.1';
const WORKERS = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  let stopping = false;
  const fork = () => cluster.fork().on('listening', function () { console.log('LISTENING ' + this.process.pid); });
  cluster.on('exit', () => {
    if (!stopping) fork();
    else if (Object.keys(cluster.workers).length === 0) process.exit(0);
  });
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    if (Object.keys(cluster.workers).length === 0) process.exit(0);
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  console.log(`primary ${process.pid}: policy ${cluster.schedulingPolicy === cluster.SCHED_RR ? 'rr' : 'none'}`);
  for (let i = 0; i < WORKERS; i++) fork();
} else {
  const headers = { 'Content-Type': 'text/plain', 'Content-Length': '6', 'X-Pid': String(process.pid) };
  http.createServer((req, res) => { res.writeHead(200, headers); res.end('hello\n'); }).listen(PORT, HOST);
}
