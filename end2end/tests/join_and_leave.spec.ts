import { createRoom, expect, join, open, roomResources, sessionResources, test, tile, twoInRoom } from './helpers';

test('two people join one room, see each other, and leaving removes every trace', async ({ newPage, request }) => {
  const ada = await newPage();
  const bob = await newPage();
  // The site's files come precompressed and, named by content hash, cached for a year.
  const assets = new Map<string, { encoding?: string; cache?: string }>();
  ada.on('response', (r) => {
    const path = new URL(r.url()).pathname;
    if (path.startsWith('/pkg/')) assets.set(path, { encoding: r.headers()['content-encoding'], cache: r.headers()['cache-control'] });
  });

  const code = await createRoom(ada, 'Ada');
  const wasm = [...assets].filter(([path]) => /^\/pkg\/cleanroom\.[\w-]{16,}\.wasm$/.test(path));
  expect(wasm).toHaveLength(1);
  expect(['br', 'gzip']).toContain(wasm[0][1].encoding);
  expect(wasm[0][1].cache).toBe('public, max-age=31536000, immutable');
  const a = await join(ada);
  expect(a.role).toBe('admin');

  // Bob comes in through the lobby's join-by-code form.
  await open(bob, '/');
  await bob.getByTestId('join-code').fill(code.toUpperCase());
  await bob.getByTestId('join-room').click();
  await bob.waitForURL(`**/r/${code}`);
  const b = await join(bob, 'Bob');
  expect(b.role).toBe('member');

  for (const page of [ada, bob]) {
    const list = page.getByTestId('participant-list');
    await expect(list.getByTestId('participant')).toHaveCount(2);
    await expect(list).toContainText('Ada');
    await expect(list).toContainText('Bob');
    await expect(page.getByTestId('connection-status')).toHaveAttribute('data-state', 'connected');
    await expect(page.getByTestId('participant-tile')).toHaveCount(2);
  }
  await expect(tile(ada, a.participant_id)).toHaveAttribute('data-self', 'true');

  // Bob clicks Leave: within 1 s Ada's list no longer shows him.
  await bob.getByTestId('leave-button').click();
  await expect(tile(ada, b.participant_id)).toHaveCount(0, { timeout: 1_000 });
  await expect(ada.getByTestId('participant-list').getByTestId('participant')).toHaveCount(1);
  await bob.waitForURL((url) => url.pathname === '/');

  const afterBob = await roomResources(request, code);
  expect(afterBob.room).toMatchObject({ participants: 1, db_participants: 1 });
  const bobLeft = await sessionResources(request, b.session_id);
  expect(bobLeft).toMatchObject({ live: false, store_entries: [], db_row: false, leave_reason: 'left' });
  expect(bobLeft.left_at_ms).toBeGreaterThanOrEqual(bobLeft.joined_at_ms);

  // Ada leaves too: the room is empty everywhere.
  await ada.getByTestId('leave-button').click();
  await ada.waitForURL((url) => url.pathname === '/');
  await expect
    .poll(async () => (await roomResources(request, code)).room)
    .toMatchObject({ participants: 0, pending: 0, store_keys: 0, db_participants: 0 });
  const adaLeft = await sessionResources(request, a.session_id);
  expect(adaLeft).toMatchObject({ live: false, store_entries: [], db_row: false, leave_reason: 'left' });

  // The lobby says she left, remembers the room, and Rejoin brings her back.
  await expect(ada.getByTestId('left-notice')).toContainText(code);
  await expect(ada.getByTestId('recent-room')).toHaveText([code]);
  await ada.getByTestId('rejoin').click();
  await ada.waitForURL((url) => url.pathname === `/r/${code}`);
  await join(ada);
  await expect(ada.getByTestId('participant-tile')).toHaveCount(1);
});

test('closing the tab leaves through the beacon', async ({ newContext, newPage, request }) => {
  const ada = await newPage();
  const bobContext = await newContext();
  const bob = await bobContext.newPage();
  const { b } = await twoInRoom(ada, bob);
  await expect(ada.getByTestId('participant-list').getByTestId('participant')).toHaveCount(2);

  await bob.close({ runBeforeUnload: true });
  await expect(tile(ada, b.participant_id)).toHaveCount(0, { timeout: 1_000 });
  await expect
    .poll(async () => sessionResources(request, b.session_id))
    .toMatchObject({ live: false, store_entries: [], db_row: false, leave_reason: 'page-hidden' });
});

test('the lobby refuses bad input with a clear message and writes nothing', async ({ page }) => {
  await open(page, '/');
  await page.getByTestId('display-name').fill('x'.repeat(65));
  await page.getByTestId('create-room').click();
  await expect(page.getByTestId('create-error')).toContainText('at most 64 characters');
  await expect(page).toHaveURL(/\/$/);

  await page.getByTestId('join-code').fill('not-a-code');
  await page.getByTestId('join-room').click();
  await expect(page.getByTestId('join-error')).toContainText('does not look like a room code');

  await page.getByTestId('join-code').fill('zzz-zzzz-zzz');
  await page.getByTestId('join-room').click();
  await expect(page.getByTestId('join-error')).toContainText('no room with this code');

  const missing = await page.goto('/r/zzz-zzzz-zzz');
  expect(missing?.status()).toBe(404);
  await expect(page.getByTestId('not-found')).toBeVisible();
});
