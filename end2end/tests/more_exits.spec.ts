import { createRoom, expect, join, mediaState, open, recordMedia, sessionResources, test, tile, twoInRoom } from './helpers';

test('navigating away inside the app leaves and releases the media', async ({ newContext, newPage, request }) => {
  const ada = await newPage();
  const bobContext = await newContext();
  await recordMedia(bobContext);
  const bob = await bobContext.newPage();
  const { b } = await twoInRoom(ada, bob);

  await bob.getByTestId('home-link').click(); // an in-app route change, no page load
  await bob.waitForURL((url) => url.pathname === '/');
  await expect(tile(ada, b.participant_id)).toHaveCount(0, { timeout: 1_000 });
  await expect
    .poll(async () => sessionResources(request, b.session_id))
    .toMatchObject({ live: false, store_entries: [], db_row: false, leave_reason: 'left' });
  await expect.poll(async () => mediaState(bob)).toMatchObject({ liveTracks: 0, openPeerConnections: 0, videosWithStream: 0 });
});

test("the browser's back button leaves like any in-app route change", async ({ newContext, newPage, request }) => {
  const ada = await newPage();
  const code = await createRoom(ada, 'Ada');
  await join(ada);
  const bobContext = await newContext();
  await recordMedia(bobContext);
  const bob = await bobContext.newPage();
  await open(bob, '/');
  // Into the room in-app (the lobby's join form), so Back stays in the app.
  await bob.getByTestId('join-code').fill(code);
  await bob.getByTestId('join-room').click();
  await bob.waitForURL((url) => url.pathname === `/r/${code}`);
  const b = await join(bob, 'Bob');
  await expect(tile(ada, b.participant_id)).toBeVisible();

  await bob.goBack();
  await bob.waitForURL((url) => url.pathname === '/');
  await expect(bob.getByTestId('create-room')).toBeVisible();
  await expect(tile(ada, b.participant_id)).toHaveCount(0, { timeout: 1_000 });
  await expect
    .poll(async () => sessionResources(request, b.session_id))
    .toMatchObject({ live: false, store_entries: [], db_row: false, leave_reason: 'left' });
  await expect.poll(async () => mediaState(bob)).toMatchObject({ liveTracks: 0, openPeerConnections: 0, videosWithStream: 0 });
});

test('closing the window leaves', async ({ newContext, newPage, request }) => {
  const ada = await newPage();
  const code = await createRoom(ada, 'Ada');
  await join(ada);
  const bobWindow = await newContext();
  const bob = await bobWindow.newPage();
  await open(bob, `/r/${code}`);
  const b = await join(bob, 'Bob');

  await bobWindow.close();
  await expect(tile(ada, b.participant_id)).toHaveCount(0, { timeout: 1_000 });
  await expect
    .poll(async () => sessionResources(request, b.session_id))
    .toMatchObject({ live: false, store_entries: [], db_row: false, leave_reason: 'page-hidden' });
});

test('twenty joins and leaves in one page leave no track, connection or stream behind', async ({
  newContext,
  request,
}) => {
  const context = await newContext();
  await recordMedia(context);
  const page = await context.newPage();
  const code = await createRoom(page, 'Ada');
  const sessions: string[] = [];
  for (let i = 0; i < 20; i++) {
    if (i > 0) {
      // Back into the room through the lobby form: in-app, the same document.
      await page.getByTestId('join-code').fill(code);
      await page.getByTestId('join-room').click();
      await page.waitForURL(`**/r/${code}`);
    }
    const joined = await join(page);
    sessions.push(joined.session_id);
    await expect(page.getByTestId('connection-status')).toHaveAttribute('data-state', 'connected');
    await page.getByTestId('leave-button').click();
    await page.waitForURL((url) => url.pathname === '/');
  }
  const state = await mediaState(page);
  expect(state.peerConnections).toBe(20);
  await expect.poll(async () => mediaState(page)).toMatchObject({ liveTracks: 0, openPeerConnections: 0, videosWithStream: 0 });
  for (const session of sessions) {
    expect(await sessionResources(request, session)).toMatchObject({ live: false, store_entries: [], db_row: false });
  }
});
