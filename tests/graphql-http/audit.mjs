// Audits a running Palaver server against the GraphQL-over-HTTP specification with the
// graphql-http package's `auditServer`. Starts nothing: give it the endpoint's URL.
//
//   node audit.mjs http://127.0.0.1:8000/graphql
//
// Prints one line per audit and exits non-zero when any audit is not "ok": an error (a MUST),
// a warning (a SHOULD) or a notice (a MAY) alike, since the server means to meet them all.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <GraphQL endpoint URL>');
  process.exit(2);
}

const results = await auditServer({ url });
let failed = 0;
for (const result of results) {
  if (result.status === 'ok') {
    console.log(`ok      ${result.id} ${result.name}`);
    continue;
  }
  failed += 1;
  let body = '';
  try {
    body = await result.response.text();
  } catch {
    // The body was read by the audit itself.
  }
  console.log(`${result.status.padEnd(7)} ${result.id} ${result.name}`);
  console.log(`        ${result.reason}`);
  console.log(`        HTTP ${result.response.status} ${result.response.headers.get('content-type')} ${body.slice(0, 300)}`);
}
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
