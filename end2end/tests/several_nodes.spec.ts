import type { Page, Response } from '@playwright/test';
import { createRoom, expect, join, mediaFlowing, open, recordMedia, test, type Joined } from './helpers';
import { Deployment } from './servers';

// Two nodes on one PostgreSQL and one Redis, behind haproxy (round robin,
// no stickiness), as CONTRACT.md's "Several nodes" describes a deployment.
// Run with the real-network specs (scripts/test.sh): it starts what it needs.

/** The next join answer the page gets (its own rejoin, made without a click). */
function nextJoin(page: Page): Promise<Joined> {
  return page
    .waitForResponse((r: Response) => r.url().endsWith('/api/join') && r.request().method() === 'POST' && r.ok(), {
      timeout: 30_000,
    })
    .then((r) => r.json() as Promise<Joined>);
}

async function bothSeeEachOther(ada: Page, bob: Page, a: Joined, b: Joined) {
  await expect.poll(async () => (await mediaFlowing(ada, b.participant_id)).frames, { timeout: 20_000 }).toBe(true);
  await expect.poll(async () => (await mediaFlowing(bob, a.participant_id)).frames, { timeout: 20_000 }).toBe(true);
}

test("the room's node dies: both people are back in one call on the other node, without a click", async ({
  browser,
}) => {
  test.setTimeout(180_000);
  const deployment = new Deployment();
  const nodes: Awaited<ReturnType<Deployment['node']>>[] = [];
  try {
    nodes.push(await deployment.node('node-a'), await deployment.node('node-b'));
    const front = await deployment.balancer(nodes);
    const base = `http://127.0.0.1:${front.port}`;
    const person = async () => {
      const context = await browser.newContext({ baseURL: base });
      await recordMedia(context);
      return context.newPage();
    };
    const [ada, bob] = [await person(), await person()];

    const code = await createRoom(ada, 'Ada');
    const a = await join(ada);
    await open(bob, `/r/${code}`);
    const b = await join(bob, 'Bob');
    await bothSeeEachOther(ada, bob, a, b);

    // Which node the room lives on (any node answers the same).
    const roomNode = async () =>
      (await (await fetch(`${base}/api/debug/resources?room=${code}`)).json()).rooms[0].node as string | null;
    const home = await roomNode();
    expect(['node-a', 'node-b']).toContain(home);
    const [dying, survivor] = home === 'node-a' ? [nodes[0], nodes[1]] : [nodes[1], nodes[0]];

    // The room's node dies without a word.
    const rejoins = [nextJoin(ada), nextJoin(bob)];
    const killedAt = Date.now();
    dying.kill();

    // Each page shows it is reconnecting, then joins again by itself.
    for (const page of [ada, bob]) {
      await expect(page.locator('[data-testid="connection-status"][data-state="reconnecting"]')).toBeVisible({
        timeout: 15_000,
      });
    }
    const [a2, b2] = await Promise.all(rejoins);
    await bothSeeEachOther(ada, bob, a2, b2);
    const backMs = Date.now() - killedAt;
    console.log(`failover: both back in one call ${backMs} ms after the room's node died`);
    expect(backMs, 'back within 20 s of the death').toBeLessThanOrEqual(20_000);

    // One call of two on the survivor; the dead node's sessions were reaped.
    expect(await roomNode()).toBe(survivor === nodes[0] ? 'node-a' : 'node-b');
    const room = (await (await fetch(`http://127.0.0.1:${survivor.port}/api/debug/resources?room=${code}`)).json())
      .rooms[0];
    expect(room).toMatchObject({ participants: 2, db_participants: 2 });
    for (const old of [a, b]) {
      const gone = await (await fetch(`${base}/api/debug/sessions/${old.session_id}`)).json();
      expect(gone).toMatchObject({ live: false, store_entries: [], db_row: false, leave_reason: 'reaped' });
    }
  } catch (e) {
    for (const [i, n] of nodes.entries()) console.log(`--- node ${i} ---\n${n.log().split('\n').slice(-80).join('\n')}`);
    throw e;
  } finally {
    await deployment.stop();
  }
});
