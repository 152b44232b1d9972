// Palaver's GraphiQL page: GraphiQL with Palaver's endpoints, an Authorization header to fill in,
// and subscriptions over the server's WebSocket signed in with the same header. Bundled by the
// server's build.rs (esbuild) into files the binary serves from /graphiql/.
import { createElement } from 'react';
import { createRoot } from 'react-dom/client';
import { GraphiQL } from 'graphiql';
import { createClient } from 'graphql-ws';
import { getOperationAST, parse } from 'graphql';
import 'graphiql/style.css';

// Monaco runs its language services in workers; they are served beside this script (CSP
// `worker-src 'self'`).
globalThis.MonacoEnvironment = {
  getWorker(_id, label) {
    const name = label === 'json' || label === 'graphql' ? label : 'editor';
    return new Worker(`/graphiql/${name}.worker.js`);
  },
};

const root = document.getElementById('graphiql');
const endpoint = root.dataset.endpoint;
const socketUrl = new URL(root.dataset.subscriptionEndpoint, window.location.href);
socketUrl.protocol = socketUrl.protocol === 'https:' ? 'wss:' : 'ws:';

// One WebSocket per Authorization header: the server signs a socket in once, with the token in
// its connection_init payload.
const sockets = new Map();
function socketFor(authorization) {
  const key = authorization ?? '';
  if (!sockets.has(key)) {
    sockets.set(
      key,
      createClient({
        url: socketUrl.href,
        connectionParams: authorization ? { authorization } : {},
        lazy: true,
      }),
    );
  }
  return sockets.get(key);
}

function headerNamed(headers, name) {
  const found = Object.keys(headers ?? {}).find((key) => key.toLowerCase() === name);
  return found === undefined ? undefined : headers[found];
}

function isSubscription(params) {
  try {
    const operation = getOperationAST(parse(params.query), params.operationName ?? undefined);
    return operation?.operation === 'subscription';
  } catch {
    return false;
  }
}

async function* subscribe(params, headers) {
  const client = socketFor(headerNamed(headers, 'authorization'));
  const events = client.iterate({
    query: params.query,
    variables: params.variables ?? undefined,
    operationName: params.operationName ?? undefined,
  });
  for await (const event of events) {
    yield event;
  }
}

async function fetcher(params, options) {
  const headers = options?.headers ?? {};
  if (isSubscription(params)) {
    return subscribe(params, headers);
  }
  const response = await fetch(endpoint, {
    method: 'POST',
    headers: {
      accept: 'application/graphql-response+json, application/json',
      'content-type': 'application/json',
      ...headers,
    },
    body: JSON.stringify(params),
  });
  return response.json();
}

const defaultQuery = `# Palaver's GraphQL API.
#
# Sign in (or register) first, then copy the token into the Headers tab below:
#   { "Authorization": "Bearer <token>" }
# Queries and mutations go to ${new URL(endpoint, window.location.href).href};
# subscriptions go over the WebSocket at ${socketUrl.href},
# signed in with the same Authorization header.

mutation SignIn {
  login(username: "alice", password: "your password") {
    token
  }
}

query Me {
  me {
    id
    username
  }
}

subscription Live {
  messageEvents {
    kind
    cursor
    message {
      body
      sender {
        username
      }
    }
  }
}
`;

createRoot(root).render(
  createElement(GraphiQL, {
    fetcher,
    defaultQuery,
    initialHeaders: '{\n  "Authorization": "Bearer <token>"\n}',
    defaultEditorToolsVisibility: 'headers',
    shouldPersistHeaders: false,
  }),
);
