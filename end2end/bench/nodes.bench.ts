import type { Page } from '@playwright/test';
import { createRoom, join, mediaFlowing, open, recordMedia, test, type Joined } from '../tests/helpers';
import { Deployment } from '../tests/servers';

// Several-node figures (scripts/bench-nodes.sh writes them to BENCHMARKS.md):
// failover, from the SIGKILL of a room's node to both people's video
// advancing again on the other node (two browsers through haproxy over two
// nodes); and a join's answer time when it lands on the room's node and
// when it lands on another node (relayed). Printed as `BENCH {...}` lines.

const RUNS = Number(process.env.BENCH_RUNS ?? '5');
const JOINS = Number(process.env.BENCH_JOINS ?? '30');

function emit(metric: string, ms: number) {
  console.log(`BENCH ${JSON.stringify({ metric, ms: Math.round(ms) })}`);
}

async function flowing(page: Page, id: string, deadline: number) {
  while (Date.now() < deadline) {
    if ((await mediaFlowing(page, id)).frames) return;
  }
  throw new Error(`no video from ${id} in time`);
}

function nextJoin(page: Page): Promise<Joined> {
  return page
    .waitForResponse((r) => r.url().endsWith('/api/join') && r.request().method() === 'POST' && r.ok(), { timeout: 60_000 })
    .then((r) => r.json() as Promise<Joined>);
}

test('failover: the room node killed, until both see each other again', async ({ browser }) => {
  for (let run = 0; run < RUNS; run++) {
    const deployment = new Deployment();
    try {
      const nodes = [await deployment.node('node-a'), await deployment.node('node-b')];
      const front = await deployment.balancer(nodes);
      const base = `http://127.0.0.1:${front.port}`;
      const pages: Page[] = [];
      for (let i = 0; i < 2; i++) {
        const context = await browser.newContext({ baseURL: base });
        await recordMedia(context);
        pages.push(await context.newPage());
      }
      const [ada, bob] = pages;
      const code = await createRoom(ada, 'Ada');
      const a = await join(ada);
      await open(bob, `/r/${code}`);
      const b = await join(bob, 'Bob');
      await flowing(ada, b.participant_id, Date.now() + 30_000);
      await flowing(bob, a.participant_id, Date.now() + 30_000);
      const home = (await (await fetch(`${base}/api/debug/resources?room=${code}`)).json()).rooms[0].node;
      const rejoins = [nextJoin(ada), nextJoin(bob)];
      const killedAt = Date.now();
      (home === 'node-a' ? nodes[0] : nodes[1]).kill();
      const [a2, b2] = await Promise.all(rejoins);
      await flowing(ada, b2.participant_id, killedAt + 60_000);
      await flowing(bob, a2.participant_id, killedAt + 60_000);
      emit('failover: kill to both videos advancing', Date.now() - killedAt);
      for (const page of pages) await page.context().close();
    } finally {
      await deployment.stop();
    }
  }
});

/** A guest speaking HTTP like the page: a cookie from the lobby, then forms. */
async function guest(base: string) {
  const lobby = await fetch(`${base}/`, { headers: { 'sec-fetch-dest': 'document' } });
  const cookie = (lobby.headers.get('set-cookie') ?? '').split(';')[0];
  const post = (path: string, form: Record<string, string>) =>
    fetch(`${base}${path}`, {
      method: 'POST',
      headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(form).toString(),
      redirect: 'manual',
    });
  return { post };
}

test('join answer time on the room node and through another node', async ({ browser }) => {
  const deployment = new Deployment();
  try {
    const nodes = [await deployment.node('node-a'), await deployment.node('node-b')];
    const [owner, other] = nodes.map((n) => `http://127.0.0.1:${n.port}`);
    // The room lives on node A: its host's page joined there and stays.
    const hostPage = await (await browser.newContext({ baseURL: owner })).newPage();
    const code = await createRoom(hostPage, 'Host');
    await join(hostPage);
    for (let i = 0; i < JOINS; i++) {
      // Interleaved, so both see the same machine.
      for (const [via, label] of [
        [owner, 'join answered by the room node'],
        [other, 'join through another node (relayed)'],
      ] as const) {
        const person = await guest(via);
        const started = performance.now();
        const answer = await person.post('/api/join', { code, display_name: `Guest ${i}` });
        const ms = performance.now() - started;
        if (!answer.ok) throw new Error(`join via ${label}: ${answer.status} ${await answer.text()}`);
        const { session_id } = (await answer.json()) as Joined;
        emit(label, ms);
        await person.post('/api/leave', { session_id });
      }
    }
    await hostPage.context().close();
  } finally {
    await deployment.stop();
  }
});
