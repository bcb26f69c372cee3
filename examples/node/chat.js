#!/usr/bin/env node
// Open a llamagate Chat stream, send one user message, print the reply's text as it streams and
// then one "done" line. The client is built at run time from proto/llamagate/v1/*.proto, the same
// contract every language uses.
//
//   LLAMAGATE_TARGET=localhost:50051 LLAMAGATE_API_KEY=dev-key node chat.js "Hello!"
//
// Options: --system TEXT, --max-gen-len N, --temperature T, --timeout SECONDS.
// TLS: LLAMAGATE_CA_FILE (and LLAMAGATE_CERT_FILE + LLAMAGATE_KEY_FILE for mTLS).
// Exit status: 0 done, 1 error (gRPC status on stderr), 3 refused by the safety policy.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_DIR = process.env.LLAMAGATE_PROTO_DIR || path.resolve(__dirname, '..', '..', 'proto');

function loadChatService() {
  const definition = protoLoader.loadSync('llamagate/v1/chat_service.proto', {
    includeDirs: [PROTO_DIR],
    longs: String,
    enums: String, // enum values as their names, e.g. "FINISH_REASON_STOP"
    defaults: true,
    oneofs: true, // response.event names the field of the `event` oneof that is set
  });
  return grpc.loadPackageDefinition(definition).llamagate.v1.ChatService;
}

function credentials() {
  const ca = process.env.LLAMAGATE_CA_FILE;
  if (!ca) return grpc.credentials.createInsecure();
  const read = (name) => (process.env[name] ? fs.readFileSync(process.env[name]) : null);
  return grpc.credentials.createSsl(fs.readFileSync(ca), read('LLAMAGATE_KEY_FILE'), read('LLAMAGATE_CERT_FILE'));
}

function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      system: { type: 'string', default: '' },
      'max-gen-len': { type: 'string' },
      temperature: { type: 'string' },
      timeout: { type: 'string', default: '60' },
    },
  });
  const message = positionals.join(' ');
  if (!message) {
    console.error('usage: node chat.js [--system TEXT] [--max-gen-len N] [--temperature T] MESSAGE');
    process.exit(2);
  }
  const target = process.env.LLAMAGATE_TARGET || 'localhost:50051';
  const metadata = new grpc.Metadata();
  if (process.env.LLAMAGATE_API_KEY) metadata.add('authorization', `Bearer ${process.env.LLAMAGATE_API_KEY}`);

  const sampling = {};
  if (values['max-gen-len'] !== undefined) sampling.maxGenLen = Number(values['max-gen-len']);
  if (values.temperature !== undefined) sampling.temperature = Number(values.temperature);

  const ChatService = loadChatService();
  const client = new ChatService(target, credentials());
  const call = client.Chat(metadata, { deadline: Date.now() + Number(values.timeout) * 1000 });

  call.on('data', (response) => {
    switch (response.event) {
      case 'accepted':
        console.error(`accepted request_id=${response.accepted.requestId}`);
        break;
      case 'delta':
        process.stdout.write(response.delta.text);
        break;
      case 'safety': {
        const { verdict, refusal } = response.safety;
        if (!verdict.safe) {
          const violated = verdict.categories.filter((c) => c.violated).map((c) => `${c.code} ${c.name}`);
          process.stdout.write(`\n[refused: ${violated.join(', ')}] ${refusal}`);
          process.exitCode = 3;
        }
        break;
      }
      case 'done': {
        const { finishReason, usage, requestId } = response.done;
        process.stdout.write(
          `\ndone finish_reason=${finishReason} completion_tokens=${usage.completionTokens} request_id=${requestId}\n`,
        );
        call.end(); // one turn is all this example sends: close our side, the server ends the stream
        break;
      }
    }
  });
  call.on('error', (error) => {
    console.error(`error: ${grpc.status[error.code]}: ${error.details}`);
    process.exitCode = 1;
  });
  call.on('end', () => client.close());

  call.write({
    start: {
      systemPrompt: values.system,
      messages: [{ role: 'ROLE_USER', content: message }],
      sampling,
    },
  });
}

main();
