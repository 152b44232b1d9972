// Opens GraphiQL as a person would, in Debian's Chromium (headless), against a running server,
// and checks that it loads from the server alone, runs a query, and receives a subscription event.
// Run by the `graphiql_in_chromium` test (tests/api/graphiql.rs), which starts the server and
// passes, in the environment: PALAVER_URL, PALAVER_TOKEN (the user signed in on the page),
// PALAVER_SENDER_TOKEN and PALAVER_CONVERSATION (whose messages the subscription waits for).
// Exits non-zero, saying why, on any failure.
import { chromium } from 'playwright-core';

const base = process.env.PALAVER_URL;
const token = process.env.PALAVER_TOKEN;
const senderToken = process.env.PALAVER_SENDER_TOKEN;
const conversation = process.env.PALAVER_CONVERSATION;
const WAIT = 30_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const problems = [];
try {
  const page = await browser.newPage();
  page.on('pageerror', (error) => problems.push(`script error: ${error.message}`));
  page.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith(base) && !url.startsWith('data:') && !url.startsWith('blob:')) {
      problems.push(`request to another origin: ${url}`);
    }
  });
  page.on('response', (response) => {
    if (response.status() >= 400 && !response.url().endsWith('/favicon.ico')) {
      problems.push(`${response.status()} for ${response.url()}`);
    }
  });
  page.on('console', (message) => {
    // A blocked load (CSP) is reported on the console only.
    if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) {
      problems.push(`CSP: ${message.text().slice(0, 300)}`);
    }
  });

  await page.goto(`${base}/graphql`);
  await page.waitForSelector('.graphiql-query-editor .monaco-editor', { timeout: WAIT });

  // The page explains where to put the token and prefills the header to fill in.
  const query = page.locator('.graphiql-query-editor .monaco-editor');
  const headers = page.locator('.graphiql-editor-tool .graphiql-editor:not(.hidden) .monaco-editor');
  const response = page.locator('.graphiql-response .monaco-editor .view-lines');
  const shownQuery = await query.locator('.view-lines').innerText();
  if (!/Authorization/.test(shownQuery) || !/graphql\/ws/.test(shownQuery)) {
    throw new Error(`the page does not explain the header and the WebSocket: ${shownQuery}`);
  }
  const shownHeaders = await headers.locator('.view-lines').innerText();
  if (!/Authorization/.test(shownHeaders)) {
    throw new Error(`the Authorization header is not prefilled: ${shownHeaders}`);
  }

  async function replace(editor, text) {
    await editor.click();
    await page.keyboard.press('Control+A');
    await page.keyboard.press('Delete');
    await page.keyboard.insertText(text);
  }
  async function responseShows(pattern, timeout = WAIT) {
    await page.waitForFunction(
      (source) =>
        new RegExp(source).test(
          // Monaco shows spaces as no-break spaces.
          (
            document.querySelector('.graphiql-response .monaco-editor .view-lines')?.innerText ?? ''
          ).replace(/\u00a0/g, ' '),
        ),
      pattern.source,
      { timeout },
    );
  }

  await replace(headers, JSON.stringify({ Authorization: `Bearer ${token}` }));
  // GraphiQL reads the operation from the editor a moment after it changes; the tab takes the
  // operation's name then, and only then does the run button run that one.
  async function run(text, name) {
    await replace(query, text);
    await page.locator('.graphiql-tab-active', { hasText: name }).waitFor({ timeout: WAIT });
    await page.click('.graphiql-execute-button');
  }

  await run('query Me { me { username } }', 'Me');
  await responseShows(/"username"/);

  await run('subscription Live { messageEvents { message { body } } }', 'Live');
  // The subscription is live once a message sent now shows up; until then, send another.
  const deadline = Date.now() + WAIT;
  let shown = false;
  for (let n = 0; !shown && Date.now() < deadline; n += 1) {
    const sent = await fetch(`${base}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${senderToken}` },
      body: JSON.stringify({
        query: 'mutation($c: ID!, $b: String!) { sendMessage(input: {conversationId: $c, body: $b}) { id } }',
        variables: { c: conversation, b: `live from the browser ${n}` },
      }),
    });
    if (!sent.ok) throw new Error(`sending failed: ${sent.status}`);
    shown = await responseShows(/live from the browser/, 1000)
      .then(() => true)
      .catch(() => false);
  }
  if (!shown) {
    throw new Error(`no subscription event shown: ${await response.innerText()}`);
  }
} catch (error) {
  problems.push(error.message);
} finally {
  await browser.close();
}
if (problems.length > 0) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log('GraphiQL loaded, ran a query and received a subscription event');
