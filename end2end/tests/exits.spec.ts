import { chromium } from '@playwright/test';
import { createRoom, expect, join, mediaFlowing, open, roomResources, sessionResources, test, tile, twoInRoom } from './helpers';
import config from '../playwright.config';

test('a refresh never leaves a duplicate of the same person, and the others see them again', async ({
  newPage,
  request,
}) => {
  const ada = await newPage();
  const bob = await newPage();
  const { code, b: first } = await twoInRoom(ada, bob);
  const bobSeen = async (participantId: string) =>
    expect.poll(async () => (await mediaFlowing(ada, participantId)).frames).toBe(true);
  await bobSeen(first.participant_id);

  // Twice: Ada's connection sends each Bob in the line the one before had
  // (the first time under a new SSRC, the second under the first Bob's again).
  let before = first;
  for (let refresh = 0; refresh < 2; refresh++) {
    await bob.reload();
    await expect(bob.locator('body[data-hydrated="true"]')).toHaveCount(1);
    const again = await join(bob);
    expect(again.session_id).not.toBe(before.session_id);

    for (const page of [ada, bob]) {
      await expect(page.getByTestId('participant-tile')).toHaveCount(2);
      await expect(tile(page, before.participant_id)).toHaveCount(0);
    }
    expect((await roomResources(request, code)).room).toMatchObject({ participants: 2, db_participants: 2 });
    const old = await sessionResources(request, before.session_id);
    expect(old).toMatchObject({ live: false, store_entries: [], db_row: false });
    expect(['page-hidden', 'replaced']).toContain(old.leave_reason);
    await bobSeen(again.participant_id);
    before = again;
  }
});

test('going to another site leaves the room', async ({ newPage, request }) => {
  const ada = await newPage();
  const bob = await newPage();
  const { b } = await twoInRoom(ada, bob);

  await bob.goto('about:blank');
  await expect(tile(ada, b.participant_id)).toHaveCount(0, { timeout: 1_000 });
  await expect
    .poll(async () => sessionResources(request, b.session_id))
    .toMatchObject({ live: false, store_entries: [], db_row: false, leave_reason: 'page-hidden' });
});

test('a killed browser is shown reconnecting, then removed with nothing left behind', async ({ newPage, request }) => {
  const ada = await newPage();
  const code = await createRoom(ada, 'Ada');
  await join(ada);

  // Bob runs in a browser process of his own, so it can be killed outright.
  const server = await chromium.launchServer({ ...config.use?.launchOptions, headless: true });
  const bobBrowser = await chromium.connect(server.wsEndpoint());
  const bob = await (await bobBrowser.newContext({ baseURL: config.use?.baseURL })).newPage();
  await open(bob, `/r/${code}`);
  const b = await join(bob, 'Bob');
  await expect(tile(ada, b.participant_id)).toHaveAttribute('data-state', 'connected');

  // SIGKILL to the browser's process group: no beacon, no close frame.
  const pid = server.process().pid;
  try {
    if (pid) process.kill(-pid, 'SIGKILL');
  } catch {
    await server.kill();
  }
  await expect(tile(ada, b.participant_id)).toHaveAttribute('data-state', 'reconnecting', { timeout: 5_000 });
  await expect(tile(ada, b.participant_id)).toHaveCount(0, { timeout: 15_000 });
  await expect
    .poll(async () => sessionResources(request, b.session_id))
    .toMatchObject({ live: false, store_entries: [], db_row: false });
  // The socket either dropped with the process or was left silent by it.
  expect(['socket-closed', 'heartbeat-lost']).toContain((await sessionResources(request, b.session_id)).leave_reason);
  await server.kill();
  expect((await roomResources(request, code)).room).toMatchObject({ participants: 1, db_participants: 1 });
});
