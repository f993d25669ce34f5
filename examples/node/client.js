// CyNode from Node.js over gRPC: log in, create a commands task, watch it to the end
// over the WatchTask server stream, then print the result.
//
//   npm ci
//   CYNODE_GRPC=127.0.0.1:12081 CYNODE_PASSWORD=... node client.js [command ...]
//
// The service definitions come from the descriptor set `make gen` writes
// (gen/descriptors/cynode.binpb, built from protos/), so nothing is generated here.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const DESCRIPTORS = process.env.CYNODE_DESCRIPTORS
  || path.join(__dirname, '..', '..', 'gen', 'descriptors', 'cynode.binpb');
const TARGET = process.env.CYNODE_GRPC || '127.0.0.1:12081';
const HANDLE = process.env.CYNODE_HANDLE || 'admin';
const PASSWORD = process.env.CYNODE_PASSWORD || process.env.ADMIN_PASSWORD;

// Field names as in the protos (snake_case), like every other CyNode client.
const definition = protoLoader.loadFileDescriptorSetFromBuffer(fs.readFileSync(DESCRIPTORS), {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
});
const gateway = grpc.loadPackageDefinition(definition).cynode.gateway.v1;

function call(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata || new grpc.Metadata(), (err, reply) => {
      if (err) reject(err);
      else resolve(reply);
    });
  });
}

function watch(tasks, taskId, metadata) {
  return new Promise((resolve, reject) => {
    const stream = tasks.WatchTask({ task_id: taskId }, metadata);
    let last = null;
    stream.on('data', (event) => {
      last = event;
      if (event.chunk) process.stdout.write(`[${event.stream}] ${event.chunk}`);
      else console.log(`status=${event.status}${event.terminal ? ' (terminal)' : ''}`);
    });
    stream.on('error', reject);
    stream.on('end', () => resolve(last));
  });
}

async function main() {
  if (!PASSWORD) throw new Error('set CYNODE_PASSWORD (or ADMIN_PASSWORD)');
  const commands = process.argv.slice(2);
  const credentials = grpc.credentials.createInsecure();
  const auth = new gateway.AuthService(TARGET, credentials);
  const tasks = new gateway.TaskService(TARGET, credentials);
  try {
    const login = await call(auth, 'Login', { handle: HANDLE, password: PASSWORD });
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Bearer ${login.access_token}`);

    const created = await call(tasks, 'CreateTask', {
      input_mode: 'commands',
      commands: commands.length ? commands : ['echo hello from node'],
    }, metadata);
    console.log(`task_id=${created.task_id} status=${created.status}`);

    const last = await watch(tasks, created.task_id, metadata);
    if (!last || !last.terminal) throw new Error('the watch stream ended before the task did');

    const result = await call(tasks, 'GetTaskResult', { task_id: created.task_id }, metadata);
    console.log(`result status=${result.status}`);
    process.stdout.write(`stdout:\n${result.stdout}`);
    if (result.stderr) process.stdout.write(`stderr:\n${result.stderr}`);
    return result.status === 'completed' ? 0 : 1;
  } finally {
    auth.close();
    tasks.close();
  }
}

main().then(
  (code) => { process.exitCode = code; },
  (err) => {
    // gRPC errors carry code and details; never print the password or token.
    console.error(`error: ${err.code !== undefined ? `${grpc.status[err.code]}: ${err.details}` : err.message}`);
    process.exitCode = 1;
  },
);
